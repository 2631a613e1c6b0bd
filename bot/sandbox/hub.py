"""SandboxHub: a local Hugging Face Hub emulator that the real `huggingface_hub` client can talk to.

This is a local test and demo server, not a Hub replacement: models only, no auth beyond "a token is
present", no Xet (it never sends `X-Xet-Hash`, so downloads stay on plain HTTP; clients must set
HF_HUB_DISABLE_XET=1 for uploads to use the classic LFS batch API). The wire format follows
shared/docs/hub-api.md. Repos, commits and discussions live in `bot.sandbox.store`, the API in
`bot.sandbox.routes`, the HTTP server in `bot.sandbox.http`, fault injection in `bot.sandbox.faults`.
This module holds the hub's lifecycle, seeding repos from Python, and the request log.

    hub = SandboxHub(users={"hf_owner": "alice"})
    endpoint = hub.start()
    HfApi(endpoint=endpoint, token="hf_test").whoami()   # {"name": "lora-bot", ...}
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

from bot.sandbox.faults import FaultInjector, FaultSpec, QuotaSpec, RateLimiter
from bot.sandbox.http import SandboxHTTPServer
from bot.sandbox.routes import SandboxRoutes
from bot.sandbox.store import EXTRA_KEYS, MAIN_REF, Blob, DeleteFile, HubStore, PutFile, StoredFile
from bot.sandbox.webhooks import WebhookSender


class SandboxHub:
    """A local Hub for tests and demos; see the module docstring."""

    def __init__(
        self,
        *,
        user: str = "lora-bot",
        users: dict[str, str] | None = None,
        latency_ms: int = 0,
        faults: FaultSpec | str | None = None,
        request_log: str | Path | None = None,
        discussions_page_size: int = 50,
        quotas: QuotaSpec | str | None = None,
        orgs: dict[str, list[str] | tuple[str, ...] | set[str]] | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ):
        if discussions_page_size < 1:
            raise ValueError("discussions_page_size must be at least 1")
        self.user = user
        self.users = dict(users or {})
        self.latency_ms = latency_ms
        spec = FaultSpec.parse(faults) if isinstance(faults, str) else (faults or FaultSpec())
        self.faults = FaultInjector(spec)
        # The Hub's rate-limit buckets (`api=Q/W,resolvers=Q/W`); none by default: nothing is metered.
        self.limiter = RateLimiter(
            QuotaSpec.parse(quotas) if isinstance(quotas, str) else (quotas or QuotaSpec())
        )
        self.request_log = Path(request_log) if request_log else None
        self.store = HubStore()
        self.store.orgs = {org: frozenset(members) for org, members in (orgs or {}).items()}
        self.routes = SandboxRoutes(self.store, discussions_page_size=discussions_page_size)
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.webhooks: WebhookSender | None = None
        self._requests: list[dict] = []
        self._in_flight = 0
        self._arrivals = 0
        self._log_changed = threading.Condition()
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint: str | None = None

    # --- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("the sandbox hub is already running")
        self._server = SandboxHTTPServer((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        self._endpoint = f"http://{bound_host}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-hub", daemon=True
        )
        self._thread.start()
        if self.webhook_url:
            self.webhooks = WebhookSender(self.webhook_url, self.webhook_secret, lambda: self.endpoint)
            self.store.listeners.append(self.webhooks.on_store_event)
        return self._endpoint

    def stop(self) -> None:
        if self._server is None:
            return
        if self.webhooks is not None:
            self.store.listeners.remove(self.webhooks.on_store_event)
            self.webhooks.close()
            self.webhooks = None
        self._server.shutdown()
        self._server.close_open_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None
        self.store.close()

    def __enter__(self) -> SandboxHub:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the sandbox hub has not been started")
        return self._endpoint

    # --- seeding repos from Python

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        author: str | None = None,
        message: str = "Initial commit",
        last_modified: datetime | None = None,
        extra: dict | None = None,
    ) -> str:
        """Create a repo whose main branch holds `files` (Paths are referenced, not read); returns its commit."""
        extra = dict(extra or {})
        unknown = set(extra) - EXTRA_KEYS
        if unknown:
            raise ValueError(f"unknown extra keys {sorted(unknown)}; allowed: {sorted(EXTRA_KEYS)}")
        created_at = extra.get("createdAt")
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        stored = {path: StoredFile.by_rule(path, Blob.of(value)) for path, value in files.items()}
        with self.store.lock:
            repo = self.store.create_repo(repo_id, created_at=created_at or last_modified)
            repo.downloads = int(extra.get("downloads", 0))
            repo.likes = int(extra.get("likes", 0))
            repo.trending_score = int(extra.get("trendingScore", 0))
            commit = self.store.add_commit(
                repo,
                MAIN_REF,
                stored,
                parent=None,
                title=message,
                message="",
                author=author or repo.owner,
                date=last_modified,
            )
        return commit.oid

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes | Path | None],
        message: str = "Update files",
        author: str | None = None,
    ) -> str:
        """Push straight to main as the owner would (None deletes a path); returns the new commit."""
        ops = [
            DeleteFile(path) if value is None else PutFile(path, StoredFile.by_rule(path, Blob.of(value)))
            for path, value in files.items()
        ]
        return self.store.commit(repo_id, "main", ops, title=message, actor=None, author=author).oid

    def disable_discussions(self, repo_id: str) -> None:
        """The owner turns the repo's PRs and discussions off: listing and opening them answer 403."""
        self.store.repo(repo_id)
        self.store.discussions_disabled.add(repo_id)

    def load_directory(self, root: Path) -> list[str]:
        """Serve root/<namespace>/<name>/... as repos; files are referenced by path, never read whole."""
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"not a directory: {root}")
        loaded = []
        for namespace in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for repo_dir in sorted(
                p for p in namespace.iterdir() if p.is_dir() and not p.name.startswith(".")
            ):
                files = {
                    path.relative_to(repo_dir).as_posix(): path
                    for path in sorted(repo_dir.rglob("*"))
                    if path.is_file() and ".git" not in path.relative_to(repo_dir).parts
                }
                loaded.append(f"{namespace.name}/{repo_dir.name}")
                self.add_repo(loaded[-1], files)
        return loaded

    # --- inspection

    def state(self) -> dict:
        return self.store.state()

    @property
    def requests(self) -> list[dict]:
        """A copy of the log entries. Waits briefly for requests still being answered: a client has its
        response before the server logs it, and a caller should see the requests it just made."""
        with self._log_changed:
            self._log_changed.wait_for(lambda: self._in_flight == 0, timeout=2)
            return list(self._requests)

    def write_request_count(self) -> int:
        return sum(entry["method"] not in ("GET", "HEAD") for entry in self.requests)

    # --- used by the request handler

    def user_for_token(self, token: str | None) -> str | None:
        return self.users.get(token, self.user) if token else None

    def begin_request(self) -> int:
        """Counts a request in flight; returns its place in arrival order (its `arrival` in the log)."""
        with self._log_changed:
            self._in_flight += 1
            self._arrivals += 1
            return self._arrivals

    def record_request(self, entry: dict) -> None:
        with self._log_changed:
            # A client has its response before the server logs it, and its next request can be logged
            # first; kept in arrival order, one client's requests read in the order it made them.
            at = len(self._requests)
            while at and self._requests[at - 1]["arrival"] > entry["arrival"]:
                at -= 1
            self._requests.insert(at, entry)
            if self.request_log is not None:
                with open(self.request_log, "a", encoding="utf-8") as log:
                    log.write(json.dumps(entry) + "\n")
            self._in_flight -= 1
            self._log_changed.notify_all()
