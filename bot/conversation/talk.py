"""A repo's conversation with the bot: who may command it, which commands wait for an answer, and what
answered commands left behind (an opt-out, requested variant ranks). Pure, except `Owners`, which asks
the Hub who belongs to an organisation.

Who may command: the repo's owner, i.e. the user whose namespace it is, or a member of the organisation
whose namespace it is. Anyone else is not answered at all. Silence, not a polite refusal, on purpose:
a refusal is a write the commenter chose, so anyone could make the bot post on any repo it has a thread
on, as often as they like: the "excessive bulk activity" a bot must never produce. A stranger's
comment costs the owner nothing and the bot no write.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from bot.conversation.commands import CommandRequest
from bot.hub.client import RetryPolicy, with_retries
from bot.proposals.plan import BotThread
from bot.vocab import Command

log = logging.getLogger(__name__)


class Owners:
    """Whether a user may command the bot on a repo; organisation members read once per run and org."""

    def __init__(self, api: HfApi, policy: RetryPolicy) -> None:
        self.api = api
        self.policy = policy
        self._members: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def members(self, namespace: str) -> frozenset[str]:
        with self._lock:
            if namespace in self._members:
                return self._members[namespace]
        try:
            found = frozenset(
                m.username
                for m in with_retries(
                    self.policy, lambda: list(self.api.list_organization_members(namespace))
                )
            )
        except HfHubHTTPError as error:
            # 404: a user's namespace, not an organisation. Anything else: nobody but the namespace's
            # own name is trusted this run; the command waits for the next run.
            status = error.response.status_code if error.response is not None else None
            if status != 404:
                log.info("%s: organisation members not readable (%s)", namespace, status)
            found = frozenset()
        with self._lock:
            self._members[namespace] = found
        return found

    def may_command(self, author: str, repo_id: str) -> bool:
        namespace = repo_id.split("/", 1)[0]
        return author == namespace or author in self.members(namespace)


@dataclass(frozen=True)
class Conversation:
    """What a repo's owners asked the bot, as the Hub records it."""

    pending: tuple[CommandRequest, ...]  # from owners, not answered yet, oldest first
    ignored: int  # commands from people who may not command the bot (never answered)
    opted_out: bool  # `ignore repo`, answered before or waiting now
    variant_ranks: tuple[int, ...]  # ranks owners asked for, answered before (and built) or waiting now

    @property
    def asked(self) -> bool:
        """The owners spoke to the bot (what `proposals.mode: opt-in` counts as asking)."""
        return bool(self.pending) or self.opted_out or bool(self.variant_ranks)


def read_conversation(threads: list[BotThread], may_command) -> Conversation:
    """`may_command(author) -> bool` decides who is an owner; it is only asked about unanswered commands."""
    records = [r for t in threads for r in t.records]
    answered = {r["comment"] for r in records}
    pending, ignored = [], 0
    for thread in threads:
        for request in thread.commands:
            if request.comment_id in answered:
                continue
            if may_command(request.author):
                pending.append(request)
            else:
                ignored += 1
    opted_out = any(r.get("command") == Command.IGNORE_REPO for r in records) or any(
        p.command == Command.IGNORE_REPO for p in pending
    )
    ranks = {
        r["rank"] for r in records if r.get("command") == Command.VARIANT and isinstance(r.get("rank"), int)
    }
    ranks |= {int(p.argument) for p in pending if p.command == Command.VARIANT and p.argument}
    return Conversation(tuple(pending), ignored, opted_out, tuple(sorted(ranks)))


def apply_pending(threads: list[BotThread], conversation: Conversation) -> list[BotThread]:
    """The threads as the plan must see them once the waiting commands are done: an ignored thread is
    closed by its owner; a thread to recreate no longer counts as up to date (the plan supersedes it)."""
    by_thread: dict[int, Command] = {}
    for request in conversation.pending:
        if request.command in (Command.IGNORE, Command.RECREATE):
            by_thread[request.thread] = request.command  # the latest of the two wins
    changed = []
    for thread in threads:
        command = by_thread.get(thread.number)
        if command == Command.IGNORE:
            thread = dataclasses.replace(thread, status="closed", closed_by_owner=True)
        elif command == Command.RECREATE:
            stale = tuple({**m, "base": None} for m in thread.markers)
            thread = dataclasses.replace(thread, markers=stale, closed_by_owner=False)
        changed.append(thread)
    return changed
