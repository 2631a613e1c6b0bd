"""The sandbox's built-in sample repos: small, generated at start, and together showing every kind of finding.

Each repo is what real uploads look like (names, shapes and metadata of the real formats at the real module
widths), cut down to a few modules so the whole set is written in about a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from bot.sandbox.layouts import (
    SD15_ATTENTION,
    SD15_CONTEXT,
    SDXL_TRANSFORMERS,
    attention_shapes,
    flux_shapes,
    sdxl_sgm_shapes,
)

# ------------------------------------------------------------------------------------------ factors


def lora_factors(
    in_features: int, out_features: int, rank: int, generator: torch.Generator, decay: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random factors; with decay > 0 the update's singular values fall off like exp(-decay·i)."""
    down = torch.randn(rank, in_features, generator=generator) / in_features**0.5
    up = torch.randn(out_features, rank, generator=generator) / rank**0.5
    if decay:
        up = up * torch.exp(-decay * torch.arange(rank, dtype=torch.float32))
    return down, up


# ------------------------------------------------------------------------------------------ repos


def _card(front_matter: dict | None, body: str) -> bytes:
    if front_matter is None:
        return body.encode()
    import yaml

    return ("---\n" + yaml.safe_dump(front_matter, sort_keys=False) + "---\n\n" + body).encode()


def _peft_unet(folder: Path, rank: int, generator: torch.Generator, config_rank: int, base: str) -> None:
    tensors = {}
    for module, (fan_in, fan_out) in attention_shapes(SD15_ATTENTION, SD15_CONTEXT).items():
        down, up = lora_factors(fan_in, fan_out, rank, generator)
        tensors[f"base_model.model.{module}.lora_A.weight"] = down
        tensors[f"base_model.model.{module}.lora_B.weight"] = up
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "r": config_rank,
        "lora_alpha": config_rank,
        "base_model_name_or_path": base,
        "target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": False,
        "use_dora": False,
        "bias": "none",
        "task_type": None,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def facechain_style(folder: Path, generator: torch.Generator) -> None:
    """PEFT UNet LoRA trained at r=4 whose adapter_config.json says r=8 (modelscope/facechain#170)."""
    _peft_unet(folder, 4, generator, config_rank=8, base="stable-diffusion-v1-5/stable-diffusion-v1-5")
    (folder / "README.md").write_bytes(
        _card(
            {"license": "apache-2.0", "tags": ["lora", "peft"]},
            "# Portrait LoRA\n\nStyle LoRA for portraits.\n",
        )
    )


def healthy_peft(folder: Path, generator: torch.Generator) -> None:
    """Nothing wrong: the bot must leave it alone."""
    _peft_unet(folder, 4, generator, config_rank=4, base="stable-diffusion-v1-5/stable-diffusion-v1-5")
    (folder / "README.md").write_bytes(
        _card(
            {
                "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                "base_model_relation": "adapter",
                "library_name": "peft",
                "tags": ["lora", "base_model:adapter:stable-diffusion-v1-5/stable-diffusion-v1-5"],
            },
            "# Healthy LoRA\n\n## LoRA details\n\nAll metadata present.\n",
        )
    )


def kohya_sdxl_no_card(folder: Path, generator: torch.Generator) -> None:
    """kohya SDXL LoRA (SGM names, .alpha scalars) uploaded without a model card, metadata stating a stale dim."""
    tensors = {}
    # A slice of SDXL: the attention of input_blocks_4_1 (640 channels, two transformer blocks).
    for module, (fan_in, fan_out) in sdxl_sgm_shapes(SDXL_TRANSFORMERS[:1], feed_forward=False).items():
        down, up = lora_factors(fan_in, fan_out, 8, generator)
        key = f"lora_unet_{module}"
        tensors[f"{key}.lora_down.weight"] = down.half()
        tensors[f"{key}.lora_up.weight"] = up.half()
        tensors[f"{key}.alpha"] = torch.tensor(4.0, dtype=torch.float16)
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": "16",
        "ss_network_alpha": "4.0",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_output_name": "pixel_style",
    }
    save_file(tensors, folder / "pixel_style.safetensors", metadata=metadata)


def sd15_tagged_sdxl(folder: Path, generator: torch.Generator) -> None:
    """An SD 1.5 kohya LoRA whose card says SDXL (huggingface/diffusers#11286)."""
    tensors = {}
    for module, (fan_in, fan_out) in attention_shapes(SD15_ATTENTION[:2], SD15_CONTEXT).items():
        down, up = lora_factors(fan_in, fan_out, 16, generator)
        key = "lora_unet_" + module.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = down.half()
        tensors[f"{key}.lora_up.weight"] = up.half()
        tensors[f"{key}.alpha"] = torch.tensor(8.0, dtype=torch.float16)
    save_file(
        tensors,
        folder / "anime_lines.safetensors",
        metadata={"ss_network_dim": "16", "ss_network_alpha": "8.0", "ss_base_model_version": "sd_v1"},
    )
    (folder / "README.md").write_bytes(
        _card(
            {"base_model": "stabilityai/stable-diffusion-xl-base-1.0", "tags": ["lora", "text-to-image"]},
            "# Anime lines\n\nLine-art LoRA.\n",
        )
    )


def flux_rank32(folder: Path, generator: torch.Generator) -> None:
    """A diffusers FLUX.1 LoRA at rank 32 whose spectrum decays fast: rank 16 keeps >99% of its energy."""
    tensors = {}
    for module, (fan_in, fan_out) in flux_shapes().items():
        down, up = lora_factors(fan_in, fan_out, 32, generator, decay=0.45)
        tensors[f"transformer.{module}.lora_A.weight"] = down.to(torch.bfloat16)
        tensors[f"transformer.{module}.lora_B.weight"] = up.to(torch.bfloat16)
    adapter_metadata = {
        "transformer.r": 32,
        "transformer.lora_alpha": 32,
        "transformer.rank_pattern": {},
        "transformer.alpha_pattern": {},
        "transformer.use_dora": False,
    }
    save_file(
        tensors,
        folder / "pytorch_lora_weights.safetensors",
        metadata={
            "format": "pt",
            "lora_adapter_metadata": json.dumps(adapter_metadata),
            "modelspec.architecture": "flux-1-dev/lora",
        },
    )
    (folder / "README.md").write_bytes(
        _card(
            {
                "base_model": "black-forest-labs/FLUX.1-dev",
                "library_name": "diffusers",
                "tags": ["lora", "flux", "text-to-image"],
                "instance_prompt": "a photo of sks dog",
            },
            "# Dog LoRA\n\nDreamBooth LoRA for FLUX.1-dev.\n",
        )
    )


def lycoris_loha(folder: Path, generator: torch.Generator) -> None:
    """LyCORIS LoHa: inspected and reported, never resized."""
    tensors = {}
    for module, (fan_in, fan_out) in attention_shapes(SD15_ATTENTION[:1], SD15_CONTEXT).items():
        key = "lora_unet_" + module.replace(".", "_")
        for side in ("1", "2"):
            tensors[f"{key}.hada_w{side}_a"] = torch.randn(fan_out, 4, generator=generator).half()
            tensors[f"{key}.hada_w{side}_b"] = torch.randn(4, fan_in, generator=generator).half()
        tensors[f"{key}.alpha"] = torch.tensor(4.0, dtype=torch.float16)
    save_file(
        tensors,
        folder / "loha_style.safetensors",
        metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "loha"})},
    )
    (folder / "README.md").write_bytes(
        _card(
            {
                "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                "base_model_relation": "adapter",
                "tags": ["lora", "lycoris"],
            },
            "# LoHa style\n",
        )
    )


def pickle_only(folder: Path, generator: torch.Generator) -> None:
    """Only a pickle: reported as unsafe, never opened (the bytes are not even a valid pickle)."""
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not-a-real-pickle" + bytes(256))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))
    (folder / "README.md").write_bytes(_card({"tags": ["lora", "peft"]}, "# Old adapter\n"))


def truncated_upload(folder: Path, generator: torch.Generator) -> None:
    """An upload cut short: the header promises more bytes than the file has."""
    scratch = folder / "full.tmp"
    down, up = lora_factors(320, 320, 4, generator)
    save_file({"lora_unet_x.lora_down.weight": down, "lora_unet_x.lora_up.weight": up}, scratch)
    data = scratch.read_bytes()
    scratch.unlink()
    (folder / "broken_lora.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "README.md").write_bytes(_card({"tags": ["lora"]}, "# Broken upload\n"))


def opted_out(folder: Path, generator: torch.Generator) -> None:
    """Same defect as the FaceChain sample, but the owner asked the bot to stay away."""
    _peft_unet(folder, 4, generator, config_rank=8, base="stable-diffusion-v1-5/stable-diffusion-v1-5")
    (folder / "README.md").write_bytes(_card({"lora-bot": "ignore", "tags": ["lora"]}, "# Please no bots\n"))


SAMPLES: dict[str, Callable[[Path, torch.Generator], None]] = {
    "demo/facechain-style-lora": facechain_style,
    "demo/healthy-lora": healthy_peft,
    "demo/pixel-style-sdxl": kohya_sdxl_no_card,
    "demo/anime-lines-sd15": sd15_tagged_sdxl,
    "demo/flux-dog-r32": flux_rank32,
    "demo/loha-style": lycoris_loha,
    "demo/old-pickle-adapter": pickle_only,
    "demo/broken-upload": truncated_upload,
    "demo/no-bots-please": opted_out,
}


def write_sample_repos(dest: Path, seed: int = 0) -> list[str]:
    """Write every sample repo under dest/<namespace>/<name>/ and return their ids."""
    generator = torch.Generator().manual_seed(seed)
    for repo_id, build in SAMPLES.items():
        folder = Path(dest) / repo_id
        folder.mkdir(parents=True, exist_ok=True)
        build(folder, generator)
    return list(SAMPLES)
