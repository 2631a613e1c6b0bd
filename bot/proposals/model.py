"""Proposals as values, in the manner of huggingface_hub's commit operations: built first, executed later.

`bot.proposals.plan` plans them against the bot's earlier threads; `bot.publish` carries the plan out or
previews it. Nothing here touches the network.

Identity: every proposal has a `slot` (what it is about: kind + file) and a `key` (slot + a hash of the
change's facts). Keys are hidden in the PR/discussion body, so the Hub itself records what was proposed:
- the same key already proposed (open, merged, or closed by the owner) → nothing new is opened;
- the same slot with another key, still open → the new proposal supersedes it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.selection import is_safe_repo_path
from bot.vocab import ProposalKind, Status

# The kinds a PR carries, in the order they appear in a grouped PR.
PR_KINDS = (ProposalKind.CONFIG_FIX, ProposalKind.METADATA_FIX, ProposalKind.CARD, ProposalKind.VARIANT)

MARKER = "lora-bot-proposals"
_MARKER_RE = re.compile(r"<!--\s*" + MARKER + r":\s*(\[.*?\])\s*-->", re.DOTALL)


class UnsafePath(ValueError):
    """A path that could escape the repo or is not one lora-bot would ever write."""


def check_path(path: str) -> str:
    if not is_safe_repo_path(path):
        raise UnsafePath(f"refusing to write {path!r}: not a plain relative path inside the repo")
    return path


def digest(*parts: object) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass(frozen=True)
class FileChange:
    """A file a proposal adds or replaces: text (kept for the diff) or a binary made on disk."""

    path: str
    new_text: str | None = None
    old_text: str | None = None  # None when the file is new
    source: Path | None = None  # a binary file produced locally (a variant, a metadata fix)
    size: int = 0
    replaces: bool = False  # a binary that replaces the repo's file of the same path

    def __post_init__(self) -> None:
        check_path(self.path)
        if (self.new_text is None) == (self.source is None):
            raise ValueError("a FileChange is either text or a local binary file")

    @property
    def is_new(self) -> bool:
        return self.old_text is None and not self.replaces

    @property
    def is_text(self) -> bool:
        return self.new_text is not None

    def content(self) -> bytes:
        return self.new_text.encode("utf-8") if self.is_text else self.source.read_bytes()

    def diff(self) -> str:
        """A unified diff `patch` applies: a last line without a newline is marked as git marks it."""
        old = (self.old_text or "").splitlines(keepends=True)
        new = self.new_text.splitlines(keepends=True)
        label_old = f"a/{self.path}" if self.old_text is not None else "/dev/null"
        lines = difflib.unified_diff(old, new, label_old, f"b/{self.path}")
        return "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )


@dataclass(frozen=True)
class Proposal:
    kind: ProposalKind
    repo_id: str
    revision: str  # the commit the proposal was built from; a PR branches from exactly this commit
    title: str
    summary: str  # what changed and why, in markdown (one section of the PR body)
    verification: str  # how lora-bot checked the change
    files: tuple[FileChange, ...]
    facts: dict  # what the change asserts; hashed into the key
    about: str  # the file the proposal is about (README.md, adapter_config.json, the weights file)
    base: str  # hash of the files it edits as they are at `revision`; a change means the proposal is stale
    fixes: tuple[tuple[str, str], ...] = ()  # (weights file, flag code) findings this change resolves

    @property
    def slot(self) -> str:
        return f"{self.kind}:{self.about}"

    @property
    def key(self) -> str:
        return f"{self.slot}:{digest(self.facts)}"

    def marker(self) -> dict:
        return {"key": self.key, "base": self.base}


@dataclass(frozen=True)
class Submission:
    """What is actually sent: one PR grouping a repo's PR proposals, or one flags discussion."""

    repo_id: str
    revision: str
    is_pull_request: bool
    title: str
    body: str
    members: tuple[Proposal, ...]
    supersedes: tuple[int, ...] = field(default=())  # open bot PRs this replaces

    @property
    def files(self) -> tuple[FileChange, ...]:
        return tuple(f for p in self.members for f in p.files)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.members)

    @property
    def kind(self) -> str:
        kinds = {p.kind for p in self.members}
        return kinds.pop() if len(kinds) == 1 else ProposalKind.GROUP


def render_marker(members) -> str:
    """The hidden record of what a PR or discussion proposes; invisible in the rendered body."""
    return f"<!-- {MARKER}: {json.dumps([m.marker() for m in members], sort_keys=True)} -->"


def parse_markers(text: str) -> list[dict]:
    """Every {key, base} recorded in a body or comment; unparseable markers are ignored, not trusted."""
    found = []
    for match in _MARKER_RE.finditer(text or ""):
        try:
            entries = json.loads(match.group(1))
        except ValueError:
            continue
        found += [e for e in entries if isinstance(e, dict) and isinstance(e.get("key"), str)]
    return found


def slot_of(key: str) -> str:
    return key.rsplit(":", 1)[0]


@dataclass(frozen=True)
class Outcome:
    """What happened to a submission, a close or a repo's whole proposal stage in this run."""

    repo_id: str
    kind: str  # a ProposalKind: card, config-fix, ..., group (a PR holding several kinds), pr, repo
    status: Status
    title: str
    keys: tuple[str, ...]
    url: str | None = None
    number: int | None = None
    detail: str | None = None
    submission: Submission | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "kind": self.kind,
            "status": self.status,
            "title": self.title,
            "key": ",".join(self.keys),
            "url": self.url,
            "number": self.number,
            "detail": self.detail,
        }
