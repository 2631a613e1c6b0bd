"""`lora-bot resize`: rank conversion that keeps what the adapter computes.

Padded files are loaded back by the real libraries (peft on a tiny Llama, diffusers on a tiny UNet) and must
give the original outputs; reduced files must be the Eckart–Young optimum, checked against a dense SVD that
only the test computes. Refusals go through the CLI and must be one clear line, exit 1, no traceback.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from helpers_adapters import tiny_llama_config, tiny_unet_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bot.cli import main

LLAMA_TARGETS = ["q_proj", "v_proj", "down_proj"]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["resize", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def resize_json(capsys, *args) -> dict:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def header_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def key_order(path: Path) -> list[str]:
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return [k for k in json.loads(raw[8 : 8 + length]) if k != "__metadata__"]


def dense_delta(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """ΔW as a loader applies it, flattened for conv; float64 so the oracle is exact enough."""
    return scale * up.double().reshape(up.shape[0], -1) @ down.double().reshape(down.shape[0], -1)


# ------------------------------------------------------------------------------------------------ PEFT


def _llama_with_lora(directory: Path, seed: int = 0, **lora_kwargs):
    """A tiny Llama plus a PEFT LoRA with non-zero B, saved by PEFT; returns (clean base copy, peft model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    base = LlamaForCausalLM(tiny_llama_config())
    clean = copy.deepcopy(base)
    lora_kwargs.setdefault("target_modules", LLAMA_TARGETS)
    model = get_peft_model(base, LoraConfig(init_lora_weights=False, **lora_kwargs))
    model.save_pretrained(str(directory))
    return clean, model.eval()


def _logits(model) -> torch.Tensor:
    tokens = torch.arange(24).reshape(2, 12) % 256
    with torch.no_grad():
        return model(input_ids=tokens).logits


def _load_peft(base, directory: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(base), str(directory)).eval()


@pytest.mark.parametrize("rslora", [False, True])
def test_padded_peft_adapter_gives_the_same_logits_in_real_peft(tmp_path, capsys, rslora):
    base, original = _llama_with_lora(tmp_path / "adapter", r=4, lora_alpha=8, use_rslora=rslora)
    report = resize_json(capsys, tmp_path / "adapter", "--rank", 8, "-o", tmp_path / "padded")

    config = json.loads((tmp_path / "padded" / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert config["lora_alpha"] == pytest.approx(8 * (math.sqrt(2) if rslora else 2))
    source_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert {k: v for k, v in config.items() if k not in ("r", "lora_alpha")} == {
        k: v for k, v in source_config.items() if k not in ("r", "lora_alpha")
    }  # everything else kept
    assert report["format"] == "peft" and report["new_rank"] == 8 and report["relative_error"] == 0
    padded = _load_peft(base, tmp_path / "padded")
    lora_a = padded.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    assert lora_a.shape[0] == 8
    torch.testing.assert_close(_logits(padded), _logits(original), rtol=1e-5, atol=1e-5)


def test_peft_alpha_pattern_is_written_when_padding_mixed_ranks(tmp_path, capsys):
    # v_proj has rank 2 and its own alpha: after padding every module to 6 their alphas differ, so the
    # config needs per-module entries that real PEFT must pick up.
    base, original = _llama_with_lora(
        tmp_path / "adapter", r=4, lora_alpha=8, rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 3}
    )
    resize_json(capsys, tmp_path / "adapter", "--rank", 6, "-o", tmp_path / "out")
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == 6 and config["rank_pattern"] == {}
    assert set(config["alpha_pattern"].values()) == {9}  # 3·6/2, while lora_alpha is 8·6/4 = 12
    assert config["lora_alpha"] == 12
    torch.testing.assert_close(
        _logits(_load_peft(base, tmp_path / "out")), _logits(original), rtol=1e-5, atol=1e-5
    )


def test_facechain_case_rank_4_padded_to_8_loads_where_code_expects_r8(tmp_path, capsys):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    base, original = _llama_with_lora(tmp_path / "r4", r=4, lora_alpha=4)
    resize_json(capsys, tmp_path / "r4", "--rank", 8, "-o", tmp_path / "r8")

    # The consuming code builds its LoRA layers from a config that says r=8, then copies the weights in.
    expects_r8 = LoraConfig.from_pretrained(str(tmp_path / "r8"))
    assert expects_r8.r == 8
    model = get_peft_model(copy.deepcopy(base), expects_r8).eval()
    with pytest.raises(RuntimeError, match="size mismatch"):  # the unpadded file is what breaks such code
        set_peft_model_state_dict(model, load_file(str(tmp_path / "r4" / "adapter_model.safetensors")))
    result = set_peft_model_state_dict(model, load_file(str(tmp_path / "r8" / "adapter_model.safetensors")))
    assert not [k for k in result.unexpected_keys if "lora" in k]
    torch.testing.assert_close(_logits(model), _logits(original), rtol=1e-5, atol=1e-5)


def test_energy_per_module_writes_a_rank_pattern_real_peft_loads(tmp_path, capsys):
    from peft.utils import get_peft_model_state_dict

    base, original = _llama_with_lora(tmp_path / "adapter", r=6, lora_alpha=12)
    # Make v_proj numerically rank 2 (four zero columns of B): full energy needs only 2 ranks there.
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(path))
    for name in [k for k in tensors if "v_proj.lora_B" in k]:
        tensors[name][:, 2:] = 0
    save_file(tensors, str(path), metadata={"format": "pt"})
    original = _load_peft(base, tmp_path / "adapter")
    assert get_peft_model_state_dict(original)  # the edited file loads as it is

    report = resize_json(
        capsys, tmp_path / "adapter", "--energy", 1.0, "--per-module", "-o", tmp_path / "out"
    )
    ranks = {m["name"]: m["new_rank"] for m in report["modules"]}
    assert {r for n, r in ranks.items() if "v_proj" in n} == {2}
    assert {r for n, r in ranks.items() if "v_proj" not in n} == {6}
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == 6 and set(config["rank_pattern"].values()) == {2}
    assert set(config["alpha_pattern"].values()) == {4}  # 12·2/6 keeps the scale 2
    torch.testing.assert_close(
        _logits(_load_peft(base, tmp_path / "out")), _logits(original), rtol=1e-4, atol=1e-4
    )


# ------------------------------------------------------------------------------------------- diffusers


def test_padded_diffusers_unet_lora_gives_the_same_output_in_real_diffusers(tmp_path, capsys):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_unet_config())
    clean = copy.deepcopy(unet)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.2"],
    )
    unet.add_adapter(lora)
    with torch.no_grad():  # cross-attention keys numerically rank 1, so full energy needs 1 rank there
        for name, parameter in unet.named_parameters():
            if "attn2.to_k.lora_B" in name:
                parameter[:, 1:] = 0
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        str(tmp_path / "lora"), unet_lora_layers=layers, unet_lora_adapter_metadata=lora.to_dict()
    )
    source = tmp_path / "lora" / "pytorch_lora_weights.safetensors"

    report = resize_json(capsys, source, "--rank", 8, "-o", tmp_path / "padded.safetensors")
    assert report["format"] == "diffusers" and report["new_rank"] == 8
    adapter_meta = json.loads(header_metadata(tmp_path / "padded.safetensors")["lora_adapter_metadata"])
    assert (adapter_meta["unet.r"], adapter_meta["unet.lora_alpha"]) == (8, 16)
    # (No conv targets: diffusers 0.42 saves them as lora_A/B among lora.down/up keys and then fails to load
    # its own file. Conv factors are covered by the kohya tests.)

    sample, timestep = torch.randn(1, 4, 8, 8), torch.tensor([10])
    context = torch.randn(1, 5, 32)

    def output(model):
        with torch.no_grad():
            return model.eval()(sample, timestep, encoder_hidden_states=context).sample

    loaded = copy.deepcopy(clean)
    loaded.load_lora_adapter(str(tmp_path), weight_name="padded.safetensors", prefix="unet")
    assert loaded.peft_config["default_0"].r == 8
    torch.testing.assert_close(output(loaded), output(unet), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(output(clean), output(unet), atol=1e-3)  # the LoRA does change the output

    # Mixed ranks: the metadata must now carry rank_pattern and alpha_pattern, which diffusers builds from.
    report = resize_json(
        capsys, source, "--energy", 1.0, "--per-module", "-o", tmp_path / "mixed.safetensors"
    )
    ranks = {m["name"]: m["new_rank"] for m in report["modules"]}
    assert {n for n, r in ranks.items() if r == 1} == {n for n in ranks if n.endswith("attn2.to_k")}
    assert set(ranks.values()) == {1, 4}
    adapter_meta = json.loads(header_metadata(tmp_path / "mixed.safetensors")["lora_adapter_metadata"])
    assert set(adapter_meta["unet.rank_pattern"].values()) == {1} and adapter_meta["unet.r"] == 4
    assert set(adapter_meta["unet.alpha_pattern"].values()) == {2}  # 8·1/4 keeps the scale 2
    mixed = copy.deepcopy(clean)
    mixed.load_lora_adapter(str(tmp_path), weight_name="mixed.safetensors", prefix="unet")
    torch.testing.assert_close(output(mixed), output(unet), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------- kohya


def _kohya_file(
    path: Path,
    rank: int = 6,
    alpha: float = 1.0,
    alpha_dtype=torch.bfloat16,
    factor_dtype=torch.float16,
    seed: int = 0,
    rank_one: str | None = None,
) -> dict:
    """A kohya file with linear and 3×3 conv (LoCon) modules, per-module `.alpha` and a non-LoRA tensor.
    `rank_one` names a module whose ΔW is made rank 1 (all but one column of up zeroed)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {
        "lora_unet_down_blocks_0_attentions_0_proj_in": ((24, 16), False),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q": ((32, 20), False),
        "lora_unet_down_blocks_0_resnets_0_conv1": ((12, 10), True),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": ((16, 16), False),
    }
    tensors = {}
    for name, ((out, inp), conv) in shapes.items():
        down = (
            torch.randn(rank, inp, 3, 3, generator=generator)
            if conv
            else torch.randn(rank, inp, generator=generator)
        )
        up = (
            torch.randn(out, rank, 1, 1, generator=generator)
            if conv
            else torch.randn(out, rank, generator=generator)
        )
        tensors[f"{name}.lora_down.weight"] = down.to(factor_dtype)
        tensors[f"{name}.lora_up.weight"] = up.to(factor_dtype)
        tensors[f"{name}.alpha"] = torch.tensor(alpha, dtype=alpha_dtype)
        if name == rank_one:
            tensors[f"{name}.lora_up.weight"][:, 1:] = 0
    tensors["text_projection.weight"] = torch.randn(4, 4, generator=generator)  # not LoRA: copied as is
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_network_args": json.dumps({"conv_dim": str(rank), "conv_alpha": str(alpha)}),
        "sshs_model_hash": "0" * 64,
        "sshs_legacy_hash": "00000000",
        "ss_output_name": "mine",
    }
    save_file(tensors, str(path), metadata=metadata)
    return tensors


def _kohya_deltas(path: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path))
    deltas = {}
    for key in tensors:
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            down, up = tensors[key], tensors[f"{name}.lora_up.weight"]
            deltas[name] = dense_delta(down, up, tensors[f"{name}.alpha"].item() / down.shape[0])
    return deltas


def test_kohya_reduce_is_the_eckart_young_optimum(tmp_path, capsys):
    source = tmp_path / "lora.safetensors"
    _kohya_file(source, rank=8, alpha=4.0, alpha_dtype=torch.float32, factor_dtype=torch.float32)
    report = resize_json(capsys, source, "--rank", 3)
    out = tmp_path / "lora-r3.safetensors"
    assert report["output"] == str(out)

    before, after = _kohya_deltas(source), _kohya_deltas(out)
    rows = {m["name"]: m for m in report["modules"]}
    for name, delta in before.items():
        sigma = torch.linalg.svdvals(delta)  # the oracle: a dense SVD, only here in the test
        dropped = float((sigma[3:] ** 2).sum())
        error = float(((delta - after[name]) ** 2).sum())
        assert error == pytest.approx(dropped, rel=1e-5), name
        # The effective scale is kept: the output's own singular values are the leading ones of ΔW.
        torch.testing.assert_close(torch.linalg.svdvals(after[name])[:3], sigma[:3], rtol=1e-5, atol=0)
        assert rows[name]["relative_error"] == pytest.approx(
            math.sqrt(dropped / float((sigma**2).sum())), rel=1e-4
        )
    reduced = load_file(str(out))
    assert reduced["lora_unet_down_blocks_0_resnets_0_conv1.alpha"].item() == pytest.approx(1.5)
    for name in before:  # √σ on both sides: neither factor carries all the magnitude
        down, up = reduced[f"{name}.lora_down.weight"], reduced[f"{name}.lora_up.weight"]
        assert float(torch.linalg.norm(down)) == pytest.approx(float(torch.linalg.norm(up)), rel=1e-4)


@pytest.mark.parametrize("target", [4, 8])
def test_kohya_alpha_tensors_shapes_and_metadata_are_rewritten(tmp_path, capsys, target):
    source = tmp_path / "lora.safetensors"
    original = _kohya_file(source, rank=6, alpha=1.0)  # alpha in bf16: 4/6 and 8/6 are not bf16 numbers
    out = tmp_path / "out.safetensors"
    report = resize_json(capsys, source, "--rank", target, "-o", out)
    tensors = load_file(str(out))

    assert key_order(out) == key_order(source)
    assert torch.equal(tensors["text_projection.weight"], original["text_projection.weight"])
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert tensors[f"{conv}.lora_down.weight"].shape == (target, 10, 3, 3)
    assert tensors[f"{conv}.lora_up.weight"].shape == (12, target, 1, 1)
    assert all(t.dtype == original[k].dtype for k, t in tensors.items())
    alpha = tensors[f"{conv}.alpha"]
    assert alpha.dtype == torch.bfloat16 and alpha.item() == pytest.approx(target / 6, rel=2**-8)

    before, after = _kohya_deltas(source), _kohya_deltas(out)
    for name, delta in before.items():
        # bf16 holds target/6 only to 0.2%; the factors absorb the difference, so ΔW is kept to fp16 precision.
        if target > 6:
            assert float(torch.linalg.norm(after[name] - delta) / torch.linalg.norm(delta)) < 1e-3
        else:
            kept = torch.linalg.svdvals(after[name])[:target]
            torch.testing.assert_close(kept, torch.linalg.svdvals(delta)[:target], rtol=1e-3, atol=0)

    metadata = header_metadata(out)
    assert metadata["ss_network_dim"] == str(target) and float(metadata["ss_network_alpha"]) == alpha.item()
    assert json.loads(metadata["ss_network_args"]) == {
        "conv_dim": str(target),
        "conv_alpha": str(alpha.item()),
    }
    assert metadata["ss_output_name"] == "mine"
    assert metadata["lora_bot.source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (metadata["lora_bot.source_rank"], metadata["lora_bot.target_rank"]) == ("6", str(target))
    assert metadata["lora_bot.method"] == ("pad" if target > 6 else "svd")
    assert float(metadata["lora_bot.energy_retained"]) == pytest.approx(report["energy_retained"], abs=1e-6)
    raw = out.read_bytes()
    data = raw[8 + int.from_bytes(raw[:8], "little") :]
    assert metadata["sshs_model_hash"] == hashlib.sha256(data).hexdigest()  # what sd-webui computes


def test_one_by_one_convs_count_under_network_dim_not_conv_dim(tmp_path, capsys):
    # kohya gives SD1's 1×1 proj_in the network_dim and only 3×3 convs the conv_dim. A per-file energy target
    # keeps rank 6 for the 1×1 conv and rank 2 for the 3×3 one, so conv_dim stays 2, not "Dynamic".
    generator = torch.Generator().manual_seed(4)
    shapes = {
        "lora_unet_down_blocks_0_attentions_0_proj_in": (6, (16, 1, 1), (24, 6, 1, 1)),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (6, (16,), (24, 6)),
        "lora_unet_down_blocks_0_resnets_0_conv1": (2, (10, 3, 3), (12, 2, 1, 1)),
    }
    tensors = {}
    for name, (rank, down, up) in shapes.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, *down, generator=generator)
        tensors[f"{name}.lora_up.weight"] = torch.randn(*up, generator=generator)
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    source = tmp_path / "locon.safetensors"
    save_file(
        tensors,
        str(source),
        metadata={
            "ss_network_module": "networks.lora",
            "ss_network_dim": "6",
            "ss_network_alpha": "6.0",
            "ss_network_args": json.dumps({"conv_dim": "2", "conv_alpha": "2.0"}),
        },
    )
    report = resize_json(capsys, source, "--energy", 1.0, "-o", tmp_path / "out.safetensors")
    assert {m["name"]: m["new_rank"] for m in report["modules"]} == {
        name: rank for name, (rank, *_) in shapes.items()
    }
    metadata = header_metadata(tmp_path / "out.safetensors")
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("6", "6.0")
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "2.0"}


def test_resized_files_pass_lora_bot_inspect_without_rank_findings(tmp_path, capsys):
    source = tmp_path / "lora.safetensors"
    _kohya_file(source, rank=6, rank_one="lora_unet_down_blocks_0_attentions_0_proj_in")
    report = resize_json(capsys, source, "--energy", 0.8, "--per-module", "-o", tmp_path / "dyn.safetensors")
    assert len(report["ranks"]["new"]) == 2
    assert header_metadata(tmp_path / "dyn.safetensors")["ss_network_dim"] == "Dynamic"
    assert main(["inspect", str(tmp_path / "dyn.safetensors"), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["files"][0]
    assert not {f["code"] for f in found["flags"]} & {"rank-mismatch-metadata", "mixed-rank-undeclared"}


def test_legacy_attention_processor_file_pads_with_the_same_delta(tmp_path, capsys):
    # FaceChain-style keys (`…processor.to_q_lora.down.weight`): no alpha anywhere, scale 1 before and after.
    generator = torch.Generator().manual_seed(1)
    prefix = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"
    tensors = {
        f"{prefix}.{p}_lora.down.weight": torch.randn(4, 24, generator=generator) for p in ("to_q", "to_k")
    }
    tensors.update(
        {f"{prefix}.{p}_lora.up.weight": torch.randn(16, 4, generator=generator) for p in ("to_q", "to_k")}
    )
    save_file(tensors, str(tmp_path / "facechain.safetensors"))
    report = resize_json(capsys, tmp_path / "facechain.safetensors", "--rank", 8)
    assert report["format"] == "diffusers-legacy"
    padded = load_file(str(tmp_path / "facechain-r8.safetensors"))
    for p in ("to_q", "to_k"):
        down, up = padded[f"{prefix}.{p}_lora.down.weight"], padded[f"{prefix}.{p}_lora.up.weight"]
        assert down.shape == (8, 24)
        assert torch.equal(
            up @ down, tensors[f"{prefix}.{p}_lora.up.weight"] @ tensors[f"{prefix}.{p}_lora.down.weight"]
        )


def test_factors_stored_apart_keep_their_dtypes_and_stay_paired(tmp_path, capsys):
    # safetensors lays data out by dtype first: with fp32 ups and fp16 downs every up precedes every down.
    generator = torch.Generator().manual_seed(3)
    tensors = {}
    for name in ("lora_unet_x", "lora_unet_y"):
        tensors[f"{name}.lora_down.weight"] = torch.randn(5, 12, generator=generator).half()
        tensors[f"{name}.lora_up.weight"] = torch.randn(10, 5, generator=generator)
    save_file(tensors, str(tmp_path / "mixed.safetensors"))
    resize_json(capsys, tmp_path / "mixed.safetensors", "--rank", 7)
    padded = load_file(str(tmp_path / "mixed-r7.safetensors"))
    for name in ("lora_unet_x", "lora_unet_y"):
        down, up = padded[f"{name}.lora_down.weight"], padded[f"{name}.lora_up.weight"]
        assert (down.dtype, up.dtype, down.shape[0], up.shape[1]) == (torch.float16, torch.float32, 7, 7)
        expected = tensors[f"{name}.lora_up.weight"] @ tensors[f"{name}.lora_down.weight"].float()
        assert torch.equal(up @ down.float(), expected)


# --------------------------------------------------------------------------------------------- energy


def _known_spectrum_file(path: Path, spectra: dict[str, list[float]]) -> None:
    """Modules whose ΔW has exactly the given singular values (B = U·diag(σ), A = Vᵀ, no alpha: scale 1)."""
    generator = torch.Generator().manual_seed(2)
    tensors = {}
    for name, sigma in spectra.items():
        r = len(sigma)
        u = torch.linalg.qr(torch.randn(20, r, generator=generator, dtype=torch.float64)).Q
        v = torch.linalg.qr(torch.randn(18, r, generator=generator, dtype=torch.float64)).Q
        tensors[f"{name}.lora_up.weight"] = (
            (u * torch.tensor(sigma, dtype=torch.float64)).float().contiguous()
        )
        tensors[f"{name}.lora_down.weight"] = v.T.contiguous().float()
    save_file(tensors, str(path))


def _smallest_rank(energies: list[float], fraction: float) -> int:
    """The oracle, by brute force: try every k."""
    return next(
        k for k in range(1, len(energies) + 1) if sum(energies[:k]) >= fraction * sum(energies) - 1e-9
    )


def test_energy_picks_the_smallest_rank_reaching_the_fraction(tmp_path, capsys):
    spectra = {
        "lora_unet_a": [8.0, 4.0, 2.0, 1.0, 0.5, 0.25],
        "lora_unet_b": [3.0, 3.0, 3.0, 2.0, 0.1, 0.1],
        "lora_unet_c": [0.0] * 6,
    }
    source = tmp_path / "lora.safetensors"
    _known_spectrum_file(source, spectra)

    per_module = resize_json(
        capsys, source, "--energy", 0.9, "--per-module", "-o", tmp_path / "m.safetensors"
    )
    chosen = {m["name"]: m["new_rank"] for m in per_module["modules"]}
    for name, sigma in spectra.items():
        expected = (
            _smallest_rank([s * s for s in sigma], 0.9) if any(sigma) else 1
        )  # a zero module keeps rank 1
        assert chosen[name] == expected, name
        kept = sum(s * s for s in sigma[:expected]) / sum(s * s for s in sigma) if any(sigma) else 1.0
        row = next(m for m in per_module["modules"] if m["name"] == name)
        assert row["energy_retained"] == pytest.approx(kept, rel=1e-5) and row["energy_retained"] >= 0.9

    per_file = resize_json(capsys, source, "--energy", 0.9, "-o", tmp_path / "f.safetensors")
    energies = [[s * s for s in sigma] for sigma in spectra.values()]
    shared = next(
        k for k in range(1, 7) if sum(sum(e[:k]) for e in energies) >= 0.9 * sum(map(sum, energies))
    )
    assert {m["new_rank"] for m in per_file["modules"]} == {shared}
    assert per_file["energy_retained"] >= 0.9
    assert shared > 1 and per_file["ranks"]["new"] == {str(shared): 3}


# ------------------------------------------------------------------------------------ refusals and usage


def _lycoris(path: Path, kind: str) -> Path:
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    tensors = {
        "loha": {
            f"{name}.hada_w1_a": (8, 4),
            f"{name}.hada_w1_b": (4, 8),
            f"{name}.hada_w2_a": (8, 4),
            f"{name}.hada_w2_b": (4, 8),
        },
        "lokr": {f"{name}.lokr_w1": (2, 2), f"{name}.lokr_w2_a": (4, 2), f"{name}.lokr_w2_b": (2, 4)},
        "tucker": {
            f"{name}.lora_down.weight": (4, 8, 1, 1),
            f"{name}.lora_mid.weight": (4, 4, 3, 3),
            f"{name}.lora_up.weight": (8, 4, 1, 1),
        },
        "dora": {
            f"{name}.lora_down.weight": (4, 8),
            f"{name}.lora_up.weight": (8, 4),
            f"{name}.dora_scale": (8, 1),
        },
    }[kind]
    data = {k: torch.randn(*shape) for k, shape in tensors.items()}
    data[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(data, str(path))
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("loha", "Hadamard product"),
        ("lokr", "Kronecker product"),
        ("tucker", "Tucker mid tensor"),
        ("dora", "DoRA"),
    ],
)
def test_non_product_adapters_are_refused_with_the_reason(tmp_path, capsys, kind, reason):
    source = _lycoris(tmp_path / f"{kind}.safetensors", kind)
    code, out, err = run(capsys, source, "--rank", 2)
    assert code == 1 and out == ""
    assert reason in err and "cannot resize" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == [source.name]  # nothing written, not even a partial file


def test_peft_dora_pickle_and_corrupt_files_are_refused(tmp_path, capsys):
    _llama_with_lora(tmp_path / "dora", r=4, lora_alpha=8, use_dora=True)
    code, _, err = run(capsys, tmp_path / "dora", "--rank", 2)
    assert code == 1 and "DoRA" in err

    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    code, _, err = run(capsys, tmp_path / "adapter_model.bin", "--rank", 2)
    assert code == 1 and "pickle" in err

    (tmp_path / "broken.safetensors").write_bytes((500).to_bytes(8, "little") + b"{}")
    code, _, err = run(capsys, tmp_path / "broken.safetensors", "--rank", 2)
    assert code == 1 and "header" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "kind, reason",
    [("nan", "NaN or infinite"), ("alpha-overflow", "overflows the F16"), ("int8", "floating-point")],
)
def test_broken_or_unwritable_files_are_refused_in_one_line(tmp_path, capsys, kind, reason):
    # A NaN factor (a diverged training run), an fp16 alpha that 4→8 would take past 65504 (it would be stored
    # as inf and the factors zeroed), and int8 factors (an SVD written back into them would be truncated).
    generator = torch.Generator().manual_seed(5)
    down, up, alpha = torch.randn(4, 12, generator=generator), torch.randn(10, 4, generator=generator), 4.0
    if kind == "nan":
        down[1, 2] = float("nan")
    if kind == "int8":
        down, up = (down * 10).to(torch.int8), (up * 10).to(torch.int8)
    if kind == "alpha-overflow":
        alpha = 40000.0
    source = tmp_path / f"{kind}.safetensors"
    save_file(
        {
            "lora_unet_x.lora_down.weight": down,
            "lora_unet_x.lora_up.weight": up,
            "lora_unet_x.alpha": torch.tensor(alpha, dtype=torch.float16),
        },
        str(source),
    )
    code, out, err = run(capsys, source, "--rank", 8)
    assert code == 1 and out == ""
    assert reason in err and "lora_unet_x" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == [source.name]


def test_peft_folder_given_as_dot_gets_a_sibling_output_folder(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "adapter"
    folder.mkdir()
    generator = torch.Generator().manual_seed(6)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{prefix}.lora_A.weight": torch.randn(4, 12, generator=generator),
            f"{prefix}.lora_B.weight": torch.randn(10, 4, generator=generator),
        },
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    )
    monkeypatch.chdir(folder)
    report = resize_json(capsys, ".", "--rank", 8)
    assert Path(report["output"]) == tmp_path / "adapter-r8"
    assert json.loads((tmp_path / "adapter-r8" / "adapter_config.json").read_text())["r"] == 8
    padded = load_file(str(tmp_path / "adapter-r8" / "adapter_model.safetensors"))
    assert padded[f"{prefix}.lora_A.weight"].shape == (8, 12)


def test_usage_errors_exit_2_and_existing_output_needs_force(tmp_path, capsys):
    source = tmp_path / "lora.safetensors"
    _kohya_file(source)
    assert run(capsys, source, "--rank", 0)[0] == 2
    assert run(capsys, source, "--rank", 2, "--per-module")[0] == 2
    assert run(capsys, source, "--energy", 1.5)[0] == 2
    assert run(capsys, tmp_path / "missing.safetensors", "--rank", 2)[0] == 2
    assert run(capsys, source, "--rank", 2, "-o", source, "--force")[0] == 2  # never over the input

    assert run(capsys, source, "--rank", 2)[0] == 0
    code, _, err = run(capsys, source, "--rank", 2)
    assert code == 2 and "--force" in err
    assert run(capsys, source, "--rank", 2, "--force")[0] == 0


def test_human_report_names_modules_ranks_energy_and_sizes(tmp_path, capsys):
    source = tmp_path / "lora.safetensors"
    _kohya_file(source, rank=6)
    code, out, _ = run(capsys, source, "--rank", 2)
    assert code == 0
    assert "6 → 2" in out and "retained" in out and "relative error" in out and "kB" in out
    assert "lora_unet_down_blocks_0_resnets_0_conv1" in out and "6→2" in out


# ------------------------------------------------------------------------------------------ metadata fix


def test_metadata_fix_declares_mixed_conv_ranks_dynamic(tmp_path, capsys):
    # conv_dim says 8 while the 3×3 convs have ranks 2 and 4: no single number is true, so the fix writes
    # "Dynamic" (as kohya does for mixed ranks) and the rewritten file inspects without a rank finding.
    from bot.core.inspect import inspect_evidence
    from bot.core.metadata import corrected_metadata
    from bot.files.safetensors import rewrite_metadata
    from bot.sources.local import collect

    generator = torch.Generator().manual_seed(7)
    tensors = {
        "lora_unet_a_proj.lora_down.weight": torch.randn(4, 16, generator=generator),
        "lora_unet_a_proj.lora_up.weight": torch.randn(16, 4, generator=generator),
    }
    for name, rank in (("lora_unet_b_conv1", 2), ("lora_unet_c_conv2", 4)):
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, 8, 3, 3, generator=generator)
        tensors[f"{name}.lora_up.weight"] = torch.randn(8, rank, 1, 1, generator=generator)
    source = tmp_path / "locon.safetensors"
    save_file(
        tensors,
        str(source),
        metadata={"ss_network_dim": "4", "ss_network_args": json.dumps({"conv_dim": "8"})},
    )
    inspection = inspect_evidence(collect(source)[0])
    assert "rank-mismatch-metadata" in inspection.codes()

    fixed = corrected_metadata(inspection.metadata, inspection.modules)
    assert json.loads(fixed["ss_network_args"]) == {"conv_dim": "Dynamic"} and fixed["ss_network_dim"] == "4"
    rewrite_metadata(source, tmp_path / "fixed.safetensors", fixed)
    assert (
        "rank-mismatch-metadata" not in inspect_evidence(collect(tmp_path / "fixed.safetensors")[0]).codes()
    )
    assert torch.equal(
        load_file(str(tmp_path / "fixed.safetensors"))["lora_unet_b_conv1.lora_down.weight"],
        tensors["lora_unet_b_conv1.lora_down.weight"],
    )


def test_sigterm_during_resize_removes_the_partial_output(tmp_path):
    """A real `lora-bot resize` process killed with SIGTERM mid-write, as a container stop would: it exits
    143 with one line, and neither the output nor its `.partial` file is left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    source = tmp_path / "big.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for index in range(300):  # ~300 modules of 1024×32: a few seconds of QR and SVD, long enough to interrupt
        name = f"lora_unet_down_blocks_{index}_attentions_0_proj_in"
        tensors[f"{name}.lora_down.weight"] = torch.randn(32, 1024, generator=generator)
        tensors[f"{name}.lora_up.weight"] = torch.randn(1024, 32, generator=generator)
        tensors[f"{name}.alpha"] = torch.tensor(32.0)
    save_file(tensors, str(source))
    output = tmp_path / "out.safetensors"
    partial = tmp_path / "out.safetensors.partial"
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "resize", str(source), "--rank", "8", "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    deadline = time.monotonic() + 60
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert partial.exists(), "the resize finished before it could be interrupted: make the file bigger"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["lora-bot: terminated; the partial output was removed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


@pytest.mark.parametrize("key", ["ss_network_args", "lora_adapter_metadata"])
@pytest.mark.parametrize(
    "depth", [40, 800, 200_000]
)  # over the limit; deeper than the encoder's stack; the decoder's
def test_deeply_nested_metadata_json_is_refused_in_one_line(tmp_path, capsys, key, depth):
    source = tmp_path / "lora.safetensors"
    tensors = _kohya_file(source)
    metadata = header_metadata(source)
    metadata[key] = '{"a":' * depth + "1" + "}" * depth
    save_file(tensors, str(source), metadata=metadata)
    code, out, err = run(capsys, source, "--rank", 2)
    assert code == 1 and not out
    assert err.strip().splitlines() == [
        f"lora-bot: cannot resize {source}: {key} in the header metadata is JSON nested deeper than 32 "
        "levels; cannot rewrite it for the new rank"
    ]
    assert [p.name for p in tmp_path.iterdir()] == [source.name]


def test_metadata_json_nested_within_the_limit_is_rewritten(tmp_path, capsys):
    source = tmp_path / "lora.safetensors"
    tensors = _kohya_file(source)
    metadata = header_metadata(source)
    nested = '{"a":' * 30 + "1" + "}" * 30
    metadata["ss_network_args"] = f'{{"conv_dim": "6", "deep": {nested}}}'
    save_file(tensors, str(source), metadata=metadata)
    resize_json(capsys, source, "--rank", 2)
    args = json.loads(header_metadata(tmp_path / "lora-r2.safetensors")["ss_network_args"])
    assert args["conv_dim"] == "2" and json.dumps(args["deep"]) == json.dumps(json.loads(nested))


def test_control_characters_in_names_are_escaped_in_the_text_report(tmp_path, capsys):
    """A tensor and a file name holding ESC, CR and BEL: the report shows escapes, never the raw bytes."""
    hostile = "lora_unet_x\x1b[2J\r\x07_proj_in"
    source = tmp_path / "evil\x1b[31m\x07.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"{hostile}.lora_down.weight": torch.randn(4, 8, generator=generator),
        f"{hostile}.lora_up.weight": torch.randn(8, 4, generator=generator),
        f"{hostile}.alpha": torch.tensor(4.0),
    }
    save_file(tensors, str(source))
    code, out, err = run(capsys, source, "--rank", 2)
    assert code == 0, err
    assert not any(c in out for c in "\x1b\r\x07")
    assert "lora_unet_x\\x1b[2J\\x0d\\x07_proj_in" in out and "evil\\x1b[31m\\x07" in out
    code, _, err = run(capsys, source, "--rank", 2)  # the output exists now: a one-line refusal, escaped too
    assert code == 2 and not any(c in err for c in "\x1b\r\x07") and len(err.strip().splitlines()) == 1


def test_energy_first_pass_in_the_factors_own_memory_finds_the_same_spectrum():
    # The first pass of `--energy` factorises the down factor it read in place; the ranks it picks depend on
    # these values, so in place and on a copy must agree (conv factors and a down wider than tall included).
    from bot.resize.math import singular_values

    generator = torch.Generator().manual_seed(3)
    for down_shape, up_shape in (((8, 300), (40, 8)), ((4, 6, 3, 3), (10, 4, 1, 1)), ((16, 5), (7, 16))):
        down, up = torch.randn(down_shape, generator=generator), torch.randn(up_shape, generator=generator)
        on_copy = singular_values(down.clone(), up, 0.5)
        in_place = singular_values(down.clone(), up, 0.5, overwrite_down=True)
        assert torch.allclose(on_copy, in_place, rtol=1e-5, atol=1e-6)
