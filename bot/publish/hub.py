"""Publishing on the Hub, with the hygiene of a bot that writes to other people's repos.

- Right before any write, the bot's threads are listed again: another run may have won the race.
- A write that fails is never blindly retried: the bot first looks whether it landed anyway (a lost
  response), so a flaky network cannot produce a duplicate.
"""

from __future__ import annotations

import logging
from abc import ABC
from dataclasses import replace

from huggingface_hub import CommitOperationAdd, HfApi

from bot.hub.client import RetryPolicy, describe_error, with_retries
from bot.proposals.model import Outcome, Proposal, Submission
from bot.proposals.plan import BotThread, bot_thread, duplicates, holding
from bot.publish.interface import PrBudget, Publisher, closing
from bot.report.bodies import close_note, duplicate_note, flags_update_comment
from bot.vocab import ProposalKind, Status

log = logging.getLogger(__name__)


def read_threads(api: HfApi, repo_id: str, me: str | None, policy: RetryPolicy) -> list[BotThread]:
    """The bot's own PRs and discussions on a repo, as its own comments record them; none without a token."""
    if me is None:
        return []
    discussions = with_retries(policy, lambda: list(api.get_repo_discussions(repo_id, author=me)))
    threads = []
    for discussion in discussions:
        if discussion.author != me:
            continue  # never trust a thread someone else opened, whatever its body says
        details = with_retries(policy, lambda num=discussion.num: api.get_discussion_details(repo_id, num))
        threads.append(bot_thread(discussion, details, me))
    return threads


class HubThreadsPublisher(Publisher, ABC):
    """A publisher that knows the bot's earlier threads from the Hub (a dry run with a token reads them too)."""

    def __init__(self, api: HfApi, me: str | None, policy: RetryPolicy) -> None:
        self.api = api
        self.me = me  # the token's user; None without a token
        self.policy = policy

    def threads(self, repo_id: str) -> list[BotThread]:
        return read_threads(self.api, repo_id, self.me, self.policy)


class HubPublisher(HubThreadsPublisher):
    def open_pull_request(self, submission: Submission, proposed: Outcome, budget: PrBudget) -> list[Outcome]:
        threads = self.threads(submission.repo_id)  # again, right before writing: another run may have won
        already = holding(threads, submission.members, pull_request=True)
        if already is not None:
            return [replace(proposed, status=Status.EXISTS, url=already.url, number=already.number)]
        still_open = [
            t for t in threads if t.is_pull_request and t.is_open and t.number not in submission.supersedes
        ]
        if len(still_open) >= budget.per_repo:
            log.info("%s: PR held back, %d lora-bot PR(s) already open", submission.repo_id, len(still_open))
            return [
                replace(
                    proposed,
                    status=Status.LIMIT_REACHED,
                    detail=f"{len(still_open)} lora-bot PR(s) already open here",
                )
            ]
        try:
            number, url = self._create_pr(submission)
        except Exception as error:  # noqa: BLE001 — reported; the next run will try again
            return [replace(proposed, status=Status.FAILED, detail=describe_error(error))]
        log.info("%s: opened PR #%d: %s", submission.repo_id, number, submission.title)
        opened = replace(proposed, status=Status.OPENED, url=url, number=number)
        # Superseded PRs are closed only after the new one is open: a failure in between leaves one, never none.
        closes = [
            self.close(submission.repo_id, old, close_note(number), Status.SUPERSEDED, ProposalKind.PR)
            for old in submission.supersedes
        ]
        return [opened, *closes]

    def _create_pr(self, submission: Submission) -> tuple[int, str]:
        operations = [
            CommitOperationAdd(
                path_in_repo=f.path, path_or_fileobj=f.content() if f.is_text else str(f.source)
            )
            for f in submission.files
        ]

        def create() -> tuple[int, str]:
            info = self.api.create_commit(
                submission.repo_id,
                operations,
                commit_message=submission.title,
                commit_description=submission.body,
                create_pr=True,
                parent_commit=submission.revision,
            )
            return info.pr_num, info.pr_url

        return self._write_once(submission.repo_id, submission.members, True, create)

    def _write_once(self, repo_id: str, members: tuple[Proposal, ...], pull_request: bool, write):
        """A non-idempotent write, retried only after looking for its result on the Hub."""

        def landed() -> tuple[int, str] | None:
            thread = holding(self.threads(repo_id), members, pull_request)
            return (thread.number, thread.url) if thread is not None else None

        return with_retries(self.policy, write, recover=landed)

    def open_discussion(self, submission: Submission, proposed: Outcome) -> Outcome:
        already = holding(self.threads(submission.repo_id), submission.members, pull_request=False)
        if already is not None:
            return replace(proposed, status=Status.EXISTS, url=already.url, number=already.number)

        def create() -> tuple[int, str]:
            discussion = self.api.create_discussion(
                submission.repo_id, submission.title, description=submission.body
            )
            return discussion.num, discussion.url

        try:
            number, url = self._write_once(submission.repo_id, submission.members, False, create)
        except Exception as error:  # noqa: BLE001
            return replace(proposed, status=Status.FAILED, detail=describe_error(error))
        log.info("%s: opened discussion #%d", submission.repo_id, number)
        return replace(proposed, status=Status.OPENED, url=url, number=number)

    def comment(self, repo_id: str, thread: BotThread, proposal: Proposal, proposed: Outcome) -> Outcome:
        comment = flags_update_comment(proposal)

        def post() -> tuple[int, str]:
            self.api.comment_discussion(repo_id, thread.number, comment)
            return thread.number, thread.url

        try:
            self._write_once(repo_id, (proposal,), False, post)
        except Exception as error:  # noqa: BLE001
            return replace(proposed, status=Status.FAILED, detail=describe_error(error))
        log.info("%s: updated discussion #%d", repo_id, thread.number)
        return replace(proposed, status=Status.UPDATED, url=thread.url, number=thread.number)

    def converge(self, repo_id: str) -> list[Outcome]:
        try:
            threads = self.threads(repo_id)
        except Exception as error:  # noqa: BLE001 — the next run converges instead
            log.info("%s: threads not read again after writing: %s", repo_id, describe_error(error))
            return []
        outcomes = []
        for newer, older in duplicates(threads):
            log.info("%s: #%d duplicates #%d (a concurrent run); closing #%d", repo_id, newer, older, newer)
            kind = (
                ProposalKind.PR
                if next(t for t in threads if t.number == newer).is_pull_request
                else ProposalKind.FLAGS
            )
            outcomes.append(self.close(repo_id, newer, duplicate_note(older), Status.DUPLICATE_CLOSED, kind))
        return outcomes

    def close(self, repo_id: str, number: int, comment: str, status: Status, kind: ProposalKind) -> Outcome:
        done = closing(repo_id, number, status, kind)
        try:
            with_retries(
                self.policy,
                lambda: self.api.change_discussion_status(repo_id, number, "closed", comment=comment),
            )
        except Exception as error:  # noqa: BLE001
            return replace(done, status=Status.FAILED, detail=describe_error(error))
        log.info("%s: closed #%d (%s)", repo_id, number, status)
        return done
