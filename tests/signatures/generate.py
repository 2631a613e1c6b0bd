"""Generate `bot/core/signature_data.py`: the module tables base-model identification matches LoRAs against.

Run from the repository root with the test environment (diffusers, transformers, torch, accelerate):

    python -m tests.signatures.generate          # or: python tests/signatures/generate.py

Every table comes from the real diffusers / transformers class, built with the checkpoint's published config
on the meta device (accelerate's `init_empty_weights`: no weights are allocated and nothing is downloaded). A
table lists each layer a LoRA can adapt: `nn.Linear`, `nn.Conv1d/2d/3d`, `nn.Embedding`, transformers' GPT-2
`Conv1D`, plus the per-expert Linears of transformers 4.x MoE layouts (transformers 5 fuses them into 3-D
parameters, but LoRAs on the Hub were trained on the per-expert names) and MoE routers. Each row is
`(path template, in_features, out_features, index boxes)`: numbered path segments are folded into `{}` and the
index tuples that exist are stored as boxes of inclusive ranges, so 80 identical Llama layers are one row.

Trainers that write original-checkpoint names (kohya SGM `input_blocks`, BFL/ComfyUI Flux `double_blocks`,
Wan `blocks.N.self_attn.q`, HunyuanVideo `img_attn_qkv`, SAI SD3 `joint_blocks`) are covered by ALTERNATE rows
derived from the diffusers rows with the mappings of diffusers' own conversion code (named at each mapping
below); fused layers (BFL `qkv`, `linear1`) get the summed output width.

To add a base: add a `Table` (unless an existing one fits) and a `BaseEntry` to `ENTRIES`, run this script,
and commit the regenerated `bot/core/signature_data.py` together with the change here.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from bot.core.compat import sgm_aliases

OUTPUT = Path(__file__).resolve().parents[2] / "bot" / "core" / "signature_data.py"

# Family code → human name. The order is the order of the README table.
FAMILIES: dict[str, str] = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "sdxl": "SDXL",
    "sd3": "Stable Diffusion 3 / 3.5",
    "flux1": "FLUX.1",
    "flux2": "FLUX.2",
    "chroma": "Chroma",
    "hidream": "HiDream-I1",
    "qwen-image": "Qwen-Image",
    "lumina2": "Lumina-Image 2.0",
    "z-image": "Z-Image",
    "hunyuan-video": "HunyuanVideo",
    "hunyuan-image": "HunyuanImage",
    "wan": "Wan 2.1 / 2.2",
    "ltx-video": "LTX-Video",
    "ltx2": "LTX-2",
    "sana": "Sana",
    "pixart": "PixArt-alpha / Sigma",
    "auraflow": "AuraFlow",
    "cogview4": "CogView4",
    "cogvideox": "CogVideoX",
    "mochi": "Mochi 1",
    "llm": "Language model",
}

# Components, as `bot.core.signatures.normalise` names them.
DENOISER, TE1, TE2, TE3, MODEL = "denoiser", "text_encoder", "text_encoder_2", "text_encoder_3", "model"


# ------------------------------------------------------------------------------------------ building models


def _meta(build: Callable[[], object]):
    """Build a model on the meta device: no memory is allocated and nothing is computed. A few constructors
    compute rotary tables or masks with ops the meta device cannot run; for those, accelerate's
    `init_empty_weights` keeps the buffers real (they are small, and never LoRA targets) and only the
    parameters on meta."""
    import torch
    from accelerate import init_empty_weights

    try:
        with torch.no_grad(), torch.device("meta"):
            return build()
    except (NotImplementedError, RuntimeError, ValueError):
        with torch.no_grad(), init_empty_weights(include_buffers=False):
            return build()


def diffusers_model(class_name: str, **config):
    import diffusers

    return _meta(lambda: getattr(diffusers, class_name)(**config))


def transformers_model(class_name: str, config_class: str, **config):
    import transformers

    return _meta(lambda: getattr(transformers, class_name)(getattr(transformers, config_class)(**config)))


def layer_widths(
    model, hidden_size: int | None = None, expand_experts: bool = False
) -> dict[str, tuple[int, int]]:
    """Every layer a LoRA can target: module path → (in_features, out_features).

    Embeddings give (num_embeddings, embedding_dim), which is what a PEFT embedding LoRA's factors show
    (`lora_embedding_A` is [r, vocab], `lora_embedding_B` is [dim, r]). With `expand_experts`, a
    transformers 5 fused experts module (3-D `gate_up_proj` / `down_proj`) is listed as the per-expert
    `experts.{e}.gate_proj` / `up_proj` / `down_proj` Linears of transformers 4.x and of the Hub checkpoints;
    `hidden_size` tells which
    axis of the fused tensor is the hidden one.
    """
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    widths: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            widths[name] = (module.in_features, module.out_features)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            widths[name] = (module.in_channels, module.out_channels)
        elif isinstance(module, nn.Embedding):
            widths[name] = (module.num_embeddings, module.embedding_dim)
        elif isinstance(module, Conv1D):  # GPT-2: weight is [in, out]
            widths[name] = (module.weight.shape[0], module.nf)
        elif type(module).__name__.endswith("Router") and getattr(module, "weight", None) is not None:
            # MoE routers that transformers 5 no longer builds as nn.Linear (`mlp.gate`): [experts, hidden].
            widths[name] = (module.weight.shape[1], module.weight.shape[0])
        elif expand_experts and _is_fused_experts(module):
            widths.update(_per_expert_linears(name, module, hidden_size))
    return widths


def _is_fused_experts(module) -> bool:
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return getattr(gate_up, "ndim", 0) == 3 and getattr(down, "ndim", 0) == 3


def _per_expert_linears(prefix: str, module, hidden: int | None) -> dict[str, tuple[int, int]]:
    experts, a, b = module.gate_up_proj.shape
    # [E, 2·I, H] (Qwen3-MoE) or [E, H, 2·I] (Llama 4): the hidden axis is the one equal to hidden_size.
    intermediate = a // 2 if b == hidden else b // 2
    rows = {}
    for e in range(experts):
        rows[f"{prefix}.{e}.gate_proj"] = (hidden, intermediate)
        rows[f"{prefix}.{e}.up_proj"] = (hidden, intermediate)
        rows[f"{prefix}.{e}.down_proj"] = (intermediate, hidden)
    return rows


# ------------------------------------------------------------------------------- alternate (original) names


@dataclass(frozen=True)
class Fuse:
    """An original-checkpoint layer that is one diffusers layer, or several fused along the output axis
    (`double_blocks.{i}.img_attn.qkv` = to_q + to_k + to_v). `{i}` is the block index."""

    original: str
    diffusers: tuple[str, ...]


def fused_names(widths: Mapping[str, tuple[int, int]], rules: Iterable[Fuse]) -> dict[str, tuple[int, int]]:
    """Alternate rows for original names, for every block where all the rule's diffusers layers exist."""
    extra: dict[str, tuple[int, int]] = {}
    for rule in rules:
        first = re.compile(re.escape(rule.diffusers[0]).replace(r"\{i\}", r"(\d+)") + "$")
        for path in widths:
            found = first.match(path)
            if not found:
                continue
            index = found.group(1) if found.groups() else ""
            parts = [widths.get(p.replace("{i}", index)) for p in rule.diffusers]
            if None in parts or len({p[0] for p in parts}) != 1:
                continue
            extra[rule.original.replace("{i}", index)] = (parts[0][0], sum(p[1] for p in parts))
    return extra


def renamed(rules: Iterable[tuple[str, str]]) -> tuple[Fuse, ...]:
    return tuple(Fuse(original, (diffusers,)) for original, diffusers in rules)


# BFL / ComfyUI / kohya names of FLUX.1 (and Chroma, which keeps Flux's layout without the modulation layers).
# Source: diffusers `loaders/lora_conversion_utils.py` `_convert_kohya_flux_lora_to_diffusers` and
# `single_file_utils.py` `convert_flux_transformer_checkpoint_to_diffusers`; kohya `networks/lora_flux.py`
# splits `qkv` into `qkv.0-2` and `linear1` into `linear1.0-3` with `--split_qkv`.
FLUX1_ORIGINAL = (
    Fuse(
        "double_blocks.{i}.img_attn.qkv",
        (
            "transformer_blocks.{i}.attn.to_q",
            "transformer_blocks.{i}.attn.to_k",
            "transformer_blocks.{i}.attn.to_v",
        ),
    ),
    Fuse(
        "double_blocks.{i}.txt_attn.qkv",
        (
            "transformer_blocks.{i}.attn.add_q_proj",
            "transformer_blocks.{i}.attn.add_k_proj",
            "transformer_blocks.{i}.attn.add_v_proj",
        ),
    ),
    *renamed(
        (
            ("double_blocks.{i}.img_attn.qkv.0", "transformer_blocks.{i}.attn.to_q"),
            ("double_blocks.{i}.img_attn.qkv.1", "transformer_blocks.{i}.attn.to_k"),
            ("double_blocks.{i}.img_attn.qkv.2", "transformer_blocks.{i}.attn.to_v"),
            ("double_blocks.{i}.txt_attn.qkv.0", "transformer_blocks.{i}.attn.add_q_proj"),
            ("double_blocks.{i}.txt_attn.qkv.1", "transformer_blocks.{i}.attn.add_k_proj"),
            ("double_blocks.{i}.txt_attn.qkv.2", "transformer_blocks.{i}.attn.add_v_proj"),
            ("double_blocks.{i}.img_attn.proj", "transformer_blocks.{i}.attn.to_out.0"),
            ("double_blocks.{i}.txt_attn.proj", "transformer_blocks.{i}.attn.to_add_out"),
            ("double_blocks.{i}.img_mlp.0", "transformer_blocks.{i}.ff.net.0.proj"),
            ("double_blocks.{i}.img_mlp.2", "transformer_blocks.{i}.ff.net.2"),
            ("double_blocks.{i}.txt_mlp.0", "transformer_blocks.{i}.ff_context.net.0.proj"),
            ("double_blocks.{i}.txt_mlp.2", "transformer_blocks.{i}.ff_context.net.2"),
            ("double_blocks.{i}.img_mod.lin", "transformer_blocks.{i}.norm1.linear"),
            ("double_blocks.{i}.txt_mod.lin", "transformer_blocks.{i}.norm1_context.linear"),
            # XLabs' attention-processor LoRAs (`double_blocks.N.processor.qkv_lora1`): formats.py names them
            # `double_blocks.N.qkv1`; lora1 is the image stream, lora2 the text (_convert_xlabs_flux_lora…).
            ("double_blocks.{i}.proj1", "transformer_blocks.{i}.attn.to_out.0"),
            ("double_blocks.{i}.proj2", "transformer_blocks.{i}.attn.to_add_out"),
            ("single_blocks.{i}.linear2", "single_transformer_blocks.{i}.proj_out"),
            ("single_blocks.{i}.modulation.lin", "single_transformer_blocks.{i}.norm.linear"),
            ("single_blocks.{i}.linear1.0", "single_transformer_blocks.{i}.attn.to_q"),
            ("single_blocks.{i}.linear1.1", "single_transformer_blocks.{i}.attn.to_k"),
            ("single_blocks.{i}.linear1.2", "single_transformer_blocks.{i}.attn.to_v"),
            ("single_blocks.{i}.linear1.3", "single_transformer_blocks.{i}.proj_mlp"),
            ("img_in", "x_embedder"),
            ("txt_in", "context_embedder"),
            ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
            ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
            ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
            ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
            ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
            ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
            ("final_layer.linear", "proj_out"),
            ("final_layer.adaLN_modulation.1", "norm_out.linear"),
        )
    ),
    Fuse(
        "double_blocks.{i}.qkv1",
        (
            "transformer_blocks.{i}.attn.to_q",
            "transformer_blocks.{i}.attn.to_k",
            "transformer_blocks.{i}.attn.to_v",
        ),
    ),
    Fuse(
        "double_blocks.{i}.qkv2",
        (
            "transformer_blocks.{i}.attn.add_q_proj",
            "transformer_blocks.{i}.attn.add_k_proj",
            "transformer_blocks.{i}.attn.add_v_proj",
        ),
    ),
    Fuse(
        "single_blocks.{i}.linear1",
        (
            "single_transformer_blocks.{i}.attn.to_q",
            "single_transformer_blocks.{i}.attn.to_k",
            "single_transformer_blocks.{i}.attn.to_v",
            "single_transformer_blocks.{i}.proj_mlp",
        ),
    ),
)

# FLUX.2 BFL names. Source: diffusers `_convert_kohya_flux2_lora_to_diffusers`.
FLUX2_ORIGINAL = (
    Fuse(
        "double_blocks.{i}.img_attn.qkv",
        (
            "transformer_blocks.{i}.attn.to_q",
            "transformer_blocks.{i}.attn.to_k",
            "transformer_blocks.{i}.attn.to_v",
        ),
    ),
    Fuse(
        "double_blocks.{i}.txt_attn.qkv",
        (
            "transformer_blocks.{i}.attn.add_q_proj",
            "transformer_blocks.{i}.attn.add_k_proj",
            "transformer_blocks.{i}.attn.add_v_proj",
        ),
    ),
    *renamed(
        (
            ("double_blocks.{i}.img_attn.proj", "transformer_blocks.{i}.attn.to_out.0"),
            ("double_blocks.{i}.txt_attn.proj", "transformer_blocks.{i}.attn.to_add_out"),
            ("double_blocks.{i}.img_mlp.0", "transformer_blocks.{i}.ff.linear_in"),
            ("double_blocks.{i}.img_mlp.2", "transformer_blocks.{i}.ff.linear_out"),
            ("double_blocks.{i}.txt_mlp.0", "transformer_blocks.{i}.ff_context.linear_in"),
            ("double_blocks.{i}.txt_mlp.2", "transformer_blocks.{i}.ff_context.linear_out"),
            ("single_blocks.{i}.linear1", "single_transformer_blocks.{i}.attn.to_qkv_mlp_proj"),
            ("single_blocks.{i}.linear2", "single_transformer_blocks.{i}.attn.to_out"),
        )
    ),
)

# HunyuanVideo original names (and musubi-tuner's `lora_unet_double_blocks_N_img_attn_qkv`). Source: diffusers
# `_convert_hunyuan_video_lora_to_diffusers` (TRANSFORMER_KEYS_RENAME_DICT and the qkv / linear1 splits).
HUNYUAN_VIDEO_ORIGINAL = (
    Fuse(
        "double_blocks.{i}.img_attn_qkv",
        (
            "transformer_blocks.{i}.attn.to_q",
            "transformer_blocks.{i}.attn.to_k",
            "transformer_blocks.{i}.attn.to_v",
        ),
    ),
    Fuse(
        "double_blocks.{i}.txt_attn_qkv",
        (
            "transformer_blocks.{i}.attn.add_q_proj",
            "transformer_blocks.{i}.attn.add_k_proj",
            "transformer_blocks.{i}.attn.add_v_proj",
        ),
    ),
    Fuse(
        "single_blocks.{i}.linear1",
        (
            "single_transformer_blocks.{i}.attn.to_q",
            "single_transformer_blocks.{i}.attn.to_k",
            "single_transformer_blocks.{i}.attn.to_v",
            "single_transformer_blocks.{i}.proj_mlp",
        ),
    ),
    *renamed(
        (
            ("double_blocks.{i}.img_attn_proj", "transformer_blocks.{i}.attn.to_out.0"),
            ("double_blocks.{i}.txt_attn_proj", "transformer_blocks.{i}.attn.to_add_out"),
            ("double_blocks.{i}.img_mlp.fc1", "transformer_blocks.{i}.ff.net.0.proj"),
            ("double_blocks.{i}.img_mlp.fc2", "transformer_blocks.{i}.ff.net.2"),
            ("double_blocks.{i}.txt_mlp.fc1", "transformer_blocks.{i}.ff_context.net.0.proj"),
            ("double_blocks.{i}.txt_mlp.fc2", "transformer_blocks.{i}.ff_context.net.2"),
            ("double_blocks.{i}.img_mod.linear", "transformer_blocks.{i}.norm1.linear"),
            ("double_blocks.{i}.txt_mod.linear", "transformer_blocks.{i}.norm1_context.linear"),
            ("single_blocks.{i}.linear2", "single_transformer_blocks.{i}.proj_out"),
            ("single_blocks.{i}.modulation.linear", "single_transformer_blocks.{i}.norm.linear"),
            ("time_in.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
            ("time_in.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
            ("guidance_in.mlp.0", "time_text_embed.guidance_embedder.linear_1"),
            ("guidance_in.mlp.2", "time_text_embed.guidance_embedder.linear_2"),
            ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
            ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
            ("final_layer.linear", "proj_out"),
            ("final_layer.adaLN_modulation.1", "norm_out.linear"),
        )
    ),
)

# Wan original names (Wan-AI checkpoints, musubi-tuner `lora_unet_blocks_N_self_attn_q`, ComfyUI
# `diffusion_model.blocks.N…`). Source: diffusers `_convert_non_diffusers_wan_lora_to_diffusers`.
WAN_ORIGINAL = renamed(
    (
        *(
            (f"blocks.{{i}}.self_attn.{o}", f"blocks.{{i}}.attn1.{d}")
            for o, d in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))
        ),
        *(
            (f"blocks.{{i}}.cross_attn.{o}", f"blocks.{{i}}.attn2.{d}")
            for o, d in (
                ("q", "to_q"),
                ("k", "to_k"),
                ("v", "to_v"),
                ("o", "to_out.0"),
                ("k_img", "add_k_proj"),
                ("v_img", "add_v_proj"),
            )
        ),
        ("blocks.{i}.ffn.0", "blocks.{i}.ffn.net.0.proj"),
        ("blocks.{i}.ffn.2", "blocks.{i}.ffn.net.2"),
        ("patch_embedding", "patch_embedding"),
        ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
        ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
        ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
        ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
        ("time_projection.1", "condition_embedder.time_proj"),
        ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
        ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
        ("head.head", "proj_out"),
    )
)

# Stability's SD3 / SD3.5 names (kohya `lora_unet_joint_blocks_N_x_block_attn_qkv`). Source: diffusers
# `single_file_utils.py` `convert_sd3_transformer_checkpoint_to_diffusers`; sd-scripts `networks/lora_sd3.py`.
SD3_ORIGINAL = (
    Fuse(
        "joint_blocks.{i}.x_block.attn.qkv",
        (
            "transformer_blocks.{i}.attn.to_q",
            "transformer_blocks.{i}.attn.to_k",
            "transformer_blocks.{i}.attn.to_v",
        ),
    ),
    Fuse(
        "joint_blocks.{i}.context_block.attn.qkv",
        (
            "transformer_blocks.{i}.attn.add_q_proj",
            "transformer_blocks.{i}.attn.add_k_proj",
            "transformer_blocks.{i}.attn.add_v_proj",
        ),
    ),
    Fuse(
        "joint_blocks.{i}.x_block.attn2.qkv",
        (
            "transformer_blocks.{i}.attn2.to_q",
            "transformer_blocks.{i}.attn2.to_k",
            "transformer_blocks.{i}.attn2.to_v",
        ),
    ),
    *renamed(
        (
            ("joint_blocks.{i}.x_block.attn.proj", "transformer_blocks.{i}.attn.to_out.0"),
            ("joint_blocks.{i}.x_block.attn2.proj", "transformer_blocks.{i}.attn2.to_out.0"),
            ("joint_blocks.{i}.context_block.attn.proj", "transformer_blocks.{i}.attn.to_add_out"),
            ("joint_blocks.{i}.x_block.mlp.fc1", "transformer_blocks.{i}.ff.net.0.proj"),
            ("joint_blocks.{i}.x_block.mlp.fc2", "transformer_blocks.{i}.ff.net.2"),
            ("joint_blocks.{i}.context_block.mlp.fc1", "transformer_blocks.{i}.ff_context.net.0.proj"),
            ("joint_blocks.{i}.context_block.mlp.fc2", "transformer_blocks.{i}.ff_context.net.2"),
            ("joint_blocks.{i}.x_block.adaLN_modulation.1", "transformer_blocks.{i}.norm1.linear"),
            (
                "joint_blocks.{i}.context_block.adaLN_modulation.1",
                "transformer_blocks.{i}.norm1_context.linear",
            ),
        )
    ),
)


def sgm_unet_names(widths: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """LDM / SGM names of a diffusers UNet (SD1, SD2, SDXL, SDXL refiner), as kohya writes SDXL LoRAs
    (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`): the mapping `lora-bot check` uses too."""
    return {sgm: widths[path] for sgm, path in sgm_aliases(widths).items()}


# --------------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """One component's layers: how to build the real model, and which original namings to add."""

    key: str
    source: str  # where the config numbers come from
    build: Callable[[], dict[str, tuple[int, int]]]  # the model's own layers
    hidden: int  # the width the evidence sentence quotes
    original: tuple[Fuse, ...] = ()  # original-checkpoint names derived from the diffusers ones
    sgm: bool = False  # add the LDM / SGM names of a UNet

    @property
    def namings(self) -> tuple[str, ...]:
        base = ("transformers",) if self.source_library == "transformers" else ("diffusers",)
        return base + (("original",) if self.original else ()) + (("sgm",) if self.sgm else ())

    @property
    def source_library(self) -> str:
        return getattr(self.build, "library", "diffusers")

    def widths(self) -> dict[str, tuple[int, int]]:
        """Every name the table holds: the model's own, then the alternates."""
        widths = self.build()
        if self.original:
            widths.update(fused_names(widths, self.original))
        if self.sgm:
            widths.update(sgm_unet_names(widths))
        return widths


def _diffusers_table(class_name: str, **config):
    def build():
        return layer_widths(diffusers_model(class_name, **config))

    build.library = "diffusers"
    return build


_LAYER_KEYS = ("num_hidden_layers", "n_layer")


def _with_layers(config: dict, layers: int | None) -> dict:
    """The config with at most `layers` layers in every tower (tests build cut-down LLMs with real widths)."""
    if layers is None:
        return config
    cut = {k: (min(v, layers) if k in _LAYER_KEYS else v) for k, v in config.items()}
    for tower in ("text_config", "vision_config"):
        if tower in cut:
            cut[tower] = _with_layers(cut[tower], layers)
    return cut


def _transformers_table(
    class_name: str,
    config_class: str,
    expand_experts: bool = False,
    also: Callable[..., dict[str, tuple[int, int]]] | None = None,
    **config,
):
    def build(layers: int | None = None):
        cut = _with_layers(config, layers)
        model = transformers_model(class_name, config_class, **cut)
        hidden = cut.get("hidden_size") or cut.get("text_config", {}).get("hidden_size")
        widths = layer_widths(model, hidden_size=hidden, expand_experts=expand_experts)
        if also:
            widths.update(also(layers))
        return widths

    build.library = "transformers"
    return build


def _unet(**config):
    return _diffusers_table("UNet2DConditionModel", **config)


SDXL_UNET = dict(
    sample_size=128,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)

CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    projection_dim=768,
    vocab_size=49408,
    max_position_embeddings=77,
)
CLIP_G = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    projection_dim=1280,
    vocab_size=49408,
    max_position_embeddings=77,
    hidden_act="gelu",
)
T5_XXL = dict(
    d_model=4096,
    d_ff=10240,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    vocab_size=32128,
    feed_forward_proj="gated-gelu",
)

FLUX1 = dict(
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    axes_dims_rope=(16, 56, 56),
)
WAN_14B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=40,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=13824,
    num_layers=40,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)
SD3_BASE = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    attention_head_dim=64,
    joint_attention_dim=4096,
    pooled_projection_dim=2048,
    out_channels=16,
)

TABLES: tuple[Table, ...] = (
    # --- text encoders (transformers CLIPTextModel / WithProjection, T5EncoderModel)
    Table(
        "clip-vit-l",
        "openai/clip-vit-large-patch14 text_config (SD1.x, SDXL text_encoder, FLUX.1 text_encoder)",
        _transformers_table("CLIPTextModel", "CLIPTextConfig", **CLIP_L),
        768,
    ),
    Table(
        "clip-vit-l-proj",
        "openai/clip-vit-large-patch14 with text_projection (SD3 text_encoder)",
        _transformers_table("CLIPTextModelWithProjection", "CLIPTextConfig", **CLIP_L),
        768,
    ),
    Table(
        "openclip-vit-h",
        "stabilityai/stable-diffusion-2-1 text_encoder/config.json (OpenCLIP ViT-H, 23 layers)",
        _transformers_table(
            "CLIPTextModel",
            "CLIPTextConfig",
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            projection_dim=512,
            hidden_act="gelu",
            vocab_size=49408,
            max_position_embeddings=77,
        ),
        1024,
    ),
    Table(
        "openclip-vit-bigg",
        "stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2/config.json (OpenCLIP bigG)",
        _transformers_table("CLIPTextModelWithProjection", "CLIPTextConfig", **CLIP_G),
        1280,
    ),
    Table(
        "t5-xxl",
        "google/t5-v1_1-xxl encoder (SD3 text_encoder_3, FLUX.1 text_encoder_2)",
        _transformers_table("T5EncoderModel", "T5Config", **T5_XXL),
        4096,
    ),
    # --- UNets (diffusers UNet2DConditionModel; SGM names added for kohya SDXL files)
    Table(
        "unet-sd1",
        "stable-diffusion-v1-5 unet/config.json (= UNet2DConditionModel defaults, cross 768)",
        _unet(sample_size=64, cross_attention_dim=768, attention_head_dim=8),
        320,
        sgm=True,
    ),
    Table(
        "unet-sd2",
        "stabilityai/stable-diffusion-2-1 unet/config.json (cross 1024, linear proj_in)",
        _unet(
            sample_size=96,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
        ),
        320,
        sgm=True,
    ),
    Table(
        "unet-sdxl",
        "stabilityai/stable-diffusion-xl-base-1.0 unet/config.json",
        _unet(**SDXL_UNET),
        320,
        sgm=True,
    ),
    Table(
        "unet-sdxl-refiner",
        "stabilityai/stable-diffusion-xl-refiner-1.0 unet/config.json",
        _unet(
            sample_size=128,
            block_out_channels=(384, 768, 1536, 1536),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=4,
            attention_head_dim=(6, 12, 24, 24),
            cross_attention_dim=1280,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2560,
        ),
        384,
        sgm=True,
    ),
    # --- SD3 family (SD3Transformer2DModel)
    Table(
        "sd3-medium",
        "stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json",
        _diffusers_table(
            "SD3Transformer2DModel",
            num_layers=24,
            num_attention_heads=24,
            caption_projection_dim=1536,
            pos_embed_max_size=192,
            **SD3_BASE,
        ),
        1536,
        original=SD3_ORIGINAL,
    ),
    Table(
        "sd35-medium",
        "stabilityai/stable-diffusion-3.5-medium transformer/config.json (attn2 in blocks 0-12)",
        _diffusers_table(
            "SD3Transformer2DModel",
            num_layers=24,
            num_attention_heads=24,
            caption_projection_dim=1536,
            pos_embed_max_size=384,
            qk_norm="rms_norm",
            dual_attention_layers=tuple(range(13)),
            **SD3_BASE,
        ),
        1536,
        original=SD3_ORIGINAL,
    ),
    Table(
        "sd35-large",
        "stabilityai/stable-diffusion-3.5-large transformer/config.json",
        _diffusers_table(
            "SD3Transformer2DModel",
            num_layers=38,
            num_attention_heads=38,
            caption_projection_dim=2432,
            pos_embed_max_size=192,
            qk_norm="rms_norm",
            **SD3_BASE,
        ),
        2432,
        original=SD3_ORIGINAL,
    ),
    # --- FLUX.1 (FluxTransformer2DModel) and Chroma
    Table(
        "flux1-dev",
        "black-forest-labs/FLUX.1-dev transformer/config.json (guidance_embeds true)",
        _diffusers_table("FluxTransformer2DModel", guidance_embeds=True, **FLUX1),
        3072,
        original=FLUX1_ORIGINAL,
    ),
    Table(
        "flux1-schnell",
        "black-forest-labs/FLUX.1-schnell transformer/config.json (no guidance embedder)",
        _diffusers_table("FluxTransformer2DModel", guidance_embeds=False, **FLUX1),
        3072,
        original=FLUX1_ORIGINAL,
    ),
    Table(
        "flux1-fill",
        "black-forest-labs/FLUX.1-Fill-dev transformer/config.json (in_channels 384)",
        _diffusers_table(
            "FluxTransformer2DModel", guidance_embeds=True, out_channels=64, **{**FLUX1, "in_channels": 384}
        ),
        3072,
        original=FLUX1_ORIGINAL,
    ),
    Table(
        "flux1-control",
        "black-forest-labs/FLUX.1-Depth-dev / Canny-dev transformer/config.json (in 128)",
        _diffusers_table(
            "FluxTransformer2DModel", guidance_embeds=True, out_channels=64, **{**FLUX1, "in_channels": 128}
        ),
        3072,
        original=FLUX1_ORIGINAL,
    ),
    Table(
        "chroma",
        "lodestones/Chroma1-HD transformer/config.json (= ChromaTransformer2DModel defaults)",
        _diffusers_table("ChromaTransformer2DModel"),
        3072,
        original=FLUX1_ORIGINAL,
    ),
    # --- FLUX.2 (Flux2Transformer2DModel); numbers from model-families.md (convert_flux2_to_diffusers.py)
    Table(
        "flux2-dev",
        "black-forest-labs/FLUX.2-dev: convert_flux2_to_diffusers.py (= class defaults)",
        _diffusers_table("Flux2Transformer2DModel"),
        6144,
        original=FLUX2_ORIGINAL,
    ),
    Table(
        "flux2-klein-4b",
        "FLUX.2-klein-4B: convert_flux2_to_diffusers.py (5 + 20 blocks, 24 heads, joint 7680)",
        _diffusers_table(
            "Flux2Transformer2DModel",
            num_layers=5,
            num_single_layers=20,
            num_attention_heads=24,
            joint_attention_dim=7680,
            guidance_embeds=False,
        ),
        3072,
        original=FLUX2_ORIGINAL,
    ),
    Table(
        "flux2-klein-9b",
        "FLUX.2-klein-9B: convert_flux2_to_diffusers.py (8 + 24 blocks, 32 heads, joint 12288)",
        _diffusers_table(
            "Flux2Transformer2DModel",
            num_layers=8,
            num_single_layers=24,
            num_attention_heads=32,
            joint_attention_dim=12288,
            guidance_embeds=False,
        ),
        4096,
        original=FLUX2_ORIGINAL,
    ),
    # --- other image DiTs
    Table(
        "hidream-i1",
        "HiDream-ai/HiDream-I1-Full transformer/config.json",
        _diffusers_table(
            "HiDreamImageTransformer2DModel",
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=16,
            num_single_layers=32,
            attention_head_dim=128,
            num_attention_heads=20,
            caption_channels=[4096, 4096],
            text_emb_dim=2048,
            num_routed_experts=4,
            num_activated_experts=2,
            axes_dims_rope=(64, 32, 32),
            max_resolution=(128, 128),
            llama_layers=list(range(48)),
        ),
        2560,
    ),
    Table(
        "qwen-image",
        "Qwen/Qwen-Image transformer/config.json (= QwenImageTransformer2DModel defaults)",
        _diffusers_table("QwenImageTransformer2DModel"),
        3072,
    ),
    Table(
        "lumina2",
        "Alpha-VLLM/Lumina-Image-2.0 transformer/config.json (cap_feat_dim 2304 = Gemma-2-2B width)",
        _diffusers_table("Lumina2Transformer2DModel", cap_feat_dim=2304),
        2304,
    ),
    Table(
        "z-image",
        "Tongyi-MAI/Z-Image-Turbo transformer/config.json (= ZImageTransformer2DModel defaults)",
        _diffusers_table("ZImageTransformer2DModel"),
        3840,
    ),
    Table(
        "hunyuan-image-2.1",
        "tencent/HunyuanImage-2.1 (= HunyuanImageTransformer2DModel defaults)",
        _diffusers_table("HunyuanImageTransformer2DModel"),
        3584,
    ),
    Table(
        "sana-1600m",
        "Efficient-Large-Model/Sana_1600M_1024px_diffusers transformer/config.json",
        _diffusers_table(
            "SanaTransformer2DModel",
            num_attention_heads=70,
            attention_head_dim=32,
            num_layers=20,
            num_cross_attention_heads=20,
            cross_attention_head_dim=112,
            cross_attention_dim=2240,
            caption_channels=2304,
            sample_size=32,
        ),
        2240,
    ),
    Table(
        "sana-600m",
        "Efficient-Large-Model/Sana_600M_1024px_diffusers transformer/config.json",
        _diffusers_table(
            "SanaTransformer2DModel",
            num_attention_heads=36,
            attention_head_dim=32,
            num_layers=28,
            num_cross_attention_heads=16,
            cross_attention_head_dim=72,
            cross_attention_dim=1152,
            caption_channels=2304,
            sample_size=32,
        ),
        1152,
    ),
    Table(
        "pixart-alpha",
        "PixArt-alpha/PixArt-XL-2-1024-MS transformer/config.json (additional conditions)",
        _diffusers_table(
            "PixArtTransformer2DModel", sample_size=128, caption_channels=4096, use_additional_conditions=True
        ),
        1152,
    ),
    Table(
        "pixart-sigma",
        "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS transformer/config.json",
        _diffusers_table(
            "PixArtTransformer2DModel",
            sample_size=128,
            caption_channels=4096,
            use_additional_conditions=False,
        ),
        1152,
    ),
    Table(
        "auraflow",
        "fal/AuraFlow-v0.3 transformer/config.json (= AuraFlowTransformer2DModel defaults)",
        _diffusers_table("AuraFlowTransformer2DModel"),
        3072,
    ),
    Table(
        "cogview4",
        "THUDM/CogView4-6B transformer/config.json (32 x 128 heads, 28 layers; the class default "
        "2560 x 30 is CogView3-Plus)",
        _diffusers_table(
            "CogView4Transformer2DModel", num_layers=28, attention_head_dim=128, num_attention_heads=32
        ),
        4096,
    ),
    # --- video DiTs
    Table(
        "hunyuan-video",
        "hunyuanvideo-community/HunyuanVideo transformer/config.json (= class defaults)",
        _diffusers_table("HunyuanVideoTransformer3DModel"),
        3072,
        original=HUNYUAN_VIDEO_ORIGINAL,
    ),
    Table(
        "hunyuan-video-1.5",
        "tencent/HunyuanVideo-1.5 (= HunyuanVideo15Transformer3DModel defaults, 54 layers)",
        _diffusers_table("HunyuanVideo15Transformer3DModel"),
        2048,
    ),
    Table(
        "wan-1.3b",
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json (12 heads, ffn 8960, 30 layers)",
        _diffusers_table(
            "WanTransformer3DModel",
            **{**WAN_14B, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
        ),
        1536,
        original=WAN_ORIGINAL,
    ),
    Table(
        "wan-14b-t2v",
        "Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json (= Wan2.2-T2V-A14B experts)",
        _diffusers_table("WanTransformer3DModel", **WAN_14B),
        5120,
        original=WAN_ORIGINAL,
    ),
    Table(
        "wan-14b-i2v-2.2",
        "Wan-AI/Wan2.2-I2V-A14B-Diffusers transformer/config.json (in 36, no image branch)",
        _diffusers_table("WanTransformer3DModel", **{**WAN_14B, "in_channels": 36}),
        5120,
        original=WAN_ORIGINAL,
    ),
    Table(
        "wan-14b-i2v-2.1",
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers transformer/config.json (image_dim 1280, "
        "added_kv_proj_dim 5120)",
        _diffusers_table(
            "WanTransformer3DModel", image_dim=1280, added_kv_proj_dim=5120, **{**WAN_14B, "in_channels": 36}
        ),
        5120,
        original=WAN_ORIGINAL,
    ),
    Table(
        "wan-ti2v-5b",
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/config.json (24 heads, ffn 14336, in/out 48)",
        _diffusers_table(
            "WanTransformer3DModel",
            **{
                **WAN_14B,
                "num_attention_heads": 24,
                "ffn_dim": 14336,
                "num_layers": 30,
                "in_channels": 48,
                "out_channels": 48,
            },
        ),
        3072,
        original=WAN_ORIGINAL,
    ),
    Table(
        "ltx-video-2b",
        "Lightricks/LTX-Video 0.9.x 2B (= LTXVideoTransformer3DModel defaults)",
        _diffusers_table("LTXVideoTransformer3DModel"),
        2048,
    ),
    Table(
        "ltx-video-13b",
        "Lightricks/LTX-Video-0.9.7-dev transformer/config.json (32 x 128, 48 layers, cross 4096)",
        _diffusers_table(
            "LTXVideoTransformer3DModel", attention_head_dim=128, cross_attention_dim=4096, num_layers=48
        ),
        4096,
    ),
    Table(
        "ltx2",
        "Lightricks/LTX-2 (= LTX2VideoTransformer3DModel defaults)",
        _diffusers_table("LTX2VideoTransformer3DModel"),
        4096,
    ),
    Table(
        "cogvideox-2b",
        "THUDM/CogVideoX-2b transformer/config.json (= class defaults)",
        _diffusers_table("CogVideoXTransformer3DModel"),
        1920,
    ),
    Table(
        "cogvideox-5b",
        "THUDM/CogVideoX-5b transformer/config.json (48 heads, 42 layers, rotary)",
        _diffusers_table(
            "CogVideoXTransformer3DModel",
            num_attention_heads=48,
            num_layers=42,
            use_rotary_positional_embeddings=True,
        ),
        3072,
    ),
    Table(
        "cogvideox-5b-i2v",
        "THUDM/CogVideoX-5b-I2V transformer/config.json (in 32, learned positions)",
        _diffusers_table(
            "CogVideoXTransformer3DModel",
            num_attention_heads=48,
            num_layers=42,
            in_channels=32,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=True,
        ),
        3072,
    ),
    Table(
        "mochi",
        "genmo/mochi-1-preview transformer/config.json (= MochiTransformer3DModel defaults)",
        _diffusers_table("MochiTransformer3DModel"),
        3072,
    ),
)


# ---------------------------------------------------------------------------------------------------- LLMs


def _llama(hidden, layers, heads, kv, ffn, vocab, **extra):
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=ffn,
        vocab_size=vocab,
        **extra,
    )


@dataclass(frozen=True)
class Llm:
    key: str
    source: str
    class_name: str
    config_class: str
    config: dict
    expand_experts: bool = False
    also: tuple[str, str, dict] | None = (
        None  # a second class whose names the same weights are also saved under
    )

    def table(self) -> Table:
        also = None
        if self.also:
            class_name, config_class, config = self.also
            also = _transformers_table(class_name, config_class, **config)
        hidden = self.config.get("hidden_size") or self.config.get("text_config", {}).get("hidden_size")
        return Table(
            self.key,
            self.source,
            _transformers_table(self.class_name, self.config_class, self.expand_experts, also, **self.config),
            hidden,
        )


def _causal(key, source, model, config_class, **config):
    return Llm(key, source, f"{model}ForCausalLM", config_class, config)


def _gemma3_multimodal(key, source, text, vision_layers=27):
    # The 4B/12B/27B checkpoints are Gemma3ForConditionalGeneration (SigLIP so400m vision tower, text under
    # `language_model`); LoRAs trained text-only load Gemma3ForCausalLM on the same weights (`model.layers`).
    vision = dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=vision_layers,
        num_attention_heads=16,
        image_size=896,
        patch_size=14,
        vision_use_head=False,
    )
    return Llm(
        key,
        source,
        "Gemma3ForConditionalGeneration",
        "Gemma3Config",
        dict(text_config=text, vision_config=vision, mm_tokens_per_image=256),
        also=("Gemma3ForCausalLM", "Gemma3TextConfig", text),
    )


# meta-llama/Llama-4-*/config.json. The checkpoints fuse the routed experts too, so LoRAs adapt attention, the
# shared expert and the router. Text-only trainers load Llama4ForCausalLM on the same weights (model.layers).
LLAMA4_SCOUT_TEXT = dict(
    hidden_size=5120,
    num_hidden_layers=48,
    num_attention_heads=40,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=8192,
    intermediate_size_mlp=16384,
    num_local_experts=16,
    interleave_moe_layer_step=1,
    vocab_size=202048,
)
LLAMA4_MAVERICK_TEXT = {**LLAMA4_SCOUT_TEXT, "num_local_experts": 128, "interleave_moe_layer_step": 2}
LLAMA4_VISION = dict(
    num_hidden_layers=34,
    hidden_size=1408,
    intermediate_size=5632,
    num_attention_heads=16,
    vision_output_dim=4096,
    projector_input_dim=4096,
    projector_output_dim=4096,
)

LLM_TABLES: tuple[Llm, ...] = (
    # Llama 2 / 3 / 3.1 / 3.2 / 3.3 (published config.json of each meta-llama repo)
    _causal(
        "llama2-7b",
        "meta-llama/Llama-2-7b-hf config.json",
        "Llama",
        "LlamaConfig",
        **_llama(4096, 32, 32, 32, 11008, 32000),
    ),
    _causal(
        "llama2-13b",
        "meta-llama/Llama-2-13b-hf config.json",
        "Llama",
        "LlamaConfig",
        **_llama(5120, 40, 40, 40, 13824, 32000),
    ),
    _causal(
        "llama2-70b",
        "meta-llama/Llama-2-70b-hf config.json",
        "Llama",
        "LlamaConfig",
        **_llama(8192, 80, 64, 8, 28672, 32000),
    ),
    _causal(
        "llama3-8b",
        "meta-llama/Meta-Llama-3-8B config.json (3.1-8B same widths)",
        "Llama",
        "LlamaConfig",
        **_llama(4096, 32, 32, 8, 14336, 128256),
    ),
    _causal(
        "llama3-70b",
        "meta-llama/Meta-Llama-3-70B config.json (3.1 / 3.3 same widths)",
        "Llama",
        "LlamaConfig",
        **_llama(8192, 80, 64, 8, 28672, 128256),
    ),
    _causal(
        "llama3-405b",
        "meta-llama/Llama-3.1-405B config.json",
        "Llama",
        "LlamaConfig",
        **_llama(16384, 126, 128, 8, 53248, 128256),
    ),
    _causal(
        "llama3.2-1b",
        "meta-llama/Llama-3.2-1B config.json (tied embeddings)",
        "Llama",
        "LlamaConfig",
        **_llama(2048, 16, 32, 8, 8192, 128256, head_dim=64, tie_word_embeddings=True),
    ),
    _causal(
        "llama3.2-3b",
        "meta-llama/Llama-3.2-3B config.json (tied embeddings)",
        "Llama",
        "LlamaConfig",
        **_llama(3072, 28, 24, 8, 8192, 128256, head_dim=128, tie_word_embeddings=True),
    ),
    Llm(
        "llama4-scout",
        "meta-llama/Llama-4-Scout-17B-16E config.json",
        "Llama4ForConditionalGeneration",
        "Llama4Config",
        dict(text_config=LLAMA4_SCOUT_TEXT, vision_config=LLAMA4_VISION),
        also=("Llama4ForCausalLM", "Llama4TextConfig", LLAMA4_SCOUT_TEXT),
    ),
    Llm(
        "llama4-maverick",
        "meta-llama/Llama-4-Maverick-17B-128E config.json (MoE every 2nd layer)",
        "Llama4ForConditionalGeneration",
        "Llama4Config",
        dict(text_config=LLAMA4_MAVERICK_TEXT, vision_config=LLAMA4_VISION),
        also=("Llama4ForCausalLM", "Llama4TextConfig", LLAMA4_MAVERICK_TEXT),
    ),
    # Mistral (mistralai/*/config.json; NeMo, Small and Ministral from model-families.md)
    _causal(
        "mistral-7b",
        "mistralai/Mistral-7B-v0.1 config.json",
        "Mistral",
        "MistralConfig",
        **_llama(4096, 32, 32, 8, 14336, 32000),
    ),
    _causal(
        "mistral-7b-v0.3",
        "mistralai/Mistral-7B-v0.3 config.json (vocab 32768)",
        "Mistral",
        "MistralConfig",
        **_llama(4096, 32, 32, 8, 14336, 32768),
    ),
    _causal(
        "mistral-nemo",
        "mistralai/Mistral-Nemo-Base-2407 config.json (head_dim 128: q_out 4096)",
        "Mistral",
        "MistralConfig",
        **_llama(5120, 40, 32, 8, 14336, 131072, head_dim=128),
    ),
    _causal(
        "mistral-small-24b",
        "mistralai/Mistral-Small-24B-Base-2501 config.json",
        "Mistral",
        "MistralConfig",
        **_llama(5120, 40, 32, 8, 32768, 131072, head_dim=128),
    ),
    _causal(
        "ministral-8b",
        "mistralai/Ministral-8B-Instruct-2410 config.json",
        "Mistral",
        "MistralConfig",
        **_llama(4096, 36, 32, 8, 12288, 131072, head_dim=128),
    ),
    _causal(
        "mistral-large",
        "mistralai/Mistral-Large-Instruct-2407 config.json",
        "Mistral",
        "MistralConfig",
        **_llama(12288, 88, 96, 8, 28672, 32768),
    ),
    # Qwen2 / Qwen2.5 (Qwen/*/config.json; q/k/v carry biases, which do not change the widths)
    _causal(
        "qwen2-0.5b",
        "Qwen/Qwen2.5-0.5B config.json (= Qwen2-0.5B)",
        "Qwen2",
        "Qwen2Config",
        **_llama(896, 24, 14, 2, 4864, 151936, tie_word_embeddings=True),
    ),
    _causal(
        "qwen2-1.5b",
        "Qwen/Qwen2.5-1.5B config.json (= Qwen2-1.5B)",
        "Qwen2",
        "Qwen2Config",
        **_llama(1536, 28, 12, 2, 8960, 151936, tie_word_embeddings=True),
    ),
    _causal(
        "qwen2.5-3b",
        "Qwen/Qwen2.5-3B config.json",
        "Qwen2",
        "Qwen2Config",
        **_llama(2048, 36, 16, 2, 11008, 151936, tie_word_embeddings=True),
    ),
    _causal(
        "qwen2-7b",
        "Qwen/Qwen2.5-7B config.json (= Qwen2-7B)",
        "Qwen2",
        "Qwen2Config",
        **_llama(3584, 28, 28, 4, 18944, 152064),
    ),
    _causal(
        "qwen2.5-14b",
        "Qwen/Qwen2.5-14B config.json",
        "Qwen2",
        "Qwen2Config",
        **_llama(5120, 48, 40, 8, 13824, 152064),
    ),
    _causal(
        "qwen2.5-32b",
        "Qwen/Qwen2.5-32B config.json",
        "Qwen2",
        "Qwen2Config",
        **_llama(5120, 64, 40, 8, 27648, 152064),
    ),
    _causal(
        "qwen2-72b",
        "Qwen/Qwen2.5-72B config.json (= Qwen2-72B)",
        "Qwen2",
        "Qwen2Config",
        **_llama(8192, 80, 64, 8, 29568, 152064),
    ),
    # Qwen3 dense and MoE (Qwen/Qwen3-*/config.json; head_dim 128 throughout)
    _causal(
        "qwen3-0.6b",
        "Qwen/Qwen3-0.6B config.json",
        "Qwen3",
        "Qwen3Config",
        **_llama(1024, 28, 16, 8, 3072, 151936, head_dim=128, tie_word_embeddings=True),
    ),
    _causal(
        "qwen3-1.7b",
        "Qwen/Qwen3-1.7B config.json",
        "Qwen3",
        "Qwen3Config",
        **_llama(2048, 28, 16, 8, 6144, 151936, head_dim=128, tie_word_embeddings=True),
    ),
    _causal(
        "qwen3-4b",
        "Qwen/Qwen3-4B config.json",
        "Qwen3",
        "Qwen3Config",
        **_llama(2560, 36, 32, 8, 9728, 151936, head_dim=128, tie_word_embeddings=True),
    ),
    _causal(
        "qwen3-8b",
        "Qwen/Qwen3-8B config.json",
        "Qwen3",
        "Qwen3Config",
        **_llama(4096, 36, 32, 8, 12288, 151936, head_dim=128),
    ),
    _causal(
        "qwen3-14b",
        "Qwen/Qwen3-14B config.json",
        "Qwen3",
        "Qwen3Config",
        **_llama(5120, 40, 40, 8, 17408, 151936, head_dim=128),
    ),
    _causal(
        "qwen3-32b",
        "Qwen/Qwen3-32B config.json",
        "Qwen3",
        "Qwen3Config",
        **_llama(5120, 64, 64, 8, 25600, 151936, head_dim=128),
    ),
    Llm(
        "qwen3-30b-a3b",
        "Qwen/Qwen3-30B-A3B config.json (128 experts of 768)",
        "Qwen3MoeForCausalLM",
        "Qwen3MoeConfig",
        _llama(
            2048,
            48,
            32,
            4,
            6144,
            151936,
            head_dim=128,
            moe_intermediate_size=768,
            num_experts=128,
            num_experts_per_tok=8,
        ),
        expand_experts=True,
    ),
    Llm(
        "qwen3-235b-a22b",
        "Qwen/Qwen3-235B-A22B config.json (128 experts of 1536)",
        "Qwen3MoeForCausalLM",
        "Qwen3MoeConfig",
        _llama(
            4096,
            94,
            64,
            4,
            12288,
            151936,
            head_dim=128,
            moe_intermediate_size=1536,
            num_experts=128,
            num_experts_per_tok=8,
        ),
        expand_experts=True,
    ),
    # Gemma 2 / 3 (google/gemma-*/config.json)
    _causal(
        "gemma2-2b",
        "google/gemma-2-2b config.json",
        "Gemma2",
        "Gemma2Config",
        **_llama(2304, 26, 8, 4, 9216, 256000, head_dim=256),
    ),
    _causal(
        "gemma2-9b",
        "google/gemma-2-9b config.json",
        "Gemma2",
        "Gemma2Config",
        **_llama(3584, 42, 16, 8, 14336, 256000, head_dim=256),
    ),
    _causal(
        "gemma2-27b",
        "google/gemma-2-27b config.json",
        "Gemma2",
        "Gemma2Config",
        **_llama(4608, 46, 32, 16, 36864, 256000, head_dim=128),
    ),
    _causal(
        "gemma3-1b",
        "google/gemma-3-1b-pt config.json (text only)",
        "Gemma3",
        "Gemma3TextConfig",
        **_llama(1152, 26, 4, 1, 6912, 262144, head_dim=256),
    ),
    _gemma3_multimodal(
        "gemma3-4b", "google/gemma-3-4b-pt config.json", _llama(2560, 34, 8, 4, 10240, 262208, head_dim=256)
    ),
    _gemma3_multimodal(
        "gemma3-12b",
        "google/gemma-3-12b-pt config.json",
        _llama(3840, 48, 16, 8, 15360, 262208, head_dim=256),
    ),
    _gemma3_multimodal(
        "gemma3-27b",
        "google/gemma-3-27b-pt config.json",
        _llama(5376, 62, 32, 16, 21504, 262208, head_dim=128),
    ),
    # Phi-3 / 3.5 / 4 (microsoft/*/config.json; fused qkv_proj and gate_up_proj)
    _causal(
        "phi3-mini",
        "microsoft/Phi-3-mini-4k-instruct config.json (= Phi-3.5-mini)",
        "Phi3",
        "Phi3Config",
        **_llama(3072, 32, 32, 32, 8192, 32064),
    ),
    _causal(
        "phi3-medium",
        "microsoft/Phi-3-medium-4k-instruct config.json",
        "Phi3",
        "Phi3Config",
        **_llama(5120, 40, 40, 10, 17920, 32064),
    ),
    _causal(
        "phi4", "microsoft/phi-4 config.json", "Phi3", "Phi3Config", **_llama(5120, 40, 40, 10, 17920, 100352)
    ),
    _causal(
        "phi4-mini",
        "microsoft/Phi-4-mini-instruct config.json (tied embeddings)",
        "Phi3",
        "Phi3Config",
        **_llama(3072, 32, 24, 8, 8192, 200064, tie_word_embeddings=True, partial_rotary_factor=0.75),
    ),
    # GPT-2 (openai-community/gpt2*/config.json) and BERT (google-bert/bert-*-uncased/config.json)
    Llm(
        "gpt2",
        "openai-community/gpt2 config.json",
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(n_embd=768, n_layer=12, n_head=12),
    ),
    Llm(
        "gpt2-medium",
        "openai-community/gpt2-medium config.json",
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(n_embd=1024, n_layer=24, n_head=16),
    ),
    Llm(
        "gpt2-large",
        "openai-community/gpt2-large config.json",
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(n_embd=1280, n_layer=36, n_head=20),
    ),
    Llm(
        "gpt2-xl",
        "openai-community/gpt2-xl config.json",
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(n_embd=1600, n_layer=48, n_head=25),
    ),
    # BertForMaskedLM has the `bert.` trunk every task head shares; the bare BertModel names come with `also`.
    Llm(
        "bert-base",
        "google-bert/bert-base-uncased config.json",
        "BertForMaskedLM",
        "BertConfig",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        also=(
            "BertModel",
            "BertConfig",
            dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        ),
    ),
    Llm(
        "bert-large",
        "google-bert/bert-large-uncased config.json",
        "BertForMaskedLM",
        "BertConfig",
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
        also=(
            "BertModel",
            "BertConfig",
            dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
        ),
    ),
)

ALL_TABLES: dict[str, Table] = {t.key: t for t in (*TABLES, *(llm.table() for llm in LLM_TABLES))}


# --------------------------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class BaseEntry:
    """One base checkpoint (or a set the shapes cannot split) and its components' tables.

    `variant_of` names an entry that differs from this one only in layers LoRAs seldom adapt (FLUX.1 Fill's
    384-channel `x_embedder`, Wan2.1-I2V's image cross-attention): when both fit, the variant is dropped, and
    it is claimed only when a module fits it alone."""

    family: str
    label: str
    repo_ids: tuple[str, ...]
    components: Mapping[str, str]  # component → table key
    variant_of: str | None = None
    note: str = field(default="")


SDXL_REPOS = (
    "stabilityai/stable-diffusion-xl-base-1.0",
    "OnomaAIResearch/Illustrious-xl-early-release-v0",
    "Laxhar/noobai-XL-1.1",
    "playgroundai/playground-v2.5-1024px-aesthetic",
)

DIFFUSION_ENTRIES: tuple[BaseEntry, ...] = (
    BaseEntry(
        "sd1",
        "SD 1.x",
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "CompVis/stable-diffusion-v1-4"),
        {DENOISER: "unet-sd1", TE1: "clip-vit-l"},
    ),
    BaseEntry(
        "sd2",
        "SD 2.x",
        ("stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1-base"),
        {DENOISER: "unet-sd2", TE1: "openclip-vit-h"},
    ),
    BaseEntry(
        "sdxl",
        "SDXL base (and fine-tunes: Pony, Illustrious, NoobAI, Playground v2.5)",
        SDXL_REPOS,
        {DENOISER: "unet-sdxl", TE1: "clip-vit-l", TE2: "openclip-vit-bigg"},
    ),
    BaseEntry(
        "sdxl",
        "SDXL refiner",
        ("stabilityai/stable-diffusion-xl-refiner-1.0",),
        {DENOISER: "unet-sdxl-refiner", TE2: "openclip-vit-bigg"},
    ),
    BaseEntry(
        "sd3",
        "SD3 medium",
        ("stabilityai/stable-diffusion-3-medium-diffusers",),
        {DENOISER: "sd3-medium", TE1: "clip-vit-l-proj", TE2: "openclip-vit-bigg", TE3: "t5-xxl"},
    ),
    BaseEntry(
        "sd3",
        "SD3.5 medium",
        ("stabilityai/stable-diffusion-3.5-medium",),
        {DENOISER: "sd35-medium", TE1: "clip-vit-l-proj", TE2: "openclip-vit-bigg", TE3: "t5-xxl"},
    ),
    BaseEntry(
        "sd3",
        "SD3.5 large",
        ("stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-large-turbo"),
        {DENOISER: "sd35-large", TE1: "clip-vit-l-proj", TE2: "openclip-vit-bigg", TE3: "t5-xxl"},
    ),
    # kohya names FLUX.1's T5 `lora_te3_` (networks/lora_flux.py) where diffusers says text_encoder_2.
    BaseEntry(
        "flux1",
        "FLUX.1 dev / Kontext / Krea",
        (
            "black-forest-labs/FLUX.1-dev",
            "black-forest-labs/FLUX.1-Kontext-dev",
            "black-forest-labs/FLUX.1-Krea-dev",
        ),
        {DENOISER: "flux1-dev", TE1: "clip-vit-l", TE2: "t5-xxl", TE3: "t5-xxl"},
    ),
    BaseEntry(
        "flux1",
        "FLUX.1 schnell",
        ("black-forest-labs/FLUX.1-schnell",),
        {DENOISER: "flux1-schnell", TE1: "clip-vit-l", TE2: "t5-xxl", TE3: "t5-xxl"},
    ),
    BaseEntry(
        "flux1",
        "FLUX.1 Fill",
        ("black-forest-labs/FLUX.1-Fill-dev",),
        {DENOISER: "flux1-fill", TE1: "clip-vit-l", TE2: "t5-xxl", TE3: "t5-xxl"},
        variant_of="FLUX.1 dev / Kontext / Krea",
    ),
    BaseEntry(
        "flux1",
        "FLUX.1 Depth / Canny",
        ("black-forest-labs/FLUX.1-Depth-dev", "black-forest-labs/FLUX.1-Canny-dev"),
        {DENOISER: "flux1-control", TE1: "clip-vit-l", TE2: "t5-xxl", TE3: "t5-xxl"},
        variant_of="FLUX.1 dev / Kontext / Krea",
    ),
    # Chroma drops Flux's modulation layers; a LoRA of attention and MLPs alone fits both and is called FLUX.1
    # (model-families.md puts Chroma in the FLUX.1 ambiguity class for such LoRAs).
    BaseEntry(
        "chroma",
        "Chroma",
        ("lodestones/Chroma1-HD", "lodestones/Chroma1-Base", "lodestones/Chroma"),
        {DENOISER: "chroma", TE3: "t5-xxl"},
        variant_of="FLUX.1 dev / Kontext / Krea",
    ),
    BaseEntry("flux2", "FLUX.2 dev", ("black-forest-labs/FLUX.2-dev",), {DENOISER: "flux2-dev"}),
    BaseEntry(
        "flux2",
        "FLUX.2 klein 4B",
        ("black-forest-labs/FLUX.2-klein-4B", "black-forest-labs/FLUX.2-klein-base-4B"),
        {DENOISER: "flux2-klein-4b"},
    ),
    BaseEntry(
        "flux2",
        "FLUX.2 klein 9B",
        ("black-forest-labs/FLUX.2-klein-9B", "black-forest-labs/FLUX.2-klein-base-9B"),
        {DENOISER: "flux2-klein-9b"},
    ),
    BaseEntry(
        "hidream",
        "HiDream-I1",
        ("HiDream-ai/HiDream-I1-Full", "HiDream-ai/HiDream-I1-Dev", "HiDream-ai/HiDream-I1-Fast"),
        {DENOISER: "hidream-i1"},
    ),
    BaseEntry(
        "qwen-image",
        "Qwen-Image (and Edit)",
        ("Qwen/Qwen-Image", "Qwen/Qwen-Image-Edit", "Qwen/Qwen-Image-Edit-2509"),
        {DENOISER: "qwen-image"},
    ),
    BaseEntry("lumina2", "Lumina-Image 2.0", ("Alpha-VLLM/Lumina-Image-2.0",), {DENOISER: "lumina2"}),
    BaseEntry("z-image", "Z-Image Turbo", ("Tongyi-MAI/Z-Image-Turbo",), {DENOISER: "z-image"}),
    BaseEntry(
        "hunyuan-video",
        "HunyuanVideo",
        ("tencent/HunyuanVideo", "hunyuanvideo-community/HunyuanVideo"),
        {DENOISER: "hunyuan-video"},
    ),
    BaseEntry(
        "hunyuan-video", "HunyuanVideo 1.5", ("tencent/HunyuanVideo-1.5",), {DENOISER: "hunyuan-video-1.5"}
    ),
    BaseEntry(
        "hunyuan-image", "HunyuanImage 2.1", ("tencent/HunyuanImage-2.1",), {DENOISER: "hunyuan-image-2.1"}
    ),
    BaseEntry(
        "wan",
        "Wan2.1 1.3B",
        ("Wan-AI/Wan2.1-T2V-1.3B", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
        {DENOISER: "wan-1.3b"},
    ),
    BaseEntry(
        "wan",
        "Wan 14B T2V (2.1, 2.2 A14B high / low)",
        (
            "Wan-AI/Wan2.1-T2V-14B",
            "Wan-AI/Wan2.1-T2V-14B-Diffusers",
            "Wan-AI/Wan2.2-T2V-A14B",
            "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        ),
        {DENOISER: "wan-14b-t2v"},
    ),
    BaseEntry(
        "wan",
        "Wan2.2 I2V-A14B (high / low)",
        ("Wan-AI/Wan2.2-I2V-A14B", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
        {DENOISER: "wan-14b-i2v-2.2"},
    ),
    BaseEntry(
        "wan",
        "Wan2.1 I2V / FLF2V 14B",
        ("Wan-AI/Wan2.1-I2V-14B-480P", "Wan-AI/Wan2.1-I2V-14B-720P", "Wan-AI/Wan2.1-FLF2V-14B-720P"),
        {DENOISER: "wan-14b-i2v-2.1"},
        variant_of="Wan 14B T2V (2.1, 2.2 A14B high / low)",
    ),
    BaseEntry(
        "wan",
        "Wan2.2 TI2V-5B",
        ("Wan-AI/Wan2.2-TI2V-5B", "Wan-AI/Wan2.2-TI2V-5B-Diffusers"),
        {DENOISER: "wan-ti2v-5b"},
    ),
    BaseEntry("ltx-video", "LTX-Video 2B", ("Lightricks/LTX-Video",), {DENOISER: "ltx-video-2b"}),
    BaseEntry(
        "ltx-video",
        "LTX-Video 13B",
        ("Lightricks/LTX-Video-0.9.7-dev", "Lightricks/LTX-Video"),
        {DENOISER: "ltx-video-13b"},
    ),
    BaseEntry("ltx2", "LTX-2", ("Lightricks/LTX-2",), {DENOISER: "ltx2"}),
    BaseEntry(
        "sana",
        "Sana 1600M",
        (
            "Efficient-Large-Model/Sana_1600M_1024px_diffusers",
            "Efficient-Large-Model/Sana_1600M_512px_diffusers",
        ),
        {DENOISER: "sana-1600m"},
    ),
    BaseEntry(
        "sana", "Sana 600M", ("Efficient-Large-Model/Sana_600M_1024px_diffusers",), {DENOISER: "sana-600m"}
    ),
    BaseEntry("pixart", "PixArt-alpha", ("PixArt-alpha/PixArt-XL-2-1024-MS",), {DENOISER: "pixart-alpha"}),
    BaseEntry(
        "pixart", "PixArt-Sigma", ("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",), {DENOISER: "pixart-sigma"}
    ),
    BaseEntry(
        "auraflow",
        "AuraFlow",
        ("fal/AuraFlow-v0.3", "fal/AuraFlow-v0.2", "fal/AuraFlow"),
        {DENOISER: "auraflow"},
    ),
    BaseEntry("cogview4", "CogView4 6B", ("THUDM/CogView4-6B",), {DENOISER: "cogview4"}),
    BaseEntry("cogvideox", "CogVideoX 2B", ("THUDM/CogVideoX-2b",), {DENOISER: "cogvideox-2b"}),
    BaseEntry("cogvideox", "CogVideoX 5B", ("THUDM/CogVideoX-5b",), {DENOISER: "cogvideox-5b"}),
    BaseEntry(
        "cogvideox",
        "CogVideoX 5B I2V",
        ("THUDM/CogVideoX-5b-I2V",),
        {DENOISER: "cogvideox-5b-i2v"},
        variant_of="CogVideoX 5B",
    ),
    BaseEntry("mochi", "Mochi 1", ("genmo/mochi-1-preview",), {DENOISER: "mochi"}),
)


def _llm_entry(label: str, table: str, *repos: str) -> BaseEntry:
    return BaseEntry("llm", label, repos, {MODEL: table})


LLM_ENTRIES: tuple[BaseEntry, ...] = (
    _llm_entry("Llama-2 7B", "llama2-7b", "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"),
    _llm_entry("Llama-2 13B", "llama2-13b", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf"),
    _llm_entry("Llama-2 70B", "llama2-70b", "meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-chat-hf"),
    _llm_entry(
        "Llama-3 8B",
        "llama3-8b",
        "meta-llama/Meta-Llama-3-8B",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "meta-llama/Llama-3.1-8B",
        "meta-llama/Llama-3.1-8B-Instruct",
    ),
    _llm_entry(
        "Llama-3 70B",
        "llama3-70b",
        "meta-llama/Meta-Llama-3-70B",
        "meta-llama/Meta-Llama-3-70B-Instruct",
        "meta-llama/Llama-3.1-70B",
        "meta-llama/Llama-3.1-70B-Instruct",
        "meta-llama/Llama-3.3-70B-Instruct",
    ),
    _llm_entry(
        "Llama-3.1 405B", "llama3-405b", "meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.1-405B-Instruct"
    ),
    _llm_entry("Llama-3.2 1B", "llama3.2-1b", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"),
    _llm_entry("Llama-3.2 3B", "llama3.2-3b", "meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.2-3B-Instruct"),
    _llm_entry(
        "Llama-4 Scout 17B-16E",
        "llama4-scout",
        "meta-llama/Llama-4-Scout-17B-16E",
        "meta-llama/Llama-4-Scout-17B-16E-Instruct",
    ),
    _llm_entry(
        "Llama-4 Maverick 17B-128E",
        "llama4-maverick",
        "meta-llama/Llama-4-Maverick-17B-128E",
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
    ),
    _llm_entry(
        "Mistral 7B v0.1 / v0.2",
        "mistral-7b",
        "mistralai/Mistral-7B-v0.1",
        "mistralai/Mistral-7B-Instruct-v0.1",
        "mistralai/Mistral-7B-Instruct-v0.2",
    ),
    _llm_entry(
        "Mistral 7B v0.3",
        "mistral-7b-v0.3",
        "mistralai/Mistral-7B-v0.3",
        "mistralai/Mistral-7B-Instruct-v0.3",
    ),
    _llm_entry(
        "Mistral NeMo 12B",
        "mistral-nemo",
        "mistralai/Mistral-Nemo-Base-2407",
        "mistralai/Mistral-Nemo-Instruct-2407",
    ),
    _llm_entry(
        "Mistral Small 24B",
        "mistral-small-24b",
        "mistralai/Mistral-Small-24B-Base-2501",
        "mistralai/Mistral-Small-24B-Instruct-2501",
    ),
    _llm_entry("Ministral 8B", "ministral-8b", "mistralai/Ministral-8B-Instruct-2410"),
    _llm_entry(
        "Mistral Large 123B",
        "mistral-large",
        "mistralai/Mistral-Large-Instruct-2407",
        "mistralai/Mistral-Large-Instruct-2411",
    ),
    _llm_entry(
        "Qwen2 / 2.5 0.5B", "qwen2-0.5b", "Qwen/Qwen2-0.5B", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct"
    ),
    _llm_entry(
        "Qwen2 / 2.5 1.5B", "qwen2-1.5b", "Qwen/Qwen2-1.5B", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B-Instruct"
    ),
    _llm_entry("Qwen2.5 3B", "qwen2.5-3b", "Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-3B-Instruct"),
    _llm_entry("Qwen2 / 2.5 7B", "qwen2-7b", "Qwen/Qwen2-7B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"),
    _llm_entry("Qwen2.5 14B", "qwen2.5-14b", "Qwen/Qwen2.5-14B", "Qwen/Qwen2.5-14B-Instruct"),
    _llm_entry("Qwen2.5 32B", "qwen2.5-32b", "Qwen/Qwen2.5-32B", "Qwen/Qwen2.5-32B-Instruct"),
    _llm_entry(
        "Qwen2 / 2.5 72B", "qwen2-72b", "Qwen/Qwen2-72B", "Qwen/Qwen2.5-72B", "Qwen/Qwen2.5-72B-Instruct"
    ),
    _llm_entry("Qwen3 0.6B", "qwen3-0.6b", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B-Base"),
    _llm_entry("Qwen3 1.7B", "qwen3-1.7b", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-1.7B-Base"),
    _llm_entry("Qwen3 4B", "qwen3-4b", "Qwen/Qwen3-4B", "Qwen/Qwen3-4B-Base"),
    _llm_entry("Qwen3 8B", "qwen3-8b", "Qwen/Qwen3-8B", "Qwen/Qwen3-8B-Base"),
    _llm_entry("Qwen3 14B", "qwen3-14b", "Qwen/Qwen3-14B", "Qwen/Qwen3-14B-Base"),
    _llm_entry("Qwen3 32B", "qwen3-32b", "Qwen/Qwen3-32B"),
    _llm_entry("Qwen3 30B-A3B", "qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B-Base"),
    _llm_entry("Qwen3 235B-A22B", "qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B"),
    _llm_entry("Gemma-2 2B", "gemma2-2b", "google/gemma-2-2b", "google/gemma-2-2b-it"),
    _llm_entry("Gemma-2 9B", "gemma2-9b", "google/gemma-2-9b", "google/gemma-2-9b-it"),
    _llm_entry("Gemma-2 27B", "gemma2-27b", "google/gemma-2-27b", "google/gemma-2-27b-it"),
    _llm_entry("Gemma-3 1B", "gemma3-1b", "google/gemma-3-1b-pt", "google/gemma-3-1b-it"),
    _llm_entry("Gemma-3 4B", "gemma3-4b", "google/gemma-3-4b-pt", "google/gemma-3-4b-it"),
    _llm_entry("Gemma-3 12B", "gemma3-12b", "google/gemma-3-12b-pt", "google/gemma-3-12b-it"),
    _llm_entry("Gemma-3 27B", "gemma3-27b", "google/gemma-3-27b-pt", "google/gemma-3-27b-it"),
    _llm_entry(
        "Phi-3 / 3.5 mini",
        "phi3-mini",
        "microsoft/Phi-3-mini-4k-instruct",
        "microsoft/Phi-3-mini-128k-instruct",
        "microsoft/Phi-3.5-mini-instruct",
    ),
    _llm_entry(
        "Phi-3 medium",
        "phi3-medium",
        "microsoft/Phi-3-medium-4k-instruct",
        "microsoft/Phi-3-medium-128k-instruct",
    ),
    _llm_entry("Phi-4 14B", "phi4", "microsoft/phi-4"),
    _llm_entry("Phi-4 mini", "phi4-mini", "microsoft/Phi-4-mini-instruct"),
    _llm_entry("GPT-2", "gpt2", "openai-community/gpt2"),
    _llm_entry("GPT-2 medium", "gpt2-medium", "openai-community/gpt2-medium"),
    _llm_entry("GPT-2 large", "gpt2-large", "openai-community/gpt2-large"),
    _llm_entry("GPT-2 XL", "gpt2-xl", "openai-community/gpt2-xl"),
    _llm_entry("BERT base", "bert-base", "google-bert/bert-base-uncased", "google-bert/bert-base-cased"),
    _llm_entry("BERT large", "bert-large", "google-bert/bert-large-uncased", "google-bert/bert-large-cased"),
)

ENTRIES: tuple[BaseEntry, ...] = DIFFUSION_ENTRIES + LLM_ENTRIES


# ---------------------------------------------------------------------------------------------- compaction

_NUMBER = re.compile(r"(?<![^._])\d+(?![^._])")  # a whole path segment of digits (between '.' or '_')


def template_of(path: str) -> tuple[str, tuple[int, ...]]:
    """`transformer_blocks.3.attn.to_out.0` → (`transformer_blocks.{}.attn.to_out.{}`, (3, 0)).

    Digits count as an index only as a whole `.`/`_`-separated segment, so the folded kohya spelling gives
    the same template."""
    return _NUMBER.sub("{}", path), tuple(int(n) for n in _NUMBER.findall(path))


Box = tuple[tuple[int, int], ...]


def boxes_of(indices: Iterable[tuple[int, ...]]) -> tuple[Box, ...]:
    """Cover a set of index tuples with boxes of inclusive ranges: the first position is split into runs of
    consecutive values whose remaining positions have the same cover."""
    indices = sorted(set(indices))
    if not indices or not indices[0]:
        return ((),)
    rest_by_first: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for index in indices:
        rest_by_first[index[0]].append(index[1:])
    covers = [(first, boxes_of(rest)) for first, rest in sorted(rest_by_first.items())]
    runs: list[list] = []  # [start, stop, cover]
    for first, cover in covers:
        if runs and runs[-1][1] == first - 1 and runs[-1][2] == cover:
            runs[-1][1] = first
        else:
            runs.append([first, first, cover])
    return tuple(((start, stop), *box) for start, stop, cover in runs for box in cover)


def compact(widths: Mapping[str, tuple[int, int]]) -> tuple[tuple[str, int, int, tuple[Box, ...]], ...]:
    grouped: dict[tuple[str, int, int], list[tuple[int, ...]]] = defaultdict(list)
    for path, (fan_in, fan_out) in widths.items():
        template, index = template_of(path)
        grouped[(template, fan_in, fan_out)].append(index)
    return tuple(
        (template, fan_in, fan_out, boxes_of(indices))
        for (template, fan_in, fan_out), indices in sorted(grouped.items())
    )


@cache
def table_rows(key: str) -> tuple[tuple[str, int, int, tuple[Box, ...]], ...]:
    return compact(ALL_TABLES[key].widths())


# ------------------------------------------------------------------------------------------------- writing

HEADER = '''"""Base-model signature tables: generated by tests/signatures/generate.py; do not edit.

TABLES: table key → (source, hidden width, namings, rows); a row is (path template, in_features, out_features,
boxes), `{}` marks a numbered path segment and each box gives the inclusive index range of every `{}`.
ENTRIES: (family, label, repo ids, ((component, table key), ...), variant_of). Read by bot/core/signatures.py.
"""

# fmt: off
# ruff: noqa: E501
'''


def render() -> str:
    lines = [HEADER, f"FAMILIES = {FAMILIES!r}", "", "TABLES = {"]
    used = sorted({key for entry in ENTRIES for key in entry.components.values()})
    for key in used:
        table = ALL_TABLES[key]
        lines.append(f"    {key!r}: ({table.source!r}, {table.hidden}, {table.namings!r}, (")
        lines.extend(f"        {row!r}," for row in table_rows(key))
        lines.append("    )),")
    lines += ["}", "", "ENTRIES = ("]
    for entry in ENTRIES:
        components = tuple(entry.components.items())
        lines.append(
            f"    ({entry.family!r}, {entry.label!r}, {entry.repo_ids!r}, {components!r}, "
            f"{entry.variant_of!r}),"
        )
    lines += [")", ""]
    return "\n".join(lines)


def check_entries() -> None:
    labels = {entry.label for entry in ENTRIES}
    for entry in ENTRIES:
        assert entry.family in FAMILIES, entry
        assert entry.variant_of is None or entry.variant_of in labels, entry
        assert all(key in ALL_TABLES for key in entry.components.values()), entry
    assert len(labels) == len(ENTRIES), "entry labels must be unique"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    check_entries()
    started = time.monotonic()
    text = render()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(
        f"wrote {args.output} ({len(text) // 1024} KB, {len(ENTRIES)} entries)"
        f" in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
