"""`lora-bot check` as a user runs it: the command, its JSON and exit codes, the Python API, a Hub base read
through the sandbox with its request counts and caches. (Agreement with the real loaders: test_check_loaders.)"""

from __future__ import annotations

import json

import pytest

import bot
from bot.checking import IncompatibleAdapterError
from bot.cli import main
from bot.sandbox import SandboxHub
from bot.sandbox.layouts import write_sparse_safetensors
from bot.sources.base import BaseHeaderCache, HubBaseReader
from bot.sources.hub import RemoteReader
from tests.test_check_loaders import (
    diffusers_lora_file,
    kohya_lora_file,
    pipeline_base,
    sdxl_like_unet,
    tiny_clip,
    tiny_unet,
    unet_lora_state_dict,
)


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A sharded two-component pipeline base, a LoRA that fits it, one with more blocks, one too wide."""
    root = tmp_path_factory.mktemp("check")
    base = root / "base"
    pipeline_base(base, text_encoder=tiny_clip())
    tiny_unet().save_pretrained(str(base / "unet"), max_shard_size="50KB")
    fits = diffusers_lora_file(root / "fits.safetensors", unet_lora_state_dict(tiny_unet()))
    more = diffusers_lora_file(root / "more.safetensors", unet_lora_state_dict(sdxl_like_unet()))
    wide = kohya_lora_file(root / "wide.safetensors", unet_lora_state_dict(tiny_unet(cross_attention_dim=48)))
    return {"base": base, "fits": fits, "more": more, "wide": wide}


def test_cli_verdicts_and_exit_codes(files, capsys):
    code, out, _ = run(capsys, "check", str(files["fits"]), "--base", str(files["base"]))
    assert code == 0 and "verdict  loads" in out

    code, out, _ = run(capsys, "check", str(files["more"]), "--base", str(files["base"]))
    assert code == 1 and "verdict  partial" in out and "target-missing-in-base" in out
    assert "missing" in out  # the module table lists the ignored modules

    code, out, _ = run(capsys, "check", str(files["wide"]), "--base", str(files["base"]))
    assert code == 1 and "verdict  fails" in out
    assert "attn2_to_k" in out and "48" in out and "size mismatch" in out


def test_cli_json_has_the_documented_fields(files, capsys):
    code, out, _ = run(capsys, "check", str(files["more"]), "--base", str(files["base"]), "--json")
    report = json.loads(out)
    assert code == 1
    assert report["verdict"] == "partial"
    assert {"verdict", "applied_fraction", "base", "problems", "modules"} <= report.keys()
    assert report["base"]["path"] == str(files["base"])
    assert any(f.endswith(".index.json") for f in report["base"]["files"])
    assert all(set(p) >= {"code", "severity", "message", "module"} for p in report["problems"])
    assert all(set(m) >= {"name", "base_weight", "status"} for m in report["modules"])
    applied = sum(m["status"] == "applies" for m in report["modules"])
    assert 0 < report["applied_fraction"] < 1
    assert report["applied_fraction"] == pytest.approx(applied / len(report["modules"]), abs=1e-4)
    missing = [m for m in report["modules"] if m["status"] == "missing"]
    assert missing and all(m["base_weight"] is None for m in missing)
    assert all(m["base_weight"].startswith("unet/") for m in report["modules"] if m["status"] == "applies")


def test_cli_usage_errors_are_one_line(files, capsys, tmp_path):
    code, _, err = run(capsys, "check", str(files["fits"]), "--base", str(tmp_path / "nowhere"))
    assert code == 2 and "not a Hub repo id" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "check", str(files["fits"]), "--base", str(empty))
    assert code == 2 and "holds no safetensors weights" in err


def test_python_api(files):
    result = bot.check(files["fits"], base=files["base"])
    assert result.loads and result.applied_fraction == 1.0
    assert bot.ensure_loads(files["fits"], base=files["base"]).loads
    with pytest.raises(IncompatibleAdapterError) as raised:
        bot.ensure_loads(files["wide"], base=files["base"])
    assert "fails" in str(raised.value) and "shape-mismatch-base" in str(raised.value)
    with pytest.raises(IncompatibleAdapterError):
        bot.ensure_loads(files["more"], base=files["base"])
    assert bot.ensure_loads(files["more"], base=files["base"], allow_partial=True).verdict == "partial"


def test_original_checkpoint_names_on_a_diffusers_base_are_unknown_not_guessed(tmp_path):
    """A BFL/kohya FLUX LoRA on a diffusers FLUX base: diffusers converts `double_blocks` names with rules
    lora-bot does not model, so the answer is `unknown`, never a false `fails`."""
    lora = tmp_path / "flux.safetensors"
    write_sparse_safetensors(
        lora,
        {
            "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": ("BF16", (16, 3072)),
            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": ("BF16", (9216, 16)),
        },
    )
    base = tmp_path / "base" / "transformer"
    base.mkdir(parents=True)
    write_sparse_safetensors(
        base / "diffusion_pytorch_model.safetensors",
        {f"transformer_blocks.0.attn.to_{p}.weight": ("BF16", (3072, 3072)) for p in "qkv"},
    )
    result = bot.check(lora, base=tmp_path / "base")
    assert result.verdict == "unknown"
    assert result.modules[0].status == "unmapped"
    assert any(p.code == "unmapped-naming" for p in result.problems)


# ------------------------------------------------------------------------------------------------- Hub


def _base_requests(hub: SandboxHub, repo_id: str, since: int) -> list[dict]:
    return [e for e in hub.requests[since:] if repo_id in e["path"]]


def test_hub_base_is_read_once_per_shard_then_cached(files, tmp_path, capsys):
    base_files = {p.relative_to(files["base"]).as_posix(): p for p in files["base"].rglob("*") if p.is_file()}
    shards = [p for p in base_files if p.startswith("unet/") and p.endswith(".safetensors")]
    assert len(shards) > 1
    with SandboxHub() as hub:
        hub.add_repo("acme/tiny-pipeline", base_files)
        hub.add_repo("someone/lora", {"pytorch_lora_weights.safetensors": files["more"]})
        before = len(hub.requests)
        code, out, _ = run(
            capsys, "check", "someone/lora", "--base", "acme/tiny-pipeline", "--endpoint", hub.endpoint,
            "--cache-dir", str(tmp_path / "cache"), "--json",
        )  # fmt: skip
        report = json.loads(out)
        assert code == 1 and report["verdict"] == "partial"
        assert report["base"]["repo_id"] == "acme/tiny-pipeline"
        first = _base_requests(hub, "acme/tiny-pipeline", before)
        # The listing, the unet's index, one range read per unet shard and one for the text encoder's file.
        header_reads = [e for e in first if e["path"].endswith(".safetensors")]
        assert len(header_reads) == len(shards) + 1
        assert len(first) == 1 + 1 + len(shards) + 1

        # The same process checks another adapter against the same base: no base request at all.
        before = len(hub.requests)
        run(capsys, "check", str(files["fits"]), "--base", "acme/tiny-pipeline", "--endpoint", hub.endpoint,
            "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
        assert _base_requests(hub, "acme/tiny-pipeline", before) == []

        # A new process (a new cache over the same folder): the listing, and every header from disk by sha.
        before = len(hub.requests)
        reader = HubBaseReader(
            RemoteReader(bot.checking._api(hub.endpoint, None)), BaseHeaderCache(tmp_path / "cache")
        )
        weights = reader.read("acme/tiny-pipeline")
        assert [e["method"] for e in _base_requests(hub, "acme/tiny-pipeline", before)] == ["GET"]
        assert {c.folder for c in weights.components} == {"unet", "text_encoder"}


def test_hub_base_that_does_not_exist_is_a_usage_error(files, capsys):
    with SandboxHub() as hub:
        code, _, err = run(
            capsys, "check", str(files["fits"]), "--base", "nobody/nothing", "--endpoint", hub.endpoint
        )
    assert code == 2 and "cannot read the base" in err and "nobody/nothing" in err


def test_scan_verifies_a_declared_hub_base_and_names_the_module_that_does_not_fit(files, tmp_path, capsys):
    import yaml

    base_files = {p.relative_to(files["base"]).as_posix(): p for p in files["base"].rglob("*") if p.is_file()}
    card = b"---\nbase_model: acme/tiny-pipeline\ntags: [lora]\n---\n# a LoRA\n"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hub": {"verify_base": True, "retries": 2, "max_retry_wait": 0.2},
                "discovery": {"queries": [], "incremental": False, "state_file": str(tmp_path / "s.json")},
                "proposals": {
                    "card": False,
                    "config_fix": False,
                    "variants": False,
                    "flag_discussions": False,
                },
            }
        )
    )
    with SandboxHub() as hub:
        hub.add_repo("acme/tiny-pipeline", base_files)
        hub.add_repo("someone/fits", {"lora.safetensors": files["fits"], "README.md": card})
        hub.add_repo("someone/too-wide", {"lora.safetensors": files["wide"], "README.md": card})
        argv = ["scan", "--config", str(config), "--endpoint", hub.endpoint, "--json", "--dry-run"]
        code = main([*argv, "--repo", "someone/fits", "--repo", "someone/too-wide"])
        report = json.loads(capsys.readouterr().out)
        base_listings = [e for e in hub.requests if e["path"].startswith("/api/models/acme/tiny-pipeline")]
    assert code == 0
    by_repo = {r["repo_id"]: r["files"][0] for r in report["repos"]}
    fits, wide = by_repo["someone/fits"], by_repo["someone/too-wide"]
    assert fits["base_model"]["source"] == "card base_model + verified"
    assert "base-model-mismatch" not in {f["code"] for f in fits["flags"]}
    # A toy UNet fits no known base: unknown, and the declared base's own weights contradict it.
    assert (wide["base_model"]["source"], wide["base_model"]["repo_id"]) == ("unknown", None)
    mismatch = next(f for f in wide["flags"] if f["code"] == "base-model-mismatch")
    assert mismatch["message"].startswith("card base_model declares acme/tiny-pipeline")
    assert "acme/tiny-pipeline" in mismatch["message"] and "attn2_to_k" in mismatch["message"]
    assert (
        "in 48" in mismatch["message"] and "32]" in mismatch["message"]
    )  # the adapter's and the base's widths
    assert len(base_listings) == 1  # two adapters, one base: read once
