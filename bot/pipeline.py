"""The scan pipeline: discover → inspect → (propose → execute or print) → report.

Each stage is a module with one job; this file only wires them and keeps the run's bookkeeping (stats,
watermark). A repo that fails is reported with its reason and never stops the others.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bot.census.store import CensusStore, StoredRepos
from bot.config import Config
from bot.core.compat import amend_with_check, check_compatibility, declared_base_repo
from bot.core.repo import RepoInspection, RepoRef, inspect_repo
from bot.hub.client import METER, RetryPolicy, describe_error, make_api
from bot.hub.download import DownloadBudget
from bot.hub.pacing import PACER
from bot.proposals.stage import run_proposals
from bot.sources.base import BaseReadError, HubBaseReader
from bot.sources.discovery import Shard, discover, opted_out
from bot.sources.hub import RemoteReader
from bot.state import next_watermark, read_watermark, write_watermark
from bot.vocab import UNFINISHED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanOptions:
    endpoint: str | None = None
    token: str | None = None
    dry_run: bool = False
    repos: tuple[str, ...] = ()
    shard: Shard | None = None
    max_prs: int | None = None  # overrides proposals.max_prs_per_run
    store: str | None = None  # overrides census.store
    # A dry run reads headers only; with this it also downloads weights (within the budget) to preview
    # variant and metadata-fix PRs.
    build_previews: bool = False
    progress: bool = False
    # How retries wait (Retry-After, back-off). Tests pass a recording clock so faults cost no wall time.
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class ScanStats:
    repos: int
    files: int
    requests: int
    bytes: int
    write_requests: int
    seconds: float
    inspect_bytes: int = 0  # of `bytes`, what discovery and inspection read; the rest built proposals
    reused: int = 0  # repos whose stored inspection was reused: the listing's sha had not changed
    by_bucket: dict = field(default_factory=dict)  # requests per rate-limit bucket (api, resolvers, other)
    # Whole weight files downloaded to build proposals, within the run's budget: DownloadBudget.summary()
    downloads: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "repos": self.repos,
            "files": self.files,
            "requests": self.requests,
            "bytes": self.bytes,
            "write_requests": self.write_requests,
            "seconds": round(self.seconds, 3),
            "inspect_bytes": self.inspect_bytes,
            "reused": self.reused,
            "requests_by_bucket": dict(self.by_bucket),
            "downloads": dict(self.downloads),
        }


@dataclass(frozen=True)
class ScanResult:
    endpoint: str
    dry_run: bool
    repos: Sequence[RepoInspection]  # a run's repos from the census store, loaded as they are iterated
    skipped: tuple[tuple[str, str], ...]
    stats: ScanStats
    outcomes: tuple = field(default=())  # what was proposed and done, filled by the proposal stage


def resolve_endpoint(config: Config, options: ScanOptions) -> str | None:
    return options.endpoint or config.hub.endpoint or os.environ.get("HF_ENDPOINT")


def resolve_token(config: Config, options: ScanOptions) -> str | None:
    return options.token or os.environ.get(config.hub.token_env) or None


def inspect_all(
    reader: RemoteReader,
    refs: Iterable[RepoRef],
    workers: int,
    on_done: Callable[[RepoRef, RepoInspection], None],
) -> None:
    """Read and inspect repos in parallel, handing each result to `on_done` (in the calling thread) as it
    finishes; nothing is kept here, so memory holds at most the repos in flight."""
    pending: dict = {}
    refs = iter(refs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lora-bot") as pool:

        def submit_next() -> bool:
            ref = next(refs, None)
            if ref is None:
                return False
            pending[pool.submit(lambda r: inspect_repo(reader.read(r)), ref)] = ref
            return True

        for _ in range(workers * 2):  # a short queue keeps every worker busy without holding all repos
            if not submit_next():
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                ref = pending.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001 — the source reports errors itself; belt and braces
                    result = RepoInspection(
                        ref.repo_id, ref.sha, error=f"internal error: {describe_error(error)}"
                    )
                on_done(ref, result)
                submit_next()


def verify_declared_base(repo: RepoInspection, reader: HubBaseReader) -> RepoInspection:
    """Each file with a declared Hub base, checked against that base's headers (read once per base, then
    cached). A base that cannot be read leaves the file as inspection left it: unclear is never a finding."""
    files = []
    for inspection in repo.files:
        declared = declared_base_repo(inspection)
        if declared and declared != repo.repo_id:
            try:
                inspection = amend_with_check(
                    inspection, check_compatibility(inspection, reader.read(declared))
                )
            except BaseReadError as error:
                log.info("%s: base %s not verified: %s", repo.repo_id, declared, error)
        files.append(inspection)
    return dataclasses.replace(repo, files=tuple(files))


def _progress(
    total: int, enabled: bool
) -> tuple[Callable[[RepoInspection], None] | None, Callable[[], None]]:
    if not enabled or total == 0:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="repo", desc="scanning", file=sys.stderr, leave=False)
    return (lambda _result: bar.update(1)), bar.close


def resolve_store(config: Config, options: ScanOptions) -> Path:
    return Path(options.store or config.census.store)


class _Marks:
    """The watermark's inputs, folded as repos finish: the newest done, the oldest failed."""

    def __init__(self) -> None:
        self.done: datetime | None = None
        self.failed: datetime | None = None

    def add(self, when: datetime | None, ok: bool) -> None:
        if when is None:
            return
        if ok:
            self.done = when if self.done is None else max(self.done, when)
        else:
            self.failed = when if self.failed is None else min(self.failed, when)

    def scanned(self) -> list[tuple[datetime, bool]]:
        return [(w, ok) for w, ok in ((self.done, True), (self.failed, False)) if w is not None]


def run_scan(config: Config, options: ScanOptions) -> ScanResult:
    started = time.monotonic()
    requests_before, bytes_before, writes_before = METER.snapshot()
    buckets_before = METER.buckets()
    endpoint = resolve_endpoint(config, options)
    api = make_api(endpoint, resolve_token(config, options), timeout=config.hub.timeout)
    policy = RetryPolicy(attempts=config.hub.retries, max_wait=config.hub.max_retry_wait, sleep=options.sleep)
    store = CensusStore(resolve_store(config, options))
    # Shards share one token: each spends its share of every rate-limit window.
    PACER.reset(share=1.0 / options.shard.count if options.shard else 1.0)
    run = datetime.now(timezone.utc).isoformat()
    use_watermark = config.discovery.incremental and not options.repos
    watermark = read_watermark(config.discovery.state_file, options.shard) if use_watermark else None
    log.info("discovering repos%s", f" newer than {watermark.isoformat()}" if watermark else "")
    found = discover(
        api, config.discovery, policy, explicit=options.repos, shard=options.shard, watermark=watermark
    )
    skipped = list(found.skipped)
    # A repo whose listed sha is the one the store read it at costs nothing more: its inspection is reused.
    reused = [r.repo_id for r in found.refs if r.sha and store.reusable_sha(r.repo_id) == r.sha]
    place = {ref.repo_id: n for n, ref in enumerate(found.refs)}  # the report keeps discovery's order
    store.touch(((r, place[r]) for r in reused), run)
    reused_set = set(reused)
    to_read = [r for r in found.refs if r.repo_id not in reused_set]
    log.info(
        "%d repos listed: %d unchanged since the store read them, %d to read; %d skipped",
        len(found.refs),
        len(reused),
        len(to_read),
        len(found.skipped),
    )
    marks = _Marks()
    for ref in found.refs:
        if ref.repo_id in reused_set:
            marks.add(ref.last_modified, True)
    on_progress, close = _progress(len(to_read), options.progress)

    bases = HubBaseReader(RemoteReader(api, policy)) if config.hub.verify_base else None

    def finished(ref: RepoRef, result: RepoInspection) -> None:
        if bases is not None:
            result = verify_declared_base(result, bases)
        opted = opted_out(result.tags, result.card_data)
        store.save(result, run, skipped=OPTED_OUT_IN_CARD if opted else None, seq=place[ref.repo_id])
        marks.add(ref.last_modified, result.error is None)
        if on_progress:
            on_progress(result)

    try:
        inspect_all(RemoteReader(api, policy), to_read, config.hub.workers, finished)
    finally:
        close()
    _, bytes_inspected, _ = METER.snapshot()
    for repo_id in store.repo_ids(run, skipped=True):
        log.info("%s: skipped, the owner opted out in the model card", repo_id)
        # The owner asked to be left alone: no findings in the report, no proposals.
        skipped.append((repo_id, OPTED_OUT_IN_CARD))

    downloads = DownloadBudget(config.proposals.download_budget_bytes)
    outcomes = tuple(
        run_proposals(
            api,
            config,
            _needing_proposals(store, run),
            policy,
            dry_run=options.dry_run,
            max_prs=options.max_prs,
            on_finished=None if options.dry_run else store.mark_proposed,
            build_previews=options.build_previews,
            downloads=downloads,
        )
    )

    # A dry run leaves no trace in the watermark: the next live run must see these repos. (The store keeps
    # what was read: facts, not proposals; their proposals stay pending for a live run.)
    if use_watermark and not options.dry_run:
        unfinished = {o.repo_id for o in outcomes if o.status in UNFINISHED}
        for repo_id in unfinished:
            loaded = store.load(repo_id)
            if loaded is not None:
                marks.add(loaded[0].last_modified, False)
        new_mark = next_watermark(watermark, marks.scanned())
        if new_mark and new_mark != watermark:
            log.info("watermark moves to %s", new_mark.isoformat())
            write_watermark(config.discovery.state_file, new_mark, options.shard)
    requests_after, bytes_after, writes_after = METER.snapshot()
    repos, files = store.count(run)
    stats = ScanStats(
        repos=repos,
        files=files,
        requests=requests_after - requests_before,
        bytes=bytes_after - bytes_before,
        write_requests=writes_after - writes_before,
        seconds=time.monotonic() - started,
        inspect_bytes=bytes_inspected - bytes_before,
        reused=len(reused),
        by_bucket=METER.buckets_since(buckets_before),
        downloads=downloads.summary(),
    )
    return ScanResult(api.endpoint, options.dry_run, StoredRepos(store, run), tuple(skipped), stats, outcomes)


OPTED_OUT_IN_CARD = "opted out in its model card (lora-bot: ignore)"


def _needing_proposals(store: CensusStore, run: str) -> Iterator[RepoInspection]:
    """This run's repos whose proposals are not done for their sha: those read this run, and those an
    earlier run left unfinished (a PR limit, a failure, or a dry run). Loaded one at a time."""
    for repo_id in store.repo_ids(run, skipped=False):
        loaded = store.load(repo_id)
        if loaded is not None and not loaded[2] and loaded[0].error is None:
            yield loaded[0]
