"""Hub webhook payloads → the repo to scan, and the duplicate/replay filter. Stdlib only, no I/O.

The payload is huggingface_hub's `WebhookPayload` (version 3). Two kinds matter:
- `repo.content` with `refs/heads/main` among `updatedRefs`: the owner pushed; scan the repo. The scope
  also fires for new PR refs (the bot's own PRs among them): those are ignored.
- `discussion.comment` whose content mentions `@lora-bot`: maybe a command; scan the repo, which reads
  the bot's threads and answers what an owner asked. (The payload names authors by opaque id, so who wrote
  it is checked by the pipeline, from the discussion API, not here.)
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.core.selection import is_repo_id

MAIN = "refs/heads/main"
MENTION = "@lora-bot"


@dataclass(frozen=True)
class WebhookEvent:
    repo_id: str
    scope: str
    key: str  # what makes two deliveries the same event: the comment id, the pushed sha, else the body


def secret_ok(expected: str, given: str | None) -> bool:
    """Constant time in the secret's content: hmac.compare_digest on bytes."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def parse_event(payload: object, body: bytes) -> tuple[WebhookEvent | None, str]:
    """(the event to queue, or None; why, in a few words)."""
    if not isinstance(payload, dict):
        return None, "not a JSON object"
    event, repo = payload.get("event") or {}, payload.get("repo") or {}
    scope = event.get("scope") if isinstance(event, dict) else None
    repo_id = repo.get("name") if isinstance(repo, dict) else None
    if not isinstance(repo_id, str) or not is_repo_id(repo_id):
        return None, "no repo"
    if repo.get("type", "model") != "model":
        return None, "not a model repo"
    if scope == "repo.content":
        refs = payload.get("updatedRefs") or []
        pushed = [r for r in refs if isinstance(r, dict) and r.get("ref") == MAIN]
        if not pushed:
            return None, "no push to main"
        key = f"push:{repo_id}:{pushed[0].get('newSha') or hashlib.sha256(body).hexdigest()}"
        return WebhookEvent(repo_id, scope, key), "push to main"
    if scope == "discussion.comment":
        comment = payload.get("comment") or {}
        content = comment.get("content") if isinstance(comment, dict) else None
        if not isinstance(content, str) or MENTION not in content.lower():
            return None, "comment without @lora-bot"
        comment_id = comment.get("id") or hashlib.sha256(body).hexdigest()
        return WebhookEvent(repo_id, scope, f"comment:{repo_id}:{comment_id}"), "comment"
    return None, f"scope {scope!r} not handled"


class Deduper:
    """Keys seen in the last `ttl` seconds: a retried delivery or a replayed event is dropped."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.ttl}
            if key in self._seen:
                return False
            self._seen[key] = now
            return True
