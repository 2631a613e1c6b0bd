"""Planning a repo's proposals against the bot's earlier threads there. Pure: values in, a `RepoPlan` out.

- The Hub is the only record: the bot's own PRs and discussions (author = the token's user) carry hidden
  markers with the keys they propose. Nothing is opened whose key is already there, open or merged or
  closed by the owner. A PR the owner closed is never reopened.
- A PR whose proposals changed (the repo moved on) is superseded: the plan opens the new PR and closes the
  old one with a link to it. A PR whose proposals all went away is closed with a note.

Carrying a plan out (or previewing it) is `bot.publish`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.conversation.commands import CommandRequest, parse_records, thread_commands
from bot.proposals.model import PR_KINDS, Outcome, Proposal, Submission, parse_markers, slot_of
from bot.report.bodies import pr_body
from bot.vocab import Command, ProposalKind, Status


@dataclass(frozen=True)
class BotThread:
    """One of the bot's own PRs or discussions on a repo, with the keys it records."""

    number: int
    is_pull_request: bool
    status: str  # open, closed, merged, draft
    closed_by_owner: bool
    markers: tuple[dict, ...]  # the latest record of {key, base} per key
    url: str
    commands: tuple[CommandRequest, ...] = ()  # `@lora-bot ...` comments by others (bot.conversation)
    records: tuple[dict, ...] = ()  # the bot's records of the commands it answered here

    @property
    def keys(self) -> set[str]:
        return {m["key"] for m in self.markers}

    @property
    def is_open(self) -> bool:
        return self.status in ("open", "draft")

    def base_of(self, key: str) -> str | None:
        return next((m.get("base") for m in self.markers if m["key"] == key), None)


def bot_thread(discussion, details, me: str) -> BotThread:
    """A thread as the bot recorded it: only its own comments count, and who changed its status last.
    An owner's `@lora-bot ignore` counts as the owner closing it; a later `recreate` undoes both."""
    markers: dict[str, dict] = {}
    # Closed with no status change on record counts as the owner's act, as before: never reopened.
    closed_by_other, ignored = True, False
    for event in details.events:
        if event.type == "comment" and event.author == me:
            content = getattr(event, "content", "")
            for marker in parse_markers(content):
                markers[marker["key"]] = marker
            for record in parse_records(content):
                if record.get("command") == Command.IGNORE:
                    ignored = True
                elif record.get("command") == Command.RECREATE:
                    ignored = closed_by_other = False
        elif event.type == "status-change":
            closed_by_other = event.author != me
    if discussion.is_pull_request is False and markers:
        markers = _latest_flags_marker(details.events, me)
    closed_by_owner = details.status == "closed" and (closed_by_other or ignored)
    commands, records = thread_commands(details.events, discussion.num, me)
    return BotThread(
        discussion.num,
        discussion.is_pull_request,
        details.status,
        closed_by_owner,
        tuple(markers.values()),
        details.url,
        commands,
        records,
    )


def _latest_flags_marker(events, me: str) -> dict[str, dict]:
    """A flags discussion is updated by comments: only its latest recorded findings count."""
    latest: dict[str, dict] = {}
    for event in events:
        if event.type == "comment" and event.author == me:
            found = parse_markers(getattr(event, "content", ""))
            if found:
                latest = {m["key"]: m for m in found}
    return latest


@dataclass(frozen=True)
class RepoPlan:
    pull_request: Submission | None  # the PR to open (grouping every current PR proposal)
    close_stale: tuple[int, ...]  # open bot PRs none of whose proposals is current any more
    flags: Proposal | None  # the flags proposal, to open or to update
    flags_thread: BotThread | None
    outcomes: tuple[Outcome, ...]  # what is settled already (exists, closed by the owner)


def plan_repo(
    proposals: list[Proposal],
    threads: list[BotThread],
    title_prefix: str,
    kinds: frozenset[str] = frozenset(PR_KINDS),
) -> RepoPlan:
    """What to open, supersede, close and update on one repo. `kinds` are the PR kinds this run proposes:
    an open PR of a kind the operator switched off is left alone rather than closed as stale."""
    prs = [t for t in threads if t.is_pull_request]
    outcomes: list[Outcome] = []
    current: list[Proposal] = []
    for proposal in (p for p in proposals if p.kind != ProposalKind.FLAGS):
        holders = [t for t in prs if proposal.key in t.keys]
        if any(t.status == "merged" for t in holders):
            outcomes.append(
                _settled(proposal, Status.EXISTS, next(t for t in holders if t.status == "merged"))
            )
        elif any(t.status == "closed" and t.closed_by_owner for t in holders):
            closed = next(t for t in holders if t.status == "closed" and t.closed_by_owner)
            outcomes.append(_settled(proposal, Status.CLOSED_BY_OWNER, closed))
        else:
            current.append(proposal)

    open_prs = [t for t in prs if t.is_open]
    current_keys = {p.key for p in current}
    up_to_date = (
        next(
            (
                t
                for t in open_prs
                if t.keys == current_keys and all(t.base_of(p.key) == p.base for p in current)
            ),
            None,
        )
        if current
        else None
    )
    pull_request = None
    if up_to_date is not None:
        outcomes += [_settled(p, Status.EXISTS, up_to_date) for p in current]
    elif current:
        slots = {p.slot for p in current}
        supersedes = tuple(t.number for t in open_prs if {slot_of(k) for k in t.keys} & slots)
        revision = current[0].revision
        title = _pr_title(title_prefix, current)
        pull_request = Submission(
            current[0].repo_id,
            revision,
            True,
            title,
            pr_body(current, supersedes),
            tuple(current),
            supersedes,
        )
    keep = set(pull_request.supersedes) if pull_request else set()
    if up_to_date is not None:
        keep.add(up_to_date.number)
    close_stale = tuple(
        t.number
        for t in open_prs
        if t.number not in keep
        and not (t.keys & current_keys)
        and t.keys
        and all(slot_of(k).split(":", 1)[0] in kinds for k in t.keys)
    )

    flags = next((p for p in proposals if p.kind == ProposalKind.FLAGS), None)
    discussions = [t for t in threads if not t.is_pull_request]
    flags_thread = next((t for t in discussions if t.is_open), None) or next(
        (t for t in discussions if t.closed_by_owner), None
    )
    return RepoPlan(pull_request, close_stale, flags, flags_thread, tuple(outcomes))


def _settled(proposal: Proposal, status: str, thread: BotThread) -> Outcome:
    return Outcome(
        proposal.repo_id, proposal.kind, status, proposal.title, (proposal.key,), thread.url, thread.number
    )


def _pr_title(prefix: str, members: list[Proposal]) -> str:
    text = "; ".join(p.title for p in members)
    title = f"{prefix} {text[:1].upper()}{text[1:]}".strip()
    return title if len(title) <= 120 else title[:117] + "..."


def holding(threads: list[BotThread], members: tuple[Proposal, ...], pull_request: bool) -> BotThread | None:
    """A live thread of the right type that records every member with the same base: the same change,
    built on the same files. (A thread with the same keys but an older base is stale, not a duplicate.)"""
    for thread in threads:
        if thread.is_pull_request != pull_request or not (thread.is_open or thread.status == "merged"):
            continue
        if all(m.key in thread.keys and thread.base_of(m.key) == m.base for m in members):
            return thread
    return None


def duplicates(threads: list[BotThread]) -> list[tuple[int, int]]:
    """(newer, older) pairs of open threads of the same type where the older already proposes every key of
    the newer: what two racing runs leave behind. The newer one is the duplicate, whichever run sees it, so
    two runs converging at once pick the same thread to close and never close both."""
    found = []
    live = sorted((t for t in threads if t.is_open and t.keys), key=lambda t: t.number)
    for index, newer in enumerate(live):
        older = next(
            (t for t in live[:index] if t.is_pull_request == newer.is_pull_request and newer.keys <= t.keys),
            None,
        )
        if older is not None:
            found.append((newer.number, older.number))
    return found
