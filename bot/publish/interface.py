"""One walk over a repo's plan, whoever carries it out.

`publish_plan` decides the order and the limits (unneeded PRs closed first so they do not count against the
per-repo limit; a new PR before the ones it supersedes are closed; the flags discussion last). A `Publisher`
does each act: the Hub publisher writes, the dry-run publisher reports what it would write. The two differ
only in what an act does, never in what is decided.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from bot.proposals.model import Outcome, Proposal, Submission
from bot.proposals.plan import BotThread, RepoPlan
from bot.report.bodies import discussion_body, resolved_note
from bot.vocab import ProposalKind, Status

log = logging.getLogger(__name__)


@dataclass
class PrBudget:
    """The run's PR limits. Mutable on purpose: one budget is spent across all the repos of a run."""

    remaining: int  # PRs this run may still open
    per_repo: int  # open lora-bot PRs a repo may hold


class Publisher(ABC):
    """Does the acts of a plan. Subclasses: `bot.publish.hub.HubPublisher`, `bot.publish.dry_run.DryRunPublisher`."""

    @abstractmethod
    def threads(self, repo_id: str) -> list[BotThread]:
        """The bot's own PRs and discussions on the repo ([] when they cannot be read)."""

    @abstractmethod
    def open_pull_request(self, submission: Submission, proposed: Outcome, budget: PrBudget) -> list[Outcome]:
        """Open the PR, then close the PRs it supersedes; the PR's outcome comes first."""

    @abstractmethod
    def open_discussion(self, submission: Submission, proposed: Outcome) -> Outcome: ...

    @abstractmethod
    def comment(self, repo_id: str, thread: BotThread, proposal: Proposal, proposed: Outcome) -> Outcome:
        """Add the changed findings to the open flags discussion."""

    @abstractmethod
    def close(self, repo_id: str, number: int, comment: str, status: Status, kind: ProposalKind) -> Outcome:
        """Close a thread with a note; `status` says why (superseded, closed-stale, resolved)."""

    def converge(self, repo_id: str) -> list[Outcome]:
        """After this run's writes: close what a concurrent run duplicated (nothing to do by default)."""
        return []


def closing(repo_id: str, number: int, status: Status, kind: ProposalKind) -> Outcome:
    return Outcome(repo_id, kind, status, f"close #{number}", (), number=number)


def publish_plan(
    repo_id: str, plan: RepoPlan, publisher: Publisher, budget: PrBudget, title_prefix: str
) -> list[Outcome]:
    """The acts of one plan, in order. Run one repo at a time, in discovery order, so the limits are exact."""
    outcomes = list(plan.outcomes)
    for number in plan.close_stale:
        log.info("%s: closing #%d, no longer needed", repo_id, number)
        outcomes.append(
            publisher.close(repo_id, number, resolved_note(), Status.CLOSED_STALE, ProposalKind.PR)
        )
    if plan.pull_request is not None:
        outcomes += _pull_request(plan.pull_request, publisher, budget)
    outcomes += _flags(repo_id, plan, publisher, title_prefix)
    # The re-check before each write cannot close the race between two runs (both check, then both write):
    # after writing, the Hub state converges instead, to one open thread per change.
    if any(o.status == Status.OPENED for o in outcomes):
        outcomes += publisher.converge(repo_id)
    return outcomes


def _pull_request(submission: Submission, publisher: Publisher, budget: PrBudget) -> list[Outcome]:
    proposed = Outcome(
        submission.repo_id,
        submission.kind,
        Status.WOULD_OPEN,
        submission.title,
        submission.keys,
        submission=submission,
    )
    if budget.remaining <= 0:
        log.info("%s: PR held back, the run's PR limit is reached", submission.repo_id)
        return [
            replace(
                proposed,
                status=Status.LIMIT_REACHED,
                detail="max PRs per run reached; proposed again next run",
            )
        ]
    outcomes = publisher.open_pull_request(submission, proposed, budget)
    if outcomes[0].status in (Status.OPENED, Status.WOULD_OPEN):
        budget.remaining -= 1
    return outcomes


def _flags(repo_id: str, plan: RepoPlan, publisher: Publisher, title_prefix: str) -> list[Outcome]:
    proposal, thread = plan.flags, plan.flags_thread
    if proposal is None:
        if thread is not None and thread.is_open and thread.markers:
            log.info("%s: the findings of discussion #%d are resolved", repo_id, thread.number)
            return [
                publisher.close(
                    repo_id,
                    thread.number,
                    resolved_note(discussion=True),
                    Status.RESOLVED,
                    ProposalKind.FLAGS,
                )
            ]
        return []
    title = f"{title_prefix} {proposal.title[:1].upper()}{proposal.title[1:]}"
    submission = Submission(repo_id, proposal.revision, False, title, discussion_body(proposal), (proposal,))
    proposed = Outcome(
        repo_id, ProposalKind.FLAGS, Status.WOULD_OPEN, title, (proposal.key,), submission=submission
    )
    if thread is not None and thread.closed_by_owner and not thread.is_open:
        log.info("%s: the owner closed the findings discussion #%d; not reopened", repo_id, thread.number)
        return [replace(proposed, status=Status.CLOSED_BY_OWNER, url=thread.url, number=thread.number)]
    if thread is not None and proposal.key in thread.keys:
        return [replace(proposed, status=Status.EXISTS, url=thread.url, number=thread.number)]
    if thread is not None:
        return [publisher.comment(repo_id, thread, proposal, proposed)]
    return [publisher.open_discussion(submission, proposed)]
