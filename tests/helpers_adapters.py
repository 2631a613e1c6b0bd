"""Adapter files for tests, written by the real libraries wherever a library writes the format.

Two kinds of builders:
- small real adapters: tiny models built from configs, LoRA added by peft, saved by peft's `save_pretrained`
  or a diffusers pipeline's `save_lora_weights`, so key names, metadata and configs are exactly what users
  upload;
- header-only files with real-size shapes: models built on the meta device (no memory), LoRA added by peft,
  written by `bot.sandbox.layouts.write_sparse_safetensors` (the data section is a hole: reads as zeros,
  costs no RAM or disk).

Nothing here downloads anything; every base model is built from a config written in the test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from bot.sandbox.layouts import write_sparse_safetensors

# torch dtype -> safetensors dtype name.
SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
}


# ------------------------------------------------------------------------------------------ header-only


def shapes_of(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes of a state dict; works for meta tensors, which have no data."""
    return {name: (SAFETENSORS_DTYPES[t.dtype], tuple(t.shape)) for name, t in state_dict.items()}


def write_header_only_state_dict(
    path: str | Path, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Header-only file of a (meta) state dict. Real one-element tensors keep their value: kohya `.alpha`
    tensors made by diffusers' `convert_state_dict_to_kohya` are real even when the factors are meta."""
    values = {name: t.item() for name, t in state_dict.items() if t.device.type != "meta" and t.numel() == 1}
    write_sparse_safetensors(path, shapes_of(state_dict), metadata=metadata, values=values)
    return Path(path)


def header_only_save_function(metadata: Mapping[str, str] | None = None) -> Callable:
    """A `save_function` for diffusers' `save_lora_weights`: the pipeline names the keys, we write no data."""

    def save(state_dict: Mapping[str, torch.Tensor], filename: str) -> None:
        write_header_only_state_dict(filename, state_dict, metadata=metadata)

    return save


# ------------------------------------------------------------------------------------------------- PEFT


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    values = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def build_peft_llama(
    directory: str | Path,
    r: int = 4,
    alpha: float = 8,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    base_model: str | None = None,
    seed: int = 0,
    **lora_kwargs,
) -> Path:
    """A tiny Llama with a LoRA adapter, saved by PEFT's own `save_pretrained` (adapter_model.safetensors +
    adapter_config.json). `lora_kwargs` go to `LoraConfig` (rank_pattern, use_dora, modules_to_save, ...)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config())
    if base_model:
        model.name_or_path = base_model  # what from_pretrained sets, and what PEFT records in the config
    lora_kwargs.setdefault("init_lora_weights", "gaussian")  # non-zero B, like a trained adapter
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), **lora_kwargs)
    get_peft_model(model, config).save_pretrained(str(directory))
    return Path(directory)


def write_meta_peft_adapter(
    directory: str | Path, model: torch.nn.Module, lora_config, base_model: str | None = None
) -> Path:
    """PEFT adapter of a meta-device model: the keys and config PEFT would save, shapes at full size."""
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if base_model:
        model.name_or_path = base_model
    with torch.device("meta"):
        peft_model = get_peft_model(model, lora_config)
    state_dict = get_peft_model_state_dict(peft_model)  # the keys save_pretrained writes
    write_sparse_safetensors(
        directory / "adapter_model.safetensors", shapes_of(state_dict), metadata={"format": "pt"}
    )
    config = peft_model.peft_config["default"]
    if config.base_model_name_or_path is None and base_model:
        config.base_model_name_or_path = base_model
    config.save_pretrained(str(directory))
    return directory


# -------------------------------------------------------------------------------------------- diffusers


def tiny_unet_config(cross_attention_dim: int = 32) -> dict:
    return dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_sd3_config() -> dict:
    return dict(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        pos_embed_max_size=16,
    )


def tiny_flux_config() -> dict:
    return dict(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )


def peft_state_dict_with_lora(model: torch.nn.Module, lora_config) -> dict[str, torch.Tensor]:
    """Add a LoRA the way the diffusers training scripts do (`model.add_adapter`) and return PEFT's state dict
    of it (`get_peft_model_state_dict`), keyed as in the model (`down_blocks.0....lora_A.weight`)."""
    from peft.utils import get_peft_model_state_dict

    model.add_adapter(lora_config)
    return get_peft_model_state_dict(model)


def lora_adapter_metadata(lora_config) -> dict:
    """What the diffusers training scripts pass as `<component>_lora_adapter_metadata`."""
    return lora_config.to_dict()


# ---------------------------------------------------------------------------------------- editing files


def rewrite_safetensors(path: str | Path, edit: Callable[[dict], dict]) -> Path:
    """Load a (small) safetensors file, let `edit` change its tensors, and save it with the same metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = Path(path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = edit(load_file(str(path)))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path
