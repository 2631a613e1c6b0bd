"""A local Hugging Face Hub emulator that the real `huggingface_hub` client can talk to.

This is a local test and demo server, not a Hub replacement: models only, no auth beyond "a token is
present", no Xet (it never sends `X-Xet-Hash`, so downloads stay on plain HTTP; clients must set
HF_HUB_DISABLE_XET=1 for uploads to use the classic LFS batch API). The wire format follows
shared/docs/hub-api.md. Repos, commits and discussions live in `bot.sandbox.store`.

    hub = SandboxHub(users={"hf_owner": "alice"})
    endpoint = hub.start()
    HfApi(endpoint=endpoint, token="hf_test").whoami()   # {"name": "lora-bot", ...}
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import random
import re
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode

from bot.sandbox.store import (
    CHUNK_SIZE,
    EXTRA_KEYS,
    GITATTRIBUTES,
    MAIN_REF,
    Blob,
    Commit,
    DeleteFile,
    DeleteFolder,
    HubError,
    HubStore,
    PutFile,
    Repo,
    StoredFile,
    iso,
    should_use_lfs,
    validate_card,
)

MODELS_PAGE_SIZE = 50
TREE_PAGE_SIZE = 1000
COMMITS_PAGE_SIZE = 50
SORT_KEYS: dict[str, Callable[[Repo], object]] = {
    "lastModified": lambda repo: repo.last_modified,
    "createdAt": lambda repo: repo.created_at,
    "likes": lambda repo: repo.likes,
    "downloads": lambda repo: repo.downloads,
    "trendingScore": lambda repo: repo.trending_score,
}
ROUTE_NAMES = (
    "whoami",
    "models",
    "model_info",
    "tree",
    "refs",
    "commits",
    "resolve",
    "validate_yaml",
    "preupload",
    "lfs",
    "commit",
    "discussions",
    "discussion",
    "comment",
    "status",
    "title",
    "merge",
    "create_repo",
)
DROP_KINDS = ("drop", "drop-after")
# Faults after which the request is still handled: a lost response, or a server that ignores Range headers.
HANDLED_KINDS = ("drop-after", "ignore-range")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BYTE_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


# ----- fault injection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRule:
    """Inject `kind` on `share` of the matching requests. Kinds: an HTTP status 400-599 or "drop" (both
    answered before the request is handled, so it has no effect), "drop-after": the request IS handled,
    then the connection closes without a reply, like a response lost on the way back, or "ignore-range": the
    request is answered as if it had no Range header (200 and the whole file), as some servers do."""

    kind: str
    share: float
    # None: every route. Route names and the groups "read" and "write" narrow it down together:
    # `write` is every write, `discussions` both listing and opening, `write|discussions` opening only.
    routes: frozenset[str] | None = None

    def applies_to(self, route: str, method: str) -> bool:
        if self.routes is None:
            return True
        groups = self.routes & {"read", "write"}
        names = self.routes - groups
        group = "read" if method in ("GET", "HEAD") else "write"
        return (not names or route in names) and (not groups or group in groups)


@dataclass(frozen=True)
class FaultSpec:
    """Parsed form of `429:0.1,503:0.05,drop:0.03@write|discussions,seed=7,retry-after=1`."""

    rules: tuple[FaultRule, ...] = ()
    seed: int = 0
    retry_after: int = 1

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        rules: list[FaultRule] = []
        options = {"seed": 0, "retry-after": 1}
        for token in (part.strip() for part in text.split(",")):
            if not token:
                continue
            if "=" in token:
                name, _, value = token.partition("=")
                if name.strip() not in options or not value.strip().isdigit():
                    raise ValueError(f"bad fault option {token!r}: expected seed=N or retry-after=N")
                options[name.strip()] = int(value)
                continue
            rules.append(cls._parse_rule(token))
        return cls(tuple(rules), seed=options["seed"], retry_after=options["retry-after"])

    @staticmethod
    def _parse_rule(token: str) -> FaultRule:
        body, _, route_text = token.partition("@")
        kind, colon, share_text = body.partition(":")
        kind = kind.strip().lower()
        if not colon or not (
            kind in DROP_KINDS + HANDLED_KINDS or (kind.isdigit() and 400 <= int(kind) <= 599)
        ):
            raise ValueError(
                f"bad fault {token!r}: expected KIND:SHARE[@ROUTES] with KIND 400-599, drop, "
                f"drop-after or ignore-range"
            )
        try:
            share = float(share_text)
        except ValueError:
            share = -1.0
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"bad fault {token!r}: SHARE must be a number between 0 and 1")
        routes = None
        if route_text:
            routes = frozenset(name.strip() for name in route_text.split("|"))
            unknown = routes - set(ROUTE_NAMES) - {"read", "write"}
            if unknown:
                raise ValueError(
                    f"bad fault {token!r}: unknown route(s) {', '.join(sorted(unknown))}; "
                    f"known: read, write, {', '.join(ROUTE_NAMES)}"
                )
        return FaultRule(kind, share, routes)


class FaultInjector:
    """Decides, deterministically for a given seed and request order, which requests fail."""

    def __init__(self, spec: FaultSpec):
        self.spec = spec
        self._random = random.Random(spec.seed)
        self._lock = threading.Lock()

    def pick(self, route: str, method: str) -> FaultRule | None:
        with self._lock:
            for rule in self.spec.rules:
                if rule.applies_to(route, method) and self._random.random() < rule.share:
                    return rule
        return None


# ----- requests and replies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: Callable[[], Iterable[bytes]] | None = None  # for file bodies, so they are never held in memory
    length: int = 0  # body length when streaming

    @property
    def content_length(self) -> int:
        return self.length if self.stream is not None else len(self.body)

    def chunks(self) -> Iterable[bytes]:
        return self.stream() if self.stream is not None else [self.body]


def json_reply(
    payload,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Reply:
    body = json.dumps(payload, default=str).encode()
    return Reply(status, body, {"Content-Type": content_type, **(headers or {})})


def error_reply(error: HubError) -> Reply:
    headers = dict(error.headers)
    if error.code:
        headers["X-Error-Code"] = error.code
    # Header values must be latin-1 and single-line; the client shows this text in its exception.
    headers["X-Error-Message"] = (
        re.sub(r"[\r\n]+", " ", error.message).encode("ascii", "replace").decode()[:500]
    )
    return json_reply({"error": error.message}, error.status, headers)


@dataclass
class Request:
    method: str
    path: str  # raw path, without the query string
    query: dict[str, list[str]]
    params: dict[str, str]  # route pattern groups, URL-decoded
    user: str | None
    base_url: str  # absolute http://host:port the client used, for Link and upload URLs
    headers: Mapping[str, str]
    body_source: Iterator[bytes]
    _body: bytes | None = None
    ignore_range: bool = False  # the "ignore-range" fault: answer as a server without Range support

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def int_arg(self, name: str, default: int) -> int:
        value = self.arg(name)
        if value is None or value == "":
            return default
        if not value.isdigit():
            raise HubError(400, f"Query parameter {name} must be a non-negative integer, got {value!r}")
        return int(value)

    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.body_source)
        return self._body

    def json(self) -> dict:
        raw = self.body()
        if not raw:
            return {}
        try:
            payload = json.loads(raw)
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise HubError(400, "Request body must be a JSON object")
        return payload

    def require_user(self) -> str:
        if not self.user:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.user

    def next_page_link(self, cursor: int) -> str:
        pairs = [(key, value) for key, values in self.query.items() if key != "cursor" for value in values]
        return f'<{self.base_url}{self.path}?{urlencode([*pairs, ("cursor", cursor)])}>; rel="next"'


def paged(request: Request, items: list, page_size: int) -> Reply:
    """One page of a Link-paginated listing; the next URL is absolute, as the client requires."""
    start = request.int_arg("cursor", 0)
    headers = {}
    if start + page_size < len(items):
        headers["Link"] = request.next_page_link(start + page_size)
    return json_reply(items[start : start + page_size], headers=headers)


# ----- byte ranges -------------------------------------------------------------------------------


def parse_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Inclusive byte ranges of a `Range` header; None means "serve everything", [] unsatisfiable."""
    unit, _, spec = (header or "").partition("=")
    if unit.strip().lower() != "bytes":
        return None
    ranges = []
    for part in spec.split(","):
        match = _BYTE_RANGE.match(part)
        if not match or match.groups() == ("", ""):
            return None  # RFC 7233: a malformed Range header is ignored
        first, last = match.groups()
        if not first:  # "-N": the last N bytes
            if int(last) == 0:
                continue
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), int(last) if last else size - 1
            if end < start:
                return None
        if start < size:
            ranges.append((start, min(end, size - 1)))
    return ranges


def file_reply(blob: Blob, headers: dict[str, str], range_header: str | None) -> Reply:
    ranges = parse_ranges(range_header, blob.size)
    headers = {**headers, "Accept-Ranges": "bytes"}
    if ranges is None:
        return Reply(
            200,
            headers={**headers, "Content-Type": "application/octet-stream"},
            stream=lambda: blob.iter_bytes(),
            length=blob.size,
        )
    if not ranges:
        raise HubError(
            416,
            f"Range not satisfiable for {blob.size} bytes",
            headers={"Content-Range": f"bytes */{blob.size}"},
        )
    if len(ranges) == 1:
        start, end = ranges[0]
        headers.update(
            {"Content-Type": "application/octet-stream", "Content-Range": f"bytes {start}-{end}/{blob.size}"}
        )
        return Reply(
            206, headers=headers, stream=lambda: blob.iter_bytes(start, end + 1), length=end - start + 1
        )
    return multipart_reply(blob, ranges, headers)


def multipart_reply(blob: Blob, ranges: list[tuple[int, int]], headers: dict[str, str]) -> Reply:
    """RFC 7233 multipart/byteranges: one part per range, each with its own Content-Range."""
    boundary = secrets.token_hex(16)
    part_heads = [
        (b"\r\n" if index else b"")
        + (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Range: bytes {start}-{end}/{blob.size}\r\n\r\n"
        ).encode()
        for index, (start, end) in enumerate(ranges)
    ]
    closing = f"\r\n--{boundary}--\r\n".encode()

    def stream() -> Iterator[bytes]:
        for head, (start, end) in zip(part_heads, ranges, strict=True):
            yield head
            yield from blob.iter_bytes(start, end + 1)
        yield closing

    length = sum(map(len, part_heads)) + sum(end - start + 1 for start, end in ranges) + len(closing)
    headers = {**headers, "Content-Type": f"multipart/byteranges; boundary={boundary}"}
    return Reply(206, headers=headers, stream=stream, length=length)


# ----- the Hub API -------------------------------------------------------------------------------


class HubApi:
    """One method per route; each takes a Request and returns a Reply or raises HubError."""

    def __init__(self, hub: SandboxHub):
        self.hub = hub
        self.store = hub.store

    # --- identity and search

    def whoami(self, request: Request) -> Reply:
        name = request.require_user()
        return json_reply(
            {
                "type": "user",
                "id": name,
                "name": name,
                "fullname": name,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "sandbox", "role": "write"}},
            }
        )

    def models(self, request: Request) -> Reply:
        sort = request.arg("sort")
        if sort is not None and sort not in SORT_KEYS:
            raise HubError(400, f"Invalid sort {sort!r}; expected one of {', '.join(SORT_KEYS)}")
        expand = set(request.query.get("expand", []))
        full = request.flag("full")
        with self.store.lock:
            repos = [repo for repo in self.store.repos.values() if self._matches(request, repo)]
            repos.sort(key=lambda repo: repo.repo_id)
            if sort:
                repos.sort(key=SORT_KEYS[sort], reverse=request.arg("direction", "-1") != "1")
            items = [
                self.model_json(
                    repo,
                    repo.head,
                    card=full or request.flag("cardData") or "cardData" in expand,
                    siblings=full or "siblings" in expand,
                )
                for repo in repos
            ]
        if expand:
            items = [
                {key: value for key, value in item.items() if key in expand | {"id", "_id", "modelId"}}
                for item in items
            ]
        limit = request.int_arg("limit", 0)
        if limit:
            return json_reply(items[: min(limit, 1000)])
        return paged(request, items, MODELS_PAGE_SIZE)

    def _matches(self, request: Request, repo: Repo) -> bool:
        author, search = request.arg("author"), request.arg("search")
        if author and repo.owner != author:
            return False
        if search and search.lower() not in repo.repo_id.lower():
            return False
        wanted = [tag for value in request.query.get("filter", []) for tag in value.split(",") if tag]
        return not wanted or set(wanted) <= set(self.store.tags(repo.head))

    def model_json(
        self, repo: Repo, commit: Commit, *, card: bool, siblings: bool, blobs: bool = False
    ) -> dict:
        card_data = self.store.card_data(commit)
        is_head = repo.refs.get(MAIN_REF) == commit.oid
        item = {
            "_id": repo.repo_id,
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.owner,
            "sha": commit.oid,
            "lastModified": iso(repo.last_modified if is_head else commit.date),
            "createdAt": iso(repo.created_at),
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "trendingScore": repo.trending_score,
            "tags": self.store.tags(commit),
        }
        if card_data and card_data.get("library_name"):
            item["library_name"] = card_data["library_name"]
        if card_data and card_data.get("pipeline_tag"):
            item["pipeline_tag"] = card_data["pipeline_tag"]
        if card and card_data is not None:
            item["cardData"] = card_data
        if siblings:
            item["siblings"] = [
                self._sibling_json(path, stored, blobs) for path, stored in sorted(commit.files.items())
            ]
        return item

    @staticmethod
    def _sibling_json(path: str, stored: StoredFile, blobs: bool) -> dict:
        sibling = {"rfilename": path}
        if blobs:
            sibling.update(size=stored.blob.size, blobId=stored.blob_id)
            if stored.lfs:
                sibling["lfs"] = stored.lfs_json("sha256")
        return sibling

    # --- reading one repo

    def model_info(self, request: Request) -> Reply:
        repo, commit = self.store.resolve(request.params["repo"], request.params.get("rev") or "main")
        return json_reply(
            self.model_json(repo, commit, card=True, siblings=True, blobs=request.flag("blobs"))
        )

    def tree(self, request: Request) -> Reply:
        _, commit = self.store.resolve(request.params["repo"], request.params["rev"])
        folder = (request.params.get("path") or "").strip("/")
        entries = tree_entries(commit, folder, recursive=request.flag("recursive"))
        if folder and not entries:
            raise HubError(404, f"{folder} does not exist at revision {commit.oid}", "EntryNotFound")
        return paged(request, entries, TREE_PAGE_SIZE)

    def refs(self, request: Request) -> Reply:
        repo = self.store.repo(request.params["repo"])
        with self.store.lock:
            refs = sorted(repo.refs.items())
        branches = [
            {"name": ref.removeprefix("refs/heads/"), "ref": ref, "targetCommit": oid}
            for ref, oid in refs
            if ref.startswith("refs/heads/")
        ]
        result = {"branches": branches, "tags": [], "converts": []}
        if request.flag("include_prs"):
            result["pullRequests"] = [
                {"name": ref, "ref": ref, "targetCommit": oid}
                for ref, oid in refs
                if ref.startswith("refs/pr/")
            ]
        return json_reply(result)

    def commits(self, request: Request) -> Reply:
        history = self.store.history(request.params["repo"], request.params["rev"])
        items = [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "date": iso(c.date),
                "authors": [{"user": c.author}],
            }
            for c in history
        ]
        return paged(request, items, COMMITS_PAGE_SIZE)

    def resolve(self, request: Request) -> Reply:
        _, commit = self.store.resolve(request.params["repo"], request.params["rev"])
        stored = commit.files.get(request.params["path"])
        headers = {"X-Repo-Commit": commit.oid}
        if stored is None:
            raise HubError(404, f"Entry not found: {request.params['path']}", "EntryNotFound", headers)
        headers["ETag"] = f'"{stored.etag}"'
        if stored.lfs:
            headers.update(
                {"X-Linked-Etag": f'"{stored.blob.sha256}"', "X-Linked-Size": str(stored.blob.size)}
            )
        # HEAD answers with the whole file's headers; a client asks HEAD for the metadata, never for a part.
        range_header = (
            None if request.method == "HEAD" or request.ignore_range else request.headers.get("Range")
        )
        return file_reply(stored.blob, headers, range_header)

    # --- writing

    def validate_yaml(self, request: Request) -> Reply:
        payload = request.json()
        errors = validate_card(str(payload.get("content") or ""))
        if errors:
            return json_reply({"errors": [{"message": message} for message in errors], "warnings": []}, 400)
        return json_reply({"errors": [], "warnings": []})

    def create_repo(self, request: Request) -> Reply:
        user = request.require_user()
        payload = request.json()
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "The sandbox hub only hosts model repos")
        namespace, name = payload.get("organization") or user, str(payload.get("name") or "")
        if namespace != user:
            raise HubError(403, f"{user} cannot create repos under {namespace}")
        repo_id, url = f"{namespace}/{name}", f"{request.base_url}/{namespace}/{name}"
        with self.store.lock:
            if repo_id in self.store.repos:  # the client reads `url` even from a 409 when exist_ok=True
                return json_reply(
                    {"error": f"You already created this model repo: {repo_id}", "url": url}, 409
                )
            repo = self.store.create_repo(repo_id)
            self.store.add_commit(
                repo,
                MAIN_REF,
                {".gitattributes": StoredFile(Blob(data=GITATTRIBUTES.encode()), lfs=False)},
                parent=None,
                title="initial commit",
                message="",
                author=user,
            )
        return json_reply({"url": url, "name": repo_id, "id": repo_id})

    def preupload(self, request: Request) -> Reply:
        request.require_user()
        _, base = self.store.resolve(request.params["repo"], request.params["rev"])
        answers = []
        for item in request.json().get("files") or []:
            path, size = str(item.get("path")), int(item.get("size") or 0)
            sample = base64.b64decode(item.get("sample") or "")
            remote = base.files.get(path)
            answers.append(
                {
                    "path": path,
                    "shouldIgnore": False,
                    "uploadMode": "lfs" if size > 0 and should_use_lfs(path, size, sample) else "regular",
                    "oid": remote.etag if remote else None,
                }
            )
        return json_reply({"files": answers})

    def lfs(self, request: Request) -> Reply:
        if request.method == "PUT":
            self.store.store_upload(request.params["oid"], request.body_source)
            return Reply(200)
        if "oid" in request.params:
            return self._lfs_verify(request)
        return self._lfs_batch(request)

    def _lfs_batch(self, request: Request) -> Reply:
        request.require_user()
        self.store.repo(request.params["repo"])
        payload = request.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "The sandbox hub only supports LFS uploads")
        objects = []
        for item in payload.get("objects") or []:
            oid, size = str(item.get("oid")), item.get("size")
            if not _SHA256.match(oid) or not isinstance(size, int) or size < 0:
                objects.append(
                    {
                        "oid": oid,
                        "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "oid must be a sha256 and size an integer"},
                    }
                )
            elif self.store.has_lfs_object(oid, size):
                objects.append({"oid": oid, "size": size})  # no actions: already stored
            else:
                href = f"{request.base_url}/__lfs/{oid}"
                objects.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {
                            "upload": {"href": href, "header": {}},
                            "verify": {"href": f"{href}/verify", "header": {}},
                        },
                    }
                )
        return json_reply(
            {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json"
        )

    def _lfs_verify(self, request: Request) -> Reply:
        payload = request.json()
        oid, size = request.params["oid"], payload.get("size")
        if payload.get("oid") != oid or not self.store.has_lfs_object(oid, size):
            raise HubError(404, f"LFS object {oid} of size {size} was not uploaded")
        return json_reply({"message": "ok"})

    def commit(self, request: Request) -> Reply:
        user = request.require_user()
        repo_id, revision = request.params["repo"], request.params["rev"]
        header, ops = self._parse_commit_body(request.body())
        result = self.store.commit(
            repo_id,
            revision,
            ops,
            title=str(header.get("summary") or "Update"),
            message=str(header.get("description") or ""),
            actor=user,
            parent_commit=header.get("parentCommit"),
            create_pr=request.flag("create_pr"),
        )
        pr_url = f"{request.base_url}/{repo_id}/discussions/{result.pr_num}" if result.pr_num else None
        return json_reply(
            {
                "success": True,
                "commitOid": result.oid,
                "commitUrl": f"{request.base_url}/{repo_id}/commit/{result.oid}",
                "pullRequestUrl": pr_url,
            }
        )

    def _parse_commit_body(self, body: bytes) -> tuple[dict, list]:
        header: dict | None = None
        ops = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError):
                raise HubError(400, "Commit payload must be NDJSON lines of {key, value}") from None
            if key == "header":
                header = value
            else:
                ops.append(self._commit_op(key, value))
        if header is None:
            raise HubError(400, "Commit payload has no header line")
        return header, ops

    def _commit_op(self, key: str, value: dict):
        path = str(value.get("path") or "")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}")
            try:
                data = base64.b64decode(value.get("content") or "", validate=True)
            except (binascii.Error, ValueError):
                raise HubError(400, f"Content of {path} is not valid base64") from None
            return PutFile(path, StoredFile(Blob(data=data), lfs=False))
        if key == "lfsFile":
            blob = self.store.lfs_object(str(value.get("oid")))
            if blob is None or blob.size != value.get("size"):
                raise HubError(400, f"LFS object for {path} ({value.get('oid')}) has not been uploaded")
            return PutFile(path, StoredFile(blob, lfs=True))
        if key == "deletedFile":
            return DeleteFile(path)
        if key == "deletedFolder":
            return DeleteFolder(path)
        raise HubError(400, f"Unsupported commit operation {key!r}")

    # --- discussions and pull requests

    def discussions(self, request: Request) -> Reply:
        repo_id = request.params["repo"]
        if request.method == "POST":
            payload = request.json()
            discussion = self.store.create_discussion(
                repo_id,
                str(payload.get("title") or ""),
                str(payload.get("description") or ""),
                request.require_user(),
                bool(payload.get("pullRequest")),
            )
            return json_reply(
                {"num": discussion.num, "url": f"{request.base_url}/{repo_id}/discussions/{discussion.num}"}
            )
        kind, status = request.arg("type", "all"), request.arg("status", "all")
        if kind not in ("all", "discussion", "pull_request"):
            raise HubError(400, f"Invalid type {kind!r}")
        if status not in ("all", "open", "closed", "merged", "draft"):
            raise HubError(400, f"Invalid status {status!r}")
        found = self.store.list_discussions(repo_id, kind=kind, status=status, author=request.arg("author"))
        size = self.hub.discussions_page_size
        start = request.int_arg("p", 0) * size
        with self.store.lock:
            page = [discussion.summary_json(repo_id) for discussion in found[start : start + size]]
        return json_reply({"discussions": page, "count": len(found), "start": start})

    def discussion(self, request: Request) -> Reply:
        repo_id = request.params["repo"]
        with self.store.lock:
            return json_reply(
                self.store.discussion(repo_id, int(request.params["num"])).details_json(repo_id)
            )

    def comment(self, request: Request) -> Reply:
        event = self.store.comment(
            request.params["repo"],
            int(request.params["num"]),
            request.require_user(),
            str(request.json().get("comment") or ""),
        )
        return json_reply({"newMessage": event.to_json()})

    def status(self, request: Request) -> Reply:
        payload = request.json()
        event = self.store.change_status(
            request.params["repo"],
            int(request.params["num"]),
            request.require_user(),
            str(payload.get("status")),
            payload.get("comment"),
        )
        return json_reply({"newStatus": event.to_json()})

    def title(self, request: Request) -> Reply:
        event = self.store.rename(
            request.params["repo"],
            int(request.params["num"]),
            request.require_user(),
            str(request.json().get("title") or ""),
        )
        return json_reply({"newTitle": event.to_json()})

    def merge(self, request: Request) -> Reply:
        merged = self.store.merge(
            request.params["repo"],
            int(request.params["num"]),
            request.require_user(),
            request.json().get("comment"),
        )
        return json_reply({"mergeCommitId": merged.oid})


def tree_entries(commit: Commit, folder: str, *, recursive: bool) -> list[dict]:
    """Files and folders below `folder`, sorted by path, in the tree API's shape."""
    prefix = f"{folder}/" if folder else ""
    folders: set[str] = set()
    files: list[str] = []
    for path in commit.files:
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        if len(parts) == 1:
            files.append(path)
        elif recursive:
            files.append(path)
            folders.update(prefix + "/".join(parts[:depth]) for depth in range(1, len(parts)))
        else:
            folders.add(prefix + parts[0])
    entries = [{"type": "directory", "path": path, "oid": folder_oid(commit, path)} for path in folders]
    for path in files:
        stored = commit.files[path]
        entry = {"type": "file", "path": path, "size": stored.blob.size, "oid": stored.blob_id}
        if stored.lfs:
            entry["lfs"] = stored.lfs_json("oid")
        entries.append(entry)
    return sorted(entries, key=lambda entry: entry["path"])


def folder_oid(commit: Commit, path: str) -> str:
    # Stable within a commit, which is all a client can observe of a tree id.
    return hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest()


@dataclass(frozen=True)
class Route:
    name: str
    methods: frozenset[str]
    pattern: re.Pattern
    handler: str


def _route(name: str, methods: str, pattern: str, handler: str | None = None) -> Route:
    pattern = pattern.replace("{repo}", r"(?P<repo>[^/]+/[^/]+)").replace("{rev}", r"(?P<rev>[^/]+)")
    return Route(name, frozenset(methods.split()), re.compile(f"^{pattern}$"), handler or name)


# Matched in order on the RAW path: revisions arrive as refs%2Fpr%2F1 and must stay one segment.
ROUTES = (
    _route("whoami", "GET", r"/api/whoami-v2"),
    _route("models", "GET", r"/api/models/?"),
    _route("create_repo", "POST", r"/api/repos/create"),
    _route("validate_yaml", "POST", r"/api/validate-yaml"),
    _route("tree", "GET", r"/api/models/{repo}/tree/{rev}(?:/(?P<path>.*))?"),
    _route("refs", "GET", r"/api/models/{repo}/refs"),
    _route("commits", "GET", r"/api/models/{repo}/commits/{rev}"),
    _route("preupload", "POST", r"/api/models/{repo}/preupload/{rev}"),
    _route("commit", "POST", r"/api/models/{repo}/commit/{rev}"),
    _route("discussions", "GET POST", r"/api/models/{repo}/discussions"),
    _route("discussion", "GET", r"/api/models/{repo}/discussions/(?P<num>\d+)"),
    _route("comment", "POST", r"/api/models/{repo}/discussions/(?P<num>\d+)/comment"),
    _route("status", "POST", r"/api/models/{repo}/discussions/(?P<num>\d+)/status"),
    _route("title", "POST", r"/api/models/{repo}/discussions/(?P<num>\d+)/title"),
    _route("merge", "POST", r"/api/models/{repo}/discussions/(?P<num>\d+)/merge"),
    _route("model_info", "GET", r"/api/models/{repo}(?:/revision/{rev})?"),
    _route("lfs", "POST", r"/{repo}\.git/info/lfs/objects/batch"),
    _route("lfs", "PUT", r"/__lfs/(?P<oid>[0-9a-f]{64})"),
    _route("lfs", "POST", r"/__lfs/(?P<oid>[0-9a-f]{64})/verify"),
    _route("resolve", "GET HEAD", r"/{repo}/resolve/{rev}/(?P<path>.+)"),
)


def match_route(method: str, raw_path: str) -> tuple[Route | None, dict[str, str], bool]:
    """(route, decoded params, path_known); path_known without a route means a wrong method."""
    path_known = False
    for route in ROUTES:
        match = route.pattern.match(raw_path)
        if match:
            path_known = True
            if method in route.methods:
                params = {
                    key: unquote(value) for key, value in match.groupdict().items() if value is not None
                }
                return route, params, True
    return None, {}, path_known


def request_repo(entry: Mapping) -> str | None:
    """The repo a request-log entry (`SandboxHub.requests`, a `--request-log` line) was about, by the same
    routes that answered it; None for listings, whoami and paths no route serves."""
    _, params, _ = match_route(entry["method"], entry["path"])
    return params.get("repo")


# ----- HTTP plumbing -----------------------------------------------------------------------------


def _parse_length(text: str | bytes, *, base: int) -> int:
    try:
        return int(text, base)
    except ValueError:
        # Treated like a hang-up: the connection cannot be resynchronised after a bad length.
        raise ConnectionError(f"malformed body length {text!r}") from None


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, hub: SandboxHub):
        self.hub = hub
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _HubRequestHandler)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up, or stop() closing keep-alives
            super().handle_error(request, client_address)

    def close_open_connections(self) -> None:
        """Stop keep-alive connections too, so a stopped hub really stops answering."""
        with self.connections_lock:
            connections, self.open_connections = list(self.open_connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _HubRequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, as the client's pooled connections expect; every reply sets Content-Length.
    protocol_version = "HTTP/1.1"
    timeout = 120
    server: _HubHTTPServer

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; with Nagle on, each reply would wait ~40 ms for an ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self):
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        hub = self.server.hub
        hub.begin_request()
        raw_path, _, query_string = self.path.partition("?")
        route, params, path_known = match_route(self.command, raw_path)
        route_name = route.name if route else "unknown"
        request = Request(
            self.command,
            raw_path,
            parse_qs(query_string, keep_blank_values=True),
            params,
            hub.user_for_token(self._bearer_token()),
            self._base_url(hub),
            self.headers,
            self._iter_body(),
        )
        reply, fault, sent = None, None, 0
        try:
            if hub.latency_ms:
                time.sleep(hub.latency_ms / 1000)
            fault = hub.faults.pick(route_name, self.command)
            request.ignore_range = fault is not None and fault.kind == "ignore-range"
            if fault is None or fault.kind in HANDLED_KINDS:
                reply = self._dispatch(hub, request, route, path_known)
            if fault is not None and fault.kind != "ignore-range":
                reply = self._fault_reply(request, fault, hub.faults.spec.retry_after)
            sent = 0 if reply is None else self._send(reply)
        finally:
            hub.record_request(
                {
                    "method": self.command,
                    "path": raw_path,
                    "query": query_string,
                    "status": 0 if reply is None else reply.status,
                    "bytes": sent,
                    "route": route_name,
                    "user": request.user,
                    "fault": fault.kind if fault else None,
                }
            )

    def _dispatch(self, hub: SandboxHub, request: Request, route: Route | None, path_known: bool) -> Reply:
        try:
            if route is None:
                raise HubError(405 if path_known else 404, f"No route for {self.command} {request.path}")
            reply = getattr(hub.api, route.handler)(request)
        except HubError as error:
            reply = error_reply(error)
        except Exception as error:  # noqa: BLE001 - a sandbox bug: answer it rather than drop the connection
            reply = error_reply(HubError(500, f"sandbox error: {type(error).__name__}: {error}"))
        for _ in request.body_source:  # unread body bytes would corrupt the next keep-alive request
            pass
        return reply

    def _fault_reply(self, request: Request, fault: FaultRule, retry_after: int) -> Reply | None:
        """The injected failure; None means "close the connection without a reply"."""
        for _ in request.body_source:
            pass
        if fault.kind in DROP_KINDS:
            self.close_connection = True
            return None
        headers = {}
        if fault.kind == "429":
            headers = {"Retry-After": str(retry_after), "RateLimit": f'"api";r=0;t={retry_after}'}
        return json_reply({"error": f"sandbox fault injection: HTTP {fault.kind}"}, int(fault.kind), headers)

    def _send(self, reply: Reply) -> int:
        sent = 0
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(reply.content_length))
            self.end_headers()
            if self.command != "HEAD":
                for chunk in reply.chunks():
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        return sent

    def _bearer_token(self) -> str | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return (token.strip() or None) if scheme.lower() == "bearer" else None

    def _base_url(self, hub: SandboxHub) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else hub.endpoint

    def _iter_body(self) -> Iterator[bytes]:
        """The request body in chunks, from Content-Length or chunked transfer encoding."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = _parse_length(self.rfile.readline().split(b";")[0].strip() or b"0", base=16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._read_exactly(size)
                self.rfile.readline()
        else:
            yield from self._read_exactly(_parse_length(self.headers.get("Content-Length") or "0", base=10))

    def _read_exactly(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(chunk)
            yield chunk


# ----- the public object -------------------------------------------------------------------------


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
    ):
        if discussions_page_size < 1:
            raise ValueError("discussions_page_size must be at least 1")
        self.user = user
        self.users = dict(users or {})
        self.latency_ms = latency_ms
        spec = FaultSpec.parse(faults) if isinstance(faults, str) else (faults or FaultSpec())
        self.faults = FaultInjector(spec)
        self.request_log = Path(request_log) if request_log else None
        self.discussions_page_size = discussions_page_size
        self.store = HubStore()
        self.api = HubApi(self)
        self._requests: list[dict] = []
        self._in_flight = 0
        self._log_changed = threading.Condition()
        self._server: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint: str | None = None

    # --- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("the sandbox hub is already running")
        self._server = _HubHTTPServer((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        self._endpoint = f"http://{bound_host}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-hub", daemon=True
        )
        self._thread.start()
        return self._endpoint

    def stop(self) -> None:
        if self._server is None:
            return
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

    def begin_request(self) -> None:
        with self._log_changed:
            self._in_flight += 1

    def record_request(self, entry: dict) -> None:
        with self._log_changed:
            self._requests.append(entry)
            if self.request_log is not None:
                with open(self.request_log, "a", encoding="utf-8") as log:
                    log.write(json.dumps(entry) + "\n")
            self._in_flight -= 1
            self._log_changed.notify_all()


# ----- CLI ---------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + traceback-like noise
        raise _UsageError(message)


def _parse_cli(argv: list[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(
        prog="lora-bot sandbox", description="Serve a local Hub emulator for tests and demos."
    )
    parser.add_argument("--repos", type=Path, help="directory laid out as <namespace>/<name>/<files>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--request-log", type=Path, help="append one JSON line per request")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--faults", default=None, help='e.g. "429:0.1,drop:0.03@write,seed=7,retry-after=1"')
    parser.add_argument("--state-out", type=Path, help="write the final state as JSON on exit")
    parser.add_argument("--user", default="lora-bot", help="user name every token maps to")
    args = parser.parse_args(argv)
    if args.repos is not None and not args.repos.is_dir():
        raise _UsageError(f"--repos {args.repos}: not a directory")
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port {args.port}: must be between 0 and 65535")
    if args.latency_ms < 0:
        raise _UsageError("--latency-ms must not be negative")
    try:
        args.faults = FaultSpec.parse(args.faults) if args.faults else None
    except ValueError as error:
        raise _UsageError(f"--faults: {error}") from None
    return args


def _load_samples(hub: SandboxHub, scratch: Path) -> None:
    """Without --repos, serve the demo repos from bot.sandbox.samples, or an empty hub if it is absent."""
    try:
        from bot.sandbox.samples import write_sample_repos
    except ImportError as error:
        print(f"lora-bot sandbox: no sample repos ({error}); serving an empty hub", file=sys.stderr)
        return
    write_sample_repos(scratch)
    hub.load_directory(scratch)


def serve_main(argv: list[str] | None = None) -> int:
    """`lora-bot sandbox`: print the endpoint as the first stdout line, serve until SIGINT/SIGTERM."""
    try:
        args = _parse_cli(argv)
    except _UsageError as error:
        print(f"lora-bot sandbox: error: {error}", file=sys.stderr)
        return 2
    hub = SandboxHub(
        user=args.user, latency_ms=args.latency_ms, faults=args.faults, request_log=args.request_log
    )
    with tempfile.TemporaryDirectory(prefix="lora-bot-sandbox-") as scratch:
        if args.repos is not None:
            hub.load_directory(args.repos)
        else:
            _load_samples(hub, Path(scratch))
        try:
            endpoint = hub.start(args.host, args.port)
        except OSError as error:
            print(
                f"lora-bot sandbox: error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr
            )
            return 1
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        print(endpoint, flush=True)
        print(
            f"lora-bot sandbox: serving {len(hub.store.repos)} repos; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.2):  # a timed wait lets the signal handlers run promptly
            pass
        state = hub.state()
        hub.stop()
    if args.state_out is not None:
        args.state_out.write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main())
