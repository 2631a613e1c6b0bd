"""The sandbox Hub's webhooks: a push to main and a new comment are POSTed to one URL, as the Hub sends them.

Payload shape: huggingface_hub's `WebhookPayload` (version 3): `event {action, scope}`, `repo {type, name,
id, private, url, owner, headSha}`, `updatedRefs [{ref, oldSha, newSha}]` for `repo.content`, and
`discussion {...}` plus `comment {id, author, hidden, content, url}` for `discussion.comment`. The secret
travels in `X-Webhook-Secret`. One difference: the Hub's `author.id` is an opaque user id; the sandbox
puts the user name there (nothing reads it as a name; the bot reads authors from the discussion API).

Deliveries run on one background thread, in order, so a test's push and comment arrive in the order made.
The stdlib's urllib sends them: the sandbox needs no HTTP client of its own.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

TIMEOUT = 10.0


def _object_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def repo_json(repo_id: str, endpoint: str, head: str | None) -> dict:
    return {
        "type": "model",
        "name": repo_id,
        "id": _object_id(repo_id),
        "private": False,
        "url": {"web": f"{endpoint}/{repo_id}", "api": f"{endpoint}/api/models/{repo_id}"},
        "owner": {"id": repo_id.split("/", 1)[0]},
        "headSha": head,
    }


def push_payload(event: dict, endpoint: str) -> dict:
    return {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": repo_json(event["repo_id"], endpoint, event["new"]),
        "webhook": {"id": "sandbox", "version": 3},
        "updatedRefs": [{"ref": event["ref"], "oldSha": event["old"], "newSha": event["new"]}],
    }


def comment_payload(event: dict, endpoint: str) -> dict:
    repo_id, discussion, comment = event["repo_id"], event["discussion"], event["event"]
    web = f"{endpoint}/{repo_id}/discussions/{discussion.num}"
    thread = {
        "id": _object_id(f"{repo_id}#{discussion.num}"),
        "num": discussion.num,
        "author": {"id": discussion.author},
        "url": {"web": web, "api": f"{endpoint}/api/models/{repo_id}/discussions/{discussion.num}"},
        "title": discussion.title,
        "isPullRequest": discussion.is_pull_request,
        "status": discussion.status,
    }
    if discussion.is_pull_request:
        thread["changes"] = {"base": "refs/heads/main"}
    return {
        "event": {"action": "create", "scope": "discussion.comment"},
        "repo": repo_json(repo_id, endpoint, None),
        "discussion": thread,
        "comment": {
            "id": comment.id,
            "author": {"id": comment.author},
            "hidden": False,
            "content": comment.data["latest"]["raw"],
            "url": {"web": f"{web}#{comment.id}"},
        },
        "webhook": {"id": "sandbox", "version": 3},
    }


class WebhookSender:
    """Sends the store's events to `url`; `deliveries` keeps (scope, HTTP status or error) per delivery."""

    def __init__(self, url: str, secret: str | None, endpoint: Callable[[], str]) -> None:
        self.url = url
        self.secret = secret
        self.endpoint = endpoint
        self.deliveries: list[tuple[str, int | str]] = []
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def on_store_event(self, event: dict) -> None:
        """A store listener: a push to main or a comment becomes one delivery."""
        build = push_payload if event["kind"] == "push" else comment_payload
        self._queue.put(build(event, self.endpoint()))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every event so far was delivered (tests)."""
        done = threading.Event()
        self._queue.put({"__flush__": done})
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=TIMEOUT)

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            if "__flush__" in payload:
                payload["__flush__"].set()
                continue
            self.deliveries.append((payload["event"]["scope"], self._send(payload)))

    def _send(self, payload: dict) -> int | str:
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers["X-Webhook-Secret"] = self.secret
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (OSError, ValueError) as error:
            return type(error).__name__  # the receiver is down: the Hub would log and move on, so do we
