"""One repo as the pipeline sees it: a reference from discovery, what a source read, what inspection found.

Plain values (no Hub types), so the report, the proposal builders and the merge job can use them anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.inspect import FileEvidence, FileInspection, inspect_evidence


@dataclass(frozen=True)
class RepoRef:
    """A repo to scan, as discovery found it (the listing's sha and date, when it gave them)."""

    repo_id: str
    sha: str | None = None
    last_modified: datetime | None = None
    tags: tuple[str, ...] = ()
    # The listing's `siblings` (file names only: the listing gives no sizes) and `cardData`. When both the
    # sha and the file names are known the repo needs no per-repo API call; None: the listing did not say.
    files: tuple[str, ...] | None = None
    card_data: Mapping | None = field(default=None, compare=False)
    gated: bool = False


@dataclass(frozen=True)
class RepoSnapshot:
    """What a source read of one repo at one revision: evidence per LoRA file, and why the rest is missing."""

    repo_id: str
    sha: str | None
    last_modified: datetime | None = None
    evidence: tuple[FileEvidence, ...] = ()
    error: str | None = None  # the read stopped here; the evidence gathered before it still counts
    tags: tuple[str, ...] = ()
    card_data: Mapping = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)  # README.md and adapter_config.json files read
    sizes: Mapping[str, int | None] = field(default_factory=dict)  # every file of the repo at `sha`
    # Files left out, each with its reason (an unsafe name, a card or config over the size cap or not UTF-8,
    # a file the reader could not make sense of): each costs only itself, the repo's other files count.
    skipped_files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RepoInspection:
    repo_id: str
    sha: str | None
    last_modified: datetime | None = None
    files: tuple[FileInspection, ...] = ()
    error: str | None = None
    tags: tuple[str, ...] = ()
    card_data: Mapping = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)
    sizes: Mapping[str, int | None] = field(default_factory=dict)
    skipped_files: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        found = {
            "repo_id": self.repo_id,
            "sha": self.sha,
            "files": [f.to_json() for f in self.files],
            "error": self.error,
        }
        if self.skipped_files:
            found["skipped_files"] = [{"path": p, "reason": r} for p, r in self.skipped_files]
        return found


def inspect_repo(snapshot: RepoSnapshot) -> RepoInspection:
    """The inspect stage for one repo: every file's evidence through the engine; the repo's facts kept."""
    return RepoInspection(
        repo_id=snapshot.repo_id,
        sha=snapshot.sha,
        last_modified=snapshot.last_modified,
        files=tuple(inspect_evidence(e) for e in snapshot.evidence),
        error=snapshot.error,
        tags=snapshot.tags,
        card_data=snapshot.card_data,
        texts=snapshot.texts,
        sizes=snapshot.sizes,
        skipped_files=snapshot.skipped_files,
    )
