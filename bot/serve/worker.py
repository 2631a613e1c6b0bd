"""The webhook service's queue: repos to scan, one worker thread running the scan pipeline for one repo at a
time (`run_scan` with an explicit repo: the same pipeline as a scheduled scan, nothing forked).

A repo already waiting is not queued twice: a push and a comment a second apart make one scan that sees
both. On shutdown the job in flight is finished and the repos still waiting are written to the queue file,
which the next start reads back: no accepted event is lost to a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from bot.hub.client import METER

log = logging.getLogger(__name__)


class RepoQueue:
    def __init__(self, scan: Callable[[str], object], queue_file: Path | None = None) -> None:
        self.scan = scan  # runs the pipeline for one repo
        self.queue_file = queue_file
        self._waiting: OrderedDict[str, float] = OrderedDict()  # repo → when it was queued
        self._cond = threading.Condition()
        self._stopping = False
        self._busy: str | None = None
        self.done: list[dict] = []  # one entry per scan: repo, seconds waited and run, requests, writes
        self._thread: threading.Thread | None = None
        self._later: list[tuple[threading.Timer, str]] = []
        for repo_id in self._read_queue_file():
            self._waiting[repo_id] = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lora-bot-serve-worker", daemon=True)
        self._thread.start()

    def put(self, repo_id: str) -> bool:
        """Queue a repo; False when it was waiting already (this event rides along) or the service stops."""
        with self._cond:
            if self._stopping or repo_id in self._waiting:
                return False
            self._waiting[repo_id] = time.monotonic()
            self._cond.notify()
            return True

    def put_later(self, repo_id: str, seconds: float) -> None:
        """Queue a repo after a delay (a repo in its cooldown: the push said it changed, nothing else will)."""
        timer = threading.Timer(seconds, self.put, args=(repo_id,))
        timer.daemon = True
        timer.start()
        with self._cond:
            self._later.append((timer, repo_id))

    def stats(self) -> dict:
        with self._cond:
            return {"waiting": len(self._waiting), "busy": self._busy, "done": len(self.done)}

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing waits and nothing runs (tests and the scripted run)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and self._busy is None, timeout)

    def stop(self, timeout: float = 600.0) -> None:
        """Finish the scan in flight, keep the rest for the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            later = [repo_id for timer, repo_id in self._later if timer.is_alive()]
            for timer, _ in self._later:
                timer.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            left = list(dict.fromkeys([*self._waiting, *later]))
        self._write_queue_file(left)
        if left:
            log.info("shutdown: %d repo(s) kept for the next start", len(left))

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._stopping)
                if self._stopping:
                    return
                repo_id, queued_at = self._waiting.popitem(last=False)
                self._busy = repo_id
            started = time.monotonic()
            requests0, _, writes0 = METER.snapshot()
            try:
                self.scan(repo_id)
                error = None
            except Exception as failure:  # noqa: BLE001 — one repo's failure never stops the service
                error = repr(failure)
            requests1, _, writes1 = METER.snapshot()
            entry = {
                "repo_id": repo_id,
                "waited_s": round(started - queued_at, 3),
                "ran_s": round(time.monotonic() - started, 3),
                "requests": requests1 - requests0,
                "write_requests": writes1 - writes0,
                "error": error,
            }
            log.info("scanned %s", repo_id, extra={"fields": entry})
            with self._cond:
                self.done.append(entry)
                self._busy = None
                self._cond.notify_all()

    def _read_queue_file(self) -> list[str]:
        if self.queue_file is None:
            return []
        try:
            repos = json.loads(self.queue_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [r for r in repos if isinstance(r, str)] if isinstance(repos, list) else []

    def _write_queue_file(self, repos: list[str]) -> None:
        if self.queue_file is None:
            return
        self.queue_file.parent.mkdir(parents=True, exist_ok=True)
        self.queue_file.write_text(json.dumps(repos) + "\n", encoding="utf-8")
