"""A dry run's publisher: every act is reported as what it would be (`would-open`, `would-superseded`, ...)
and nothing is written. With a token it still reads the bot's threads, so it says what already exists."""

from __future__ import annotations

import logging
from dataclasses import replace

from bot.proposals.model import Outcome, Proposal, Submission
from bot.proposals.plan import BotThread
from bot.publish.hub import HubThreadsPublisher
from bot.publish.interface import PrBudget, closing
from bot.vocab import ProposalKind, Status

log = logging.getLogger(__name__)

# A dry run without a token cannot list the bot's earlier proposals, so it cannot tell what already exists.
UNCHECKED = "not checked against earlier proposals: no token"


class DryRunPublisher(HubThreadsPublisher):
    # Without a token what was proposed before cannot be seen (no threads); the outcomes say so.

    def _unchecked(self, proposed: Outcome) -> Outcome:
        return replace(proposed, detail=UNCHECKED) if self.me is None else proposed

    def open_pull_request(self, submission: Submission, proposed: Outcome, budget: PrBudget) -> list[Outcome]:
        log.info("DRY-RUN %s: would open a PR: %s", submission.repo_id, submission.title)
        closes = [
            self.close(submission.repo_id, old, "", Status.SUPERSEDED, ProposalKind.PR)
            for old in submission.supersedes
        ]
        return [self._unchecked(proposed), *closes]

    def open_discussion(self, submission: Submission, proposed: Outcome) -> Outcome:
        log.info("DRY-RUN %s: would open a discussion: %s", submission.repo_id, submission.title)
        return self._unchecked(proposed)

    def comment(self, repo_id: str, thread: BotThread, proposal: Proposal, proposed: Outcome) -> Outcome:
        log.info("DRY-RUN %s: would comment on discussion #%d", repo_id, thread.number)
        return replace(proposed, status=Status.WOULD_UPDATE, url=thread.url, number=thread.number)

    def close(self, repo_id: str, number: int, comment: str, status: Status, kind: ProposalKind) -> Outcome:
        log.info("DRY-RUN %s: would close #%d (%s)", repo_id, number, status)
        return closing(repo_id, number, status.dry_run_form, kind)
