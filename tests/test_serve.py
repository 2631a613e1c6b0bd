"""`lora-bot serve`: the webhook service under the real uvicorn, fed by the sandbox Hub's webhooks.

The whole loop with the real huggingface_hub client: an owner pushes a broken LoRA → the sandbox POSTs the
Hub's payload → the service queues the repo → the scan pipeline opens the PR; a comment → a reply.
"""

from __future__ import annotations

import argparse
import hmac
import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
import uvicorn
from huggingface_hub import HfApi
from test_conversation import OWNER, STRANGER, USERS, bot_replies, threads, write_portrait

from bot.conversation.commands import parse_records
from bot.sandbox import SandboxHub
from bot.serve import cli as serve_cli
from bot.serve import events
from bot.serve.events import Deduper, parse_event
from bot.serve.worker import RepoQueue

SECRET = "s3cret-webhook"


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Service:
    """`lora-bot serve`'s app under uvicorn.Server in a thread, as the command runs it."""

    def __init__(self, tmp_path: Path, endpoint: str, sock: socket.socket, cooldown_hours: float = 0):
        config = tmp_path / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "discovery": {"incremental": False, "state_file": str(tmp_path / "state.json")},
                    "hub": {"retries": 2, "max_retry_wait": 1},
                    "proposals": {"cooldown_hours": cooldown_hours},
                }
            )
        )
        args = argparse.Namespace(
            config=str(config), endpoint=endpoint, queue_file=tmp_path / "queue.json", dedupe_ttl=3600.0
        )
        self.app, self.queue = serve_cli.build(args, SECRET)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.url = "http://{}:{}".format(*sock.getsockname())
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def loop(tmp_path, monkeypatch):
    """(sandbox hub sending webhooks to the service, the service)."""
    monkeypatch.setenv("HF_TOKEN", "hf_bot")
    sock = free_socket()
    url = "http://{}:{}/webhook".format(*sock.getsockname())
    with SandboxHub(user="nobody", users=USERS, webhook_url=url, webhook_secret=SECRET) as hub:
        service = Service(tmp_path, hub.endpoint, sock)
        try:
            yield hub, service
        finally:
            service.stop()


def settle(hub, service) -> None:
    hub.webhooks.flush()
    assert service.queue.wait_idle(60)


def push_portrait(hub, tmp_path: Path, repo_id: str = "alice/portrait") -> float:
    folder = tmp_path / "upload"
    write_portrait(folder)
    owner = HfApi(endpoint=hub.endpoint, token=OWNER)
    owner.create_repo(repo_id.split("/")[1])
    started = time.monotonic()
    owner.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="my LoRA")
    return started


def post(service, payload: dict, secret: str | None = SECRET) -> httpx2.Response:
    headers = {} if secret is None else {"X-Webhook-Secret": secret}
    return httpx2.post(f"{service.url}/webhook", json=payload, headers=headers, timeout=10)


def test_push_opens_the_pr_and_comments_are_answered_through_the_webhook_path(loop, tmp_path):
    hub, service = loop
    started = push_portrait(hub, tmp_path)
    hub.webhooks.flush()
    deadline = time.monotonic() + 60
    while not threads(hub) and time.monotonic() < deadline:
        time.sleep(0.02)
    push_to_pr = time.monotonic() - started
    (pr,) = threads(hub).values()
    assert pr.is_pull_request and pr.status == "open"
    print(f"\npush → PR through the webhook: {push_to_pr:.2f} s")
    settle(hub, service)
    assert [scope for scope, _ in hub.webhooks.deliveries] == ["repo.content"]
    assert all(status == 202 for _, status in hub.webhooks.deliveries)

    # The owner asks for a variant: added, and answered.
    owner = HfApi(endpoint=hub.endpoint, token=OWNER)
    comment = owner.comment_discussion("alice/portrait", pr.num, "@lora-bot variant r8")
    settle(hub, service)
    now = threads(hub)
    newest = max(now)
    files = owner.list_repo_files("alice/portrait", revision=now[newest].git_reference)
    assert "r8/adapter_model.safetensors" in files
    reply = bot_replies(hub, "alice/portrait", pr.num)[-1]
    assert parse_records(reply) == [{"comment": comment.id, "command": "variant", "rank": 8}]
    variant_job = service.queue.done[-1]
    print(f"variant command: {variant_job['requests']} requests, {variant_job['write_requests']} writes")

    # A stranger's command changes nothing.
    writes = hub.write_request_count()
    HfApi(endpoint=hub.endpoint, token=STRANGER).comment_discussion(
        "alice/portrait", newest, "@lora-bot ignore repo"
    )
    settle(hub, service)
    assert hub.write_request_count() == writes + 1, "only the stranger's own comment"
    assert threads(hub)[newest].status == "open"

    # The owner opts the repo out: every thread closed; a later push does nothing.
    owner.comment_discussion("alice/portrait", newest, "@lora-bot ignore repo")
    settle(hub, service)
    assert all(d.status == "closed" for d in threads(hub).values())
    writes = hub.write_request_count()
    owner.upload_file(path_or_fileobj=b"v2", path_in_repo="notes.txt", repo_id="alice/portrait")
    settle(hub, service)
    assert hub.write_request_count() == writes + 2, (
        "the owner's own preupload and commit, nothing from the bot"
    )


def test_the_secret_is_checked_in_constant_time_and_wrong_or_missing_is_refused(loop, monkeypatch):
    _hub, service = loop
    payload = {
        "event": {"scope": "repo.content", "action": "update"},
        "repo": {"name": "a/b", "type": "model"},
    }
    compared = []
    original = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(events.hmac, "compare_digest", spy)
    assert post(service, payload, secret="wrong").status_code == 401
    assert post(service, payload, secret=None).status_code == 401
    assert post(service, payload).status_code == 202
    assert compared == [(SECRET.encode(), b"wrong"), (SECRET.encode(), SECRET.encode())]
    assert service.queue.stats()["waiting"] == 0 and not service.queue.done, "nothing queued: no push to main"


def test_duplicates_and_replays_are_dropped(loop):
    _hub, service = loop
    push = {
        "event": {"scope": "repo.content", "action": "update"},
        "repo": {"name": "nobody/missing", "type": "model"},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "a" * 40, "newSha": "b" * 40}],
    }
    assert post(service, push).json()["status"] in ("queued", "coalesced")
    assert post(service, push).json()["status"] == "duplicate"
    pr_ref = dict(push, updatedRefs=[{"ref": "refs/pr/3", "newSha": "c" * 40}])
    assert post(service, pr_ref).json()["status"] == "ignored"
    health = httpx2.get(f"{service.url}/health", timeout=10).json()
    assert health["status"] == "ok"


def test_deduper_forgets_after_its_ttl():
    now = [0.0]
    deduper = Deduper(60, clock=lambda: now[0])
    assert deduper.first_time("k") and not deduper.first_time("k")
    now[0] = 61
    assert deduper.first_time("k")


@pytest.mark.parametrize(
    ("payload", "queued"),
    [
        (
            {
                "event": {"scope": "discussion.comment"},
                "repo": {"name": "a/b"},
                "comment": {"id": "1", "content": "@lora-bot check"},
            },
            True,
        ),
        (
            {
                "event": {"scope": "discussion.comment"},
                "repo": {"name": "a/b"},
                "comment": {"id": "1", "content": "thanks"},
            },
            False,
        ),
        (
            {
                "event": {"scope": "repo.content"},
                "repo": {"name": "a/b", "type": "dataset"},
                "updatedRefs": [{"ref": "refs/heads/main"}],
            },
            False,
        ),
        (
            {
                "event": {"scope": "repo.content"},
                "repo": {"name": "../x"},
                "updatedRefs": [{"ref": "refs/heads/main"}],
            },
            False,
        ),
        ([1, 2], False),
    ],
)
def test_only_pushes_to_main_and_mentions_are_queued(payload, queued):
    event, _why = parse_event(payload, json.dumps(payload).encode())
    assert (event is not None) == queued


def test_shutdown_finishes_the_scan_in_flight_and_keeps_the_waiting_repos(tmp_path):
    started, release, scanned = threading.Event(), threading.Event(), []

    def scan(repo_id):
        started.set()
        release.wait(10)
        scanned.append(repo_id)

    queue = RepoQueue(scan, tmp_path / "queue.json")
    queue.start()
    queue.put("a/one")
    assert started.wait(10)
    queue.put("a/two")
    queue.put("a/three")
    assert not queue.put("a/two"), "a waiting repo is not queued twice"
    stopper = threading.Thread(target=queue.stop)
    stopper.start()
    release.set()
    stopper.join(10)
    assert scanned == ["a/one"]
    assert json.loads((tmp_path / "queue.json").read_text()) == ["a/two", "a/three"]
    assert list(RepoQueue(scan, tmp_path / "queue.json")._waiting) == ["a/two", "a/three"]


def test_serve_without_the_extra_prints_a_hint_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    from bot.cli import main

    assert main(["serve"]) == 2
    assert "pip install 'lora-bot[serve]'" in capsys.readouterr().err
