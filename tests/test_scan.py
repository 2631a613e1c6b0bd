"""`lora-bot scan` and `lora-bot inspect OWNER/NAME` with the real huggingface_hub client against an
in-process sandbox Hub on 127.0.0.1: findings, the report format, discovery, shards, the watermark, the
request budget (counted in the sandbox's own request log), failures, faults, dry runs and the token.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from clock import RecordingClock

from bot.cli import main
from bot.config import load_config
from bot.pipeline import ScanOptions, run_scan
from bot.report.scan import scan_report
from bot.sandbox import SandboxHub, request_repo
from bot.sandbox.layouts import sdxl_sgm_shapes, write_sparse_safetensors

TOKEN = "hf_scanTestSecret9xQ27"
FIRST_READ = 100_000
# Proposals are another stage; with them off a scan only reads, and a live run writes nothing.
NO_PROPOSALS = {
    "card": False,
    "config_fix": False,
    "variants": False,
    "flag_discussions": False,
    # The sandbox's repos were uploaded a moment ago, many by one owner: no manners hold them back here.
    "cooldown_hours": 0,
    "max_prs_per_owner": 100,
}
CARDS_ONLY = dict(NO_PROPOSALS, card=True)  # the wm repos have no card: each gets a card PR
# What each sample repo was built to show (bot/sandbox/samples.py docstrings).
SAMPLE_FINDINGS = {
    "demo/facechain-style-lora": {"rank-mismatch-config"},
    "demo/healthy-lora": set(),
    "demo/pixel-style-sdxl": {"rank-mismatch-metadata"},
    "demo/anime-lines-sd15": {"base-model-mismatch"},
    "demo/flux-dog-r32": set(),
    "demo/loha-style": {"non-lora-adapter"},
    "demo/old-pickle-adapter": {"pickle-only"},
    "demo/broken-upload": {"corrupt-header"},
}
OPTED_OUT_SAMPLE = "demo/no-bots-please"
SPREAD_ALPHAS = {f"lora_unet_double_blocks_{i}_img_attn_proj": float(i + 1) for i in range(24)}
OLD = datetime(2024, 3, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------ repo contents


def kohya_file(
    path: Path,
    modules: dict[str, tuple[int, int]],
    rank: int,
    alphas: dict[str, float],
    alpha_dtype: str = "F16",
) -> Path:
    """A kohya LoRA laid out in name order, so each `.alpha` sits between the factors of its neighbours."""
    shapes = {}
    for name, (fan_in, fan_out) in modules.items():
        shapes[f"{name}.alpha"] = (alpha_dtype, ())
        shapes[f"{name}.lora_down.weight"] = ("F16", (rank, fan_in))
        shapes[f"{name}.lora_up.weight"] = ("F16", (fan_out, rank))
    values = {f"{name}.alpha": alpha for name, alpha in alphas.items()}
    write_sparse_safetensors(path, shapes, metadata={"ss_network_dim": str(rank)}, values=values)
    return path


def header_size(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def card(front_matter: dict) -> bytes:
    return ("---\n" + yaml.safe_dump(front_matter) + "---\n\n# A LoRA\n").encode()


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory) -> Path:
    """Two kohya repos whose alphas lie past the first 100 kB read; one header is itself above 100 kB."""
    root = tmp_path_factory.mktemp("big")
    spread = root / "big" / "kohya-spread"
    spread.mkdir(parents=True)
    # 24 Flux-width modules at rank 16: 4.7 MB, an alpha (1..24, all different) every 196 kB.
    kohya_file(
        spread / "spread.safetensors",
        dict.fromkeys(SPREAD_ALPHAS, (3072, 3072)),
        16,
        SPREAD_ALPHAS,
        alpha_dtype="F32",
    )
    full = root / "big" / "kohya-sdxl-full"
    full.mkdir(parents=True)
    modules = {f"lora_unet_{name}": shape for name, shape in sdxl_sgm_shapes().items()}  # all 700 linears
    alphas = {name: float(1 + i % 4) for i, name in enumerate(modules)}
    kohya_file(full / "sdxl.safetensors", modules, 4, alphas)
    return root


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_"
    modules = {f"{prefix}{p}": (320, 320) for p in "qkv"}
    return kohya_file(path, modules, 4, dict.fromkeys(modules, 2.0)).read_bytes()


@pytest.fixture(scope="module")
def hub(sample_dir, big_dir, tiny_lora, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "requests.jsonl"
    with SandboxHub(user="lora-bot", request_log=log) as sandbox:
        sandbox.load_directory(sample_dir)
        sandbox.load_directory(big_dir)
        add_discovery_repos(sandbox, tiny_lora)
        add_server_error_repo(sandbox, tiny_lora, tmp_path_factory.mktemp("gone") / "lora.safetensors")
        yield sandbox


def add_discovery_repos(hub: SandboxHub, lora: bytes) -> None:
    """Repos that differ only in what discovery looks at: tags, owner, name, likes, age, opt-outs."""
    base = "org/base-model"
    repos = {
        "qa/peft-one": {"tags": ["lora", "peft"], "base_model": base, "base_model_relation": "adapter"},
        "qa/kohya-two": {"tags": ["lora"]},
        "qb/style-three": {"tags": ["lora", "peft"]},
        "qb/other-four": {"tags": ["text-generation"]},
        "qc/plain": {"tags": ["lora"]},
        "qc/skipped-by-config": {"tags": ["lora"]},
        "qc/opt-out-tag": {"tags": ["lora", "lora-bot-ignore"]},
        "qc/opt-out-card": {"tags": ["lora"], "lora-bot": "ignore"},
    }
    for repo_id, front_matter in repos.items():
        hub.add_repo(repo_id, {"lora.safetensors": lora, "README.md": card(front_matter)}, last_modified=OLD)
    for index, likes in enumerate((5, 50, 1, 20)):
        hub.add_repo(
            f"qs/liked-{likes}",
            {"lora.safetensors": lora},
            extra={"likes": likes},
            last_modified=OLD + timedelta(days=index),
        )


def add_server_error_repo(hub: SandboxHub, lora: bytes, path: Path) -> None:
    """A repo the sandbox answers with 500 every time: its file's bytes are gone from under the server."""
    path.write_bytes(lora)
    hub.add_repo("broken/server-error", {"lora.safetensors": path})
    path.unlink()


# ------------------------------------------------------------------------------------------ running


def write_config(
    folder: Path,
    name: str = "config.yaml",
    *,
    hub: dict | None = None,
    proposals: dict | None = None,
    **discovery,
) -> Path:
    data = {
        "hub": {"retries": 3, "max_retry_wait": 0.2, **(hub or {})},
        "discovery": {
            "queries": [{"filter": [], "author": "demo"}],
            "incremental": False,
            "state_file": str(folder / "state.json"),
            **discovery,
        },
        "proposals": NO_PROPOSALS if proposals is None else proposals,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def scan(capsys, hub: SandboxHub, config: Path, *args: str, token: str | None = TOKEN) -> tuple[int, dict]:
    """`lora-bot scan --json` in this process; the exit code and the report it printed."""
    capsys.readouterr()
    argv = ["scan", "--config", str(config), "--endpoint", hub.endpoint, "--json", *args]
    code = main(argv + (["--token", token] if token else []))
    out = capsys.readouterr()
    assert not token or token not in out.out + out.err
    return code, json.loads(out.out)


def repo_ids(report: dict) -> list[str]:
    return [repo["repo_id"] for repo in report["repos"]]


def local_inspect(capsys, target: Path, *extra: str) -> list[dict]:
    capsys.readouterr()
    main(["inspect", str(target), "--json", *extra])
    return json.loads(capsys.readouterr().out)["files"]


# ------------------------------------------------------------------------------------------ tests


def test_cli_dry_run_reports_every_sample_finding_writes_nothing_and_never_shows_the_token(hub, tmp_path):
    proposals = dict(NO_PROPOSALS, card=True, config_fix=True, flag_discussions=True)  # things it would write
    config = write_config(tmp_path, proposals=proposals)
    report_json, report_md = tmp_path / "out" / "report.json", tmp_path / "out" / "report.md"
    start = len(hub.requests)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "scan",
            "--config",
            str(config),
            "--endpoint",
            hub.endpoint,
            "--token",
            TOKEN,
            "--dry-run",
            "--json",
            "--report-json",
            str(report_json),
            "--report-md",
            str(report_md),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert json.loads(report_json.read_text()) == report

    # The report format: every repo with its sha, its files as `inspect --json` prints them, and its error.
    assert set(report) >= {"repos", "stats"}
    assert all(set(repo) == {"repo_id", "sha", "files", "error"} for repo in report["repos"])
    assert all(isinstance(report["stats"][key], int) for key in ("repos", "files", "requests", "bytes"))
    assert report["stats"]["repos"] == len(report["repos"])
    assert report["stats"]["files"] == sum(len(repo["files"]) for repo in report["repos"])

    repos = {repo["repo_id"]: repo for repo in report["repos"]}
    assert set(repos) == set(SAMPLE_FINDINGS)
    for repo_id, expected in SAMPLE_FINDINGS.items():
        repo = repos[repo_id]
        assert repo["error"] is None and len(repo["sha"]) == 40
        codes = {flag["code"] for item in repo["files"] for flag in item["flags"]}
        assert expected <= codes, repo_id
    assert not [flag for item in repos["demo/healthy-lora"]["files"] for flag in item["flags"]]
    assert report["skipped"] == [
        {"repo_id": OPTED_OUT_SAMPLE, "reason": "opted out in its model card (lora-bot: ignore)"}
    ]

    entries = hub.requests[start:]
    assert report["proposals"] and all(p["status"] != "opened" for p in report["proposals"])
    assert [e for e in entries if e["method"] not in ("GET", "HEAD")] == []
    assert report["stats"]["requests"] == len(entries)  # the meter and the server agree
    markdown = report_md.read_text()
    assert "dry run: nothing was written" in markdown and "demo/no-bots-please" in markdown
    for text in (done.stdout, done.stderr, report_json.read_text(), markdown, hub.request_log.read_text()):
        assert TOKEN not in text


def test_every_scanned_file_is_the_local_inspect_of_the_same_bytes(
    hub, sample_dir, big_dir, tmp_path, capsys
):
    queries = [{"filter": [], "author": "demo"}, {"filter": [], "author": "big"}]
    config = write_config(tmp_path, queries=queries)
    code, report = scan(capsys, hub, config)
    assert code == 0
    assert set(repo_ids(report)) == set(SAMPLE_FINDINGS) | {"big/kohya-spread", "big/kohya-sdxl-full"}
    for repo in report["repos"]:
        folder = (sample_dir if repo["repo_id"].startswith("demo/") else big_dir) / repo["repo_id"]
        assert repo["files"] == local_inspect(capsys, folder), repo["repo_id"]


@pytest.mark.parametrize("repo_id", ["big/kohya-spread", "big/kohya-sdxl-full", "demo/facechain-style-lora"])
def test_inspect_hub_repo_equals_local_folder_inspect(hub, sample_dir, big_dir, capsys, repo_id):
    folder = (sample_dir if repo_id.startswith("demo/") else big_dir) / repo_id
    capsys.readouterr()
    assert main(["inspect", repo_id, "--endpoint", hub.endpoint, "--json", "--modules"]) in (0, 1)
    remote = json.loads(capsys.readouterr().out)["files"]
    assert remote == local_inspect(capsys, folder, "--modules")


def test_alpha_scalars_past_the_first_read_come_back_right(hub, capsys):
    """The spread file's alphas sit every 196 kB over 4.7 MB; each module must get its own value back."""
    capsys.readouterr()
    main(["inspect", "big/kohya-spread", "--endpoint", hub.endpoint, "--json", "--modules"])
    (item,) = json.loads(capsys.readouterr().out)["files"]
    alphas = {module["name"]: module["alpha"] for module in item["module_details"]}
    assert alphas == SPREAD_ALPHAS
    assert all(module["alpha_declared"] for module in item["module_details"])


def test_request_budget_and_header_reads_from_the_sandbox_log(hub, sample_dir, big_dir, tmp_path, capsys):
    single_file = [*SAMPLE_FINDINGS, "big/kohya-spread", "big/kohya-sdxl-full"]
    start = len(hub.requests)
    # Without a token the proposal stage reads nothing: what is counted is the scan's own cost.
    code, report = scan(
        capsys, hub, write_config(tmp_path), *[a for r in single_file for a in ("--repo", r)], token=None
    )
    entries = hub.requests[start:]
    assert code == 0 and repo_ids(report) == single_file
    assert all(repo["error"] is None and len(repo["files"]) == 1 for repo in report["repos"])
    for repo in report["repos"]:
        repo_id, (item,) = repo["repo_id"], repo["files"]
        requests = [e for e in entries if request_repo(e) == repo_id]
        assert len(requests) <= 6, (repo_id, [e["path"] for e in requests])
        path = (sample_dir if repo_id.startswith("demo/") else big_dir) / repo_id / item["path"]
        reads = [
            e["bytes"] for e in requests if e["route"] == "resolve" and e["path"].endswith("/" + item["path"])
        ]
        if path.suffix == ".bin":
            assert reads == []  # a pickle is never opened, not even its first bytes
            continue
        size, header = path.stat().st_size, header_size(path)
        header_reads, read = 0, 0
        while read < min(header, size):  # reads until the header is complete; the rest fetch alpha scalars
            read += reads[header_reads]
            header_reads += 1
        assert read <= max(FIRST_READ, header), repo_id
        assert reads[0] <= FIRST_READ
        assert sum(reads[header_reads:]) < size / 100  # alpha scalars and multipart framing, never weights
    sdxl = [e for e in entries if request_repo(e) == "big/kohya-sdxl-full"]
    assert header_size(big_dir / "big/kohya-sdxl-full/sdxl.safetensors") > FIRST_READ  # the case being tested
    assert len([e for e in sdxl if e["route"] == "resolve"]) >= 3  # the header's remainder, then alpha reads


def test_repo_option_scans_only_those_repos_and_endpoint_defaults_to_hf_endpoint(
    hub, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    start = len(hub.requests)
    capsys.readouterr()
    code = main(
        [
            "scan",
            "--config",
            str(write_config(tmp_path)),
            "--json",
            "--repo",
            "demo/loha-style",
            "--repo",
            "demo/healthy-lora",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and repo_ids(report) == ["demo/loha-style", "demo/healthy-lora"]
    entries = hub.requests[start:]
    assert {request_repo(e) for e in entries} == {
        "demo/loha-style",
        "demo/healthy-lora",
    }  # no listing, no others


def test_failed_repos_are_reported_with_a_reason_and_the_others_still_succeed(hub, tmp_path, capsys):
    report_md = tmp_path / "report.md"
    code, report = scan(
        capsys,
        hub,
        write_config(tmp_path),
        "--repo",
        "demo/healthy-lora",
        "--repo",
        "nobody/missing",
        "--repo",
        "broken/server-error",
        "--report-md",
        str(report_md),
    )
    assert code == 0
    repos = {repo["repo_id"]: repo for repo in report["repos"]}
    assert repos["demo/healthy-lora"]["error"] is None and repos["demo/healthy-lora"]["files"]
    assert repos["nobody/missing"]["files"] == [] and repos["nobody/missing"]["sha"] is None
    missing = repos["nobody/missing"]["error"]
    assert missing.startswith("HTTP 404") and "not found" in missing.lower()
    assert repos["broken/server-error"]["error"].startswith("HTTP 500")
    assert report["stats"]["repos"] == 3
    markdown = report_md.read_text()
    assert "## Repos that could not be read" in markdown and "nobody/missing" in markdown


def test_a_scan_of_another_hub_sends_nothing_to_huggingface_co(hub, tmp_path, capsys, monkeypatch):
    """With telemetry on, huggingface_hub's user agent fetches an agent registry from huggingface.co."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(_detect_agent, "_registry", None)  # not fetched yet in this process
    start = len(hub.requests)
    _, report = scan(capsys, hub, write_config(tmp_path), "--repo", "demo/healthy-lora")
    assert report["stats"]["requests"] == len(hub.requests[start:])  # every request the client sent came here


def test_a_run_where_no_repo_could_be_read_fails(hub, tmp_path, capsys):
    code, report = scan(capsys, hub, write_config(tmp_path), "--repo", "nobody/missing")
    assert code == 1 and report["repos"][0]["error"]


@pytest.mark.parametrize(
    "queries, expected",
    [
        ([{"filter": ["peft"], "author": "qa"}], {"qa/peft-one"}),
        ([{"filter": ["lora"], "search": "three"}], {"qb/style-three"}),
        ([{"filter": ["base_model:adapter:org/base-model"]}], {"qa/peft-one"}),
        (
            [
                {"filter": ["lora"], "author": "qa"},
                {"filter": [], "search": "other-four"},
                {"filter": ["peft"]},
            ],
            {
                "qa/peft-one",
                "qa/kohya-two",
                "qb/other-four",
                "qb/style-three",
                "demo/facechain-style-lora",
                "demo/healthy-lora",
                "demo/old-pickle-adapter",
            },
        ),
    ],
)
def test_config_queries_select_repos_by_tag_author_and_search(hub, tmp_path, capsys, queries, expected):
    code, report = scan(capsys, hub, write_config(tmp_path, queries=queries))
    assert code == 0
    assert sorted(repo_ids(report)) == sorted(expected)  # each repo once, even when several queries find it


def test_skip_list_and_both_opt_outs_keep_repos_out_of_the_report(hub, tmp_path, capsys):
    start = len(hub.requests)
    config = write_config(tmp_path, queries=[{"filter": [], "author": "qc"}], skip=["qc/skipped-by-config"])
    code, report = scan(capsys, hub, config)
    assert code == 0 and repo_ids(report) == ["qc/plain"]
    reasons = {entry["repo_id"]: entry["reason"] for entry in report["skipped"]}
    assert set(reasons) == {"qc/skipped-by-config", "qc/opt-out-tag", "qc/opt-out-card"}
    assert "skip list" in reasons["qc/skipped-by-config"] and "lora-bot-ignore" in reasons["qc/opt-out-tag"]
    assert "lora-bot: ignore" in reasons["qc/opt-out-card"]
    touched = {request_repo(e) for e in hub.requests[start:]}
    assert "qc/skipped-by-config" not in touched and "qc/opt-out-tag" not in touched  # never read at all


@pytest.mark.parametrize(
    "sort, limit, expected",
    [
        ("likes", 2, ["qs/liked-50", "qs/liked-20"]),
        ("lastModified", 3, ["qs/liked-20", "qs/liked-1", "qs/liked-50"]),
    ],
)
def test_sort_and_limit_choose_the_top_repos_in_order(hub, tmp_path, capsys, sort, limit, expected):
    config = write_config(tmp_path, queries=[{"filter": [], "author": "qs"}], sort=sort, limit=limit)
    code, report = scan(capsys, hub, config)
    assert code == 0 and repo_ids(report) == expected


def test_shards_partition_the_repos_and_stay_stable(hub, tmp_path, capsys):
    config = write_config(tmp_path, queries=[{"filter": ["lora"]}])
    _, whole = scan(capsys, hub, config)
    shards = [repo_ids(scan(capsys, hub, config, "--shard", f"{k}/3")[1]) for k in (1, 2, 3)]
    together = sorted(repo_id for shard in shards for repo_id in shard)
    assert all(shards) and together == sorted(repo_ids(whole))  # disjoint, and together every repo
    assert repo_ids(scan(capsys, hub, config, "--shard", "2/3")[1]) == shards[1]
    capsys.readouterr()
    assert main(["scan", "--config", str(config), "--endpoint", hub.endpoint, "--shard", "4/3"]) == 2
    assert "K/N" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ watermark


@pytest.fixture
def fresh_hub(tiny_lora):
    with SandboxHub(user="lora-bot") as sandbox:
        for index, name in enumerate(("a", "b", "c")):
            sandbox.add_repo(
                f"wm/{name}", {"lora.safetensors": tiny_lora}, last_modified=OLD + timedelta(hours=index)
            )
        yield sandbox


def test_watermark_skips_unchanged_repos_and_rescans_only_the_changed_one(fresh_hub, tmp_path, capsys):
    config = write_config(tmp_path, queries=[{"filter": [], "author": "wm"}], incremental=True)
    assert sorted(repo_ids(scan(capsys, fresh_hub, config)[1])) == ["wm/a", "wm/b", "wm/c"]
    start = len(fresh_hub.requests)
    assert repo_ids(scan(capsys, fresh_hub, config)[1]) == []
    entries = fresh_hub.requests[start:]
    assert [e["route"] for e in entries].count("models") == 1 and {request_repo(e) for e in entries} == {None}
    fresh_hub.commit_files("wm/a", {"README.md": card({"tags": ["lora"]})})
    assert repo_ids(scan(capsys, fresh_hub, config)[1]) == ["wm/a"]
    assert repo_ids(scan(capsys, fresh_hub, config)[1]) == []
    # --repo is an explicit request: it scans what it names whatever the watermark says
    assert repo_ids(scan(capsys, fresh_hub, config, "--repo", "wm/b")[1]) == ["wm/b"]


def test_a_failed_repo_is_scanned_again_until_it_succeeds(fresh_hub, tiny_lora, tmp_path, capsys):
    backing = tmp_path / "lora.safetensors"
    backing.write_bytes(tiny_lora)
    fresh_hub.add_repo("wm/flaky", {"lora.safetensors": backing}, last_modified=OLD + timedelta(days=1))
    backing.unlink()  # the server now fails this repo's model_info with a 500
    config = write_config(tmp_path, queries=[{"filter": [], "author": "wm"}], incremental=True)
    first = scan(capsys, fresh_hub, config)[1]
    assert sorted(repo_ids(first)) == ["wm/a", "wm/b", "wm/c", "wm/flaky"]
    assert [r["repo_id"] for r in first["repos"] if r["error"]] == ["wm/flaky"]
    second = scan(capsys, fresh_hub, config)[1]
    assert repo_ids(second) == ["wm/flaky"] and second["repos"][0]["error"]
    backing.write_bytes(tiny_lora)  # the server recovers
    third = scan(capsys, fresh_hub, config)[1]
    assert repo_ids(third) == ["wm/flaky"] and third["repos"][0]["error"] is None
    assert repo_ids(scan(capsys, fresh_hub, config)[1]) == []


def test_each_shard_keeps_its_own_watermark(fresh_hub, tmp_path, capsys):
    config = write_config(tmp_path, queries=[{"filter": [], "author": "wm"}], incremental=True)
    first = repo_ids(scan(capsys, fresh_hub, config, "--shard", "1/2")[1])
    second = repo_ids(scan(capsys, fresh_hub, config, "--shard", "2/2")[1])
    assert sorted(first + second) == ["wm/a", "wm/b", "wm/c"]  # shard 1's watermark hid nothing from shard 2
    assert sorted(repo_ids(scan(capsys, fresh_hub, config)[1])) == ["wm/a", "wm/b", "wm/c"]  # nor from all
    assert repo_ids(scan(capsys, fresh_hub, config, "--shard", "1/2")[1]) == []
    assert repo_ids(scan(capsys, fresh_hub, config, "--shard", "2/2")[1]) == []


def test_a_dry_run_never_moves_the_watermark(fresh_hub, tmp_path, capsys):
    config = write_config(tmp_path, queries=[{"filter": [], "author": "wm"}], incremental=True)
    assert len(repo_ids(scan(capsys, fresh_hub, config, "--dry-run")[1])) == 3
    assert not (tmp_path / "state.json").exists()
    assert len(repo_ids(scan(capsys, fresh_hub, config)[1])) == 3
    fresh_hub.commit_files("wm/c", {"README.md": card({"tags": ["lora"]})})
    assert repo_ids(scan(capsys, fresh_hub, config, "--dry-run")[1]) == ["wm/c"]
    assert repo_ids(scan(capsys, fresh_hub, config)[1]) == ["wm/c"]  # the dry run left it for the live run
    assert fresh_hub.write_request_count() == 0


# ------------------------------------------------------------------------------------------ faults


def test_with_20_percent_faults_every_repo_is_inspected_or_failed_with_a_reason(
    hub, sample_dir, big_dir, tmp_path, capsys
):
    # Retry-After is 1 s: the policy may wait that long, and tries 6 times. The config's explicit `repos` add
    # one whose alphas need the multi-range read.
    config = write_config(tmp_path, repos=["big/kohya-spread"], hub={"retries": 6, "max_retry_wait": 1})
    _, reference = scan(capsys, hub, config)
    expected = {repo["repo_id"]: repo["files"] for repo in reference["repos"]}
    faults = "429:0.08,503:0.08,drop:0.06,seed=7,retry-after=1"  # 1 - .92 x .92 x .94 = 20% of requests fail
    clock = RecordingClock()
    with SandboxHub(user="lora-bot", faults=faults) as faulty:
        faulty.load_directory(sample_dir)
        faulty.load_directory(big_dir)
        report = scan_report(
            run_scan(
                load_config(config), ScanOptions(endpoint=faulty.endpoint, token=TOKEN, sleep=clock.sleep)
            )
        )
        injected = [e for e in faulty.requests if e["fault"]]
    assert len(injected) >= 3
    # Every fault was waited out as the policy says: the 429s' Retry-After of 1 s, back-off within max_retry_wait.
    assert 1.0 in clock.waits and all(0 <= wait <= 1 for wait in clock.waits)
    assert sorted(repo_ids(report)) == sorted(expected) and "big/kohya-spread" in expected
    assert [s["repo_id"] for s in report["skipped"]] == [OPTED_OUT_SAMPLE]
    for repo in report["repos"]:
        if repo["error"] is None:
            assert repo["files"] == expected[repo["repo_id"]], repo["repo_id"]
        else:
            assert repo["error"].strip(), repo["repo_id"]
    assert any(repo["error"] is None for repo in report["repos"])


def test_repos_held_by_the_pr_limit_are_proposed_by_the_next_runs(fresh_hub, tmp_path, capsys):
    """ "max PRs per run reached; proposed again next run": the watermark must not pass a repo left waiting."""
    config = write_config(
        tmp_path, queries=[{"filter": [], "author": "wm"}], incremental=True, proposals=CARDS_ONLY
    )
    opened = []
    for _ in range(3):
        _, report = scan(capsys, fresh_hub, config, "--max-prs", "1")
        opened += [p["repo_id"] for p in report["proposals"] if p["status"] == "opened"]
    assert sorted(opened) == ["wm/a", "wm/b", "wm/c"]
    assert repo_ids(scan(capsys, fresh_hub, config)[1]) == []  # all done: the watermark moves on


def test_a_failed_proposal_stage_keeps_the_findings_and_the_repos_for_the_next_run(
    tiny_lora, tmp_path, capsys
):
    config = write_config(
        tmp_path, queries=[{"filter": [], "author": "wm"}], incremental=True, proposals=CARDS_ONLY
    )
    with SandboxHub(user="lora-bot", faults="503:1@whoami") as hub:  # the bot cannot learn its own name
        hub.add_repo("wm/a", {"lora.safetensors": tiny_lora}, last_modified=OLD)
        code, report = scan(capsys, hub, config)
        assert code == 0 and repo_ids(report) == ["wm/a"] and report["repos"][0]["files"]
        (outcome,) = report["proposals"]
        assert outcome["status"] == "failed" and outcome["detail"].startswith("HTTP 503")
        assert repo_ids(scan(capsys, hub, config)[1]) == ["wm/a"]  # not proposed yet: scanned again


def test_config_repos_never_move_the_watermark_past_a_listed_repo(fresh_hub, tiny_lora, tmp_path, capsys):
    """A `repos` entry changed late in a scan must not hide a listed repo whose change came just before it
    (here one that reaches the listing only after the first scan, with an earlier lastModified)."""
    fresh_hub.add_repo("cfg/recent", {"lora.safetensors": tiny_lora}, last_modified=OLD + timedelta(days=10))
    config = write_config(
        tmp_path, queries=[{"filter": [], "author": "wm"}], repos=["cfg/recent"], incremental=True
    )
    assert sorted(repo_ids(scan(capsys, fresh_hub, config)[1])) == ["cfg/recent", "wm/a", "wm/b", "wm/c"]
    fresh_hub.add_repo("wm/late", {"lora.safetensors": tiny_lora}, last_modified=OLD + timedelta(days=5))
    assert repo_ids(scan(capsys, fresh_hub, config)[1]) == ["wm/late", "cfg/recent"]


def test_an_empty_file_is_flagged_and_the_repos_other_files_still_inspected(
    hub, sample_dir, tmp_path, capsys
):
    folder = tmp_path / "repos" / "empty" / "mixed"
    folder.mkdir(parents=True)
    (folder / "a_empty.safetensors").write_bytes(b"")  # an upload that never got its bytes
    (folder / "b_good.safetensors").write_bytes(
        (sample_dir / "demo" / "healthy-lora" / "adapter_model.safetensors").read_bytes()
    )
    hub.load_directory(tmp_path / "repos")
    code, report = scan(capsys, hub, write_config(tmp_path), "--repo", "empty/mixed")
    (repo,) = report["repos"]
    assert code == 0 and repo["error"] is None
    assert repo["files"] == local_inspect(capsys, folder)
    assert [f["code"] for f in repo["files"][0]["flags"]] == ["corrupt-header"]
