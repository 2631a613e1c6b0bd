"""The scan pipeline: discover → inspect → (propose → execute or print) → report.

Each stage is a module with one job; this file only wires them and keeps the run's bookkeeping (stats,
watermark). A repo that fails is reported with its reason and never stops the others.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from bot.config import Config
from bot.core.repo import RepoInspection, RepoRef, inspect_repo
from bot.hub.client import METER, RetryPolicy, describe_error, make_api
from bot.proposals.stage import run_proposals
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

    def to_json(self) -> dict:
        return {
            "repos": self.repos,
            "files": self.files,
            "requests": self.requests,
            "bytes": self.bytes,
            "write_requests": self.write_requests,
            "seconds": round(self.seconds, 3),
            "inspect_bytes": self.inspect_bytes,
        }


@dataclass(frozen=True)
class ScanResult:
    endpoint: str
    dry_run: bool
    repos: tuple[RepoInspection, ...]
    skipped: tuple[tuple[str, str], ...]
    stats: ScanStats
    outcomes: tuple = field(default=())  # what was proposed and done, filled by the proposal stage


def resolve_endpoint(config: Config, options: ScanOptions) -> str | None:
    return options.endpoint or config.hub.endpoint or os.environ.get("HF_ENDPOINT")


def resolve_token(config: Config, options: ScanOptions) -> str | None:
    return options.token or os.environ.get(config.hub.token_env) or None


def inspect_all(
    reader: RemoteReader,
    refs: tuple[RepoRef, ...],
    workers: int,
    on_done: Callable[[RepoInspection], None] | None = None,
) -> list[RepoInspection]:
    """Inspect repos in parallel; results come back in discovery order, whatever finished first."""
    results: dict[int, RepoInspection] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lora-bot") as pool:
        futures = {
            pool.submit(lambda ref: inspect_repo(reader.read(ref)), ref): i for i, ref in enumerate(refs)
        }
        for future in as_completed(futures):
            index = futures[future]
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 — the source reports errors itself; belt and braces
                result = RepoInspection(
                    refs[index].repo_id, refs[index].sha, error=f"internal error: {describe_error(error)}"
                )
            results[index] = result
            if on_done:
                on_done(result)
    return [results[i] for i in range(len(refs))]


def _progress(
    total: int, enabled: bool
) -> tuple[Callable[[RepoInspection], None] | None, Callable[[], None]]:
    if not enabled or total == 0:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="repo", desc="scanning", file=sys.stderr, leave=False)
    return (lambda _result: bar.update(1)), bar.close


def run_scan(config: Config, options: ScanOptions) -> ScanResult:
    started = time.monotonic()
    requests_before, bytes_before, writes_before = METER.snapshot()
    endpoint = resolve_endpoint(config, options)
    api = make_api(endpoint, resolve_token(config, options), timeout=config.hub.timeout)
    policy = RetryPolicy(attempts=config.hub.retries, max_wait=config.hub.max_retry_wait, sleep=options.sleep)
    use_watermark = config.discovery.incremental and not options.repos
    watermark = read_watermark(config.discovery.state_file, options.shard) if use_watermark else None
    log.info("discovering repos%s", f" newer than {watermark.isoformat()}" if watermark else "")
    found = discover(
        api, config.discovery, policy, explicit=options.repos, shard=options.shard, watermark=watermark
    )
    log.info("%d repos to read, %d skipped", len(found.refs), len(found.skipped))
    on_done, close = _progress(len(found.refs), options.progress)
    try:
        inspected = inspect_all(RemoteReader(api, policy), found.refs, config.hub.workers, on_done)
    finally:
        close()
    _, bytes_inspected, _ = METER.snapshot()
    kept, skipped = [], list(found.skipped)
    for result in inspected:
        if opted_out(result.tags, result.card_data):
            log.info("%s: skipped, the owner opted out in the model card", result.repo_id)
            # The owner asked to be left alone: no findings in the report, no proposals.
            skipped.append((result.repo_id, "opted out in its model card (lora-bot: ignore)"))
        else:
            kept.append(result)

    outcomes = tuple(
        run_proposals(api, config, kept, policy, dry_run=options.dry_run, max_prs=options.max_prs)
    )

    # A dry run leaves no trace anywhere, the watermark included: the next live run must see these repos.
    if use_watermark and not options.dry_run:
        unfinished = {o.repo_id for o in outcomes if o.status in UNFINISHED}
        # The listing's lastModified, the value the next listing is compared with. Repos the listing did not
        # return (`repos` of the config) carry none: they are scanned every run and must not move the mark.
        scanned = [
            (ref.last_modified, result.error is None and result.repo_id not in unfinished)
            for ref, result in zip(found.refs, inspected, strict=True)
        ]
        new_mark = next_watermark(watermark, scanned)
        if new_mark and new_mark != watermark:
            log.info("watermark moves to %s", new_mark.isoformat())
            write_watermark(config.discovery.state_file, new_mark, options.shard)
    requests_after, bytes_after, writes_after = METER.snapshot()
    stats = ScanStats(
        repos=len(kept),
        files=sum(len(r.files) for r in kept),
        requests=requests_after - requests_before,
        bytes=bytes_after - bytes_before,
        write_requests=writes_after - writes_before,
        seconds=time.monotonic() - started,
        inspect_bytes=bytes_inspected - bytes_before,
    )
    return ScanResult(api.endpoint, options.dry_run, tuple(kept), tuple(skipped), stats, outcomes)
