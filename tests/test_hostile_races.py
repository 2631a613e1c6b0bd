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
        # The sample repos were uploaded a moment ago: no cooldown, and caps that do not hold the race back.
        "proposals: {cooldown_hours: 0, max_prs_per_owner: 100, max_prs_per_hour: 100}\n"
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


def test_a_duplicate_left_by_a_racing_run_is_closed_with_a_link_to_the_older(sample_dir, tmp_path):
    """Whether two real runs collide depends on timing; what converging does with a collision does not:
    the newer of two open threads proposing the same change is closed, pointing to the older."""
    from bot.hub.client import RetryPolicy, make_api
    from bot.publish.hub import HubPublisher

    config = load_config_text(
        "discovery:\n"
        "  queries: [{filter: [], author: demo}]\n"
        "  incremental: false\n"
        f"  state_file: {tmp_path / 'state.json'}\n"
        "proposals: {cooldown_hours: 0, max_prs_per_owner: 100}\n"
    )
    with SandboxHub(user="lora-bot", users={OWNER_TOKEN: "demo"}) as hub:
        hub.load_directory(sample_dir)
        run_scan(config, ScanOptions(endpoint=hub.endpoint, token=BOT_TOKEN))
        bot = HfApi(endpoint=hub.endpoint, token=BOT_TOKEN)
        (original,) = [t for t in bot.get_repo_discussions("demo/broken-upload") if t.author == "lora-bot"]
        body = bot.get_discussion_details("demo/broken-upload", original.num).events[0].content
        # What the losing run of a race writes: the same discussion, opened a moment later.
        copy = bot.create_discussion("demo/broken-upload", original.title, description=body)
        publisher = HubPublisher(make_api(hub.endpoint, BOT_TOKEN), "lora-bot", RetryPolicy())
        (closed,) = publisher.converge("demo/broken-upload")
        threads = {t.num: t for t in bot.get_repo_discussions("demo/broken-upload")}
        events = bot.get_discussion_details("demo/broken-upload", copy.num).events
        note = " ".join(getattr(e, "content", "") for e in events[1:])
    assert (closed.status, closed.number) == (Status.DUPLICATE_CLOSED, copy.num)
    assert threads[copy.num].status == "closed" and threads[original.num].status == "open"
    assert f"#{original.num}" in note
