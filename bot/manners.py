"""The manners of a welcome bot: when it holds back a write it could make.

- opt-in mode: only repos whose owners asked (config `opt_in`, the tag `lora-bot-opt-in`, a command);
- a cooldown after the repo's last change (its owner may be mid-upload);
- caps on new PRs per hour (all repos) and per owner per 24 hours, on top of the per-run cap;
- a repo whose PRs and discussions are disabled is recorded once and not asked again for a while.

The caps and the disabled repos need memory across runs: `MannersFile`, a small JSON file beside the
watermark (`manners.json` in the directory of `discovery.state_file`). Losing it costs politeness for one
hour, never a duplicate: the Hub stays the record of what was proposed. The decisions are pure functions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bot.config import ProposalsConfig

OPT_IN_TAG = "lora-bot-opt-in"
HOUR = timedelta(hours=1)
_OPENED = "prs"  # the file's list of [when, repo] of PRs opened
_DISABLED = "discussions_disabled"  # repo → when its PRs/discussions were found disabled
DAY = timedelta(days=1)


def namespace_of(repo_id: str) -> str:
    return repo_id.split("/", 1)[0]


def listed(repo_id: str, entries: Iterable[str]) -> bool:
    """A repo is listed by its id or by its namespace."""
    entries = set(entries)
    return repo_id in entries or namespace_of(repo_id) in entries


def opted_in(repo_id: str, tags: Iterable[str], policy: ProposalsConfig, asked: bool) -> bool:
    return policy.mode == "all" or asked or OPT_IN_TAG in set(tags or ()) or listed(repo_id, policy.opt_in)


def cooling_down(last_modified: datetime | None, policy: ProposalsConfig, now: datetime) -> timedelta | None:
    """How long the repo must still rest before the bot writes to it; None when it may write now. A repo
    whose last change is unknown is not held back (nothing says it is mid-upload)."""
    if policy.cooldown_hours <= 0 or last_modified is None:
        return None
    if last_modified.tzinfo is None:
        last_modified = last_modified.replace(tzinfo=timezone.utc)
    rest = last_modified + timedelta(hours=policy.cooldown_hours) - now
    return rest if rest > timedelta(0) else None


@dataclass(frozen=True)
class Opened:
    when: datetime
    repo_id: str


class MannersFile:
    """The PRs opened recently and the repos with PRs/discussions disabled. Thread-safe; `save` writes it."""

    def __init__(self, path: Path | None, now: datetime) -> None:
        self.path = path
        self.now = now
        self._lock = threading.Lock()
        self.opened: list[Opened] = []
        self.disabled: dict[str, datetime] = {}
        data = _read(path)
        for item in data.get(_OPENED, []):
            try:
                self.opened.append(Opened(datetime.fromisoformat(item[0]), str(item[1])))
            except (TypeError, ValueError, IndexError):
                continue  # a damaged entry costs one cap's precision, nothing else
        for repo_id, when in (data.get(_DISABLED) or {}).items():
            try:
                self.disabled[str(repo_id)] = datetime.fromisoformat(when)
            except (TypeError, ValueError):
                continue
        self.opened = [o for o in self.opened if now - o.when < DAY]

    @classmethod
    def beside(cls, state_file: str | Path, now: datetime) -> MannersFile:
        return cls(Path(state_file).parent / "manners.json", now)

    # --- caps

    def cap_reached(self, repo_id: str, policy: ProposalsConfig) -> str | None:
        """Why a new PR on `repo_id` must wait, or None."""
        with self._lock:
            last_hour = sum(1 for o in self.opened if self.now - o.when < HOUR)
            owner = namespace_of(repo_id)
            owner_day = sum(1 for o in self.opened if namespace_of(o.repo_id) == owner)
        if last_hour >= policy.max_prs_per_hour:
            return f"{last_hour} PR(s) opened in the last hour (max_prs_per_hour {policy.max_prs_per_hour})"
        if owner_day >= policy.max_prs_per_owner:
            return (
                f"{owner_day} PR(s) opened for {owner} in the last 24 hours "
                f"(max_prs_per_owner {policy.max_prs_per_owner})"
            )
        return None

    def record_opened(self, repo_id: str) -> None:
        with self._lock:
            self.opened.append(Opened(self.now, repo_id))

    # --- repos that do not take PRs or discussions

    def disabled_since(self, repo_id: str, policy: ProposalsConfig) -> datetime | None:
        with self._lock:
            since = self.disabled.get(repo_id)
        if since is None or self.now - since >= timedelta(days=policy.disabled_retry_days):
            return None
        return since

    def record_disabled(self, repo_id: str) -> None:
        with self._lock:
            self.disabled[repo_id] = self.now

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = {
                _OPENED: [[o.when.isoformat(), o.repo_id] for o in self.opened],
                _DISABLED: {repo_id: when.isoformat() for repo_id, when in sorted(self.disabled.items())},
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _read(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
