"""Base model resolution: a declared fine-tune the shapes do not contradict is named; a contradiction is flagged."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from bot.cli import main
from bot.sandbox.layouts import SD15_ATTENTION, SD15_CONTEXT, attention_shapes


def kohya_sd15(folder, card_base: str) -> None:
    tensors = {}
    for module, (fan_in, fan_out) in attention_shapes(SD15_ATTENTION[:1], SD15_CONTEXT).items():
        key = "lora_unet_" + module.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = torch.zeros(4, fan_in, dtype=torch.float16)
        tensors[f"{key}.lora_up.weight"] = torch.zeros(fan_out, 4, dtype=torch.float16)
    save_file(tensors, folder / "style.safetensors")
    (folder / "README.md").write_text(f"---\nbase_model: {card_base}\n---\n# x\n")


@pytest.mark.parametrize(
    "declared, family, repo_id, mismatch",
    [
        ("Lykon/dreamshaper-8", "sd1", "Lykon/dreamshaper-8", False),  # an unlisted SD1 fine-tune
        (
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "sd1",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            False,
        ),
        ("stabilityai/stable-diffusion-xl-base-1.0", "sd1", None, True),  # SD1.5 LoRA tagged SDXL
    ],
)
def test_declared_base_against_the_shapes(tmp_path, capsys, declared, family, repo_id, mismatch):
    kohya_sd15(tmp_path, declared)
    code = main(["inspect", str(tmp_path), "--json"])
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert entry["base_model"]["family"] == family and entry["base_model"]["repo_id"] == repo_id
    assert ("base-model-mismatch" in {f["code"] for f in entry["flags"]}) is mismatch
    assert code == (1 if mismatch else 0)
