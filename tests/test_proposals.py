"""lora-bot writing to repos: the PR/discussion lifecycle on the sandbox Hub, read back through HfApi.

Every Hub interaction is the real huggingface_hub client against the sandbox on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clock import RecordingClock
from huggingface_hub import HfApi

from bot.cli import main
from bot.config import load_config
from bot.pipeline import ScanOptions, run_scan
from bot.sandbox import SandboxHub

BOT_TOKEN, OWNER_TOKEN = "hf_bot_secret_token", "hf_owner_token"
EXPECTED_PRS = {"demo/facechain-style-lora", "demo/pixel-style-sdxl", "demo/flux-dog-r32", "demo/loha-style"}
EXPECTED_DISCUSSIONS = {"demo/old-pickle-adapter", "demo/broken-upload", "demo/anime-lines-sd15"}
UNTOUCHED = {"demo/healthy-lora", "demo/no-bots-please"}


@pytest.fixture
def hub(sample_dir):
    with SandboxHub(user="lora-bot", users={OWNER_TOKEN: "demo"}) as sandbox:
        sandbox.load_directory(sample_dir)
        yield sandbox


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "discovery:\n"
        "  queries: [{filter: [], author: demo}]\n"
        "  incremental: false\n"
        f"  state_file: {tmp_path / 'state.json'}\n"
        "hub: {retries: 4, max_retry_wait: 2}\n"
        # The sample repos were uploaded a moment ago, all by "demo", and get variants by the policy.
        "proposals: {cooldown_hours: 0, max_prs_per_owner: 100, variant_repos: [demo]}\n"
    )
    return path


def scan(hub, config_file, tmp_path, *extra: str, capsys=None) -> dict:
    report = tmp_path / "report.json"
    code = main(
        [
            "scan",
            "--endpoint",
            hub.endpoint,
            "--token",
            BOT_TOKEN,
            "--config",
            str(config_file),
            "--report-json",
            str(report),
            *extra,
        ]
    )
    assert code == 0
    return json.loads(report.read_text())


def bot_threads(hub) -> dict[str, list]:
    api = HfApi(endpoint=hub.endpoint, token=OWNER_TOKEN)
    found = {}
    for model in api.list_models(author="demo"):
        threads = [d for d in api.get_repo_discussions(model.id) if d.author == "lora-bot"]
        if threads:
            found[model.id] = threads
    return found


def opened(report: dict, status: str = "opened") -> list[dict]:
    return [p for p in report["proposals"] if p["status"] == status]


def test_live_scan_opens_exactly_the_expected_prs_and_discussions(hub, config_file, tmp_path):
    report = scan(hub, config_file, tmp_path)
    threads = bot_threads(hub)
    prs = {repo for repo, items in threads.items() for d in items if d.is_pull_request}
    discussions = {repo for repo, items in threads.items() for d in items if not d.is_pull_request}
    assert prs == EXPECTED_PRS
    assert discussions == EXPECTED_DISCUSSIONS
    assert all(len(items) == 1 for items in threads.values()), "one thread per repo and kind"
    assert not UNTOUCHED & set(threads)
    assert {p["repo_id"] for p in opened(report)} == EXPECTED_PRS | EXPECTED_DISCUSSIONS
    # main is never written: every change lives on a PR branch
    api = HfApi(endpoint=hub.endpoint, token=OWNER_TOKEN)
    refs = api.list_repo_refs("demo/facechain-style-lora")
    assert [b.name for b in refs.branches] == ["main"]
    assert (
        json.loads(Path(api.hf_hub_download("demo/facechain-style-lora", "adapter_config.json")).read_text())[
            "r"
        ]
        == 8
    )


def test_second_scan_opens_nothing(hub, config_file, tmp_path):
    scan(hub, config_file, tmp_path)
    before = hub.write_request_count()
    requests_before = len(hub.requests)
    report = scan(hub, config_file, tmp_path)
    assert opened(report) == [] and report["proposals"] == []
    # Nothing changed since the store read these repos: the listing is the only request.
    assert [r["route"] for r in hub.requests[requests_before:]] == ["models"]
    assert len(report["repos"]) == 8 and report["stats"]["reused"] == 9  # one opted out in its card
    # The store lost (a new cache): the Hub's threads are the record, and nothing is opened twice.
    report = scan(hub, config_file, tmp_path, "--store", str(tmp_path / "fresh.sqlite"))
    assert opened(report) == []
    assert {p["status"] for p in report["proposals"]} == {"exists"}
    assert hub.write_request_count() == before, "a scan with nothing new writes nothing"


def test_owner_close_is_final_and_a_moved_repo_gets_a_superseding_pr(hub, config_file, tmp_path):
    scan(hub, config_file, tmp_path)
    owner = HfApi(endpoint=hub.endpoint, token=OWNER_TOKEN)
    closed_pr = bot_threads(hub)["demo/loha-style"][0]
    owner.change_discussion_status("demo/loha-style", closed_pr.num, "closed", comment="no thanks")
    stale = bot_threads(hub)["demo/flux-dog-r32"][0]
    readme = Path(owner.hf_hub_download("demo/flux-dog-r32", "README.md")).read_text()
    hub.commit_files(
        "demo/flux-dog-r32",
        {"README.md": readme.replace("DreamBooth", "DreamBooth (v2)").encode()},
        message="owner edits the card",
    )

    report = scan(hub, config_file, tmp_path)

    loha = owner.get_repo_discussions("demo/loha-style")
    assert [(d.num, d.status) for d in loha] == [(closed_pr.num, "closed")], (
        "closed stays closed, nothing new"
    )
    flux = {d.num: d for d in owner.get_repo_discussions("demo/flux-dog-r32")}
    assert flux[stale.num].status == "closed"
    replacement = max(flux)
    assert replacement != stale.num and flux[replacement].status == "open"
    details = owner.get_discussion_details("demo/flux-dog-r32", stale.num)
    assert any(f"#{replacement}" in getattr(e, "content", "") for e in details.events), (
        "links its replacement"
    )
    assert [p["repo_id"] for p in opened(report)] == ["demo/flux-dog-r32"]
    assert [
        (p["status"], p["number"])
        for p in report["proposals"]
        if p["repo_id"] == "demo/flux-dog-r32" and p["status"] != "opened"
    ] == [("superseded", stale.num)]
    # demo/loha-style did not change: its proposals were made at this sha, so they are not asked again.
    assert not any(p["repo_id"] == "demo/loha-style" for p in report["proposals"])
    # With the store lost, the owner's close is still final: the Hub's threads say so.
    fresh = scan(hub, config_file, tmp_path, "--store", str(tmp_path / "fresh.sqlite"))
    assert any(
        p["status"] == "closed-by-owner" and p["repo_id"] == "demo/loha-style" for p in fresh["proposals"]
    )
    assert opened(fresh) == []
    # The replacement is built on the owner's new README, so merging it keeps their edit.
    new_readme = Path(
        owner.hf_hub_download("demo/flux-dog-r32", "README.md", revision=f"refs/pr/{replacement}")
    ).read_text()
    assert "DreamBooth (v2)" in new_readme and "## LoRA details" in new_readme


def test_dry_run_prints_every_proposal_and_writes_nothing(hub, config_file, tmp_path, capsys):
    report = scan(hub, config_file, tmp_path, "--dry-run")
    out = capsys.readouterr().out
    assert hub.write_request_count() == 0
    would = opened(report, "would-open")
    assert {p["repo_id"] for p in would} == EXPECTED_PRS | EXPECTED_DISCUSSIONS
    for proposal in would:
        assert f"on {proposal['repo_id']}: {proposal['title']}" in out
    assert "+++ b/adapter_config.json" in out and '-  "r": 8,' in out and '+  "r": 4,' in out
    assert "--- /dev/null\n+++ b/README.md" in out, "a new card is shown as a whole-file diff"
    assert bot_threads(hub) == {}


def test_config_fix_pr_loads_in_peft_and_matches_the_weights(hub, config_file, tmp_path):
    from peft import LoraConfig
    from safetensors import safe_open

    scan(hub, config_file, tmp_path)
    owner = HfApi(endpoint=hub.endpoint, token=OWNER_TOKEN)
    pr = bot_threads(hub)["demo/facechain-style-lora"][0]
    folder = Path(
        owner.snapshot_download(
            "demo/facechain-style-lora", revision=f"refs/pr/{pr.num}", local_dir=tmp_path / "pr"
        )
    )
    config = LoraConfig.from_pretrained(folder)
    assert config.r == 4 and config.lora_alpha == 8
    with safe_open(folder / "adapter_model.safetensors", "pt") as weights:
        names = weights.keys()  # safe_open is not a mapping: keys() is how it lists its tensors
        ranks = {weights.get_slice(k).get_shape()[0] for k in names if k.endswith("lora_A.weight")}
    assert ranks == {config.r}
    body = owner.get_discussion_details("demo/facechain-style-lora", pr.num).events[0].content
    for must in ("size mismatch", "How it was verified", "lora-bot: ignore", "8 → 4"):
        assert must in body


# The bot's own non-idempotent writes: where a retry after a lost response could open a duplicate.
BOT_WRITES = "write|commit|discussions|comment|status"


def test_faults_on_writes_never_duplicate(sample_dir, config_file, tmp_path):
    # Writes fail a third of the time, including responses lost AFTER the server acted on them. (Uploads
    # of the files themselves are retried by huggingface_hub; the next test covers those.)
    faults = (
        f"429:0.12@{BOT_WRITES},503:0.1@{BOT_WRITES},drop:0.1@{BOT_WRITES},drop-after:0.15@{BOT_WRITES},"
        "seed=3,retry-after=0"
    )
    clock = RecordingClock()
    with SandboxHub(user="lora-bot", users={OWNER_TOKEN: "demo"}, faults=faults) as hub:
        hub.load_directory(sample_dir)
        for _ in range(3):
            run_scan(
                load_config(config_file),
                ScanOptions(endpoint=hub.endpoint, token=BOT_TOKEN, sleep=clock.sleep),
            )
        threads = bot_threads(hub)
    # The faults were met and retried after back-off waits (the server's Retry-After: 0 is honoured as 0 s).
    assert len(clock.waits) >= 3 and 0.0 in clock.waits and max(clock.waits) <= 2
    for repo, items in threads.items():
        prs = [d for d in items if d.is_pull_request and d.status == "open"]
        discussions = [d for d in items if not d.is_pull_request]
        assert len(prs) <= 1 and len(discussions) <= 1, f"duplicate on {repo}: {[d.title for d in items]}"
    assert set(threads) <= EXPECTED_PRS | EXPECTED_DISCUSSIONS
    assert set(threads) == EXPECTED_PRS | EXPECTED_DISCUSSIONS, "three runs get everything through"


def test_faulty_uploads_are_carried_through_and_every_pr_file_arrives_whole(
    sample_dir, config_file, tmp_path
):
    # Pre-upload checks and LFS transfers fail too; huggingface_hub retries those itself (with its own
    # back-off of a second or more, which no option shortens: the reason the faults here are few).
    faults = "503:1@preupload,drop:1@lfs,retry-after=0,limit=1"  # one of each
    with SandboxHub(user="lora-bot", users={OWNER_TOKEN: "demo"}, faults=faults) as hub:
        hub.load_directory(sample_dir)
        run_scan(
            load_config(config_file),
            ScanOptions(endpoint=hub.endpoint, token=BOT_TOKEN, sleep=RecordingClock().sleep),
        )
        injected = [e for e in hub.requests if e["fault"]]
        threads = bot_threads(hub)
        owner = HfApi(endpoint=hub.endpoint, token=OWNER_TOKEN)
        pr = next(d for d in threads["demo/flux-dog-r32"] if d.is_pull_request)
        files = {
            f.rfilename: f.size
            for f in owner.model_info(
                "demo/flux-dog-r32", revision=f"refs/pr/{pr.num}", files_metadata=True
            ).siblings
        }
        variant = next(name for name in files if "-r16" in name)
        local = Path(
            owner.hf_hub_download(
                "demo/flux-dog-r32", variant, revision=f"refs/pr/{pr.num}", local_dir=tmp_path / "pr"
            )
        )
    assert {e["route"] for e in injected} == {"preupload", "lfs"}, "both kinds of upload request met faults"
    assert set(threads) == EXPECTED_PRS | EXPECTED_DISCUSSIONS
    assert local.stat().st_size == files[variant]
    from safetensors import safe_open

    with safe_open(local, "pt") as weights:  # the whole variant arrived: every tensor reads
        names = weights.keys()  # safe_open is not a mapping: keys() is how it lists its tensors
        assert all(weights.get_tensor(k).numel() for k in names)
