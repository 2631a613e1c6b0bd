"""A server that ignores Range headers cannot turn lora-bot's header reads into downloads."""

from __future__ import annotations

import json

from bot.cli import main
from bot.sandbox import SandboxHub
from bot.sandbox.layouts import write_sparse_safetensors
from bot.sources.hub import MAX_IGNORED_RANGE_READ


def kohya(path, modules: int, width: int) -> dict[str, float]:
    """kohya modules of `width`×`width`, rank 16: their `.alpha` scalars sit between megabytes of factors."""
    shapes, alphas = {}, {}
    for i in range(modules):
        key = f"lora_unet_block_{i:02d}_attn_to_q"
        shapes[f"{key}.lora_down.weight"] = ("F16", (16, width))
        shapes[f"{key}.lora_up.weight"] = ("F16", (width, 16))
        shapes[f"{key}.alpha"] = ("F16", ())
        alphas[f"{key}.alpha"] = float(1 + i % 3)
    write_sparse_safetensors(path, shapes, values=alphas)
    return alphas


def scan(hub, tmp_path, repo_id: str) -> dict:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"discovery: {{incremental: false, state_file: {tmp_path / 's.json'}}}\n"
        "proposals: {card: false, config_fix: false, variants: false, flag_discussions: false}\n"
        "hub: {retries: 2, max_retry_wait: 1}\n"
    )
    out = tmp_path / "report.json"
    main(
        [
            "scan",
            "--endpoint",
            hub.endpoint,
            "--config",
            str(config),
            "--repo",
            repo_id,
            "--report-json",
            str(out),
        ]
    )
    return json.loads(out.read_text())


def test_range_ignored_reads_stay_bounded_and_fail_with_a_reason(tmp_path):
    small, large = tmp_path / "small.safetensors", tmp_path / "large.safetensors"
    small_alphas = kohya(small, modules=4, width=3072)  # 0.8 MB: alphas within the bounded read
    kohya(large, modules=40, width=16384)  # 42 MB: alphas run past the bound
    with SandboxHub(faults="ignore-range:1.0@resolve") as hub:
        hub.add_repo("x/small", {"style.safetensors": small})
        hub.add_repo("x/large", {"style.safetensors": large})
        small_report, large_report = scan(hub, tmp_path, "x/small"), scan(hub, tmp_path, "x/large")

    (entry,) = small_report["repos"][0]["files"]
    assert entry["alpha"] in small_alphas.values() and small_report["repos"][0]["error"] is None
    (repo,) = large_report["repos"]
    assert "Range" in repo["error"], repo["error"]
    assert large_report["stats"]["bytes"] < MAX_IGNORED_RANGE_READ + 2_000_000 < large.stat().st_size / 2
