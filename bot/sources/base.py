"""The base model's weight table, header-only: a local folder or file, or a Hub repo through range reads.

What is read: the index JSON of a sharded model (`*.safetensors.index.json`) and each shard's safetensors
header, per component of a diffusers pipeline (`unet/`, `transformer/`, `text_encoder*/`) or for the one
model of a transformers repo. Never a tensor's data.

The Hub side caches, because one base serves thousands of adapters:
- in the process, the finished table per (endpoint, repo, revision): a second check against the same base
  makes no request at all;
- per file, the parsed header keyed by the file's sha256 (the LFS oid of the listing; the git blob id for a
  small non-LFS file): a new revision that keeps its shards, or another repo holding the same files, costs the
  listing alone. With a cache folder (`--cache-dir`, or `LORA_BOT_CACHE_DIR`) these per-file tables are also
  kept on disk as `<sha>.json`, so a new process pays the listing and nothing else.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.core.compat import BaseComponent, BaseWeights, ComponentFiles, plan_base_files, shards_of_index
from bot.core.header import HeaderError, SafetensorsHeader
from bot.core.limits import MAX_HEADER_BYTES
from bot.core.selection import is_safe_repo_path
from bot.files.safetensors import read_local_header
from bot.hub.client import describe_error, with_retries
from bot.sources.hub import RemoteReader

# A base shard's header is read in one request: 1 MB holds the largest we know (an SDXL UNet's is ~170 kB, a
# FLUX.1 transformer's ~110 kB), and next to a multi-GB shard the extra bytes cost nothing.
BASE_FIRST_READ = 1_000_000
CACHE_ENV = "LORA_BOT_CACHE_DIR"

Weights = Mapping[str, tuple[str, tuple[int, ...]]]


class BaseReadError(Exception):
    """The base cannot be read: the message says why in one line."""


def _table(header: SafetensorsHeader) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {name: (t.dtype, tuple(t.shape)) for name, t in header.tensors.items()}


# ----------------------------------------------------------------------------------------------- local


def read_local_base(target: Path) -> BaseWeights:
    """A base on disk: one safetensors file, a model folder (sharded or not) or a diffusers pipeline folder."""
    target = Path(target)
    if target.is_file():
        return BaseWeights(
            str(target), False, None, (target.name,), (BaseComponent("model", "", _read_local(target)),)
        )
    if not target.is_dir():
        raise BaseReadError(f"no such file or folder: {target}")
    paths = [
        p.relative_to(target).as_posix()
        for pattern in ("*", "*/*")
        for p in target.glob(pattern)
        if p.is_file() and p.name.endswith((".safetensors", ".json"))
    ]
    plans = plan_base_files(paths)
    if not plans:
        raise BaseReadError(
            f"{target} holds no safetensors weights (a file, shards with their index, or a pipeline)"
        )
    components, files = [], []
    for plan in plans:
        shards = plan.files
        if plan.index:
            try:
                shards = shards_of_index(plan.index, (target / plan.index).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise BaseReadError(f"{target}: {error}") from None
            files.append(plan.index)
        weights: dict = {}
        for shard in shards:
            weights.update(_read_local(target / shard))
            files.append(shard)
        components.append(BaseComponent(plan.component, plan.folder, weights))
    return BaseWeights(str(target), False, None, tuple(files), tuple(components))


def _read_local(path: Path) -> dict:
    try:
        return _table(read_local_header(path, limit=MAX_HEADER_BYTES))
    except HeaderError as error:
        raise BaseReadError(f"{path}: {error}") from None
    except OSError as error:
        raise BaseReadError(f"cannot read {path}: {error.strerror or error}") from None


# ------------------------------------------------------------------------------------------------- Hub


@dataclass(frozen=True)
class _Listed:
    path: str
    size: int | None
    sha: str | None  # the LFS sha256, else the git blob id


class BaseHeaderCache:
    """Per-file weight tables by sha (memory, and a folder when given) and finished bases by repo/revision."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self._files: dict[str, Weights] = {}
        self._bases: dict[tuple, BaseWeights | BaseReadError] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def key_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def base(self, key: tuple) -> BaseWeights | BaseReadError | None:
        return self._bases.get(key)

    def remember_base(self, key: tuple, value: BaseWeights | BaseReadError) -> None:
        self._bases[key] = value

    def file(self, sha: str | None) -> Weights | None:
        if not sha:
            return None
        found = self._files.get(sha)
        if found is None and self.directory is not None:
            try:
                raw = json.loads((self.directory / f"{sha}.json").read_text(encoding="utf-8"))
                found = {name: (dtype, tuple(shape)) for name, (dtype, shape) in raw.items()}
            except (OSError, ValueError, TypeError):
                return None
            self._files[sha] = found
        return found

    def remember_file(self, sha: str | None, weights: Weights) -> None:
        if not sha:
            return
        self._files[sha] = weights
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                partial = self.directory / f".{sha}.{threading.get_ident()}.tmp"
                partial.write_text(json.dumps({n: [d, list(s)] for n, (d, s) in weights.items()}), "utf-8")
                partial.replace(self.directory / f"{sha}.json")
            except OSError:
                pass  # a cache that cannot be written costs a re-read next time, nothing else


# One cache per process: every check and every scan in it shares what was read.
PROCESS_CACHE = BaseHeaderCache(os.environ.get(CACHE_ENV) or None)
_CACHES: dict[str, BaseHeaderCache] = {}


def cache_for(directory: str | os.PathLike | None) -> BaseHeaderCache:
    """The process cache, or the one kept in `directory` (one object per folder, so its memory is shared)."""
    if not directory:
        return PROCESS_CACHE
    with PROCESS_CACHE._lock:
        return _CACHES.setdefault(str(Path(directory).resolve()), BaseHeaderCache(directory))


class HubBaseReader:
    """Reads a Hub base's weight table with header range reads, through a `RemoteReader`."""

    def __init__(self, reader: RemoteReader, cache: BaseHeaderCache | None = None) -> None:
        self.reader = reader
        self.cache = cache or PROCESS_CACHE

    def read(self, repo_id: str, revision: str | None = None) -> BaseWeights:
        key = (self.reader.api.endpoint, repo_id, revision)
        with self.cache.key_lock(key):
            known = self.cache.base(key)
            if known is None:
                try:
                    known = self._read(repo_id, revision)
                except BaseReadError as error:
                    known = error
                except Exception as error:  # noqa: BLE001 — a Hub or parse failure is one line, not a traceback
                    known = BaseReadError(f"{repo_id}: {describe_error(error)}")
                self.cache.remember_base(key, known)
        if isinstance(known, BaseReadError):
            raise known
        return known

    def _read(self, repo_id: str, revision: str | None) -> BaseWeights:
        api = self.reader.api
        info = with_retries(
            self.reader.policy, lambda: api.model_info(repo_id, revision=revision, files_metadata=True)
        )
        sha = info.sha or revision or "main"
        listed = {s.rfilename: _listed(s) for s in (info.siblings or [])}
        plans = plan_base_files(p for p in listed if is_safe_repo_path(p))
        if not plans:
            raise BaseReadError(
                f"{repo_id} holds no safetensors weights (no index, model file or pipeline folder)"
            )
        files, components = [], []
        for plan in plans:
            shards = self._shards(repo_id, sha, plan, listed)
            if plan.index:
                files.append(plan.index)
            weights: dict = {}
            for shard in shards:
                if shard not in listed:
                    raise BaseReadError(
                        f"{repo_id}: {plan.index} names {shard}, which the repo does not have"
                    )
                weights.update(self._file_weights(repo_id, sha, listed[shard]))
                files.append(shard)
            components.append(BaseComponent(plan.component, plan.folder, weights))
        return BaseWeights(repo_id, True, sha, tuple(files), tuple(components))

    def _shards(self, repo_id: str, sha: str, plan: ComponentFiles, listed: Mapping[str, _Listed]):
        if not plan.index:
            return plan.files
        entry = listed[plan.index]
        cache_key = f"index-{entry.sha}" if entry.sha else None
        cached = self.cache.file(cache_key)
        if cached is not None:
            return tuple(cached)
        text = self.reader.read_text(repo_id, plan.index, sha)
        try:
            shards = shards_of_index(plan.index, text)
        except ValueError as error:
            raise BaseReadError(f"{repo_id}: {error}") from None
        # Kept in the same per-sha store as headers: the shard names, as a table without shapes.
        self.cache.remember_file(cache_key, {s: ("", ()) for s in shards})
        return shards

    def _file_weights(self, repo_id: str, sha: str, entry: _Listed) -> Weights:
        cached = self.cache.file(entry.sha)
        if cached is not None:
            return cached
        try:
            header = self.reader.header(
                repo_id, entry.path, sha, entry.size, first_read=BASE_FIRST_READ, limit=MAX_HEADER_BYTES
            ).header
        except HeaderError as error:
            raise BaseReadError(f"{repo_id}/{entry.path}: {error}") from None
        weights = _table(header)
        self.cache.remember_file(entry.sha, weights)
        return weights


def _listed(sibling) -> _Listed:
    lfs = getattr(sibling, "lfs", None)
    sha = None
    if lfs is not None:
        sha = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
    return _Listed(
        sibling.rfilename, getattr(sibling, "size", None), sha or getattr(sibling, "blob_id", None)
    )
