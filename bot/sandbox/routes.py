"""The sandbox Hub's API: the route table that maps method and path to a handler, and the handlers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from bot.sandbox.http import Reply, Request, file_reply, json_reply, paged
from bot.sandbox.store import (
    DATASET_PREFIX,
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
# A synthetic census is listed in pages of 1000, the most one listing request returns here (`limit`).
SYNTHETIC_PAGE_SIZE = 1000
TREE_PAGE_SIZE = 1000
COMMITS_PAGE_SIZE = 50
SORT_KEYS: dict[str, Callable[[Repo], object]] = {
    "lastModified": lambda repo: repo.last_modified,
    "createdAt": lambda repo: repo.created_at,
    "likes": lambda repo: repo.likes,
    "downloads": lambda repo: repo.downloads,
    "trendingScore": lambda repo: repo.trending_score,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# ----- the Hub API -------------------------------------------------------------------------------


class SandboxRoutes:
    """One method per route; each takes a Request and returns a Reply or raises HubError."""

    def __init__(self, store: HubStore, *, discussions_page_size: int):
        self.store = store
        self.discussions_page_size = discussions_page_size

    # --- used by the request handler

    def match(self, method: str, raw_path: str) -> tuple[Route | None, dict[str, str], bool]:
        return match_route(method, raw_path)

    def handle(self, route: Route, request: Request) -> Reply:
        return getattr(self, route.handler)(request)

    # --- identity and search

    def whoami(self, request: Request) -> Reply:
        name = request.require_user()
        return json_reply(
            {
                "type": "user",
                "id": name,
                "name": name,
                "fullname": name,
                "orgs": [
                    {"type": "org", "name": org, "fullname": org}
                    for org, members in sorted(self.store.orgs.items())
                    if name in members
                ],
                "auth": {"type": "access_token", "accessToken": {"displayName": "sandbox", "role": "write"}},
            }
        )

    def org_members(self, request: Request) -> Reply:
        members = self.store.orgs.get(request.params["org"])
        if members is None:
            raise HubError(404, f"Organization {request.params['org']} not found")
        return json_reply(
            [{"user": name, "fullname": name, "type": "user", "avatarUrl": ""} for name in sorted(members)]
        )

    def models(self, request: Request) -> Reply:
        sort = request.arg("sort")
        if sort is not None and sort not in SORT_KEYS:
            raise HubError(400, f"Invalid sort {sort!r}; expected one of {', '.join(SORT_KEYS)}")
        expand = set(request.query.get("expand", []))
        full = request.flag("full")
        if self.store.synthetic is not None:
            return self._synthetic_models(request, expand)
        with self.store.lock:
            repos = [
                repo
                for repo in self.store.repos.values()
                if not repo.is_dataset and self._matches(request, repo)
            ]
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

    def _synthetic_models(self, request: Request, expand: set[str]) -> Reply:
        """A synthetic census's listing, newest first, one page made at a time (its queries are not
        filtered: every query lists the whole census). Pages hold `limit` repos, at most 1000, and link to
        the next; the client stops following them once it has `limit`."""
        synthetic = self.store.synthetic
        start = request.int_arg("cursor", 0)
        limit = request.int_arg("limit", 0)
        size = min(limit, SYNTHETIC_PAGE_SIZE) if limit else SYNTHETIC_PAGE_SIZE
        items = [synthetic.model_json(i, expand or None) for i in synthetic.listing(start, size)]
        headers = {}
        if start + size < synthetic.count:
            headers["Link"] = request.next_page_link(start + size)
        return json_reply(items, headers=headers)

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
        kind = payload.get("type") or "model"
        if kind not in ("model", "dataset"):
            raise HubError(400, "The sandbox hub hosts model and dataset repos")
        namespace, name = payload.get("organization") or user, str(payload.get("name") or "")
        if namespace != user:
            raise HubError(403, f"{user} cannot create repos under {namespace}")
        repo_id = f"{namespace}/{name}"
        key = DATASET_PREFIX + repo_id if kind == "dataset" else repo_id
        url = f"{request.base_url}/{key}"
        with self.store.lock:
            if key in self.store.repos:  # the client reads `url` even from a 409 when exist_ok=True
                return json_reply(
                    {"error": f"You already created this {kind} repo: {repo_id}", "url": url}, 409
                )
            repo = self.store.create_repo(key)
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

    def dataset_info(self, request: Request) -> Reply:
        repo, commit = self.store.resolve(request.params["repo"], request.params.get("rev") or "main")
        item = self.model_json(repo, commit, card=True, siblings=True, blobs=request.flag("blobs"))
        public_id = repo.repo_id.removeprefix(DATASET_PREFIX)
        return json_reply(item | {"_id": public_id, "id": public_id, "modelId": None})

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
        size = self.discussions_page_size
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


# ----- the route table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    methods: frozenset[str]
    pattern: re.Pattern
    handler: str


def _route(name: str, methods: str, pattern: str, handler: str | None = None) -> Route:
    pattern = (
        pattern.replace("{dataset}", r"(?P<repo>datasets/[^/]+/[^/]+)")
        .replace("{repo}", r"(?P<repo>[^/]+/[^/]+)")
        .replace("{rev}", r"(?P<rev>[^/]+)")
    )
    return Route(name, frozenset(methods.split()), re.compile(f"^{pattern}$"), handler or name)


# Matched in order on the RAW path: revisions arrive as refs%2Fpr%2F1 and must stay one segment.
# Dataset repos: the same handlers, with the store key "datasets/OWNER/NAME" as the repo parameter.
ROUTES = (
    _route("tree", "GET", r"/api/{dataset}/tree/{rev}(?:/(?P<path>.*))?"),
    _route("refs", "GET", r"/api/{dataset}/refs"),
    _route("commits", "GET", r"/api/{dataset}/commits/{rev}"),
    _route("preupload", "POST", r"/api/{dataset}/preupload/{rev}"),
    _route("commit", "POST", r"/api/{dataset}/commit/{rev}"),
    _route("dataset_info", "GET", r"/api/{dataset}(?:/revision/{rev})?"),
    _route("lfs", "POST", r"/{dataset}\.git/info/lfs/objects/batch"),
    _route("resolve", "GET HEAD", r"/{dataset}/resolve/{rev}/(?P<path>.+)"),
    _route("whoami", "GET", r"/api/whoami-v2"),
    _route("models", "GET", r"/api/models/?"),
    _route("org_members", "GET", r"/api/organizations/(?P<org>[^/]+)/members"),
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
