"""The scan's memory between runs: a lastModified watermark per shard, in a small JSON file.

A repo listed with a lastModified at or before the watermark was scanned by an earlier run and is skipped
by an incremental scan. The mark never moves past a repo that failed or whose proposals must be made again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from bot.sources.discovery import Shard


def _marks(state_file: str | Path) -> dict:
    try:
        marks = json.loads(Path(state_file).read_text(encoding="utf-8"))["watermarks"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no state or a damaged one: a full scan costs time, never a duplicate
    return marks if isinstance(marks, dict) else {}


def _mark_key(shard: Shard | None) -> str:
    # Each shard K/N, and the unsharded scan, covers other repos: one's watermark must not hide another's.
    return f"{shard.index}/{shard.count}" if shard else "all"


def read_watermark(state_file: str | Path, shard: Shard | None = None) -> datetime | None:
    try:
        return datetime.fromisoformat(_marks(state_file)[_mark_key(shard)])
    except (KeyError, TypeError, ValueError):
        return None


def write_watermark(state_file: str | Path, watermark: datetime, shard: Shard | None = None) -> None:
    path = Path(state_file)
    marks = {**_marks(path), _mark_key(shard): watermark.isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"watermarks": marks}, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def next_watermark(
    previous: datetime | None, scanned: Iterable[tuple[datetime | None, bool]]
) -> datetime | None:
    """The newest lastModified scanned, but never past a repo that failed: it must be scanned again."""
    done = [when for when, ok in scanned if when and ok]
    failed = [when for when, ok in scanned if when and not ok]
    if not done:
        return previous
    candidate = max(done)
    if failed:
        earliest_failure = min(failed)
        candidate = min(candidate, earliest_failure - _EPSILON)
    return max(candidate, previous) if previous else candidate


_EPSILON = timedelta(microseconds=1)
