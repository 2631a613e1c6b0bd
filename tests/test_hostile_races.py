"""Hostile conditions for the writer: two live runs at once. The re-check before each write cannot close the
race (both runs check, then both write); after writing, each run converges the Hub to one open thread per
change. Real runs, real huggingface_hub client, one sandbox Hub."""

from __future__ import annotations

import threading
from collections import Counter

from huggingface_hub import HfApi

from bot.config import load_config_text
from bot.pipeline import ScanOptions, run_scan
from bot.proposals.model import parse_markers
from bot.sandbox import SandboxHub
from bot.vocab import Status

BOT_TOKEN, OWNER_TOKEN = "hf_bot_race_token", "hf_owner_race_token"


def open_threads(hub) -> dict[str, list]:
    """Every open lora-bot thread per repo, with the keys its body records."""
    api = HfApi(endpoint=hub.endpoint, token=OWNER_TOKEN)
    found = {}
    for model in api.list_models(author="demo"):
        for thread in api.get_repo_discussions(model.id):
            if thread.author != "lora-bot" or thread.status != "open":
                continue
            details = api.get_discussion_details(model.id, thread.num)
            keys = {m["key"] for e in details.events if e.type == "comment" for m in parse_markers(e.content)}
            found.setdefault(model.id, []).append((thread.num, frozenset(keys)))
    return found


def test_two_live_runs_started_together_leave_one_thread_per_change(sample_dir, tmp_path):
    config = load_config_text(
        "discovery:\n"
        "  queries: [{filter: [], author: demo}]\n"
        "  incremental: false\n"
        f"  state_file: {tmp_path / 'state.json'}\n"
        "hub: {workers: 4}\n"
    )
    # Latency widens the gap between each run's re-check and its write, so the two runs do collide.
    with SandboxHub(user="lora-bot", users={OWNER_TOKEN: "demo"}, latency_ms=20) as hub:
        hub.load_directory(sample_dir)
        options = ScanOptions(endpoint=hub.endpoint, token=BOT_TOKEN)
        start = threading.Barrier(2)
        results = []

        def run() -> None:
            start.wait()
            results.append(run_scan(config, options))

        runs = [threading.Thread(target=run) for _ in range(2)]
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join(timeout=120)
        assert len(results) == 2, "both runs finished"
        threads = open_threads(hub)

    assert threads, "the runs opened PRs and discussions"
    for repo_id, held in threads.items():
        keys = Counter(key for _, keys in held for key in keys)
        assert all(count == 1 for count in keys.values()), (repo_id, held)
    # Every thread opened is either still the one open thread of its change, or closed as a duplicate
    # (both runs may close the same duplicate: they pick the same one, never both of a pair).
    opened = {(o.repo_id, o.number) for r in results for o in r.outcomes if o.status == Status.OPENED}
    closed = {
        (o.repo_id, o.number) for r in results for o in r.outcomes if o.status == Status.DUPLICATE_CLOSED
    }
    still_open = {(repo_id, number) for repo_id, held in threads.items() for number, _ in held}
    assert opened == still_open | closed and not still_open & closed
    assert closed, "the runs did collide: without converging, these would be duplicates"
