"""The sandbox Hub, exercised only through the real huggingface_hub client (and its HTTP session)."""

import os
import tempfile

# Before huggingface_hub is imported: no Xet uploads, a throwaway cache/token home, no proxy for loopback.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="sandbox-test-hf-home-")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ.pop("HF_HUB_OFFLINE", None)

import hashlib
import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx2
import huggingface_hub.constants
import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session
from safetensors.torch import save_file

from bot.sandbox import FaultSpec, SandboxHub, serve_main

TOKEN = "hf_test"
OWNER_TOKEN = "hf_owner"
CAROL_TOKEN = "hf_carol"
MAIN_ROOT = Path(__file__).resolve().parents[1]
LORA_CARD = b"""---
license: apache-2.0
library_name: peft
base_model: org/base-model
tags:
- lora
- text-generation
---
# Style LoRA
"""


def safetensors_bytes(tmp_dir: Path, tensors: dict) -> bytes:
    path = tmp_dir / f"t{len(list(tmp_dir.iterdir()))}.safetensors"
    save_file(tensors, str(path))
    return path.read_bytes()


def routes_since(hub: SandboxHub, start: int, route: str) -> list[dict]:
    return [entry for entry in hub.requests[start:] if entry["route"] == route]


@pytest.fixture(scope="module", autouse=True)
def no_xet():
    # In case huggingface_hub was imported before this module set HF_HUB_DISABLE_XET (it is read at call time).
    previous = huggingface_hub.constants.HF_HUB_DISABLE_XET
    huggingface_hub.constants.HF_HUB_DISABLE_XET = True
    yield
    huggingface_hub.constants.HF_HUB_DISABLE_XET = previous


@pytest.fixture(scope="module")
def tensors_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tensors")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tensors_dir):
    sandbox = SandboxHub(
        users={OWNER_TOKEN: "alice", CAROL_TOKEN: "carol"},
        discussions_page_size=2,
        request_log=tmp_path_factory.mktemp("log") / "requests.jsonl",
    )
    old = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for index in range(60):
        sandbox.add_repo(
            f"bulk/model-{index:02d}",
            {"config.json": b"{}"},
            last_modified=old + timedelta(days=index),
            extra={"likes": 100 + index, "downloads": 1000 - index},
        )
    sandbox.add_repo(
        "alice/style-lora",
        {
            "README.md": LORA_CARD,
            "adapter_config.json": b'{"r": 8, "lora_alpha": 16}',
            "adapter_model.safetensors": safetensors_bytes(tensors_dir, {"lora_A": torch.zeros(8, 16)}),
            "docs/notes.md": b"notes",
            "docs/deep/more.txt": b"more",
        },
    )
    sandbox.add_repo("alice/ranges", {"data.txt": b"0123456789abcdefghij"})
    sandbox.add_repo("alice/broken-card", {"README.md": b"---\nlicense: [unclosed\n---\ntext\n"})
    names = [f"blocks.{i:04d}.attention.self_attention.query_key_value.lora_A.weight" for i in range(2500)]
    sandbox.add_repo(
        "alice/big-header",
        {
            "adapter_model.safetensors": safetensors_bytes(
                tensors_dir, {name: torch.zeros(1) for name in names}
            )
        },
    )
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=TOKEN)


@pytest.fixture(scope="module")
def owner_api(hub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=OWNER_TOKEN)


@pytest.fixture
def fresh_repo(hub, request, tensors_dir) -> str:
    """A repo of alice's of its own per test, so write tests do not see each other's PRs."""
    repo_id = f"alice/{request.node.name.replace('_', '-')[:60]}"
    hub.add_repo(repo_id, {"README.md": b"---\nlicense: mit\n---\n# Model\n", "config.json": b'{"a": 1}'})
    return repo_id


# ----- reading -----------------------------------------------------------------------------------


def test_whoami_maps_tokens_to_users_and_requires_one(hub, api, owner_api):
    assert api.whoami()["name"] == "lora-bot"
    assert owner_api.whoami()["name"] == "alice"
    anonymous = get_session().get(f"{hub.endpoint}/api/whoami-v2")
    assert anonymous.status_code == 401


def test_list_models_follows_absolute_link_pages_over_fifty_repos(hub, api):
    start = len(hub.requests)
    models = list(api.list_models(author="bulk"))
    assert len(models) == 60
    assert len({model.id for model in models}) == 60
    pages = routes_since(hub, start, "models")
    assert len(pages) == 2 and "cursor=50" in pages[1]["query"]
    first_page = get_session().get(f"{hub.endpoint}/api/models", params={"author": "bulk"})
    assert first_page.headers["Link"].startswith(f"<{hub.endpoint}/api/models?")


def test_list_models_filters_searches_sorts_and_limits(hub, api):
    adapters = list(api.list_models(filter="base_model:adapter:org/base-model", cardData=True))
    assert [model.id for model in adapters] == ["alice/style-lora"]
    assert adapters[0].card_data["base_model"] == "org/base-model"
    assert [m.id for m in api.list_models(filter=["lora", "peft"])] == ["alice/style-lora"]
    assert list(api.list_models(filter=["lora", "not-a-tag"])) == []
    found = sorted(model.id for model in api.list_models(search="MODEL-5"))
    assert found == [f"bulk/model-5{i}" for i in range(10)]
    by_likes = [model.id for model in api.list_models(sort="likes", limit=3)]
    assert by_likes == ["bulk/model-59", "bulk/model-58", "bulk/model-57"]
    by_downloads = [model.id for model in api.list_models(author="bulk", sort="downloads", limit=2)]
    assert by_downloads == ["bulk/model-00", "bulk/model-01"]
    full = next(iter(api.list_models(search="style-lora", full=True)))
    assert "adapter_model.safetensors" in {sibling.rfilename for sibling in full.siblings}


def test_commit_to_main_moves_repo_to_top_of_last_modified(hub, api):
    hub.commit_files("bulk/model-03", {"config.json": b'{"updated": true}'}, message="Touch")
    newest = next(iter(api.list_models(author="bulk", sort="last_modified", limit=1)))
    assert newest.id == "bulk/model-03"
    assert newest.last_modified > datetime(2024, 12, 1, tzinfo=timezone.utc)


def test_model_info_has_card_tags_siblings_and_sha(hub, api):
    sha = api.list_repo_commits("alice/style-lora")[0].commit_id
    info = api.model_info("alice/style-lora")
    assert info.sha == sha
    assert info.card_data["license"] == "apache-2.0"
    assert {"lora", "text-generation", "peft", "base_model:adapter:org/base-model"} <= set(info.tags)
    assert info.author == "alice" and info.private is False
    assert {s.rfilename for s in info.siblings} == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "docs/notes.md",
        "docs/deep/more.txt",
    }
    assert all(sibling.size is None for sibling in info.siblings)


def test_model_info_files_metadata_reports_sizes_and_lfs(api):
    siblings = {s.rfilename: s for s in api.model_info("alice/style-lora", files_metadata=True).siblings}
    weights = siblings["adapter_model.safetensors"]
    assert weights.lfs is not None and len(weights.lfs.sha256) == 64 and weights.lfs.size == weights.size > 0
    assert siblings["README.md"].lfs is None and siblings["README.md"].size == len(LORA_CARD)
    assert len(siblings["README.md"].blob_id) == 40


def test_invalid_card_yaml_drops_card_data_but_not_the_repo(api):
    info = api.model_info("alice/broken-card")
    assert info.card_data is None
    assert [s.rfilename for s in info.siblings] == ["README.md"]


def test_missing_repo_revision_and_file_raise_the_clients_typed_errors(api, hub, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/style-lora", revision="no-such-branch")
    assert api.repo_exists("nobody/nothing") is False
    assert api.file_exists("alice/style-lora", "missing.bin") is False
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(
            "alice/style-lora", "missing.bin", endpoint=hub.endpoint, token=TOKEN, cache_dir=tmp_path
        )


def test_list_repo_files_and_tree_show_folders(api):
    assert sorted(api.list_repo_files("alice/style-lora")) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "docs/deep/more.txt",
        "docs/notes.md",
    ]
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree("alice/style-lora")}
    assert top == {
        "README.md": "RepoFile",
        "adapter_config.json": "RepoFile",
        "adapter_model.safetensors": "RepoFile",
        "docs": "RepoFolder",
    }
    docs = {entry.path for entry in api.list_repo_tree("alice/style-lora", path_in_repo="docs")}
    assert docs == {"docs/notes.md", "docs/deep"}
    weights = next(e for e in api.list_repo_tree("alice/style-lora") if e.path == "adapter_model.safetensors")
    assert weights.lfs is not None and len(weights.blob_id) == 40
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("alice/style-lora", path_in_repo="nope"))


def test_tree_pages_by_one_thousand_entries(hub, api):
    hub.add_repo("alice/many-files", {f"shard-{i:04d}.txt": b"x" for i in range(1100)})
    start = len(hub.requests)
    assert len(api.list_repo_files("alice/many-files")) == 1100
    assert len(routes_since(hub, start, "tree")) == 2


def test_refs_and_commit_history_newest_first(hub, api, fresh_repo):
    hub.commit_files(
        fresh_repo, {"config.json": b'{"a": 2}', "README.md": None}, message="Second", author="alice"
    )
    commits = api.list_repo_commits(fresh_repo)
    assert [c.title for c in commits] == ["Second", "Initial commit"]
    assert commits[0].authors == ["alice"]
    refs = api.list_repo_refs(fresh_repo)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", commits[0].commit_id)]
    assert api.list_repo_files(fresh_repo) == ["config.json"]


def test_hf_hub_download_streams_files_referenced_on_disk(hub, tmp_path):
    root = tmp_path / "repos"
    payload = bytes(range(256)) * 12_000  # 3 MB with NUL bytes: stored as LFS, served in several chunks
    (root / "disk" / "weights").mkdir(parents=True)
    (root / "disk" / "weights" / "blob.dat").write_bytes(payload)
    (root / "disk" / "weights" / "notes.txt").write_text("hello")
    assert hub.load_directory(root) == ["disk/weights"]
    cache = tmp_path / "cache"
    downloaded = hf_hub_download(
        "disk/weights", "blob.dat", endpoint=hub.endpoint, token=TOKEN, cache_dir=cache
    )
    assert Path(downloaded).read_bytes() == payload
    text = hf_hub_download("disk/weights", "notes.txt", endpoint=hub.endpoint, token=TOKEN, cache_dir=cache)
    assert Path(text).read_text() == "hello"
    head = get_session().head(f"{hub.endpoint}/disk/weights/resolve/main/blob.dat")
    assert head.headers["X-Linked-Size"] == str(len(payload)) and "X-Xet-Hash" not in head.headers
    assert head.headers["ETag"].strip('"') == head.headers["X-Linked-Etag"].strip('"')
    assert len(head.headers["X-Repo-Commit"]) == 40


# ----- ranges ------------------------------------------------------------------------------------


def test_parse_safetensors_metadata_with_one_range_request(hub, api):
    start = len(hub.requests)
    metadata = api.parse_safetensors_file_metadata("alice/style-lora", "adapter_model.safetensors")
    assert metadata.tensors["lora_A"].shape == [8, 16]
    assert [e["status"] for e in routes_since(hub, start, "resolve")] == [206]


def test_parse_safetensors_metadata_with_header_over_100_kb(hub, api):
    start = len(hub.requests)
    metadata = api.parse_safetensors_file_metadata("alice/big-header", "adapter_model.safetensors")
    assert len(metadata.tensors) == 2500
    resolves = routes_since(hub, start, "resolve")
    assert [e["status"] for e in resolves] == [206, 206]
    assert resolves[1]["bytes"] > 100_000


def test_multi_range_get_answers_multipart_byteranges(hub):
    response = get_session().get(
        f"{hub.endpoint}/alice/ranges/resolve/main/data.txt", headers={"Range": "bytes=0-3,10-12"}
    )
    assert response.status_code == 206
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=")[1].encode()
    parts = [part for part in response.content.split(b"--" + boundary) if part.strip() not in (b"", b"--")]
    bodies = [part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for part in parts]
    assert bodies == [b"0123", b"abc"]
    assert b"Content-Range: bytes 10-12/20" in parts[1]
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_single_suffix_and_unsatisfiable_ranges(hub):
    url = f"{hub.endpoint}/alice/ranges/resolve/main/data.txt"
    tail = get_session().get(url, headers={"Range": "bytes=15-"})
    assert (tail.status_code, tail.content, tail.headers["Content-Range"]) == (
        206,
        b"fghij",
        "bytes 15-19/20",
    )
    assert get_session().get(url, headers={"Range": "bytes=-3"}).content == b"hij"
    refused = get_session().get(url, headers={"Range": "bytes=50-60"})
    assert refused.status_code == 416 and refused.headers["Content-Range"] == "bytes */20"


# ----- writing -----------------------------------------------------------------------------------


def test_create_commit_as_pr_keeps_main_and_appends_to_the_pr(hub, api, fresh_repo, tensors_dir, tmp_path):
    main_sha = api.model_info(fresh_repo).sha
    weights = safetensors_bytes(tensors_dir, {"lora_B": torch.ones(4, 4)})
    start = len(hub.requests)
    info = api.create_commit(
        fresh_repo,
        operations=[
            CommitOperationAdd("README.md", b"---\nlicense: mit\nbase_model: org/base-model\n---\n# Fixed\n"),
            CommitOperationAdd("adapter_model.safetensors", weights),
        ],
        commit_message="Fix adapter",
        commit_description="Details",
        create_pr=True,
    )
    assert info.pr_num == 1 and info.pr_revision == "refs/pr/1"
    assert {e["route"] for e in hub.requests[start:]} >= {"validate_yaml", "preupload", "lfs", "commit"}
    assert [e["method"] for e in routes_since(hub, start, "lfs")] == ["POST", "PUT", "POST"]

    pr_file = hf_hub_download(
        fresh_repo,
        "adapter_model.safetensors",
        revision="refs/pr/1",
        endpoint=hub.endpoint,
        token=TOKEN,
        cache_dir=tmp_path,
    )
    assert Path(pr_file).read_bytes() == weights
    assert api.model_info(fresh_repo, revision="refs/pr/1").card_data["base_model"] == "org/base-model"
    assert api.model_info(fresh_repo).sha == main_sha
    assert "adapter_model.safetensors" not in api.list_repo_files(fresh_repo)

    second = api.create_commit(
        fresh_repo,
        operations=[CommitOperationAdd("extra.txt", b"more")],
        commit_message="Follow-up",
        revision="refs/pr/1",
    )
    assert "extra.txt" in api.list_repo_files(fresh_repo, revision="refs/pr/1")
    details = api.get_discussion_details(fresh_repo, 1)
    assert details.is_pull_request and details.status == "open" and details.target_branch == "refs/heads/main"
    assert details.events[0].type == "comment" and details.events[0].content == "Details"
    assert [e.summary for e in details.events if e.type == "commit"] == ["Fix adapter", "Follow-up"]
    refs = api.list_repo_refs(fresh_repo, include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", second.oid)]


def test_unchanged_files_are_skipped_by_preupload_oids(api, hub, fresh_repo):
    start = len(hub.requests)
    info = api.create_commit(
        fresh_repo, operations=[CommitOperationAdd("config.json", b'{"a": 1}')], commit_message="No-op"
    )
    assert info.oid == api.model_info(fresh_repo).sha
    assert routes_since(hub, start, "commit") == []


def test_merge_pull_request_needs_the_owner_and_fast_forwards_main(api, owner_api, fresh_repo):
    api.create_commit(
        fresh_repo, operations=[CommitOperationAdd("new.txt", b"new")], commit_message="Add", create_pr=True
    )
    with pytest.raises(HfHubHTTPError) as refused:
        api.merge_pull_request(fresh_repo, 1)
    assert refused.value.response.status_code == 403
    pr_head = api.list_repo_refs(fresh_repo, include_pull_requests=True).pull_requests[0].target_commit
    owner_api.merge_pull_request(fresh_repo, 1)
    assert api.model_info(fresh_repo).sha == pr_head
    details = api.get_discussion_details(fresh_repo, 1)
    assert details.status == "merged" and details.merge_commit_oid == pr_head


def test_merge_after_main_moved_makes_a_merge_commit(api, owner_api, hub, fresh_repo):
    api.create_commit(
        fresh_repo, operations=[CommitOperationAdd("new.txt", b"new")], commit_message="Add", create_pr=True
    )
    hub.commit_files(fresh_repo, {"other.txt": b"owner"}, message="Owner push")
    owner_api.merge_pull_request(fresh_repo, 1)
    assert set(api.list_repo_files(fresh_repo)) >= {"new.txt", "other.txt", "config.json"}
    assert api.list_repo_commits(fresh_repo)[0].title == "Merge pull request #1"


def test_parent_commit_mismatch_is_refused_without_a_commit(owner_api, hub, fresh_repo):
    stale = owner_api.model_info(fresh_repo).sha
    hub.commit_files(fresh_repo, {"config.json": b'{"a": 3}'})
    head = owner_api.model_info(fresh_repo).sha
    with pytest.raises(HfHubHTTPError) as conflict:
        owner_api.create_commit(
            fresh_repo,
            operations=[CommitOperationAdd("x.txt", b"x")],
            commit_message="Late",
            parent_commit=stale,
        )
    assert conflict.value.response.status_code == 412
    assert owner_api.model_info(fresh_repo).sha == head
    done = owner_api.create_commit(
        fresh_repo,
        operations=[CommitOperationAdd("x.txt", b"x")],
        commit_message="On time",
        parent_commit=head,
    )
    assert owner_api.model_info(fresh_repo).sha == done.oid


def test_only_the_owner_pushes_to_main_and_bad_cards_are_refused(api, fresh_repo):
    with pytest.raises(HfHubHTTPError) as forbidden:
        api.create_commit(fresh_repo, operations=[CommitOperationAdd("x.txt", b"x")], commit_message="Sneaky")
    assert forbidden.value.response.status_code == 403
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.create_commit(
            fresh_repo,
            operations=[CommitOperationAdd("README.md", b"---\na: [b\n---\n")],
            commit_message="Bad card",
            create_pr=True,
        )
    assert list(api.get_repo_discussions(fresh_repo)) == []


def test_create_repo_in_own_namespace_only(hub, api):
    url = api.create_repo("fresh-model")
    assert url.repo_id == "lora-bot/fresh-model"
    assert api.list_repo_files("lora-bot/fresh-model") == [".gitattributes"]
    assert api.create_repo("fresh-model", exist_ok=True).repo_id == "lora-bot/fresh-model"
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_repo("fresh-model")
    assert exists.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as foreign:
        api.create_repo("alice/not-mine")
    assert foreign.value.response.status_code == 403
    api.upload_file(path_or_fileobj=b"\x00weights", path_in_repo="model.bin", repo_id="lora-bot/fresh-model")
    assert api.model_info("lora-bot/fresh-model", files_metadata=True).siblings[1].lfs is not None


def test_big_upload_is_spooled_and_served_back(api, hub, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over the in-memory upload limit
    api.create_repo("big-upload")
    api.upload_file(path_or_fileobj=big, path_in_repo="weights.bin", repo_id="lora-bot/big-upload")
    downloaded = hf_hub_download(
        "lora-bot/big-upload", "weights.bin", endpoint=hub.endpoint, token=TOKEN, cache_dir=tmp_path / "cache"
    )
    assert Path(downloaded).read_bytes() == big.read_bytes()


def test_chunked_lfs_upload_is_accepted_and_verified(hub):
    data = b"chunked payload " * 1000
    oid = hashlib.sha256(data).hexdigest()
    upload = get_session().put(f"{hub.endpoint}/__lfs/{oid}", content=iter([data[:5000], data[5000:]]))
    assert upload.status_code == 200
    verify = get_session().post(f"{hub.endpoint}/__lfs/{oid}/verify", json={"oid": oid, "size": len(data)})
    assert verify.status_code == 200
    corrupt = get_session().put(f"{hub.endpoint}/__lfs/{'0' * 64}", content=iter([b"not matching"]))
    assert corrupt.status_code == 400


# ----- discussions -------------------------------------------------------------------------------


def test_discussion_events_for_comment_status_and_title(api, owner_api, fresh_repo):
    carol = HfApi(endpoint=api.endpoint, token=CAROL_TOKEN)
    created = api.create_discussion(fresh_repo, "Rank looks wrong", description="r=8 but alpha=4096")
    assert (created.num, created.author, created.status, created.is_pull_request) == (
        1,
        "lora-bot",
        "open",
        False,
    )
    comment = carol.comment_discussion(fresh_repo, 1, "Agreed")
    assert comment.author == "carol" and comment.content == "Agreed"
    with pytest.raises(HfHubHTTPError) as forbidden:
        carol.change_discussion_status(fresh_repo, 1, "closed")
    assert forbidden.value.response.status_code == 403
    api.change_discussion_status(fresh_repo, 1, "closed", comment="Fixed upstream")
    owner_api.rename_discussion(fresh_repo, 1, "Rank was wrong")
    details = api.get_discussion_details(fresh_repo, 1)
    assert [e.type for e in details.events] == [
        "comment",
        "comment",
        "comment",
        "status-change",
        "title-change",
    ]
    assert details.events[0].content == "r=8 but alpha=4096"
    assert details.events[3].new_status == "closed"
    assert (details.events[4].old_title, details.events[4].new_title) == (
        "Rank looks wrong",
        "Rank was wrong",
    )
    assert details.status == "closed" and details.title == "Rank was wrong"


def test_discussion_listing_filters_and_pages_newest_first(hub, api, fresh_repo):
    carol = HfApi(endpoint=api.endpoint, token=CAROL_TOKEN)
    api.create_discussion(fresh_repo, "bot discussion")
    api.create_pull_request(fresh_repo, "bot draft PR")
    carol.create_discussion(fresh_repo, "carol discussion")
    api.create_commit(
        fresh_repo, operations=[CommitOperationAdd("a.txt", b"a")], commit_message="bot PR", create_pr=True
    )
    carol.create_discussion(fresh_repo, "carol closed")
    carol.change_discussion_status(fresh_repo, 5, "closed")

    start = len(hub.requests)
    everything = list(api.get_repo_discussions(fresh_repo))
    assert [d.num for d in everything] == [5, 4, 3, 2, 1]
    assert len(routes_since(hub, start, "discussions")) == 3  # page size 2: pages p=0,1,2
    bot_prs = list(api.get_repo_discussions(fresh_repo, author="lora-bot", discussion_type="pull_request"))
    assert [(d.title, d.status) for d in bot_prs] == [("bot PR", "open"), ("bot draft PR", "draft")]
    open_carol = list(api.get_repo_discussions(fresh_repo, author="carol", discussion_status="open"))
    assert [d.title for d in open_carol] == ["carol discussion"]
    closed = list(
        api.get_repo_discussions(fresh_repo, discussion_type="discussion", discussion_status="closed")
    )
    assert [d.num for d in closed] == [5]


# ----- faults, logging, latency ------------------------------------------------------------------


def test_fault_429_carries_retry_after_and_is_logged():
    with SandboxHub(faults="429:1@whoami,retry-after=3") as hub:
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        with pytest.raises(HfHubHTTPError) as limited:
            api.whoami()
        response = limited.value.response
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3" and response.headers["RateLimit"] == '"api";r=0;t=3'
        assert hub.requests[-1]["status"] == 429 and hub.requests[-1]["fault"] == "429"
        hub.add_repo("alice/ok", {"a.txt": b"a"})
        assert api.model_info("alice/ok").id == "alice/ok"  # other routes are untouched


def test_dropped_connection_raises_in_the_client_and_the_server_survives():
    with SandboxHub(faults="drop:1@model_info") as hub:
        hub.add_repo("alice/ok", {"a.txt": b"a"})
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        with pytest.raises(httpx2.TransportError):
            api.model_info("alice/ok")
        assert api.whoami()["name"] == "lora-bot"
        assert [e["status"] for e in hub.requests if e["route"] == "model_info"] == [0]


def test_faulted_writes_have_no_side_effect():
    with SandboxHub(users={OWNER_TOKEN: "alice"}, faults="503:1@comment,drop:1@commit") as hub:
        hub.add_repo("alice/ok", {"a.txt": b"a"})
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        api.create_discussion("alice/ok", "Question")
        with pytest.raises(HfHubHTTPError) as unavailable:
            api.comment_discussion("alice/ok", 1, "lost comment")
        assert unavailable.value.response.status_code == 503
        assert [e.type for e in api.get_discussion_details("alice/ok", 1).events] == ["comment"]
        with pytest.raises(httpx2.TransportError):
            api.create_commit(
                "alice/ok",
                operations=[CommitOperationAdd("b.txt", b"b")],
                commit_message="Lost",
                create_pr=True,
            )
        repo_state = hub.state()["repos"]["alice/ok"]
        assert len(repo_state["commits"]) == 1 and list(repo_state["refs"]) == ["refs/heads/main"]
        assert len(repo_state["discussions"]) == 1


def test_drop_after_acts_on_the_request_but_loses_the_reply():
    with SandboxHub(faults="drop-after:1@discussions") as hub:
        hub.add_repo("alice/ok", {"a.txt": b"a"})
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        with pytest.raises(httpx2.TransportError):
            api.create_discussion("alice/ok", "Sent once")
        assert [d["title"] for d in hub.state()["repos"]["alice/ok"]["discussions"]] == ["Sent once"]
        assert hub.requests[-1]["status"] == 0 and hub.requests[-1]["fault"] == "drop-after"


def test_faults_are_deterministic_per_seed_and_respect_read_write_groups():
    def statuses(spec: str) -> list[int]:
        with SandboxHub(faults=spec) as hub:
            url = f"{hub.endpoint}/api/whoami-v2"
            return [
                get_session().get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code
                for _ in range(16)
            ]

    first, second = statuses("500:0.5@whoami,seed=11"), statuses("500:0.5@whoami,seed=11")
    assert first == second and {200, 500} <= set(first)
    with SandboxHub(faults="503:1@write") as hub:
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        assert api.whoami()["name"] == "lora-bot"
        refused = get_session().post(
            f"{hub.endpoint}/api/repos/create",
            json={"name": "x"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert refused.status_code == 503
        assert hub.state()["repos"] == {}


@pytest.mark.parametrize("spec", ["429", "429:2", "teapot:0.1", "500:0.1@nowhere", "seed=x"])
def test_bad_fault_specs_are_rejected(spec):
    with pytest.raises(ValueError):
        FaultSpec.parse(spec)


def test_request_log_lines_have_the_fields_and_never_the_token(hub, api, owner_api, fresh_repo):
    start = len(hub.requests)
    api.whoami()
    owner_api.whoami()
    api.create_discussion(fresh_repo, "Logged")
    in_memory = hub.requests  # first: it waits for requests still being answered
    lines = [json.loads(line) for line in hub.request_log.read_text().splitlines()]
    assert lines == in_memory
    assert all({"method", "path", "query", "status", "bytes", "route", "user"} <= set(line) for line in lines)
    new = [(e["method"], e["path"], e["route"], e["user"], e["status"]) for e in lines[start : start + 3]]
    assert new == [
        ("GET", "/api/whoami-v2", "whoami", "lora-bot", 200),
        ("GET", "/api/whoami-v2", "whoami", "alice", 200),
        ("POST", f"/api/models/{fresh_repo}/discussions", "discussions", "lora-bot", 200),
    ]
    assert lines[start]["bytes"] == len(json.dumps(api.whoami()))
    text = hub.request_log.read_text()
    assert TOKEN not in text and OWNER_TOKEN not in text and "Bearer" not in text


def test_latency_is_added_to_every_request():
    with SandboxHub(latency_ms=150) as hub:
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        started = time.monotonic()
        for _ in range(3):
            api.whoami()
        assert time.monotonic() - started >= 0.45


def test_write_request_count_and_state_snapshot():
    with SandboxHub() as hub:
        hub.add_repo("alice/ok", {"a.txt": b"a"})
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        api.model_info("alice/ok")
        list(api.get_repo_discussions("alice/ok"))
        assert hub.write_request_count() == 0
        api.create_discussion("alice/ok", "Hello", description="First")
        assert hub.write_request_count() == 1
        state = json.loads(json.dumps(hub.state()))
        repo = state["repos"]["alice/ok"]
        main = repo["refs"]["refs/heads/main"]
        assert repo["commits"][main]["files"] == ["a.txt"]
        assert repo["discussions"][0]["events"][0]["data"]["latest"]["raw"] == "First"


# ----- CLI ---------------------------------------------------------------------------------------


def test_serve_main_prints_endpoint_first_and_writes_state_on_sigterm(tmp_path):
    (tmp_path / "repos" / "alice" / "demo").mkdir(parents=True)
    (tmp_path / "repos" / "alice" / "demo" / "README.md").write_text("# Demo\n")
    state_out = tmp_path / "state.json"
    args = ["--repos", str(tmp_path / "repos"), "--port", "0", "--state-out", str(state_out)]
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from bot.sandbox import serve_main; raise SystemExit(serve_main({args!r}))",
        ],
        cwd=MAIN_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = process.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        assert HfApi(endpoint=endpoint, token=TOKEN).list_repo_files("alice/demo") == ["README.md"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert process.returncode == 0
    assert "alice/demo" in json.loads(state_out.read_text())["repos"]


@pytest.mark.parametrize("argv", [["--port", "abc"], ["--faults", "boom:1"], ["--repos", "/no/such/dir"]])
def test_serve_main_rejects_bad_arguments_with_one_line(argv, capsys):
    assert serve_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "error" in captured.err


def test_the_request_log_is_in_arrival_order_even_when_answers_finish_out_of_order():
    # A client has its answer before the server logs it, so its next request can finish logging first; the
    # log must still read in the order the client made its requests (tests count reads by their position).
    hub = SandboxHub()
    first, second = hub.begin_request(), hub.begin_request()
    hub.record_request({"path": "/second", "arrival": second})
    hub.record_request({"path": "/first", "arrival": first})
    assert [entry["path"] for entry in hub.requests] == ["/first", "/second"]
