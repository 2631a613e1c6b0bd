"""Whole-file downloads, for the only proposals that need the weights themselves (variants, metadata fixes).

They are a budget, not a side effect: every weight file is claimed against the run's byte budget
(`proposals.download_budget_bytes`) from the size the listing or the header read gave, *before* a byte is
downloaded. A file that does not fit raises `OverBudget`; its proposal is reported as deferred and made on a
later run, when the budget starts afresh."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from bot.hub.client import RetryPolicy, with_retries


class OverBudget(Exception):
    """The file does not fit in what is left of the run's download budget (or its size is unknown)."""

    def __init__(self, path: str, needed: int | None, left: int, limit: int) -> None:
        self.path = path
        self.needed = needed
        self.left = left
        self.limit = limit
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        if self.needed is None:
            return (
                f"would download {self.path}, whose size is unknown: not started within the download "
                f"budget ({self.limit:,} bytes per run)"
            )
        beyond = (
            " (more than the whole budget: raise proposals.download_budget_bytes)"
            if (self.needed > self.limit)
            else ""
        )
        return (
            f"would download {self.needed:,} bytes ({self.path}); {self.left:,} of the run's "
            f"{self.limit:,}-byte download budget left{beyond}"
        )


@dataclass(frozen=True)
class Deferral:
    """A proposal not built this run because its download did not fit the budget."""

    repo_id: str
    kind: str  # a ProposalKind
    title: str
    detail: str


class DownloadBudget:
    """The run's bytes for whole-file downloads, claimed before each download; shared by the workers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._claimed: set[tuple[str, str, str]] = set()
        self.spent = 0
        self.by_reason: dict[str, int] = defaultdict(int)  # bytes per proposal kind
        self.files_by_reason: dict[str, int] = defaultdict(int)
        self._deferred: dict[str, list[Deferral]] = defaultdict(list)

    def claim(self, repo_id: str, path: str, revision: str, size: int | None, reason: str) -> None:
        """Reserve a file's bytes, or raise OverBudget. A file claimed once (a second variant of the same
        source) is downloaded once and costs nothing more."""
        key = (repo_id, path, revision)
        with self._lock:
            if key in self._claimed:
                return
            left = self.limit - self.spent
            if size is None or size > left:
                raise OverBudget(path, size, left, self.limit)
            self._claimed.add(key)
            self.spent += size
            self.by_reason[reason] += size
            self.files_by_reason[reason] += 1

    def defer(self, deferral: Deferral) -> None:
        with self._lock:
            self._deferred[deferral.repo_id].append(deferral)

    def take_deferred(self, repo_id: str) -> list[Deferral]:
        with self._lock:
            return self._deferred.pop(repo_id, [])

    def summary(self) -> dict:
        """The report's `stats.downloads`: how many bytes were downloaded, and for which proposals."""
        with self._lock:
            return {
                "budget_bytes": self.limit,
                "bytes": self.spent,
                "by_kind": {
                    kind: {"bytes": self.by_reason[kind], "files": self.files_by_reason[kind]}
                    for kind in sorted(self.by_reason)
                },
            }


class Downloader:
    """Files of one revision into a scratch cache; a file asked for twice is downloaded once."""

    def __init__(
        self, api: HfApi, retry: RetryPolicy, cache_dir: Path, budget: DownloadBudget | None = None
    ) -> None:
        self.api = api
        self.retry = retry
        self.cache_dir = cache_dir
        self.budget = budget

    def fetch(
        self, repo_id: str, path: str, revision: str, *, size: int | None = None, reason: str | None = None
    ) -> Path:
        """The file's local path. With a `reason` (the proposal kind it is for), its `size` is first claimed
        against the budget: OverBudget is raised before any download."""
        if self.budget is not None and reason is not None:
            self.budget.claim(repo_id, path, revision, size, reason)
        return Path(
            with_retries(
                self.retry,
                lambda: self.api.hf_hub_download(repo_id, path, revision=revision, cache_dir=self.cache_dir),
            )
        )
