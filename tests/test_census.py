"""The census: a store that makes reruns free, pacing under the Hub's rate limits, the sandbox's quotas."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.utils import parse_ratelimit_headers

from bot.cli import main
from bot.sandbox import SandboxHub
from bot.sandbox.faults import QuotaSpec
from bot.sandbox.layouts import write_sparse_safetensors


def peft_repo(folder, rank: int) -> dict:
    shapes = {}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            shapes[f"{key}.lora_A.weight"] = ("F32", (rank, 64))
            shapes[f"{key}.lora_B.weight"] = ("F32", (64, rank))
    folder.mkdir(parents=True, exist_ok=True)
    write_sparse_safetensors(folder / "adapter_model.safetensors", shapes)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": ["q_proj", "v_proj"]}
    card = "---\nlibrary_name: peft\ntags: [lora]\n---\n\n# an adapter\n"
    return {
        "adapter_model.safetensors": folder / "adapter_model.safetensors",
        "adapter_config.json": json.dumps(config).encode(),
        "README.md": card.encode(),
    }


CENSUS_ONLY = "proposals: {card: false, config_fix: false, variants: false, flag_discussions: false}\n"


def scan(hub, tmp_path, *extra: str, config_text: str = CENSUS_ONLY, exit_code: int = 0) -> dict:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"discovery: {{incremental: false, state_file: {tmp_path / 's.json'}, queries: [{{filter: []}}]}}\n"
        + config_text
        + "hub: {retries: 3, max_retry_wait: 5, workers: 4}\n"
    )
    out = tmp_path / "report.json"
    code = main(
        ["scan", "--endpoint", hub.endpoint, "--config", str(config), "--report-json", str(out), *extra]
    )
    assert code == exit_code
    return json.loads(out.read_text())


def test_a_rerun_reads_only_the_repo_that_changed_and_reports_them_all(tmp_path):
    with SandboxHub() as hub:
        for n in range(4):
            hub.add_repo(f"u/adapter-{n}", peft_repo(tmp_path / f"a{n}", rank=4 + n))
        first = scan(hub, tmp_path)
        assert sorted(r["files"][0]["rank"] for r in first["repos"]) == [4, 5, 6, 7]
        # The listing carries sha, files and card metadata: no per-repo API call, and the README is not read.
        routes = [e["route"] for e in hub.requests]
        assert routes.count("model_info") == 0 and routes.count("models") == 1
        assert not any(e["path"].endswith("/README.md") for e in hub.requests)

        before = len(hub.requests)
        hub.commit_files("u/adapter-2", peft_repo(tmp_path / "a2-new", rank=16), message="retrained")
        second = scan(hub, tmp_path)
        read = [e for e in hub.requests[before:] if e["route"] != "models"]
        assert {e["path"].split("/resolve/")[0] for e in read} == {"/u/adapter-2"}
        assert {r["repo_id"]: r["files"][0]["rank"] for r in second["repos"]}["u/adapter-2"] == 16
        assert second["stats"]["reused"] == 3

        before = len(hub.requests)
        third = scan(
            hub, tmp_path, "--store", str(tmp_path / "other.sqlite")
        )  # another store: all read again
        assert len([e for e in hub.requests[before:] if e["route"] == "resolve"]) == 8
        assert third["repos"] == second["repos"]


def test_a_repo_whose_read_failed_is_read_again_next_run(tmp_path):
    with SandboxHub(faults="503:1.0@resolve,limit=3") as hub:
        hub.add_repo("u/flaky", peft_repo(tmp_path / "a", rank=8))
        first = scan(hub, tmp_path, exit_code=1)  # no repo could be read
        assert first["repos"][0]["error"] is not None  # 3 tries, 3 faults
        second = scan(hub, tmp_path)
        assert second["repos"][0]["error"] is None and second["repos"][0]["files"][0]["rank"] == 8


def test_pacing_keeps_a_scan_under_the_sandbox_quota_without_a_429(tmp_path):
    # 12 repos, 2 resolver reads each: 24 reads against 10 per 2-second window.
    with SandboxHub(quotas="api=5/2,resolvers=10/2") as hub:
        for n in range(12):
            hub.add_repo(f"u/adapter-{n:02d}", peft_repo(tmp_path / f"a{n}", rank=4))
        report = scan(hub, tmp_path)
        statuses = [e["status"] for e in hub.requests]
    assert len(report["repos"]) == 12 and all(r["error"] is None for r in report["repos"])
    assert 429 not in statuses and hub.limiter.throttled == 0
    assert report["stats"]["requests_by_bucket"]["resolvers"] == 24
    assert report["stats"]["requests_by_bucket"]["429"] == 0


def test_the_sandbox_quota_answers_like_the_hub(tmp_path):
    with SandboxHub(quotas="api=2/60") as hub:
        hub.add_repo("u/a", peft_repo(tmp_path / "a", rank=4))
        # A plain client: lora-bot's own session would pace the third request instead of sending it.
        with httpx2.Client() as client:
            first = client.get(f"{hub.endpoint}/api/models/u/a")
            info = parse_ratelimit_headers(first.headers)
            assert (info.resource_type, info.remaining, info.limit, info.window_seconds) == ("api", 1, 2, 60)
            client.get(f"{hub.endpoint}/api/models/u/a")
            third = client.get(f"{hub.endpoint}/api/models/u/a")
        assert third.status_code == 429 and 0 < int(third.headers["Retry-After"]) <= 60
        assert parse_ratelimit_headers(third.headers).remaining == 0


@pytest.mark.parametrize("text", ["api=10", "pages=1/5", "api=0/5", "api=x/y"])
def test_a_bad_quota_is_one_clear_message(text, capsys):
    with pytest.raises(ValueError, match="bad quota"):
        QuotaSpec.parse(text)
    assert main(["sandbox", "--quota", text]) == 2
    assert "--quota: bad quota" in capsys.readouterr().err


def test_a_dry_run_reads_headers_only_unless_asked_to_build_previews(sample_dir, tmp_path):
    with SandboxHub() as hub:
        hub.load_directory(sample_dir)
        proposals_on = (
            "proposals: {card: true, config_fix: true, variants: true, flag_discussions: true,\n"
            "            cooldown_hours: 0, max_prs_per_owner: 100, variant_repos: [demo]}\n"
        )
        plain = scan(hub, tmp_path, "--dry-run", config_text=proposals_on)
        before = len(hub.requests)
        previews = scan(
            hub,
            tmp_path,
            "--dry-run",
            "--build-previews",
            "--store",
            str(tmp_path / "b.sqlite"),
            config_text=proposals_on,
        )
        downloads = [e for e in hub.requests[before:] if e["route"] == "resolve" and e["method"] == "HEAD"]
    kinds = {p["kind"] for p in plain["proposals"]}
    assert "variant" not in kinds and "metadata-fix" not in kinds
    assert plain["stats"]["bytes"] - plain["stats"]["inspect_bytes"] < 20_000  # READMEs for card previews
    assert previews["stats"]["bytes"] - previews["stats"]["inspect_bytes"] > 1_000_000  # whole weight files
    assert downloads, "previews download the weights they convert"


def test_downloads_stay_within_the_budget_and_deferred_proposals_come_back_next_run(sample_dir, tmp_path):
    # Two whole-file proposals: flux-dog-r32's rank-16 variant (a 3.1 MB source) and facechain's rank-8
    # padded variant (3.2 MB); the budget holds one of them. One worker: the first to claim it gets it.
    weights_only = (
        "hub: {workers: 1}\n"
        "proposals: {card: false, config_fix: true, variants: true, flag_discussions: false, cooldown_hours: 0, "
        "max_prs_per_owner: 100, variant_repos: [demo/flux-dog-r32, demo/facechain-style-lora], "
    )
    repos = ("--token", "hf_bot")
    variants = {
        "demo/flux-dog-r32": "pytorch_lora_weights.safetensors",
        "demo/facechain-style-lora": "adapter_model.safetensors",
    }
    with SandboxHub(user="lora-bot") as hub:
        hub.load_directory(sample_dir)
        api = HfApi(endpoint=hub.endpoint)
        sizes = {
            repo: next(
                s.size for s in api.model_info(repo, files_metadata=True).siblings if s.rfilename == name
            )
            for repo, name in variants.items()
        }
        before = len(hub.requests)
        starved = scan(hub, tmp_path, *repos, config_text=weights_only + "download_budget_bytes: 3300000}\n")
        whole_files = [  # header reads are a few kB; a download sends the file
            e["path"].split("/resolve/")[0][1:]
            for e in hub.requests[before:]
            if e["route"] == "resolve" and e["bytes"] > 300_000
        ]
        deferred = {p["repo_id"]: p for p in starved["proposals"] if p["status"] == "deferred"}
        put_off = list(deferred)
        built = [r for r in variants if r not in deferred]
        assert len(put_off) == 1 and deferred[put_off[0]]["kind"] == "variant"
        assert whole_files == built, "the deferred variant's source is never downloaded"
        assert f"would download {sizes[put_off[0]]:,} bytes" in deferred[put_off[0]]["detail"]
        opened = {p["repo_id"] for p in starved["proposals"] if p["status"] == "opened"}
        # The built variant's PR opened; facechain's config fix needs no download and goes out either way.
        assert set(built) <= opened and "demo/facechain-style-lora" in opened
        assert starved["stats"]["downloads"] == {
            "budget_bytes": 3_300_000,
            "bytes": sizes[built[0]],
            "by_kind": {"variant": {"bytes": sizes[built[0]], "files": 1}},
        }

        # The store reuses every repo (same sha, no request), but the deferred proposal is not done: built now;
        # the others' proposals are done and not made again.
        again = scan(hub, tmp_path, *repos, config_text=weights_only + "download_budget_bytes: 10000000}\n")
        assert again["stats"]["reused"] == starved["stats"]["repos"] + len(starved["skipped"])
        statuses = [(p["repo_id"], p["status"]) for p in again["proposals"]]
        assert (put_off[0], "opened") in statuses and not [
            p for p in again["proposals"] if p["status"] == "deferred"
        ]
        assert again["stats"]["downloads"]["by_kind"] == {"variant": {"bytes": sizes[put_off[0]], "files": 1}}


def test_census_export_writes_one_row_per_lora_file_and_publishes_a_dataset(sample_dir, tmp_path, capsys):
    with SandboxHub(user="lora-bot") as hub:
        hub.load_directory(sample_dir)
        store = tmp_path / "census.sqlite"
        report = scan(hub, tmp_path, "--store", str(store))
        jsonl, parquet = tmp_path / "out" / "census.jsonl", tmp_path / "out" / "census.parquet"
        args = ["census", "export", "--store", str(store), "--jsonl", str(jsonl)]
        pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
        publish = ["--parquet", str(parquet), "--publish", "lora-bot/lora-census"]
        assert main([*args, *publish, "--endpoint", hub.endpoint, "--token", "hf_bot"]) == 0

        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
        reported = {(r["repo_id"], f["path"]): f for r in report["repos"] for f in r["files"]}
        assert {(row["repo"], row["path"]) for row in rows} == set(reported)
        assert "demo/no-bots-please" not in {row["repo"] for row in rows}  # the owner opted out
        flux = next(row for row in rows if row["repo"] == "demo/flux-dog-r32")
        assert (flux["format"], flux["rank"], flux["ranks"], flux["alpha"]) == (
            "diffusers",
            32,
            {"32": 6},
            32,
        )
        assert flux["family"] == "flux1" and flux["base_model"]["repo_id"] == "black-forest-labs/FLUX.1-dev"
        assert flux["sha"] == next(r["sha"] for r in report["repos"] if r["repo_id"] == "demo/flux-dog-r32")
        anime = next(row for row in rows if row["repo"] == "demo/anime-lines-sd15")
        assert anime["flags"] == ["base-model-mismatch"] and anime["base_model"]["repo_id"] is None
        assert len(anime["base_model"]["candidates"]) == 2
        table = pq.read_table(parquet).to_pylist()
        assert [(r["repo"], r["path"], r["rank"], dict(r["ranks"])) for r in table] == [
            (r["repo"], r["path"], r["rank"], {int(k): v for k, v in r["ranks"].items()}) for r in rows
        ]

        # Read back from the dataset repo with the real client.
        api = HfApi(endpoint=hub.endpoint, token="hf_bot")
        files = set(api.list_repo_files("lora-bot/lora-census", repo_type="dataset"))
        assert {"README.md", "data/census.jsonl", "data/census.parquet"} <= files
        published = api.hf_hub_download(
            "lora-bot/lora-census", "data/census.jsonl", repo_type="dataset", cache_dir=tmp_path / "c"
        )
        assert Path(published).read_text(encoding="utf-8") == jsonl.read_text()
        card = Path(
            api.hf_hub_download(
                "lora-bot/lora-census", "README.md", repo_type="dataset", cache_dir=tmp_path / "c"
            )
        ).read_text(encoding="utf-8")
        assert card.startswith("---\nlicense: cc-by-4.0\n") and "| `base_model` |" in card
        assert f"{len(rows)} files" in card.replace(",", "")
        # A model listing does not show the dataset; publishing again updates the same repo.
        assert "lora-bot/lora-census" not in {m.id for m in api.list_models()}
        assert (
            main(
                [*args, "--publish", "lora-bot/lora-census", "--endpoint", hub.endpoint, "--token", "hf_bot"]
            )
            == 0
        )
        assert len(api.list_repo_commits("lora-bot/lora-census", repo_type="dataset")) == 3


def test_census_export_says_what_is_missing_in_one_line(tmp_path, capsys):
    assert main(["census", "export", "--store", str(tmp_path / "none.sqlite"), "--jsonl", "x"]) == 2
    assert "no census store" in capsys.readouterr().err


def test_the_sandbox_serves_a_synthetic_census_lazily_in_linked_pages(tmp_path):
    from bot.sandbox.synthetic import SyntheticRepos

    synthetic = SyntheticRepos(2500, seed=3)
    hub = SandboxHub()
    hub.store.synthetic = synthetic
    with hub:
        api = HfApi(endpoint=hub.endpoint)
        listed = list(api.list_models(expand=["sha", "lastModified", "siblings", "cardData"]))
        pages = [e for e in hub.requests if e["route"] == "models"]
        assert len(listed) == 2500 and len({m.id for m in listed}) == 2500
        assert len(pages) == 3  # pages of 1000, followed by their Link header
        assert [m.last_modified for m in listed] == sorted((m.last_modified for m in listed), reverse=True)
        assert hub.store.repos == {}  # nothing was stored: every repo is made when asked for

        synthetic.change([7])
        newest = next(iter(api.list_models(expand=["sha"], limit=1)))
        assert newest.id == "synthetic/lora-000007" and newest.sha != listed[-8].sha
        report = scan(hub, tmp_path, "--repo", "synthetic/lora-000007", "--repo", "synthetic/lora-000008")
    files = {r["repo_id"]: r["files"][0] for r in report["repos"]}
    assert files["synthetic/lora-000007"]["format"] == "kohya"  # index 7: the kohya SDXL kind
    assert files["synthetic/lora-000007"]["base_model"]["family"] == "sdxl"
    assert files["synthetic/lora-000007"]["alpha"] == files["synthetic/lora-000007"]["rank"]
    assert files["synthetic/lora-000008"]["format"] == "diffusers"


def test_the_streamed_report_is_the_report_json(sample_dir, tmp_path):
    from bot.config import config_from_mapping
    from bot.pipeline import ScanOptions, run_scan
    from bot.report.scan import iter_scan_report_json, render_scan_text, scan_report

    config = config_from_mapping(
        {
            "discovery": {"incremental": False, "queries": [{"filter": []}]},
            "proposals": {"variants": False, "config_fix": False},
        }
    )
    with SandboxHub() as hub:
        hub.load_directory(sample_dir)
        result = run_scan(config, ScanOptions(endpoint=hub.endpoint, dry_run=True, store=str(tmp_path / "s")))
        streamed = "".join(iter_scan_report_json(result))
        assert streamed == json.dumps(scan_report(result), indent=2)
        assert len(json.loads(streamed)["repos"]) == 8 and json.loads(streamed)["proposals"]
        assert "== demo/flux-dog-r32" in render_scan_text(result)
        empty = run_scan(
            config,
            ScanOptions(endpoint=hub.endpoint, dry_run=True, repos=("demo/none",), store=str(tmp_path / "e")),
        )
        assert "".join(iter_scan_report_json(empty)) == json.dumps(scan_report(empty), indent=2)


def test_runs_started_together_all_open_a_new_store(tmp_path):
    # Two scans started at once (two live runs, the Action beside a cron job) may both find the store new.
    # Setting it up takes a lock SQLite does not wait for; a run that lost that race must not fail.
    import threading

    from bot.census.store import CensusStore, StoreError

    failures = []

    def open_store(path):
        try:
            CensusStore(path).close()
        except StoreError as error:
            failures.append(str(error))

    for trial in range(50):
        path = tmp_path / str(trial) / "census.sqlite"
        runs = [threading.Thread(target=open_store, args=(path,)) for _ in range(12)]
        for run in runs:
            run.start()
        for run in runs:
            run.join()
    assert failures == []
