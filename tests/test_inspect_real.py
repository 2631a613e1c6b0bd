"""`lora-bot inspect` on adapters written by the real libraries.

peft writes the PEFT adapters, diffusers pipelines write the diffusers files, diffusers' converter writes the
kohya names; real-size shapes come from the real model classes built on the meta device and are written as
header-only files. Key lists are hand-written only for formats no installed library writes (legacy attention
processors, LyCORIS, kohya SGM/Flux names, ControlLoRA).

Every inspection goes through the command line (`lora-bot inspect TARGET --json`), because other tools rely on
exactly that JSON and exit status. Most calls run `bot.cli.main` in this process (a subprocess per call would
cost more than the inspections); the end-to-end cases run `python -m bot` in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_adapters import (
    build_peft_llama,
    header_only_save_function,
    lora_adapter_metadata,
    peft_state_dict_with_lora,
    rewrite_safetensors,
    tiny_flux_config,
    tiny_llama_config,
    tiny_sd3_config,
    tiny_unet_config,
    write_header_only_state_dict,
    write_meta_peft_adapter,
)

from bot.cli import main
from bot.core.flags import CODES
from bot.sandbox.layouts import sdxl_sgm_shapes, write_sparse_safetensors

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

FLUX_DEV, FLUX_SCHNELL = "black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
ATTENTION = ["to_k", "to_q", "to_v", "to_out.0"]


# ------------------------------------------------------------------------------------------------ helpers


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m bot ARGS` in a subprocess: the real entry point, stdout, stderr and exit status."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=120, check=False
    )


def run_main(*args: str) -> subprocess.CompletedProcess:
    """The same command through `bot.cli.main` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def inspect_json(target: Path, *extra: str, in_subprocess: bool = False) -> tuple[int, list[dict]]:
    done = (run_cli if in_subprocess else run_main)("inspect", str(target), "--json", *extra)
    assert done.stderr == "", done.stderr
    return done.returncode, json.loads(done.stdout)["files"]


def inspect_one(target: Path, *extra: str, in_subprocess: bool = False) -> tuple[int, dict]:
    status, files = inspect_json(target, *extra, in_subprocess=in_subprocess)
    assert len(files) == 1, [f["path"] for f in files]
    return status, files[0]


def codes(report: dict) -> set[str]:
    return {f["code"] for f in report["flags"]}


def flag_of(report: dict, code: str) -> dict:
    found = [f for f in report["flags"] if f["code"] == code]
    assert found, f"no {code} flag in {report['flags']}"
    return found[0]


def modules_by_name(report: dict) -> dict[str, dict]:
    return {m["name"]: m for m in report["module_details"]}


def numbers_in(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"(?<![\w.])\d+(?![\w.])", text)}


def lora_down_keys(state_dict) -> list[str]:
    return [k for k in state_dict if k.endswith((".lora_A.weight", ".lora.down.weight", ".lora_down.weight"))]


# ------------------------------------------------------------------------------------------ 1. PEFT


def test_peft_plain_adapter(tmp_path):
    build_peft_llama(tmp_path, r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    status, report = inspect_one(tmp_path, in_subprocess=True)
    assert status == 0
    assert report["path"] == "adapter_model.safetensors"
    assert report["format"] == "peft"
    assert (report["rank"], report["ranks"]) == (4, {"4": 4})  # 2 layers x (q_proj, v_proj)
    assert (report["alpha"], report["alpha_declared"]) == (8.0, True)
    assert report["modules"] == 4
    # A 64-wide toy Llama is no released model: the shapes name nothing, and nothing is claimed.
    assert (report["base_model"]["family"], report["base_model"]["source"]) == (None, "unknown")
    assert report["flags"] == []


def test_peft_rank_and_alpha_patterns_are_per_module_not_mismatches(tmp_path):
    build_peft_llama(
        tmp_path,
        r=8,
        alpha=16,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        rank_pattern={"k_proj": 2, "layers.1.self_attn.q_proj": 4},
        alpha_pattern={"o_proj": 32},
    )
    status, report = inspect_one(tmp_path, "--modules")
    assert status == 0
    assert report["format"] == "peft"
    assert report["ranks"] == {"2": 2, "4": 1, "8": 5}
    assert (report["rank"], report["alpha"], report["alpha_declared"]) == (8, 16.0, True)
    assert report["modules"] == 8
    assert not codes(report) & {"rank-mismatch-config", "mixed-rank-undeclared", "alpha-missing"}
    modules = modules_by_name(report)
    prefix = "base_model.model.model.layers"
    assert modules[f"{prefix}.0.self_attn.k_proj"]["rank"] == 2
    assert modules[f"{prefix}.1.self_attn.q_proj"]["rank"] == 4
    assert modules[f"{prefix}.0.self_attn.q_proj"]["rank"] == 8
    assert modules[f"{prefix}.0.self_attn.o_proj"]["alpha"] == 32.0
    assert modules[f"{prefix}.0.self_attn.v_proj"]["alpha"] == 16.0


def test_peft_rslora_scale_is_alpha_over_sqrt_rank(tmp_path):
    build_peft_llama(tmp_path, r=16, alpha=8, use_rslora=True)
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert (report["rank"], report["alpha"], report["use_rslora"]) == (16, 8.0, True)
    assert report["scale"] == pytest.approx(8 / 16**0.5)


def test_peft_dora_is_reported(tmp_path):
    build_peft_llama(tmp_path, r=4, alpha=4, target_modules=("q_proj",), use_dora=True)
    status, report = inspect_one(tmp_path)
    assert status == 0  # DoRA is information, not an error
    assert report["format"] == "peft"
    assert (report["rank"], report["modules"]) == (4, 2)  # the magnitude vector belongs to its module
    assert codes(report) == {"dora-present"}


def test_peft_embedding_lora_and_modules_to_save(tmp_path):
    build_peft_llama(
        tmp_path, r=4, alpha=8, target_modules=("q_proj", "embed_tokens"), modules_to_save=["lm_head"]
    )
    status, report = inspect_one(tmp_path, "--modules")
    assert status == 0
    assert report["flags"] == []  # lm_head and embed_tokens.base_layer are saved on purpose
    assert report["unknown_keys"] == []
    assert (report["rank"], report["ranks"], report["modules"]) == (4, {"4": 3}, 3)
    embedding = modules_by_name(report)["base_model.model.model.embed_tokens"]
    vocab, hidden = tiny_llama_config().vocab_size, tiny_llama_config().hidden_size
    assert (embedding["rank"], embedding["in"], embedding["out"]) == (4, vocab, hidden)
    assert "base_model.model.model.embed_tokens (in 256, out 64)" in report["base_model"]["evidence"]


def test_peft_lora_bias(tmp_path):
    build_peft_llama(tmp_path, r=4, alpha=8, lora_bias=True, init_lora_weights=True)
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert (report["rank"], report["modules"], report["unknown_keys"], report["flags"]) == (4, 4, [], [])


def test_peft_trainable_tokens_are_not_unknown_keys(tmp_path):
    build_peft_llama(tmp_path, r=4, alpha=8, trainable_token_indices=[0, 1, 2])
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert report["unknown_keys"] == [] and report["flags"] == []
    assert (report["rank"], report["modules"]) == (4, 4)


def test_peft_gpt2_style_trunk_is_a_language_model(tmp_path):
    """GPT-2, Falcon, Bloom call their trunk `transformer`: under PEFT's prefix that is no diffusion model."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=64, bos_token_id=0, eos_token_id=0
        )
    )
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights="gaussian"
    )
    get_peft_model(model, config).save_pretrained(str(tmp_path))
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert (report["format"], report["rank"], report["modules"]) == ("peft", 4, 2)
    assert report["components"] == ["model"]
    # Read as GPT-2's trunk, not a diffusion transformer; a 64-wide toy fits no released GPT-2 size.
    assert report["base_model"]["family"] is None
    assert "transformer.h.0.attn.c_attn" in report["base_model"]["evidence"]


def test_peft_adapter_saved_from_unsharded_zero3_is_an_error(tmp_path):
    """DeepSpeed ZeRO-3 without gathering saves empty tensors (PEFT now warns about exactly this)."""
    build_peft_llama(tmp_path)
    rewrite_safetensors(_peft_file(tmp_path), lambda t: {k: torch.zeros(0) for k in t})
    status, report = inspect_one(tmp_path)
    assert status == 1
    assert (report["format"], report["modules"], report["rank"], report["ranks"]) == ("peft", 4, None, {})
    assert "[0]" in flag_of(report, "pair-shape-mismatch")["message"]


# ------------------------------------------------------------------------------ 2. FaceChain, end to end


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


def test_facechain_config_rank_disagrees_with_weights(tmp_path):
    build_peft_llama(tmp_path, r=4, alpha=8)
    _edit_config(tmp_path, r=8)
    status, report = inspect_one(tmp_path, in_subprocess=True)
    assert status == 1
    mismatch = flag_of(report, "rank-mismatch-config")
    assert mismatch["severity"] == "error"
    assert {8, 4} <= numbers_in(mismatch["message"])
    assert "base_model.model.model.layers.0.self_attn.q_proj" in mismatch["message"]
    assert report["rank"] == 4  # the shapes are the truth
    assert "mixed-rank-undeclared" not in codes(report)


def test_facechain_on_the_real_sd15_unet(tmp_path):
    """FaceChain's adapters were PEFT LoRAs of the SD1.5 UNet (modelscope/facechain#170, #494)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
    write_meta_peft_adapter(tmp_path, unet, LoraConfig(r=4, lora_alpha=4, target_modules=ATTENTION))
    status, report = inspect_one(tmp_path)
    assert (status, report["format"], report["rank"], report["base_model"]["family"]) == (0, "peft", 4, "sd1")
    _edit_config(tmp_path, r=8)
    status, report = inspect_one(tmp_path)
    assert status == 1
    message = flag_of(report, "rank-mismatch-config")["message"]
    assert {8, 4} <= numbers_in(message) and "base_model.model.down_blocks.0.attentions.0" in message


def test_rank_pattern_entry_that_disagrees_is_named(tmp_path):
    build_peft_llama(tmp_path, r=8, alpha=8, target_modules=("q_proj", "k_proj"), rank_pattern={"k_proj": 2})
    _edit_config(tmp_path, rank_pattern={"k_proj": 4})
    status, report = inspect_one(tmp_path)
    assert status == 1
    message = flag_of(report, "rank-mismatch-config")["message"]
    assert "rank_pattern" in message and {4, 2} <= numbers_in(message) and "k_proj" in message


# ----------------------------------------------------------------------------------- 3. diffusers files


@pytest.fixture(scope="module")
def diffusers_libs():
    import diffusers
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya

    return diffusers, convert_state_dict_to_diffusers, convert_state_dict_to_kohya


def _tiny_unet_lora(lora_config):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_unet_config())
    return unet, peft_state_dict_with_lora(unet, lora_config)


def _lora_config(**kwargs):
    from peft import LoraConfig

    kwargs.setdefault("target_modules", ATTENTION)
    return LoraConfig(init_lora_weights="gaussian", **kwargs)


def test_diffusers_unet_lora_without_metadata(tmp_path, diffusers_libs):
    diffusers, to_diffusers, _ = diffusers_libs
    _, state_dict = _tiny_unet_lora(_lora_config(r=4, lora_alpha=8))
    # train_text_to_image_lora.py: PEFT state dict -> diffusers names (`lora.down`), no metadata.
    diffusers.StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=to_diffusers(state_dict))
    status, report = inspect_one(tmp_path / "pytorch_lora_weights.safetensors")
    assert status == 0
    assert report["format"] == "diffusers"
    assert report["modules"] == len(lora_down_keys(state_dict))
    assert (report["rank"], report["ranks"]) == (4, {"4": report["modules"]})
    # Nothing declares alpha: loaders use alpha = rank. diffusers files never declare it, so that is no finding.
    assert (report["alpha"], report["alpha_declared"]) == (4.0, False)
    assert codes(report) == set()


def test_diffusers_unet_lora_with_adapter_metadata(tmp_path, diffusers_libs):
    diffusers, _, _ = diffusers_libs
    config = _lora_config(r=4, lora_alpha=8)
    _, state_dict = _tiny_unet_lora(config)
    diffusers.StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=state_dict, unet_lora_adapter_metadata=lora_adapter_metadata(config)
    )
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert report["format"] == "diffusers"
    assert (report["rank"], report["alpha"], report["alpha_declared"]) == (4, 8.0, True)
    assert report["flags"] == []


def test_diffusers_sd3_transformer_lora(tmp_path, diffusers_libs):
    diffusers, _, _ = diffusers_libs
    torch.manual_seed(0)
    model = diffusers.SD3Transformer2DModel(**tiny_sd3_config())
    config = _lora_config(
        r=4,
        lora_alpha=16,
        target_modules=[*ATTENTION, "add_k_proj", "add_q_proj", "add_v_proj", "to_add_out"],
    )
    state_dict = peft_state_dict_with_lora(model, config)
    diffusers.StableDiffusion3Pipeline.save_lora_weights(
        tmp_path,
        transformer_lora_layers=state_dict,
        transformer_lora_adapter_metadata=lora_adapter_metadata(config),
    )
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert report["format"] == "diffusers"
    assert report["modules"] == len(lora_down_keys(state_dict))
    assert (report["rank"], report["alpha"], report["alpha_declared"]) == (4, 16.0, True)
    assert report["flags"] == []
    # A toy transformer has no known base model's shapes; it must not be passed off as one.
    assert report["base_model"]["family"] is None


@pytest.mark.parametrize(
    "with_metadata, pattern",
    [
        (False, "proj_mlp"),
        (True, "proj_mlp"),
        (
            True,
            r"single_transformer_blocks\.\d+\.proj_mlp",
        ),  # PEFT patterns are regexes; diffusers passes them on
    ],
)
def test_diffusers_flux_transformer_lora(tmp_path, diffusers_libs, with_metadata, pattern):
    diffusers, _, _ = diffusers_libs
    from diffusers.training_utils import _collate_lora_metadata

    torch.manual_seed(0)
    model = diffusers.FluxTransformer2DModel(**tiny_flux_config())
    config = _lora_config(
        r=8,
        lora_alpha=16,
        target_modules=[*ATTENTION, "proj_mlp", "proj_out"],
        rank_pattern={pattern: 4},
        alpha_pattern={pattern: 2},
    )
    state_dict = peft_state_dict_with_lora(model, config)
    # train_dreambooth_lora_flux.py passes `_collate_lora_metadata(...)` to save_lora_weights.
    metadata = _collate_lora_metadata({"transformer": model}) if with_metadata else {}
    diffusers.FluxPipeline.save_lora_weights(tmp_path, transformer_lora_layers=state_dict, **metadata)
    status, report = inspect_one(tmp_path, "--modules")
    assert report["format"] == "diffusers"
    assert report["modules"] == len(lora_down_keys(state_dict))
    proj_mlp = [m for m in report["module_details"] if m["name"].endswith(".proj_mlp")]
    assert proj_mlp and all(m["rank"] == 4 for m in proj_mlp)
    assert (report["rank"], status) == (8, 0)
    if with_metadata:
        assert (report["alpha"], report["alpha_declared"]) == (16.0, True)
        assert all(m["alpha"] == 2.0 for m in proj_mlp)
        assert report["flags"] == []
    else:
        assert (report["alpha"], report["alpha_declared"]) == (8.0, False)  # alpha = rank, per module
        assert all(m["alpha"] == 4.0 for m in proj_mlp)
        assert codes(report) == {"mixed-rank-undeclared", "alpha-missing"}


def _tiny_clip_lora(lora_config, projection: bool):
    """A tiny CLIP text encoder with LoRA. transformers' `add_adapter` wants a newer peft than the installed
    one, so inject with peft directly (which is what `add_adapter` calls)."""
    from peft import inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=100,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    inject_adapter_in_model(lora_config, model)
    return get_peft_model_state_dict(model)


def test_diffusers_sdxl_unet_and_text_encoders_each_declare_their_rank(tmp_path, diffusers_libs):
    diffusers = diffusers_libs[0]
    unet_config = _lora_config(r=8, lora_alpha=16)
    text_configs = [
        _lora_config(r=4, lora_alpha=alpha, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
        for alpha in (4, 8)
    ]
    _, unet_layers = _tiny_unet_lora(unet_config)
    diffusers.StableDiffusionXLPipeline.save_lora_weights(
        tmp_path,
        unet_lora_layers=unet_layers,
        text_encoder_lora_layers=_tiny_clip_lora(text_configs[0], projection=False),
        text_encoder_2_lora_layers=_tiny_clip_lora(text_configs[1], projection=True),
        unet_lora_adapter_metadata=lora_adapter_metadata(unet_config),
        text_encoder_lora_adapter_metadata=lora_adapter_metadata(text_configs[0]),
        text_encoder_2_lora_adapter_metadata=lora_adapter_metadata(text_configs[1]),
    )
    status, report = inspect_one(tmp_path, "--modules")
    assert status == 0
    assert report["components"] == ["denoiser", "text_encoder", "text_encoder_2"]
    by_component = {(m["name"].split(".")[0], m["rank"], m["alpha"]) for m in report["module_details"]}
    assert by_component == {("unet", 8, 16.0), ("text_encoder", 4, 4.0), ("text_encoder_2", 4, 8.0)}
    assert report["flags"] == []  # different ranks, each declared by its component's metadata


def test_diffusers_metadata_rank_that_disagrees_is_an_error(tmp_path, diffusers_libs):
    diffusers, _, _ = diffusers_libs
    config = _lora_config(r=4, lora_alpha=4)
    _, state_dict = _tiny_unet_lora(config)
    metadata = lora_adapter_metadata(config) | {"r": 8}  # diffusers would build rank-8 layers from this
    diffusers.StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=state_dict, unet_lora_adapter_metadata=metadata
    )
    status, report = inspect_one(tmp_path)
    assert status == 1
    found = flag_of(report, "rank-mismatch-metadata")
    assert found["severity"] == "error"
    assert "unet.r" in found["message"] and {8, 4} <= numbers_in(found["message"])


# ----------------------------------------------------------------------------------------------- 4. kohya


def _kohya_from_tiny_unet(diffusers_libs, **lora):
    diffusers, _, to_kohya = diffusers_libs
    _, state_dict = _tiny_unet_lora(_lora_config(**lora))
    # The diffusers SDXL/SD3 scripts' `--output_kohya_format`: prefix with the component, then convert.
    return to_kohya(diffusers.StableDiffusionPipeline.pack_weights(state_dict, "unet"))


def _save(tensors: dict, path: Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def test_kohya_names_from_diffusers_converter(tmp_path, diffusers_libs):
    kohya = _kohya_from_tiny_unet(
        diffusers_libs, r=4, lora_alpha=4, target_modules=[*ATTENTION, "proj_in", "conv1"]
    )
    assert any(k.endswith(".alpha") for k in kohya)
    path = _save(kohya, tmp_path / "lora.safetensors", {"ss_network_dim": "4", "ss_network_alpha": "4"})
    status, report = inspect_one(path, "--modules")
    assert status == 0
    assert report["format"] == "kohya"
    assert report["modules"] == len(lora_down_keys(kohya))
    assert (report["rank"], report["alpha"], report["alpha_declared"]) == (4, 4.0, True)
    assert report["flags"] == []
    conv = [m for m in report["module_details"] if m["name"].endswith("conv1")]
    assert conv and all(m["conv"] and m["rank"] == 4 for m in conv)


def test_kohya_alpha_values_are_read_from_the_scalars(tmp_path, diffusers_libs):
    kohya = _kohya_from_tiny_unet(diffusers_libs, r=8, lora_alpha=8)
    # sd-scripts stores alpha in the save dtype; give each module its own value so a wrong read shows.
    alpha_keys = sorted(k for k in kohya if k.endswith(".alpha"))
    dtypes = (torch.float16, torch.bfloat16, torch.float32)
    expected = {}
    for index, key in enumerate(alpha_keys):
        value = float(index % 5 + 1)
        kohya[key] = torch.tensor(value, dtype=dtypes[index % 3])
        expected[key[: -len(".alpha")]] = value
    path = _save(kohya, tmp_path / "lora.safetensors", {"ss_network_dim": "8", "ss_network_alpha": "1"})
    status, report = inspect_one(path, "--modules")
    assert status == 0
    read = {m["name"]: m["alpha"] for m in report["module_details"]}
    assert read == expected
    assert report["alpha_declared"] is True


def test_kohya_one_by_one_convs_count_as_network_dim(tmp_path, diffusers_libs):
    """sd-scripts gives Linear and 1x1 Conv2d layers network_dim and 3x3 convs conv_dim (LoCon)."""
    kohya = _kohya_from_tiny_unet(
        diffusers_libs,
        r=8,
        lora_alpha=8,
        target_modules=[*ATTENTION, "proj_in", "proj_out", "conv1"],
        rank_pattern={"conv1": 4},
    )
    metadata = {
        "ss_network_dim": "8",
        "ss_network_alpha": "8",
        "ss_network_args": json.dumps({"conv_dim": "4", "conv_alpha": "4"}),
    }
    status, report = inspect_one(_save(kohya, tmp_path / "locon.safetensors", metadata), "--modules")
    proj_in = [m for m in report["module_details"] if m["name"].endswith("proj_in")]
    assert proj_in and all(
        m["conv"] and m["rank"] == 8 for m in proj_in
    )  # the toy UNet's proj_in is a 1x1 conv
    assert report["ranks"] == {"8": report["modules"] - 8, "4": 8}  # 8 resnets carry conv1
    assert report["flags"] == []
    assert status == 0


def test_kohya_mixed_ranks_with_per_module_alphas_are_declared(tmp_path, diffusers_libs):
    kohya = _kohya_from_tiny_unet(diffusers_libs, r=8, lora_alpha=8, rank_pattern={"to_k": 2})
    status, report = inspect_one(_save(kohya, tmp_path / "lora.safetensors"))
    assert set(report["ranks"]) == {"2", "8"}
    assert report["flags"] == []  # each module carries its own `.alpha`; kohya loaders read each rank
    assert status == 0


def test_kohya_metadata_rank_that_disagrees_is_flagged(tmp_path, diffusers_libs):
    kohya = _kohya_from_tiny_unet(diffusers_libs, r=4, lora_alpha=4)
    path = _save(kohya, tmp_path / "lora.safetensors", {"ss_network_dim": "16", "ss_network_alpha": "8"})
    status, report = inspect_one(path)
    assert report["rank"] == 4
    found = flag_of(report, "rank-mismatch-metadata")
    assert {16, 4} <= numbers_in(found["message"]) and "ss_network_dim" in found["message"]
    # kohya-style loaders take each rank from the shapes, so stale metadata misleads but does not break loading.
    assert (found["severity"], status) == ("warning", 0)


def test_kohya_without_alpha_tensors_is_alpha_missing(tmp_path, diffusers_libs):
    kohya = _kohya_from_tiny_unet(diffusers_libs, r=4, lora_alpha=4)
    old_style = {k: v for k, v in kohya.items() if not k.endswith(".alpha")}  # pre-alpha kohya files
    status, report = inspect_one(_save(old_style, tmp_path / "lora.safetensors"))
    assert status == 0
    assert report["format"] == "kohya"
    assert (report["alpha"], report["alpha_declared"]) == (4.0, False)
    assert flag_of(report, "alpha-missing")["severity"] == "info"


# -------------------------------------------------------------------------- 5. real-size fingerprints

LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
)
LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
)
QWEN2_7B = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
)
LLM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

SD15_UNET = dict(
    sample_size=64, cross_attention_dim=768, attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280]
)
SD21_UNET = dict(
    sample_size=96,
    cross_attention_dim=1024,
    attention_head_dim=[5, 10, 20, 20],
    use_linear_projection=True,
    block_out_channels=[320, 640, 1280, 1280],
)
SDXL_UNET = dict(
    sample_size=128,
    cross_attention_dim=2048,
    block_out_channels=[320, 640, 1280],
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=[1, 2, 10],
    addition_embed_type="text_time",
    projection_class_embeddings_input_dim=2816,
    addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20],
    use_linear_projection=True,
)
SD3_MEDIUM = dict(
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    in_channels=16,
    out_channels=16,
    patch_size=2,
    sample_size=128,
    pos_embed_max_size=192,
)
FLUX1 = dict(
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    in_channels=64,
    guidance_embeds=True,
)
MLP_TARGETS = ["ff.net.0.proj", "ff.net.2"]
FLUX_TARGETS = [
    *ATTENTION,
    *("add_k_proj", "add_q_proj", "add_v_proj", "to_add_out"),
    *("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "proj_mlp"),
]


def _meta_llm(config: dict, qwen: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    model_class, config_class = (Qwen2ForCausalLM, Qwen2Config) if qwen else (LlamaForCausalLM, LlamaConfig)
    with torch.device("meta"):
        return model_class(config_class(**config))


def _meta_peft(tmp_path, config, *, qwen=False, targets=LLM_TARGETS, base_model=None):
    from peft import LoraConfig

    directory = tmp_path / "adapter"
    write_meta_peft_adapter(
        directory,
        _meta_llm(config, qwen),
        LoraConfig(r=16, lora_alpha=32, target_modules=targets),
        base_model=base_model,
    )
    return directory


def test_llama2_7b_shapes_name_the_model(tmp_path):
    status, report = inspect_one(_meta_peft(tmp_path, LLAMA2_7B))
    assert status == 0
    assert report["format"] == "peft"
    assert (report["rank"], report["modules"], report["alpha"]) == (16, 32 * 7, 32.0)
    base = report["base_model"]
    # Base and chat share every shape: the class's checkpoints, and no repo id the shapes cannot choose.
    assert (base["family"], base["repo_id"], base["candidates"]) == (
        "llm",
        None,
        ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"],
    )
    assert base["source"] == "shapes"


def test_llama3_8b_and_mistral_share_shapes(tmp_path):
    status, report = inspect_one(_meta_peft(tmp_path, LLAMA3_8B))
    assert status == 0
    base = report["base_model"]
    assert base["family"] == "llm"
    assert {"meta-llama/Meta-Llama-3-8B", "mistralai/Mistral-7B-v0.1"} <= set(base["candidates"])
    assert "meta-llama/Llama-2-7b-hf" not in base["candidates"]
    assert base["repo_id"] is None  # the shapes cannot choose


def test_llama3_vocabulary_rules_out_mistral(tmp_path):
    report = inspect_one(_meta_peft(tmp_path, LLAMA3_8B, targets=["q_proj", "v_proj", "embed_tokens"]))[1]
    candidates = report["base_model"]["candidates"]
    assert "meta-llama/Meta-Llama-3-8B" in candidates and "mistralai/Mistral-7B-v0.1" not in candidates


def test_resized_vocabulary_keeps_the_base(tmp_path):
    """alpaca-lora era adapters added a pad token: Llama-2-7B with 32001 embeddings is still Llama-2-7B."""
    report = inspect_one(
        _meta_peft(tmp_path, LLAMA2_7B | {"vocab_size": 32001}, targets=["q_proj", "v_proj", "embed_tokens"])
    )[1]
    assert report["base_model"]["candidates"] == ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"]
    assert "a resized vocabulary" in report["base_model"]["evidence"]


def test_qwen2_7b_shapes(tmp_path):
    report = inspect_one(_meta_peft(tmp_path, QWEN2_7B, qwen=True))[1]
    base = report["base_model"]
    assert (base["family"], base["repo_id"]) == ("llm", None)
    assert {"Qwen/Qwen2-7B", "Qwen/Qwen2.5-7B"} <= set(base["candidates"])  # 2 and 2.5 share every width
    assert not any("Llama" in c for c in base["candidates"])


def test_llm_config_naming_another_model_is_a_mismatch(tmp_path):
    directory = _meta_peft(tmp_path, LLAMA2_7B, base_model="meta-llama/Meta-Llama-3-8B")
    assert (
        json.loads((directory / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "meta-llama/Meta-Llama-3-8B"
    )
    status, report = inspect_one(directory)
    assert status == 1
    message = flag_of(report, "base-model-mismatch")["message"]
    assert "Meta-Llama-3-8B" in message and "Llama-2-7b-hf" in message


def test_llm_config_naming_a_candidate_gives_the_repo(tmp_path):
    directory = _meta_peft(tmp_path, LLAMA3_8B, base_model="mistralai/Mistral-7B-v0.1")
    status, report = inspect_one(directory)
    assert status == 0
    assert report["base_model"]["repo_id"] == "mistralai/Mistral-7B-v0.1"
    assert "base-model-mismatch" not in codes(report)


@pytest.fixture(scope="module")
def meta_unets():
    from diffusers import UNet2DConditionModel

    built = {}
    with torch.device("meta"):
        for name, config in (("sd15", SD15_UNET), ("sd21", SD21_UNET), ("sdxl", SDXL_UNET)):
            unet = UNet2DConditionModel(**config)
            built[name] = peft_state_dict_with_lora(unet, _lora_config(r=8, lora_alpha=8))
    return built


def _save_unet(tmp_path, state_dict, how: str, diffusers_libs, metadata=None) -> Path:
    diffusers, to_diffusers, to_kohya = diffusers_libs
    directory = tmp_path / how
    if how == "kohya":
        directory.mkdir()
        packed = diffusers.StableDiffusionPipeline.pack_weights(state_dict, "unet")
        return write_header_only_state_dict(directory / "lora.safetensors", to_kohya(packed), metadata)
    layers = to_diffusers(state_dict) if how == "diffusers-names" else state_dict
    diffusers.StableDiffusionXLPipeline.save_lora_weights(
        directory, unet_lora_layers=layers, save_function=header_only_save_function(metadata)
    )
    return directory / "pytorch_lora_weights.safetensors"


@pytest.mark.parametrize(
    "unet, how, family, repo_id",
    [
        ("sd15", "diffusers-names", "sd1", None),
        ("sd15", "kohya", "sd1", None),
        ("sd21", "peft-names", "sd2", None),
        ("sd21", "kohya", "sd2", None),
        # SDXL base shares every shape with Pony, Illustrious, NoobAI...: a class, so no repo id.
        ("sdxl", "peft-names", "sdxl", None),
        ("sdxl", "kohya", "sdxl", None),
    ],
)
def test_unet_fingerprints(tmp_path, meta_unets, diffusers_libs, unet, how, family, repo_id):
    path = _save_unet(tmp_path, meta_unets[unet], how, diffusers_libs)
    status, report = inspect_one(path)
    assert report["format"] == ("kohya" if how == "kohya" else "diffusers")
    assert report["modules"] == len(lora_down_keys(meta_unets[unet]))
    assert report["rank"] == 8
    base = report["base_model"]
    assert (base["family"], base["repo_id"]) == (family, repo_id)
    if repo_id is None:
        assert len(base["candidates"]) > 1
    assert not codes(report) - {"alpha-missing"}, report["flags"]
    assert status == 0


def test_sd15_lora_tagged_sdxl_is_a_mismatch(tmp_path, meta_unets, diffusers_libs):
    path = _save_unet(tmp_path, meta_unets["sd15"], "diffusers-names", diffusers_libs)
    (path.parent / "README.md").write_text(f"---\nbase_model: {SDXL_BASE}\ntags:\n- lora\n---\n# my LoRA\n")
    status, report = inspect_one(path.parent)
    assert status == 1
    assert report["base_model"]["family"] == "sd1"  # the shapes win
    found = flag_of(report, "base-model-mismatch")
    assert found["severity"] == "error"
    assert SDXL_BASE in found["message"] and "768" in found["message"]


def test_sdxl_kohya_metadata_saying_sd1_is_a_mismatch(tmp_path, meta_unets, diffusers_libs):
    path = _save_unet(
        tmp_path, meta_unets["sdxl"], "kohya", diffusers_libs, {"ss_base_model_version": "sd_v1"}
    )
    status, report = inspect_one(path)
    assert status == 1 and report["base_model"]["family"] == "sdxl"
    assert "ss_base_model_version" in flag_of(report, "base-model-mismatch")["message"]


@pytest.fixture(scope="module")
def meta_transformers():
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    with torch.device("meta"):
        sd3, sd3_mlp = SD3Transformer2DModel(**SD3_MEDIUM), SD3Transformer2DModel(**SD3_MEDIUM)
        flux, flux_mlp = FluxTransformer2DModel(**FLUX1), FluxTransformer2DModel(**FLUX1)
        return {
            "sd3": peft_state_dict_with_lora(
                sd3, _lora_config(r=16, lora_alpha=16, target_modules=ATTENTION)
            ),
            "flux": peft_state_dict_with_lora(
                flux, _lora_config(r=16, lora_alpha=16, target_modules=FLUX_TARGETS)
            ),
            # Trainers let users adapt only some layers: no attention at all here.
            "sd3-mlp": peft_state_dict_with_lora(
                sd3_mlp, _lora_config(r=4, lora_alpha=4, target_modules=MLP_TARGETS)
            ),
            "flux-mlp": peft_state_dict_with_lora(
                flux_mlp, _lora_config(r=4, lora_alpha=4, target_modules=["proj_mlp", *MLP_TARGETS])
            ),
        }


@pytest.mark.parametrize("lora", ["sd3", "sd3-mlp"])
def test_sd3_medium_fingerprint(tmp_path, meta_transformers, diffusers_libs, lora):
    diffusers = diffusers_libs[0]
    diffusers.StableDiffusion3Pipeline.save_lora_weights(
        tmp_path, transformer_lora_layers=meta_transformers[lora], save_function=header_only_save_function()
    )
    status, report = inspect_one(tmp_path)
    assert report["format"] == "diffusers"
    assert report["modules"] == len(lora_down_keys(meta_transformers[lora]))
    base = report["base_model"]
    assert base["family"] == "sd3"
    assert "stabilityai/stable-diffusion-3-medium-diffusers" in base["candidates"]
    assert not any(c.startswith("stabilityai/stable-diffusion-3.5-large") for c in base["candidates"])
    assert status == 0


@pytest.mark.parametrize(
    "architecture, repo_id",
    [
        (None, None),
        ("flux-1-dev/lora", FLUX_DEV),
        ("flux-1-schnell/lora", FLUX_SCHNELL),
    ],
)
def test_flux_fingerprint_and_modelspec(tmp_path, meta_transformers, diffusers_libs, architecture, repo_id):
    diffusers = diffusers_libs[0]
    metadata = (
        {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": architecture}
        if architecture
        else None
    )
    diffusers.FluxPipeline.save_lora_weights(
        tmp_path,
        transformer_lora_layers=meta_transformers["flux"],
        save_function=header_only_save_function(metadata),
    )
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert report["format"] == "diffusers"
    assert report["modules"] == len(lora_down_keys(meta_transformers["flux"]))
    base = report["base_model"]
    assert base["family"] == "flux1"
    assert {FLUX_DEV, FLUX_SCHNELL} <= set(base["candidates"])  # dev and schnell have the same shapes
    assert base["repo_id"] == repo_id


def test_flux_lora_on_mlps_only(tmp_path, meta_transformers, diffusers_libs):
    diffusers = diffusers_libs[0]
    diffusers.FluxPipeline.save_lora_weights(
        tmp_path,
        transformer_lora_layers=meta_transformers["flux-mlp"],
        save_function=header_only_save_function(),
    )
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert report["modules"] == len(lora_down_keys(meta_transformers["flux-mlp"]))
    assert (report["base_model"]["family"], report["base_model"]["repo_id"]) == ("flux1", None)


def test_flux_lora_declared_as_sdxl_is_a_mismatch(tmp_path, meta_transformers, diffusers_libs):
    diffusers = diffusers_libs[0]
    diffusers.FluxPipeline.save_lora_weights(
        tmp_path, transformer_lora_layers=meta_transformers["flux"], save_function=header_only_save_function()
    )
    (tmp_path / "README.md").write_text("---\nbase_model: stabilityai/stable-diffusion-xl-base-1.0\n---\n")
    status, report = inspect_one(tmp_path)
    assert status == 1 and report["base_model"]["family"] == "flux1"
    assert "base-model-mismatch" in codes(report)


# ------------------------------------------------- 6. formats no installed library writes (hand-written)


def _linear(
    name: str, r: int, n_in: int, n_out: int, dtype: str = "F16", down="lora_down.weight", up="lora_up.weight"
) -> dict:
    return {f"{name}.{down}": (dtype, (r, n_in)), f"{name}.{up}": (dtype, (n_out, r))}


def _alpha(name: str, dtype: str = "F16") -> dict:
    return {f"{name}.alpha": (dtype, ())}


@pytest.fixture(scope="module")
def sd15_attention_shapes():
    """(path, query width, context width, inner width) of every attention of the real SD1.5 UNet."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
    return [
        (name, m.to_q.in_features, m.to_k.in_features, m.to_q.out_features)
        for name, m in unet.named_modules()
        if isinstance(m, Attention)
    ]


def test_legacy_attention_processor_lora_facechain(tmp_path, sd15_attention_shapes):
    shapes = {}
    for path, query, context, inner in sd15_attention_shapes:
        base = f"unet.{path}.processor"
        for proj, n_in, n_out in (
            ("to_q", query, inner),
            ("to_k", context, inner),
            ("to_v", context, inner),
            ("to_out", inner, query),
        ):
            shapes.update(_linear(f"{base}.{proj}_lora", 4, n_in, n_out, "F32", "down.weight", "up.weight"))
    path = tmp_path / "pytorch_lora_weights.safetensors"
    write_sparse_safetensors(path, shapes)
    status, report = inspect_one(path)
    assert status == 0
    assert report["format"] == "diffusers-legacy"
    assert (report["rank"], report["modules"]) == (4, 4 * len(sd15_attention_shapes))
    assert report["base_model"]["family"] == "sd1"
    assert codes(report) == set()  # these formats never store alpha: every loader applies scale 1


def _lycoris_file(tmp_path, shapes: dict, values: dict, algo: str) -> Path:
    metadata = {
        "ss_network_module": "lycoris.kohya",
        "ss_network_dim": "8",
        "ss_network_alpha": "4",
        "ss_network_args": json.dumps({"algo": algo}),
    }
    path = tmp_path / f"{algo}.safetensors"
    write_sparse_safetensors(path, shapes, metadata, values)
    return path


def test_lycoris_loha(tmp_path):
    shapes, values = {}, {}
    for block in range(2):
        name = f"lora_unet_down_blocks_0_attentions_{block}_transformer_blocks_0_attn1_to_q"
        shapes |= {
            f"{name}.hada_w1_a": ("F16", (320, 8)),
            f"{name}.hada_w1_b": ("F16", (8, 320)),
            f"{name}.hada_w2_a": ("F16", (320, 8)),
            f"{name}.hada_w2_b": ("F16", (8, 320)),
            **_alpha(name),
        }
        values[f"{name}.alpha"] = 4.0
    status, report = inspect_one(_lycoris_file(tmp_path, shapes, values, "loha"))
    assert report["format"] == "lycoris" and report["variant"] == "loha"
    assert (report["rank"], report["modules"], report["alpha"]) == (8, 2, 4.0)
    assert "non-lora-adapter" in codes(report)
    assert not codes(report) & {"unpaired-module", "unknown-keys"}
    assert status == 0


def test_lycoris_lokr(tmp_path):
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    shapes = {
        f"{name}.lokr_w1": ("F16", (4, 4)),
        f"{name}.lokr_w2_a": ("F16", (80, 8)),
        f"{name}.lokr_w2_b": ("F16", (8, 80)),
        **_alpha(name),
    }
    status, report = inspect_one(_lycoris_file(tmp_path, shapes, {f"{name}.alpha": 8.0}, "lokr"))
    assert report["format"] == "lycoris" and report["variant"] == "lokr"
    assert "non-lora-adapter" in codes(report)
    assert not codes(report) & {"unpaired-module", "unknown-keys"}
    assert status == 0


def test_lycoris_locon_with_tucker_mid(tmp_path):
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    linear = "lora_unet_down_blocks_0_attentions_0_proj_in"
    shapes = {
        f"{conv}.lora_down.weight": ("F16", (8, 320, 1, 1)),
        f"{conv}.lora_mid.weight": ("F16", (8, 8, 3, 3)),
        f"{conv}.lora_up.weight": ("F16", (320, 8, 1, 1)),
        **_alpha(conv),
        f"{linear}.lora_down.weight": ("F16", (8, 320, 1, 1)),
        f"{linear}.lora_up.weight": ("F16", (320, 8, 1, 1)),
        **_alpha(linear),
    }
    path = _lycoris_file(tmp_path, shapes, {f"{conv}.alpha": 4.0, f"{linear}.alpha": 4.0}, "locon")
    status, report = inspect_one(path)
    assert status == 0
    assert report["format"] == "lycoris" and report["variant"] == "locon"
    assert (report["rank"], report["ranks"], report["alpha"]) == (8, {"8": 2}, 4.0)
    assert not codes(report) & {"pair-shape-mismatch", "non-lora-adapter", "unknown-keys"}


def test_lycoris_dora_scale(tmp_path):
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    shapes = {**_linear(name, 8, 768, 320), **_alpha(name), f"{name}.dora_scale": ("F16", (320, 1))}
    status, report = inspect_one(_lycoris_file(tmp_path, shapes, {f"{name}.alpha": 8.0}, "lora"))
    assert report["format"] == "lycoris"
    found = flag_of(report, "dora-present")
    assert "output" in found["message"]
    assert (report["rank"], report["modules"]) == (8, 1)
    assert not codes(report) & {"unknown-keys", "unpaired-module", "non-lora-adapter"}
    assert status == 0


@pytest.mark.parametrize("shape", [(), (8,)], ids=["scalar", "1-D"])
def test_lycoris_factors_below_two_dims_are_reported_not_a_crash(tmp_path, shape):
    """A LoHa/LoKr factor needs two dims to have a rank or width; a broken writer's scalar must not crash."""
    shapes = {f"loha.hada_{role}": ("F16", shape) for role in ("w1_a", "w1_b", "w2_a", "w2_b")}
    shapes |= {f"lokr.lokr_{role}": ("F16", shape) for role in ("w1", "w2_a", "w2_b")}
    status, report = inspect_one(_lycoris_file(tmp_path, shapes, {}, "loha"), "--modules")
    assert report["format"] == "lycoris" and report["modules"] == 2
    assert report["rank"] is None
    assert {(m["rank"], m["in"], m["out"]) for m in report["module_details"]} == {(None, None, None)}
    assert "non-lora-adapter" in codes(report)
    assert status == 0


def _sdxl_sgm_kohya_shapes(r: int) -> dict:
    """kohya sd-scripts SDXL names (SGM layout): self-attention queries and cross-attention keys/values of every
    UNet transformer block (640 and 1280 wide, context 2048); text encoders CLIP-L (768) and bigG (1280)."""
    shapes = {}
    for module, (n_in, n_out) in sdxl_sgm_shapes().items():
        if module.endswith(("_attn1_to_q", "_attn2_to_k", "_attn2_to_v")):
            shapes |= _linear(f"lora_unet_{module}", r, n_in, n_out) | _alpha(f"lora_unet_{module}")
    for encoder, width, layers in (("lora_te1", 768, 12), ("lora_te2", 1280, 32)):
        for layer in range(layers):
            name = f"{encoder}_text_model_encoder_layers_{layer}_self_attn_q_proj"
            shapes |= _linear(name, r, width, width) | _alpha(name)
    return shapes


def test_kohya_sdxl_sgm_names(tmp_path):
    shapes = _sdxl_sgm_kohya_shapes(16)
    values = {name: 8.0 for name in shapes if name.endswith(".alpha")}
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": "16",
        "ss_network_alpha": "8.0",
        "ss_base_model_version": "sdxl_base_v1-0",
    }
    path = tmp_path / "sdxl.safetensors"
    write_sparse_safetensors(path, shapes, metadata, values)
    status, report = inspect_one(path)
    assert status == 0
    assert report["format"] == "kohya"
    assert (report["rank"], report["alpha"], report["alpha_declared"]) == (16, 8.0, True)
    assert report["modules"] == len(values)
    # The metadata names the family (sdxl_base_v1-0), not a repo: the SDXL class stays a class.
    base = report["base_model"]
    assert (base["family"], base["repo_id"]) == ("sdxl", None) and SDXL_BASE in base["candidates"]
    assert report["flags"] == []


def _flux_kohya_shapes(r: int) -> dict:
    """sd-scripts networks/lora_flux.py names on FLUX.1 (hidden 3072, fused qkv 9216, linear1 21504)."""
    shapes = {}
    for block in range(19):
        for stream in ("img", "txt"):
            base = f"lora_unet_double_blocks_{block}_{stream}"
            for leaf, n_in, n_out in (
                ("attn_qkv", 3072, 9216),
                ("attn_proj", 3072, 3072),
                ("mlp_0", 3072, 12288),
                ("mlp_2", 12288, 3072),
                ("mod_lin", 3072, 18432),
            ):
                shapes |= _linear(f"{base}_{leaf}", r, n_in, n_out, "BF16") | _alpha(f"{base}_{leaf}", "BF16")
    for block in range(38):
        base = f"lora_unet_single_blocks_{block}"
        for leaf, n_in, n_out in (
            ("linear1", 3072, 21504),
            ("linear2", 15360, 3072),
            ("modulation_lin", 3072, 9216),
        ):
            shapes |= _linear(f"{base}_{leaf}", r, n_in, n_out, "BF16") | _alpha(f"{base}_{leaf}", "BF16")
    return shapes


@pytest.mark.parametrize("architecture, repo_id", [("flux-1-dev/lora", FLUX_DEV), (None, None)])
def test_kohya_flux_names(tmp_path, architecture, repo_id):
    shapes = _flux_kohya_shapes(32)
    values = {name: 16.0 for name in shapes if name.endswith(".alpha")}
    metadata = {
        "ss_network_module": "networks.lora_flux",
        "ss_network_dim": "32",
        "ss_network_alpha": "16",
        "ss_base_model_version": "flux1",
    }
    if architecture:
        metadata["modelspec.architecture"] = architecture
    path = tmp_path / "flux.safetensors"
    write_sparse_safetensors(path, shapes, metadata, values)
    status, report = inspect_one(path)
    assert status == 0
    assert report["format"] == "kohya"
    assert (report["rank"], report["alpha"], report["modules"]) == (32, 16.0, len(values))
    assert report["base_model"]["family"] == "flux1"
    assert report["base_model"]["repo_id"] == repo_id
    assert report["flags"] == []


def test_xlabs_flux_processor_lora(tmp_path):
    """XLabs-AI/x-flux attention-processor LoRAs (diffusers converts them in lora_conversion_utils.py)."""
    shapes = {}
    for block in range(19):
        for stream in ("1", "2"):  # 1 = image, 2 = text
            base = f"double_blocks.{block}.processor"
            shapes |= _linear(f"{base}.qkv_lora{stream}", 16, 3072, 9216, "BF16", "down.weight", "up.weight")
            shapes |= _linear(f"{base}.proj_lora{stream}", 16, 3072, 3072, "BF16", "down.weight", "up.weight")
    path = tmp_path / "realism_lora.safetensors"
    write_sparse_safetensors(path, shapes)
    status, report = inspect_one(path)
    assert (report["format"], report["variant"]) == ("diffusers-legacy", "xlabs")
    assert (report["rank"], report["modules"]) == (16, 19 * 4)
    assert report["base_model"]["family"] == "flux1"
    assert codes(report) == set()  # these formats never store alpha: every loader applies scale 1
    assert status == 0


def test_control_lora_is_recognised(tmp_path):
    """SAI Control-LoRA (SDXL): `<layer>.down` / `<layer>.up` without `.weight`, plus whole layers."""
    shapes = {
        "lora_controlnet": ("F32", ()),
        "input_hint_block.0.weight": ("F16", (16, 3, 3, 3)),
        "input_hint_block.0.bias": ("F16", (16,)),
        "time_embed.0.weight": ("F16", (1280, 320)),
        "input_blocks.0.0.weight": ("F16", (320, 4, 3, 3)),
        "zero_convs.0.0.weight": ("F16", (320, 320, 1, 1)),
        "middle_block_out.0.weight": ("F16", (1280, 1280, 1, 1)),
    }
    for level, width in (("input_blocks.4.1", 640), ("input_blocks.7.1", 1280)):
        base = f"{level}.transformer_blocks.0"
        for leaf, n_in in (("attn1.to_q", width), ("attn2.to_k", 2048), ("attn2.to_v", 2048)):
            shapes |= {f"{base}.{leaf}.down": ("F16", (32, n_in)), f"{base}.{leaf}.up": ("F16", (width, 32))}
        shapes[f"{base}.norm1.weight"] = ("F16", (width,))
    path = tmp_path / "control-lora-canny-rank32.safetensors"
    write_sparse_safetensors(path, shapes)
    status, report = inspect_one(path)
    assert report["format"] == "diffusers" and report["variant"] == "control-lora"
    assert (report["rank"], report["modules"]) == (32, 6)
    assert report["unknown_keys"] == [] and "unknown-keys" not in codes(report)
    assert report["base_model"]["family"] == "sdxl"
    assert status == 0


# --------------------------------------------------------------------------------------------- 7. flags


def _peft_file(directory: Path) -> Path:
    return directory / "adapter_model.safetensors"


def test_unpaired_module(tmp_path):
    build_peft_llama(tmp_path)
    dropped = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    rewrite_safetensors(_peft_file(tmp_path), lambda t: {k: v for k, v in t.items() if k != dropped})
    status, report = inspect_one(tmp_path)
    assert status == 1
    message = flag_of(report, "unpaired-module")["message"]
    assert "base_model.model.model.layers.1.self_attn.v_proj" in message


def test_pair_shape_mismatch(tmp_path):
    build_peft_llama(tmp_path, r=4)
    edited = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    rewrite_safetensors(_peft_file(tmp_path), lambda t: {**t, edited: torch.zeros(t[edited].shape[0], 5)})
    status, report = inspect_one(tmp_path)
    assert status == 1
    message = flag_of(report, "pair-shape-mismatch")["message"]
    assert "base_model.model.model.layers.0.self_attn.q_proj" in message and {4, 5} <= numbers_in(message)


def test_mixed_rank_without_metadata(tmp_path, diffusers_libs):
    diffusers = diffusers_libs[0]
    _, state_dict = _tiny_unet_lora(_lora_config(r=8, lora_alpha=8, rank_pattern={"to_k": 2}))
    diffusers.StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=state_dict)
    status, report = inspect_one(tmp_path)
    assert status == 0
    assert set(report["ranks"]) == {"2", "8"} and report["rank"] == 8
    assert {8, 2} <= numbers_in(flag_of(report, "mixed-rank-undeclared")["message"])
    assert flag_of(report, "alpha-missing")["severity"] == "warning"  # mixed ranks make a missing alpha worse


def test_unknown_keys(tmp_path):
    build_peft_llama(tmp_path)
    stray = "base_model.model.model.layers.0.self_attn.q_proj.lora_a.weight"  # lowercase: no loader reads it
    rewrite_safetensors(_peft_file(tmp_path), lambda t: {**t, stray: torch.zeros(4, 64)})
    status, report = inspect_one(tmp_path)
    assert stray in flag_of(report, "unknown-keys")["message"]
    assert report["unknown_keys"] == [stray]
    assert (report["format"], report["rank"], report["modules"]) == ("peft", 4, 4)
    assert status == 0


def test_full_model_is_not_an_adapter(tmp_path):
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(tiny_llama_config()).save_pretrained(tmp_path)
    status, report = inspect_one(tmp_path)
    assert status == 1
    assert report["path"] == "model.safetensors"
    assert "not-an-adapter" in codes(report)
    assert (report["format"], report["rank"], report["modules"]) == ("unknown", None, 0)


def test_pickle_only_is_never_opened(tmp_path):
    build_peft_llama(tmp_path)
    _peft_file(tmp_path).unlink()
    # Garbage, not a pickle: any attempt to read it would produce some other finding or a traceback.
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x05 this is not a pickle \xff\x00" * 10)
    status, report = inspect_one(tmp_path)
    assert status == 1
    assert report["path"] == "adapter_model.bin"
    assert [f["code"] for f in report["flags"]] == ["pickle-only"]
    assert report["format"] == "unknown"


def test_pickle_next_to_its_safetensors_twin_is_skipped(tmp_path):
    build_peft_llama(tmp_path)
    (tmp_path / "adapter_model.bin").write_bytes(b"garbage")
    status, files = inspect_json(tmp_path)
    assert [f["path"] for f in files] == ["adapter_model.safetensors"] and status == 0


def test_invalid_config_is_flagged_and_the_shapes_still_count(tmp_path):
    build_peft_llama(tmp_path, r=4, alpha=8)
    (tmp_path / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8,')
    status, report = inspect_one(tmp_path)
    assert status == 1
    assert "config-invalid" in codes(report)
    assert (report["format"], report["rank"], report["modules"]) == ("peft", 4, 4)
    assert report["alpha_declared"] is False


@pytest.mark.parametrize(
    "name, text, code, words",
    [
        (
            "adapter_config.json",
            '{"r": 4, "lora_alpha": NaN}',
            "config-invalid",
            "lora_alpha must be a finite number",
        ),
        (
            "adapter_config.json",
            '{"r": Infinity, "lora_alpha": 8}',
            "config-invalid",
            "r must be a finite number",
        ),
        ("adapter_config.json", "[" * 100_000, "config-invalid", "nested too deeply"),
        ("README.md", "---\nbase_model: " + "[" * 100_000 + "\n---\n", "card-invalid", "nested too deeply"),
    ],
    ids=["nan-alpha", "infinite-r", "deep-config", "deep-card"],
)
def test_unusable_numbers_and_deep_nesting_in_context_files_are_flagged(tmp_path, name, text, code, words):
    """Python's JSON reader takes NaN and Infinity, and deep nesting overflows both parsers' recursion."""
    build_peft_llama(tmp_path, r=4, alpha=8)
    (tmp_path / name).write_text(text)
    _, report = inspect_one(tmp_path)
    assert words in flag_of(report, code)["message"]
    assert (report["format"], report["rank"], report["modules"]) == ("peft", 4, 4)


@pytest.mark.parametrize(
    "value", ['{"unet.r": NaN, "unet.lora_alpha": 8}', "[" * 100_000], ids=["nan-rank", "deep"]
)
def test_unusable_diffusers_metadata_counts_as_absent(tmp_path, value):
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    path = tmp_path / "pytorch_lora_weights.safetensors"
    write_sparse_safetensors(
        path,
        _linear(name, 4, 320, 320, down="lora_A.weight", up="lora_B.weight"),
        {"lora_adapter_metadata": value},
    )
    status, report = inspect_one(path)
    assert (report["format"], report["rank"]) == ("diffusers", 4)
    assert (report["alpha"], report["alpha_declared"]) == (4.0, False)
    assert status == 0


def test_invalid_card_is_flagged(tmp_path):
    build_peft_llama(tmp_path)
    (tmp_path / "README.md").write_text(
        "---\nbase_model: [meta-llama/Llama-2-7b-hf\ntags: lora\n---\n# card\n"
    )
    status, report = inspect_one(tmp_path)
    assert status == 0  # a broken card is a warning: the weights load
    assert flag_of(report, "card-invalid")["severity"] == "warning"


def test_folder_paths_and_context(tmp_path, diffusers_libs):
    diffusers = diffusers_libs[0]
    build_peft_llama(tmp_path / "llm", r=4, alpha=8)
    _edit_config(tmp_path / "llm", lora_alpha=32)  # the sibling config must be what is read
    _, state_dict = _tiny_unet_lora(_lora_config(r=4, lora_alpha=4))
    diffusers.StableDiffusionPipeline.save_lora_weights(tmp_path / "unet" / "v2", unet_lora_layers=state_dict)
    (tmp_path / "README.md").write_text(f"---\nbase_model: {SDXL_BASE}\n---\n")
    status, files = inspect_json(tmp_path)
    by_path = {f["path"]: f for f in files}
    assert set(by_path) == {"llm/adapter_model.safetensors", "unet/v2/pytorch_lora_weights.safetensors"}
    assert (
        by_path["llm/adapter_model.safetensors"]["alpha"],
        by_path["llm/adapter_model.safetensors"]["alpha_declared"],
    ) == (32.0, True)
    # The toy UNet fits no released base: the root card's SDXL is neither trusted nor contradicted.
    unet_base = by_path["unet/v2/pytorch_lora_weights.safetensors"]["base_model"]
    assert (unet_base["family"], unet_base["repo_id"], unet_base["source"]) == (None, None, "unknown")
    assert "base-model-mismatch" not in codes(by_path["unet/v2/pytorch_lora_weights.safetensors"])
    # PEFT wrote llm/README.md (with an empty base_model): the sibling card wins over the root one, so the
    # root card's SDXL does not contradict the LLM.
    assert (tmp_path / "llm" / "README.md").is_file()
    assert by_path["llm/adapter_model.safetensors"]["flags"] == []
    assert status == 0


# -------------------------------------------------------------------------------------------- 8. explain


@pytest.mark.parametrize("code", sorted(CODES))
def test_explain_prints_the_paragraph(code):
    done = run_main("explain", code)
    assert done.returncode == 0
    assert CODES[code].explanation in done.stdout
    assert done.stdout.startswith(code)


def test_explain_unknown_code():
    done = run_cli("explain", "no-such-code")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-code" in lines[0]


def test_inspect_missing_target_is_a_usage_error(tmp_path):
    done = run_cli("inspect", str(tmp_path / "nothing-here"), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
