"""In-memory state of the sandbox Hub: repos, commits, blobs, LFS objects, discussions and PRs.

This is a local test and demo store, not a Hub replacement. It keeps just enough of the Hub's data
model for the real `huggingface_hub` client to work against it: refs point at commits, commits map
paths to blobs, and blobs live either in memory or in a file on disk that is never read whole.

Every method of `HubStore` takes the store lock; blobs are immutable, so their bytes can be streamed
to a client after the lock is released.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import yaml

from bot.core.yaml_bounded import load_yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".pth", ".gguf")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
SAMPLE_SIZE = 512
CHUNK_SIZE = 1024 * 1024
# Uploads bigger than this are spooled to a temp file instead of being kept in memory.
IN_MEMORY_UPLOAD_LIMIT = 8 * 1024 * 1024
# Dataset repos live in the same store under "datasets/OWNER/NAME", the prefix their Hub URLs carry
# (/datasets/OWNER/NAME/resolve/..., /api/datasets/OWNER/NAME/...): the routes need no other change.
DATASET_PREFIX = "datasets/"
MAIN_REF = "refs/heads/main"
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
EXTRA_KEYS = {"downloads", "likes", "createdAt", "trendingScore"}
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*$", re.DOTALL | re.MULTILINE)


class HubError(Exception):
    """An error the Hub would answer with: HTTP status, optional `X-Error-Code`, message."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def iso(moment: datetime) -> str:
    """The Hub's timestamp format, which the client parses strictly: 2024-01-31T12:00:00.000Z."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_commit_oid() -> str:
    # Random on purpose: content-derived ids would let a shared HF cache serve stale files.
    return secrets.token_hex(20)


def git_blob_sha1(size: int, chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


class Blob:
    """Immutable file content held in memory or referenced on disk; hashes are computed once, lazily."""

    def __init__(self, *, data: bytes | None = None, path: Path | None = None, sha256: str | None = None):
        if (data is None) == (path is None):
            raise ValueError("a Blob needs exactly one of data or path")
        self._data = data
        self._path = Path(path) if path is not None else None
        self.size = len(data) if data is not None else self._path.stat().st_size
        self._sha256 = sha256
        self._git_sha1: str | None = None
        self._sample: bytes | None = None

    @classmethod
    def of(cls, value: bytes | bytearray | Path) -> Blob:
        if isinstance(value, (bytes, bytearray)):
            return cls(data=bytes(value))
        if not isinstance(value, Path):  # a str could be content or a path: make the caller say which
            raise TypeError(f"file content must be bytes or a pathlib.Path, not {type(value).__name__}")
        path = value
        if not path.is_file():
            raise ValueError(f"not a file: {path}")
        return cls(path=path)

    def open(self) -> BinaryIO:
        return io.BytesIO(self._data) if self._data is not None else open(self._path, "rb")

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes [start, end) in chunks, so big files never sit in memory."""
        end = self.size if end is None else min(end, self.size)
        with self.open() as stream:
            stream.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = stream.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def read_text(self, limit: int = 1024 * 1024) -> str:
        return b"".join(self.iter_bytes(0, limit)).decode("utf-8", errors="replace")

    @property
    def sample(self) -> bytes:
        if self._sample is None:
            self._sample = b"".join(self.iter_bytes(0, SAMPLE_SIZE))
        return self._sample

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            for chunk in self.iter_bytes():
                digest.update(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def git_sha1(self) -> str:
        if self._git_sha1 is None:
            self._git_sha1 = git_blob_sha1(self.size, self.iter_bytes())
        return self._git_sha1

    @property
    def on_disk(self) -> str | None:
        return str(self._path) if self._path is not None else None


def should_use_lfs(path: str, size: int, sample: bytes) -> bool:
    """The Hub's default rule: weight-like suffixes, big files, or binary-looking content."""
    return path.lower().endswith(LFS_SUFFIXES) or size > LFS_SIZE_THRESHOLD or b"\0" in sample[:SAMPLE_SIZE]


@dataclass(frozen=True)
class StoredFile:
    """A path's content in one commit, and whether git would keep it as an LFS pointer."""

    blob: Blob
    lfs: bool

    @classmethod
    def by_rule(cls, path: str, blob: Blob) -> StoredFile:
        return cls(blob, should_use_lfs(path, blob.size, blob.sample))

    @property
    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.blob.sha256}\nsize {self.blob.size}\n"
        ).encode()

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag and preupload oid: sha256 for LFS files, git blob sha1 otherwise."""
        return self.blob.sha256 if self.lfs else self.blob.git_sha1

    @property
    def blob_id(self) -> str:
        """The git object id: of the pointer file for LFS files, of the content otherwise."""
        return git_blob_sha1(len(self.pointer), [self.pointer]) if self.lfs else self.blob.git_sha1

    def same_content(self, other: StoredFile | None) -> bool:
        return other is not None and (self.blob is other.blob or self.blob.sha256 == other.blob.sha256)

    def lfs_json(self, oid_key: str) -> dict | None:
        """LFS details; model_info calls the hash `sha256`, the tree API calls it `oid`."""
        if not self.lfs:
            return None
        return {oid_key: self.blob.sha256, "size": self.blob.size, "pointerSize": len(self.pointer)}


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    files: Mapping[str, StoredFile]
    title: str
    message: str
    date: datetime
    author: str


@dataclass(frozen=True)
class PutFile:
    path: str
    file: StoredFile


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


CommitOp = PutFile | DeleteFile | DeleteFolder


@dataclass(frozen=True)
class CommitResult:
    oid: str
    pr_num: int | None


@dataclass(frozen=True)
class Event:
    id: str
    type: str  # comment | status-change | commit | title-change
    created_at: datetime
    author: str
    data: Mapping

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "createdAt": iso(self.created_at),
            "author": {"name": self.author},
            "data": dict(self.data),
        }


def comment_event(author: str, text: str) -> Event:
    created = now()
    latest = {
        "raw": text,
        "html": f"<p>{html.escape(text)}</p>",
        "updatedAt": iso(created),
        "author": {"name": author},
    }
    data = {
        "edited": False,
        "hidden": False,
        "latest": latest,
        "numEdits": 0,
        "editors": [author],
        "history": [latest],
    }
    return Event(secrets.token_hex(12), "comment", created, author, data)


def make_event(kind: str, author: str, **data) -> Event:
    return Event(secrets.token_hex(12), kind, now(), author, data)


@dataclass
class Discussion:
    num: int
    title: str
    author: str
    created_at: datetime
    is_pull_request: bool
    status: str  # open | closed | merged | draft
    events: list[Event] = field(default_factory=list)
    base_oid: str | None = None  # head of the base branch when the PR was opened
    merge_commit_id: str | None = None

    @property
    def ref(self) -> str:
        return f"refs/pr/{self.num}"

    def summary_json(self, repo_id: str) -> dict:
        return {
            "num": self.num,
            "title": self.title,
            "status": self.status,
            "isPullRequest": self.is_pull_request,
            "createdAt": iso(self.created_at),
            "author": {"name": self.author},
            "repo": {"name": repo_id, "type": "model"},
            "pinned": False,
            "numComments": sum(event.type == "comment" for event in self.events),
        }

    def details_json(self, repo_id: str) -> dict:
        details = self.summary_json(repo_id)
        details["events"] = [event.to_json() for event in self.events]
        if self.is_pull_request:
            changes = {"base": MAIN_REF}
            if self.merge_commit_id:
                changes["mergeCommitId"] = self.merge_commit_id
            details["changes"] = changes
            details["filesWithConflicts"] = []
        return details


@dataclass
class Repo:
    repo_id: str
    created_at: datetime
    last_modified: datetime
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    discussions: dict[int, Discussion] = field(default_factory=dict)
    downloads: int = 0
    likes: int = 0
    trending_score: int = 0

    @property
    def owner(self) -> str:
        return self.repo_id.removeprefix(DATASET_PREFIX).split("/", 1)[0]

    @property
    def is_dataset(self) -> bool:
        return self.repo_id.startswith(DATASET_PREFIX)

    @property
    def head(self) -> Commit:
        return self.commits[self.refs[MAIN_REF]]


def parse_card_data(readme: str) -> dict | None:
    """YAML front matter of a model card; None when absent, invalid, or not a mapping."""
    match = _FRONT_MATTER.match(readme)
    if not match:
        return None
    try:
        data = load_yaml(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def validate_card(readme: str) -> list[str]:
    """Errors the Hub's /api/validate-yaml reports for a model card (empty when valid)."""
    match = _FRONT_MATTER.match(readme)
    if not match:
        return []
    try:
        data = load_yaml(match.group(1))
    except yaml.YAMLError as error:
        return [f"Invalid YAML in the metadata: {error}".replace("\n", " ")]
    if data is not None and not isinstance(data, dict):
        return ["The metadata must be a YAML mapping"]
    return []


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in (value if isinstance(value, list) else [value])]


def tags_from_card(card: dict | None, paths: Iterable[str]) -> list[str]:
    """Tags as the Hub derives them: card tags, library, license, and base_model relations."""
    if not card:
        return []
    tags = _as_list(card.get("tags"))
    tags += _as_list(card.get("library_name"))
    tags += [f"license:{value}" for value in _as_list(card.get("license"))]
    base_models = _as_list(card.get("base_model"))
    if base_models:
        relation = card.get("base_model_relation")
        if not relation:
            adapter = "peft" in _as_list(card.get("library_name")) or "adapter_config.json" in set(paths)
            relation = "adapter" if adapter else "finetune"
        tags += [f"base_model:{model}" for model in base_models]
        tags += [f"base_model:{relation}:{model}" for model in base_models]
    return list(dict.fromkeys(tags))


def check_repo_path(path: str) -> str:
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or parts[0] == ".git"
    ):
        raise HubError(400, f"Invalid path in repository: {path!r}")
    return path


def apply_ops(files: Mapping[str, StoredFile], ops: Iterable[CommitOp]) -> dict[str, StoredFile]:
    result = dict(files)
    for op in ops:
        if isinstance(op, PutFile):
            result[check_repo_path(op.path)] = op.file
        elif isinstance(op, DeleteFile):
            if result.pop(op.path, None) is None:
                raise HubError(404, f"Cannot delete {op.path}: file not found", "EntryNotFound")
        else:
            prefix = op.path.rstrip("/") + "/"
            doomed = [path for path in result if path.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"Cannot delete folder {op.path}: not found", "EntryNotFound")
            for path in doomed:
                del result[path]
    return result


def same_outcome(a: StoredFile | None, b: StoredFile | None) -> bool:
    """Both sides deleted the path, or both hold the same bytes."""
    return (a is None and b is None) or (a is not None and a.same_content(b))


def changed_paths(before: Mapping[str, StoredFile], after: Mapping[str, StoredFile]) -> set[str]:
    return {path for path in set(before) | set(after) if not same_outcome(after.get(path), before.get(path))}


class HubStore:
    """All repos, LFS objects and discussions, guarded by one lock."""

    def __init__(self):
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, Blob] = {}
        self._cards: dict[str, dict | None] = {}
        self._spool_dir: tempfile.TemporaryDirectory | None = None
        # Repos made on demand (bot.sandbox.synthetic.SyntheticRepos), for benchmarks at Hub scale.
        self.synthetic = None
        self.orgs: dict[str, frozenset[str]] = {}  # organisation → its members
        self.discussions_disabled: set[str] = set()  # repos whose owners turned PRs and discussions off
        # Called with {"kind": "push"|"comment", ...} after a push to main or a comment (the webhooks).
        self.listeners: list[Callable[[dict], None]] = []

    def _notify(self, event: dict) -> None:
        for listener in list(self.listeners):
            listener(event)

    def may_administer(self, repo: Repo, actor: str | None) -> bool:
        """The namespace's user, or a member of the namespace's organisation."""
        return actor == repo.owner or actor in self.orgs.get(repo.owner, ())

    def _check_discussions(self, repo_id: str) -> None:
        if repo_id in self.discussions_disabled:
            raise HubError(403, "Discussions are disabled for this repo", "DiscussionsDisabled")

    # ----- repos and revisions -----------------------------------------------------------------

    def repo(self, repo_id: str) -> Repo:
        with self.lock:
            repo = self.repos.get(repo_id)
        if repo is None and self.synthetic is not None:
            repo = self.synthetic.repo(repo_id)
        if repo is None:
            raise HubError(404, f"Repository Not Found for url: {repo_id}", "RepoNotFound")
        return repo

    def resolve(self, repo_id: str, revision: str) -> tuple[Repo, Commit]:
        """A branch name, refs/heads/X, refs/pr/N or a 40-hex commit id → that commit."""
        with self.lock:
            repo = self.repo(repo_id)
            for ref in (revision, f"refs/heads/{revision}"):
                if ref in repo.refs:
                    return repo, repo.commits[repo.refs[ref]]
            if _HEX40.match(revision) and revision in repo.commits:
                return repo, repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def create_repo(self, repo_id: str, *, created_at: datetime | None = None) -> Repo:
        namespace, _, name = repo_id.removeprefix(DATASET_PREFIX).partition("/")
        if not namespace or not name or "/" in name:
            raise HubError(400, f"Repo id must be 'namespace/name', got {repo_id!r}")
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, f"You already created this model repo: {repo_id}")
            moment = created_at or now()
            repo = Repo(repo_id, created_at=moment, last_modified=moment)
            self.repos[repo_id] = repo
            return repo

    def add_commit(
        self,
        repo: Repo,
        ref: str,
        files: Mapping[str, StoredFile],
        *,
        parent: str | None,
        title: str,
        message: str,
        author: str,
        date: datetime | None = None,
    ) -> Commit:
        """Record a commit and move `ref` to it (caller holds the lock)."""
        commit = Commit(
            new_commit_oid(), parent, MappingProxyType(dict(files)), title, message, date or now(), author
        )
        repo.commits[commit.oid] = commit
        repo.refs[ref] = commit.oid
        if ref == MAIN_REF:
            repo.last_modified = commit.date
        return commit

    def commit(
        self,
        repo_id: str,
        revision: str,
        ops: list[CommitOp],
        *,
        title: str,
        message: str = "",
        actor: str | None,
        author: str | None = None,
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> CommitResult:
        """A commit as the /commit endpoint makes it. `actor=None` is a trusted in-process push."""
        with self.lock:
            repo, base = self.resolve(repo_id, revision)
            author = author or actor or repo.owner
            if create_pr:
                self._check_discussions(repo_id)
                return self._commit_as_new_pr(repo, base, ops, title, message, author)
            ref = revision if revision.startswith("refs/") else f"refs/heads/{revision}"
            if ref not in repo.refs:
                raise HubError(400, f"Cannot commit to {revision}: not a branch or a pull request ref")
            pr = self._pr_for_ref(repo, ref)
            self._check_may_push(repo, pr, actor)
            old_head = repo.refs[ref]
            if parent_commit and not pr and parent_commit != base.oid:
                raise HubError(
                    412, f"Parent commit {parent_commit} is not the head of {revision} ({base.oid})"
                )
            commit = self.add_commit(
                repo,
                ref,
                apply_ops(base.files, ops),
                parent=base.oid,
                title=title,
                message=message,
                author=author,
            )
            if pr:
                pr.events.append(make_event("commit", author, subject=title, oid=commit.oid))
            result = CommitResult(commit.oid, pr.num if pr else None)
        if ref == MAIN_REF:
            self._notify({"kind": "push", "repo_id": repo_id, "ref": ref, "old": old_head, "new": commit.oid})
        return result

    def _commit_as_new_pr(
        self, repo: Repo, base: Commit, ops: list[CommitOp], title: str, message: str, author: str
    ) -> CommitResult:
        pr = self._open_discussion(repo, title, message, author, is_pull_request=True, status="open")
        pr.base_oid = base.oid
        commit = self.add_commit(
            repo,
            pr.ref,
            apply_ops(base.files, ops),
            parent=base.oid,
            title=title,
            message=message,
            author=author,
        )
        pr.events.append(make_event("commit", author, subject=title, oid=commit.oid))
        return CommitResult(commit.oid, pr.num)

    def _pr_for_ref(self, repo: Repo, ref: str) -> Discussion | None:
        match = re.fullmatch(r"refs/pr/(\d+)", ref)
        if not match:
            return None
        pr = repo.discussions.get(int(match.group(1)))
        if pr is None or not pr.is_pull_request:
            raise HubError(404, f"No pull request for {ref}", "RevisionNotFound")
        if pr.status == "merged":
            raise HubError(400, f"Pull request #{pr.num} is already merged")
        return pr

    def _check_may_push(self, repo: Repo, pr: Discussion | None, actor: str | None) -> None:
        allowed = actor is None or self.may_administer(repo, actor) or (pr is not None and actor == pr.author)
        if not allowed:
            target = f"pull request #{pr.num}" if pr else "a branch"
            raise HubError(403, f"{actor} is not allowed to push to {target} of {repo.repo_id}")

    def card_data(self, commit: Commit) -> dict | None:
        with self.lock:
            if commit.oid not in self._cards:
                readme = commit.files.get("README.md")
                self._cards[commit.oid] = parse_card_data(readme.blob.read_text()) if readme else None
            return self._cards[commit.oid]

    def tags(self, commit: Commit) -> list[str]:
        return tags_from_card(self.card_data(commit), commit.files)

    def history(self, repo_id: str, revision: str) -> list[Commit]:
        """Commits reachable from a revision, newest first."""
        with self.lock:
            repo, commit = self.resolve(repo_id, revision)
            commits = [commit]
            while commits[-1].parent:
                commits.append(repo.commits[commits[-1].parent])
            return commits

    # ----- LFS objects -------------------------------------------------------------------------

    def has_lfs_object(self, oid: str, size: int) -> bool:
        with self.lock:
            blob = self.lfs_objects.get(oid)
            return blob is not None and blob.size == size

    def lfs_object(self, oid: str) -> Blob | None:
        with self.lock:
            return self.lfs_objects.get(oid)

    def store_upload(self, expected_oid: str, chunks: Iterable[bytes]) -> Blob:
        """Receive an LFS upload, keeping small ones in memory and spooling big ones to disk."""
        digest = hashlib.sha256()
        buffer = bytearray()
        spill_path: Path | None = None
        with contextlib.ExitStack() as closing:
            spill: BinaryIO | None = None
            for chunk in chunks:
                digest.update(chunk)
                if spill is None and len(buffer) + len(chunk) > IN_MEMORY_UPLOAD_LIMIT:
                    spill_path = self._spool_path(expected_oid)
                    spill = closing.enter_context(open(spill_path, "wb"))
                    spill.write(buffer)
                    buffer.clear()
                if spill is not None:
                    spill.write(chunk)
                else:
                    buffer += chunk
        if digest.hexdigest() != expected_oid:
            if spill_path is not None:
                spill_path.unlink(missing_ok=True)
            raise HubError(400, f"Uploaded content does not match sha256 {expected_oid}")
        blob = (
            Blob(path=spill_path, sha256=expected_oid)
            if spill_path
            else Blob(data=bytes(buffer), sha256=expected_oid)
        )
        with self.lock:
            self.lfs_objects[expected_oid] = blob
        return blob

    def _spool_path(self, oid: str) -> Path:
        with self.lock:
            if self._spool_dir is None:
                self._spool_dir = tempfile.TemporaryDirectory(prefix="lora-bot-sandbox-lfs-")
            return Path(self._spool_dir.name) / f"{oid}.{secrets.token_hex(4)}"

    def close(self) -> None:
        with self.lock:
            if self._spool_dir is not None:
                self._spool_dir.cleanup()
                self._spool_dir = None

    # ----- discussions and pull requests -------------------------------------------------------

    def _open_discussion(
        self, repo: Repo, title: str, description: str, author: str, *, is_pull_request: bool, status: str
    ) -> Discussion:
        num = max(repo.discussions, default=0) + 1
        discussion = Discussion(num, title, author, now(), is_pull_request, status)
        discussion.events.append(comment_event(author, description or ""))
        repo.discussions[num] = discussion
        return discussion

    def create_discussion(
        self, repo_id: str, title: str, description: str, author: str, pull_request: bool
    ) -> Discussion:
        if not title.strip():
            raise HubError(400, "A title is required")
        self._check_discussions(repo_id)
        with self.lock:
            repo = self.repo(repo_id)
            # An empty PR is a draft whose ref starts at the head of main.
            discussion = self._open_discussion(
                repo,
                title,
                description,
                author,
                is_pull_request=pull_request,
                status="draft" if pull_request else "open",
            )
            if pull_request:
                discussion.base_oid = repo.refs[MAIN_REF]
                repo.refs[discussion.ref] = discussion.base_oid
            return discussion

    def discussion(self, repo_id: str, num: int) -> Discussion:
        with self.lock:
            discussion = self.repo(repo_id).discussions.get(num)
        if discussion is None:
            raise HubError(404, f"Discussion #{num} not found in {repo_id}")
        return discussion

    def list_discussions(
        self, repo_id: str, *, kind: str, status: str, author: str | None
    ) -> list[Discussion]:
        """Newest first. The `open` filter also lists drafts, which are not closed either."""
        self._check_discussions(repo_id)
        wanted_status = {"all": None, "open": {"open", "draft"}}.get(status, {status})
        with self.lock:
            found = [
                d
                for d in self.repo(repo_id).discussions.values()
                if (kind == "all" or d.is_pull_request == (kind == "pull_request"))
                and (wanted_status is None or d.status in wanted_status)
                and (author is None or d.author == author)
            ]
        return sorted(found, key=lambda d: d.num, reverse=True)

    def comment(self, repo_id: str, num: int, author: str, text: str) -> Event:
        if not text.strip():
            raise HubError(400, "A comment cannot be empty")
        with self.lock:
            discussion = self.discussion(repo_id, num)
            event = comment_event(author, text)
            discussion.events.append(event)
        self._notify({"kind": "comment", "repo_id": repo_id, "discussion": discussion, "event": event})
        return event

    def _check_may_moderate(self, repo_id: str, discussion: Discussion, actor: str) -> None:
        if actor != discussion.author and not self.may_administer(self.repo(repo_id), actor):
            raise HubError(403, f"{actor} may not change discussion #{discussion.num} of {repo_id}")

    def change_status(self, repo_id: str, num: int, actor: str, status: str, comment: str | None) -> Event:
        if status not in ("open", "closed"):
            raise HubError(400, f"Invalid status {status!r}: expected 'open' or 'closed'")
        with self.lock:
            discussion = self.discussion(repo_id, num)
            self._check_may_moderate(repo_id, discussion, actor)
            if discussion.status == "merged":
                raise HubError(400, f"Pull request #{num} is merged; its status cannot change")
            if comment and comment.strip():
                discussion.events.append(comment_event(actor, comment))
            discussion.status = status
            event = make_event("status-change", actor, status=status)
            discussion.events.append(event)
            return event

    def rename(self, repo_id: str, num: int, actor: str, title: str) -> Event:
        if not title.strip():
            raise HubError(400, "A title is required")
        with self.lock:
            discussion = self.discussion(repo_id, num)
            self._check_may_moderate(repo_id, discussion, actor)
            event = make_event("title-change", actor, **{"from": discussion.title, "to": title})
            discussion.title = title
            discussion.events.append(event)
            return event

    def merge(self, repo_id: str, num: int, actor: str | None, comment: str | None = None) -> Commit:
        """Bring main to the PR's files: a fast-forward when main has not moved, else a merge commit."""
        with self.lock:
            repo = self.repo(repo_id)
            pr = self.discussion(repo_id, num)
            if not pr.is_pull_request:
                raise HubError(400, f"#{num} is a discussion, not a pull request")
            if pr.status in ("merged", "closed"):
                raise HubError(400, f"Pull request #{num} is {pr.status}")
            if actor is not None and actor != repo.owner:
                raise HubError(403, f"Only {repo.owner} can merge pull requests on {repo_id}")
            main, pr_head = repo.head, repo.commits[repo.refs[pr.ref]]
            if main.oid == pr.base_oid:
                merged = pr_head
                repo.refs[MAIN_REF] = pr_head.oid
                repo.last_modified = now()
            else:
                merged = self._merge_commit(repo, pr, main, pr_head, actor or repo.owner)
            if comment and comment.strip():
                pr.events.append(comment_event(actor or repo.owner, comment))
            pr.status, pr.merge_commit_id = "merged", merged.oid
            pr.events.append(make_event("status-change", actor or repo.owner, status="merged"))
            return merged

    def _merge_commit(self, repo: Repo, pr: Discussion, main: Commit, pr_head: Commit, author: str) -> Commit:
        base_files = repo.commits[pr.base_oid].files
        pr_changes = changed_paths(base_files, pr_head.files)
        main_changes = changed_paths(base_files, main.files)
        conflicts = sorted(
            path
            for path in pr_changes & main_changes
            if not same_outcome(pr_head.files.get(path), main.files.get(path))
        )
        if conflicts:
            raise HubError(409, f"Merge conflict in: {', '.join(conflicts)}")
        files = dict(main.files)
        for path in pr_changes:
            if path in pr_head.files:
                files[path] = pr_head.files[path]
            else:
                files.pop(path, None)
        return self.add_commit(
            repo,
            MAIN_REF,
            files,
            parent=main.oid,
            title=f"Merge pull request #{pr.num}",
            message=pr.title,
            author=author,
        )

    # ----- snapshot for --state-out and tests --------------------------------------------------

    def state(self) -> dict:
        with self.lock:
            return {
                "repos": {repo_id: self._repo_state(repo) for repo_id, repo in sorted(self.repos.items())}
            }

    @staticmethod
    def _repo_state(repo: Repo) -> dict:
        commits = {
            oid: {
                "parent": c.parent,
                "title": c.title,
                "message": c.message,
                "date": iso(c.date),
                "author": c.author,
                "files": sorted(c.files),
            }
            for oid, c in repo.commits.items()
        }
        discussions = [
            dict(d.details_json(repo.repo_id), ref=d.ref if d.is_pull_request else None)
            for d in sorted(repo.discussions.values(), key=lambda d: d.num)
        ]
        return {
            "refs": dict(repo.refs),
            "commits": commits,
            "discussions": discussions,
            "lastModified": iso(repo.last_modified),
            "createdAt": iso(repo.created_at),
            "downloads": repo.downloads,
            "likes": repo.likes,
        }
