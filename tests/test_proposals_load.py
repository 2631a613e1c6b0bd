"""Files of lora-bot's PRs, read back from refs/pr/N, load in the real consumers (PEFT, diffusers)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers_adapters import tiny_llama_config, tiny_unet_config
from huggingface_hub import HfApi

from bot.cli import main
from bot.sandbox import SandboxHub

BOT, OWNER = "hf_bot", "hf_alice"


@pytest.fixture
def hub():
    with SandboxHub(user="lora-bot", users={OWNER: "alice"}) as sandbox:
        yield sandbox


def live_scan(hub, tmp_path, repo_id: str) -> dict:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"discovery: {{incremental: false, state_file: {tmp_path / 's.json'}}}\n"
        # The repos were uploaded a moment ago; alice's get variants by the policy (she is listed).
        "proposals: {cooldown_hours: 0, variant_repos: [alice]}\n"
    )
    report = tmp_path / "report.json"
    assert (
        main(
            [
                "scan",
                "--endpoint",
                hub.endpoint,
                "--token",
                BOT,
                "--config",
                str(config),
                "--repo",
                repo_id,
                "--report-json",
                str(report),
            ]
        )
        == 0
    )
    return json.loads(report.read_text())


def pr_folder(hub, report: dict, repo_id: str, tmp_path: Path) -> Path:
    (pr,) = [p for p in report["proposals"] if p["status"] == "opened" and p["repo_id"] == repo_id]
    api = HfApi(endpoint=hub.endpoint, token=OWNER)
    return Path(api.snapshot_download(repo_id, revision=f"refs/pr/{pr['number']}", local_dir=tmp_path / "pr"))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.arange(24).reshape(2, 12) % 256).logits


def test_facechain_pr_loads_in_peft_both_ways(hub, tmp_path):
    """Weights at r=4, config says r=8: the PR's fixed config and its r8/ variant both load and compute the
    adapter's update; the untouched upload fails with PEFT's size mismatch."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(tiny_llama_config())
    clean = copy.deepcopy(base)
    trained = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
    ).eval()
    upload = tmp_path / "upload"
    trained.save_pretrained(str(upload))
    expected = logits(trained)
    config = json.loads((upload / "adapter_config.json").read_text())
    (upload / "adapter_config.json").write_text(
        json.dumps(dict(config, r=8), indent=2, sort_keys=True) + "\n"
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(copy.deepcopy(clean), str(upload))

    hub.add_repo(
        "alice/tiny-facechain",
        {
            "adapter_model.safetensors": upload / "adapter_model.safetensors",
            "adapter_config.json": (upload / "adapter_config.json").read_bytes(),
        },
    )
    folder = pr_folder(
        hub, live_scan(hub, tmp_path, "alice/tiny-facechain"), "alice/tiny-facechain", tmp_path
    )

    fixed = PeftModel.from_pretrained(copy.deepcopy(clean), str(folder)).eval()
    torch.testing.assert_close(logits(fixed), expected, rtol=1e-5, atol=1e-5)
    padded = PeftModel.from_pretrained(copy.deepcopy(clean), str(folder / "r8")).eval()
    assert padded.peft_config["default"].r == 8
    assert padded.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.shape[0] == 8
    torch.testing.assert_close(logits(padded), expected, rtol=1e-5, atol=1e-5)
    assert (folder / "README.md").exists(), "the card PR rides along in the same PR"


def test_reduced_variant_pr_loads_in_diffusers_within_its_reported_error(hub, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_unet_config())
    clean = copy.deepcopy(unet)
    unet.add_adapter(
        LoraConfig(
            r=32, lora_alpha=32, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
        )
    )
    with torch.no_grad():  # a trained-looking spectrum: rank 16 keeps well over 99% of the energy
        decay = torch.exp(-0.5 * torch.arange(32, dtype=torch.float32))
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn_like(parameter) * decay)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        str(tmp_path / "lora"),
        unet_lora_layers=layers,
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
    )
    hub.add_repo(
        "alice/tiny-unet-r32",
        {"pytorch_lora_weights.safetensors": tmp_path / "lora" / "pytorch_lora_weights.safetensors"},
    )
    report = live_scan(hub, tmp_path, "alice/tiny-unet-r32")
    folder = pr_folder(hub, report, "alice/tiny-unet-r32", tmp_path)
    assert (folder / "pytorch_lora_weights-r16.safetensors").exists()

    sample, timestep, context = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 5, 32)

    def delta(model):
        with torch.no_grad():
            return (
                model.eval()(sample, timestep, encoder_hidden_states=context).sample
                - clean.eval()(sample, timestep, encoder_hidden_states=context).sample
            )

    reduced = copy.deepcopy(clean)
    reduced.load_lora_adapter(str(folder), weight_name="pytorch_lora_weights-r16.safetensors", prefix="unet")
    assert reduced.peft_config["default_0"].r == 16
    full, approx = delta(unet), delta(reduced)
    relative = (torch.linalg.norm(full - approx) / torch.linalg.norm(full)).item()
    assert relative < 0.05, f"the reduced LoRA's effect differs by {relative:.3f}"
    body = HfApi(endpoint=hub.endpoint).get_discussion_details("alice/tiny-unet-r32", 1).events[0].content
    assert "energy retained" in body and 'weight_name="pytorch_lora_weights-r16.safetensors"' in body
