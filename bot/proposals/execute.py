"""Carrying proposals out on the Hub, with the hygiene of a bot that writes to other people's repos.

- The Hub is the only record: the bot's own PRs and discussions (author = the token's user) carry hidden
  markers with the keys they propose. Nothing is opened whose key is already there, open or merged or
  closed by the owner. A PR the owner closed is never reopened.
- A PR whose proposals changed (the repo moved on) is superseded: the new PR is opened, then the old one is
  closed with a link to it. A PR whose proposals all went away is closed with a note.
- Right before any write, the bot's threads are listed again (two runs can race). A write that fails is
  never blindly retried: the bot first looks whether it landed anyway (a lost response), so a flaky
  network cannot produce a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from huggingface_hub import CommitOperationAdd, HfApi

from bot.hub.client import RetryPolicy, describe_error, with_retries
from bot.proposals.model import FLAGS, PR_KINDS, Proposal, Submission, parse_markers, slot_of
from bot.report.bodies import close_note, discussion_body, flags_update_comment, pr_body, resolved_note

OPENED, WOULD_OPEN, UPDATED, WOULD_UPDATE = "opened", "would-open", "updated", "would-update"
# A dry run without a token cannot list the bot's earlier proposals, so it cannot tell what already exists.
UNCHECKED = "not checked against earlier proposals: no token"
EXISTS, CLOSED_BY_OWNER, LIMIT, FAILED, CLOSED_STALE = (
    "exists",
    "closed-by-owner",
    "limit-reached",
    "failed",
    "closed-stale",
)


@dataclass(frozen=True)
class Outcome:
    repo_id: str
    kind: str  # card, config-fix, variant, flags, or group (a PR holding several kinds)
    status: str
    title: str
    keys: tuple[str, ...]
    url: str | None = None
    number: int | None = None
    detail: str | None = None
    submission: Submission | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "kind": self.kind,
            "status": self.status,
            "title": self.title,
            "key": ",".join(self.keys),
            "url": self.url,
            "number": self.number,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class BotThread:
    """One of the bot's own PRs or discussions on a repo, with the keys it records."""

    number: int
    is_pull_request: bool
    status: str  # open, closed, merged, draft
    closed_by_owner: bool
    markers: tuple[dict, ...]  # the latest record of {key, base} per key
    url: str

    @property
    def keys(self) -> set[str]:
        return {m["key"] for m in self.markers}

    @property
    def is_open(self) -> bool:
        return self.status in ("open", "draft")

    def base_of(self, key: str) -> str | None:
        return next((m.get("base") for m in self.markers if m["key"] == key), None)


def read_threads(api: HfApi, repo_id: str, me: str, policy: RetryPolicy) -> list[BotThread]:
    discussions = with_retries(policy, lambda: list(api.get_repo_discussions(repo_id, author=me)))
    threads = []
    for discussion in discussions:
        if discussion.author != me:
            continue  # never trust a thread someone else opened, whatever its body says
        details = with_retries(policy, lambda num=discussion.num: api.get_discussion_details(repo_id, num))
        markers: dict[str, dict] = {}
        last_status_author = None
        for event in details.events:
            if event.type == "comment" and event.author == me:
                for marker in parse_markers(getattr(event, "content", "")):
                    markers[marker["key"]] = marker
            elif event.type == "status-change":
                last_status_author = event.author
        if discussion.is_pull_request is False and markers:
            markers = _latest_flags_marker(details.events, me)
        closed_by_owner = details.status == "closed" and last_status_author != me
        threads.append(
            BotThread(
                discussion.num,
                discussion.is_pull_request,
                details.status,
                closed_by_owner,
                tuple(markers.values()),
                details.url,
            )
        )
    return threads


def _latest_flags_marker(events, me: str) -> dict[str, dict]:
    """A flags discussion is updated by comments: only its latest recorded findings count."""
    latest: dict[str, dict] = {}
    for event in events:
        if event.type == "comment" and event.author == me:
            found = parse_markers(getattr(event, "content", ""))
            if found:
                latest = {m["key"]: m for m in found}
    return latest


# ------------------------------------------------------------------------------------------ planning


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
    for proposal in (p for p in proposals if p.kind != FLAGS):
        holders = [t for t in prs if proposal.key in t.keys]
        if any(t.status == "merged" for t in holders):
            outcomes.append(_settled(proposal, EXISTS, next(t for t in holders if t.status == "merged")))
        elif any(t.status == "closed" and t.closed_by_owner for t in holders):
            closed = next(t for t in holders if t.status == "closed" and t.closed_by_owner)
            outcomes.append(_settled(proposal, CLOSED_BY_OWNER, closed))
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
        outcomes += [_settled(p, EXISTS, up_to_date) for p in current]
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

    flags = next((p for p in proposals if p.kind == FLAGS), None)
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


# ------------------------------------------------------------------------------------------ writing


class Writer:
    """Carries plans out (live) or records what it would do (dry run). One instance per scan."""

    def __init__(
        self,
        api: HfApi,
        me: str | None,
        policy: RetryPolicy,
        dry_run: bool,
        max_prs: int,
        max_prs_per_repo: int,
        title_prefix: str,
        kinds: frozenset[str] = frozenset(PR_KINDS),
    ):
        self.api = api
        self.me = me
        self.policy = policy
        self.dry_run = dry_run
        self.remaining_prs = max_prs
        self.max_prs_per_repo = max_prs_per_repo
        self.title_prefix = title_prefix
        self.kinds = kinds

    def threads(self, repo_id: str) -> list[BotThread]:
        if self.me is None:
            return []  # no token: a dry run cannot see what was proposed before, and says so
        return read_threads(self.api, repo_id, self.me, self.policy)

    def plan(self, repo_id: str, proposals: list[Proposal]) -> RepoPlan:
        """Read-only: what this repo needs, given the bot's threads there. Safe to run for many repos at once."""
        return plan_repo(proposals, self.threads(repo_id), self.title_prefix, self.kinds)

    def execute(self, repo_id: str, plan: RepoPlan) -> list[Outcome]:
        """The writes of one plan. Run one repo at a time, in discovery order, so the PR limits are exact."""
        outcomes = list(plan.outcomes)
        # Unneeded PRs are closed first, so they do not count against the open-PRs-per-repo limit.
        for number in plan.close_stale:
            outcomes.append(self._close(repo_id, number, resolved_note(), CLOSED_STALE))
        if plan.pull_request is not None:
            outcomes += self._pull_request(plan.pull_request)
        outcomes += self._flags(repo_id, plan)
        return outcomes

    # --- pull requests

    def _pull_request(self, submission: Submission) -> list[Outcome]:
        """Open the PR, then close the PRs it supersedes (never the other way round: a failure in between
        must not leave the repo with neither)."""
        base = Outcome(
            submission.repo_id,
            submission.kind,
            WOULD_OPEN,
            submission.title,
            submission.keys,
            submission=submission,
        )
        if self.remaining_prs <= 0:
            return [_with(base, status=LIMIT, detail="max PRs per run reached; proposed again next run")]
        if self.dry_run:
            self.remaining_prs -= 1
            closes = [self._close(submission.repo_id, old, "", "superseded") for old in submission.supersedes]
            return [_with(base, detail=UNCHECKED) if self.me is None else base, *closes]
        threads = self.threads(submission.repo_id)  # again, right before writing: another run may have won
        already = _holding(threads, submission.members, pull_request=True)
        if already is not None:
            return [_with(base, status=EXISTS, url=already.url, number=already.number)]
        still_open = [
            t for t in threads if t.is_pull_request and t.is_open and t.number not in submission.supersedes
        ]
        if len(still_open) >= self.max_prs_per_repo:
            return [_with(base, status=LIMIT, detail=f"{len(still_open)} lora-bot PR(s) already open here")]
        try:
            number, url = self._create_pr(submission)
        except Exception as error:  # noqa: BLE001 — reported; the next run will try again
            return [_with(base, status=FAILED, detail=describe_error(error))]
        self.remaining_prs -= 1
        opened = _with(base, status=OPENED, url=url, number=number)
        return [
            opened,
            *(
                self._close(submission.repo_id, old, close_note(number), "superseded")
                for old in submission.supersedes
            ),
        ]

    def _create_pr(self, submission: Submission) -> tuple[int, str]:
        operations = [
            CommitOperationAdd(
                path_in_repo=f.path, path_or_fileobj=f.content() if f.is_text else str(f.source)
            )
            for f in submission.files
        ]

        def create():
            info = self.api.create_commit(
                submission.repo_id,
                operations,
                commit_message=submission.title,
                commit_description=submission.body,
                create_pr=True,
                parent_commit=submission.revision,
            )
            return info.pr_num, info.pr_url

        return self._idempotent(submission.repo_id, submission.members, True, create)

    def _idempotent(self, repo_id: str, members: tuple[Proposal, ...], pull_request: bool, write):
        """Run a non-idempotent write; after a failure, look for its result before trying again."""
        attempt = 1
        while True:
            try:
                return write()
            except Exception as error:
                landed = _holding(self.threads(repo_id), members, pull_request)
                if landed is not None:
                    return landed.number, landed.url
                wait = self.policy.wait_for(attempt, error) if attempt < self.policy.attempts else None
                if wait is None:
                    raise
                self.policy.sleep(wait)
                attempt += 1

    def _close(self, repo_id: str, number: int, comment: str, status: str, kind: str = "pr") -> Outcome:
        base = Outcome(repo_id, kind, status, f"close #{number}", (), number=number)
        if self.dry_run:
            return _with(base, status=f"would-{status}")
        try:
            with_retries(
                self.policy,
                lambda: self.api.change_discussion_status(repo_id, number, "closed", comment=comment),
            )
        except Exception as error:  # noqa: BLE001
            return _with(base, status=FAILED, detail=describe_error(error))
        return base

    # --- the flags discussion

    def _flags(self, repo_id: str, plan: RepoPlan) -> list[Outcome]:
        proposal, thread = plan.flags, plan.flags_thread
        if proposal is None:
            if thread is not None and thread.is_open and thread.markers:
                return [self._resolve_flags(repo_id, thread)]
            return []
        title = f"{self.title_prefix} {proposal.title[:1].upper()}{proposal.title[1:]}"
        submission = Submission(
            repo_id, proposal.revision, False, title, discussion_body(proposal), (proposal,)
        )
        base = Outcome(repo_id, FLAGS, WOULD_OPEN, title, (proposal.key,), submission=submission)
        if thread is not None and thread.closed_by_owner and not thread.is_open:
            return [_with(base, status=CLOSED_BY_OWNER, url=thread.url, number=thread.number)]
        if thread is not None and proposal.key in thread.keys:
            return [_with(base, status=EXISTS, url=thread.url, number=thread.number)]
        if thread is not None:
            return [self._update_flags(repo_id, thread, proposal, base)]
        if self.dry_run:
            return [_with(base, detail=UNCHECKED) if self.me is None else base]
        threads = self.threads(repo_id)
        already = _holding(threads, (proposal,), pull_request=False)
        if already is not None:
            return [_with(base, status=EXISTS, url=already.url, number=already.number)]

        def create():
            discussion = self.api.create_discussion(repo_id, title, description=submission.body)
            return discussion.num, discussion.url

        try:
            number, url = self._idempotent(repo_id, (proposal,), False, create)
        except Exception as error:  # noqa: BLE001
            return [_with(base, status=FAILED, detail=describe_error(error))]
        return [_with(base, status=OPENED, url=url, number=number)]

    def _update_flags(self, repo_id: str, thread: BotThread, proposal: Proposal, base: Outcome) -> Outcome:
        if self.dry_run:
            return _with(base, status=WOULD_UPDATE, url=thread.url, number=thread.number)
        comment = flags_update_comment(proposal)

        def post():
            self.api.comment_discussion(repo_id, thread.number, comment)
            return thread.number, thread.url

        try:
            self._idempotent(repo_id, (proposal,), False, post)
        except Exception as error:  # noqa: BLE001
            return _with(base, status=FAILED, detail=describe_error(error))
        return _with(base, status=UPDATED, url=thread.url, number=thread.number)

    def _resolve_flags(self, repo_id: str, thread: BotThread) -> Outcome:
        return self._close(repo_id, thread.number, resolved_note(discussion=True), "resolved", kind=FLAGS)


def _holding(threads: list[BotThread], members: tuple[Proposal, ...], pull_request: bool) -> BotThread | None:
    """A live thread of the right type that records every member with the same base: the same change,
    built on the same files. (A thread with the same keys but an older base is stale, not a duplicate.)"""
    for thread in threads:
        if thread.is_pull_request != pull_request or not (thread.is_open or thread.status == "merged"):
            continue
        if all(m.key in thread.keys and thread.base_of(m.key) == m.base for m in members):
            return thread
    return None


def _with(outcome: Outcome, **changes) -> Outcome:
    return replace(outcome, **changes)
