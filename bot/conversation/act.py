"""Owners' commands carried out and answered, around the publishing of one repo's plan.

Order, per repo (`carry_out`):
1. a repo opted out (`ignore repo`, now or before): its open lora-bot threads are closed, waiting commands
   answered, nothing proposed;
2. `ignore`: the thread is closed, the reply its closing comment; `recreate` on an open PR: the PR is
   closed first, so the plan opens a fresh one from the current head;
3. the plan is published (`bot.publish.publish_plan`), within the manners' caps;
4. every other waiting command gets its reply, written from what this run did.

Each reply carries the record of the comment it answers (`bot.conversation.commands.render_record`), and is
written once: a failed write is retried only after looking for the record on the Hub.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from huggingface_hub import HfApi

from bot.conversation.commands import CommandRequest, parse_records, render_record
from bot.conversation.talk import Conversation
from bot.core.flags import CODES
from bot.core.repo import RepoInspection
from bot.hub.client import RetryPolicy, describe_error, with_retries
from bot.manners import MannersFile
from bot.proposals.model import Outcome, Proposal
from bot.proposals.plan import BotThread, RepoPlan
from bot.publish.interface import PrBudget, Publisher, publish_plan
from bot.report.text import plural
from bot.vocab import Command, FlagCode, ProposalKind, Status

log = logging.getLogger(__name__)

COMMAND_LIST = (
    "`@lora-bot ignore`, `@lora-bot ignore repo`, `@lora-bot recreate`, `@lora-bot variant rN`, "
    "`@lora-bot check`, `@lora-bot explain CODE`"
)
_DONE_PR = (Status.OPENED, Status.EXISTS, Status.WOULD_OPEN)


@dataclass(frozen=True)
class Prepared:
    """One repo, read and planned in the worker pool, waiting to be carried out in discovery order."""

    repo: RepoInspection
    threads: tuple[BotThread, ...] = ()
    conversation: Conversation | None = None
    proposals: tuple[Proposal, ...] = ()
    plan: RepoPlan | None = None
    held: Outcome | None = None  # a manners rule held the whole repo back: this says which
    failures: tuple = ()  # proposals that could not be built (`bot.proposals.build.BuildFailure`)
    deferred: tuple = ()  # proposals put off by the run's download budget (`bot.hub.download.Deferral`)


class Responder:
    """Writes replies and closes threads for commands (or, in a dry run, says it would)."""

    def __init__(self, api: HfApi, policy: RetryPolicy, me: str | None, dry_run: bool) -> None:
        self.api = api
        self.policy = policy
        self.me = me
        self.dry_run = dry_run

    def reply(
        self, repo_id: str, thread: BotThread, request: CommandRequest, text: str, record: dict, close: bool
    ) -> Outcome:
        body = f"{text}\n\n{render_record({'comment': request.comment_id, 'command': request.command, **record})}"
        done = _command_outcome(repo_id, request, thread, Status.REPLIED, text.splitlines()[0])
        if self.dry_run:
            log.info("DRY-RUN %s: would answer %s on #%d", repo_id, request.command, thread.number)
            return replace(done, status=Status.WOULD_REPLY)

        def write() -> None:
            if close:
                self.api.change_discussion_status(repo_id, thread.number, "closed", comment=body)
            else:
                self.api.comment_discussion(repo_id, thread.number, body)

        def landed() -> bool | None:
            details = self.api.get_discussion_details(repo_id, thread.number)
            mine = [e for e in details.events if e.type == "comment" and e.author == self.me]
            if any(r["comment"] == request.comment_id for e in mine for r in parse_records(e.content or "")):
                return True
            return None

        try:
            with_retries(self.policy, write, recover=landed)
        except Exception as error:  # noqa: BLE001 — the command stays unanswered and is read again next run
            return replace(done, status=Status.FAILED, detail=describe_error(error))
        log.info("%s: answered %s from %s on #%d", repo_id, request.command, request.author, thread.number)
        return done

    def close(self, repo_id: str, number: int, note: str | None) -> None:
        if self.dry_run:
            log.info("DRY-RUN %s: would close #%d", repo_id, number)
            return
        with_retries(
            self.policy, lambda: self.api.change_discussion_status(repo_id, number, "closed", comment=note)
        )


def carry_out(
    prepared: Prepared,
    publisher: Publisher,
    responder: Responder,
    budget: PrBudget,
    title_prefix: str,
    manners: MannersFile,
    policy,
) -> list[Outcome]:
    repo = prepared.repo
    if prepared.held is not None:
        return [prepared.held]
    conversation = prepared.conversation
    threads = {t.number: t for t in prepared.threads}
    pending = conversation.pending if conversation else ()
    if conversation is not None and conversation.opted_out:
        return _opted_out(repo, threads, pending, responder)

    outcomes, answered = _before_publishing(repo.repo_id, threads, pending, responder)
    plan = prepared.plan
    if plan is not None and plan.pull_request is not None:
        why = manners.cap_reached(repo.repo_id, policy)
        if why is not None:
            held = Outcome(
                repo.repo_id,
                plan.pull_request.kind,
                Status.LIMIT_REACHED,
                plan.pull_request.title,
                plan.pull_request.keys,
                detail=why,
            )
            log.info("%s: PR held back: %s", repo.repo_id, why)
            plan = replace(plan, pull_request=None, outcomes=(*plan.outcomes, held))
    published = publish_plan(repo.repo_id, plan, publisher, budget, title_prefix) if plan is not None else []
    for outcome in published:
        if outcome.status == Status.OPENED and outcome.submission and outcome.submission.is_pull_request:
            manners.record_opened(repo.repo_id)
    outcomes = published + outcomes

    for request in pending:
        if request.comment_id in answered:
            continue
        thread = threads[request.thread]
        text, record = _answer(request, prepared, published)
        outcomes.append(responder.reply(repo.repo_id, thread, request, text, record, close=False))
    return outcomes


def _before_publishing(
    repo_id: str, threads: dict[int, BotThread], pending, responder: Responder
) -> tuple[list[Outcome], set[str]]:
    """`ignore` answered (closing its thread), open PRs to recreate closed; (outcomes, answered ids)."""
    outcomes: list[Outcome] = []
    answered: set[str] = set()
    for request in pending:
        thread = threads[request.thread]
        if request.command == Command.IGNORE:
            what = "change" if thread.is_pull_request else "finding"
            text = (
                f"Understood: lora-bot will not propose this {what} again, and this "
                f"{'PR' if thread.is_pull_request else 'discussion'} is closed. "
                "(Changed your mind? `@lora-bot recreate`.)"
            )
            outcomes.append(responder.reply(repo_id, thread, request, text, {}, close=thread.is_open))
            answered.add(request.comment_id)
        elif request.command == Command.RECREATE and thread.is_pull_request and thread.is_open:
            try:
                responder.close(repo_id, thread.number, None)
            except Exception as error:  # noqa: BLE001 — nothing recreated; answered next run
                outcomes.append(
                    _command_outcome(repo_id, request, thread, Status.FAILED, describe_error(error))
                )
                answered.add(request.comment_id)
    return outcomes, answered


def _opted_out(repo: RepoInspection, threads: dict[int, BotThread], pending, responder: Responder) -> list:
    outcomes = [
        Outcome(
            repo.repo_id,
            ProposalKind.REPO,
            Status.OPTED_OUT,
            "proposals",
            (),
            detail="the owner opted out with `@lora-bot ignore repo`",
        )
    ]
    if not pending:
        return outcomes
    command_threads = {r.thread for r in pending if r.command == Command.IGNORE_REPO}
    to_close = [t for t in threads.values() if t.is_open and t.number not in command_threads]
    note = "Closed: the owner asked lora-bot to leave this repo alone (`@lora-bot ignore repo`)."
    for thread in to_close:
        try:
            responder.close(repo.repo_id, thread.number, note)
        except Exception as error:  # noqa: BLE001 — closed on the next run: the opt-out is recorded
            log.info("%s: #%d not closed: %s", repo.repo_id, thread.number, describe_error(error))
    closed_now = len(to_close) + sum(1 for n in command_threads if threads[n].is_open)
    closing: set[int] = set()
    for request in pending:
        thread = threads[request.thread]
        if request.command == Command.IGNORE_REPO:
            text = (
                f"Understood: lora-bot leaves `{repo.repo_id}` alone from now on: no new PRs, discussions or "
                f"comments ({plural(closed_now, 'open lora-bot thread')} closed)."
            )
            close = thread.is_open and thread.number not in closing
            closing.add(thread.number)
        else:
            text = "Not done: this repo is opted out of lora-bot (`@lora-bot ignore repo`)."
            close = False
        outcomes.append(responder.reply(repo.repo_id, thread, request, text, {}, close=close))
    return outcomes


def _command_outcome(
    repo_id: str, request: CommandRequest, thread: BotThread, status: Status, detail: str
) -> Outcome:
    """What became of an owner's command, as the report lists it."""
    return Outcome(
        repo_id,
        ProposalKind.COMMAND,
        status,
        f"@lora-bot {request.command} from {request.author}",
        (),
        url=thread.url,
        number=thread.number,
        detail=detail,
    )


def _pr_outcome(published: list[Outcome]) -> Outcome | None:
    return next(
        (o for o in published if o.submission is not None and o.submission.is_pull_request),
        next((o for o in published if o.kind != ProposalKind.FLAGS and o.status in _DONE_PR), None),
    )


def _pr_sentence(outcome: Outcome | None) -> str:
    if outcome is None:
        return "No PR is needed."
    if outcome.status == Status.OPENED:
        return f"Opened #{outcome.number}."
    if outcome.status == Status.WOULD_OPEN:
        return "A PR would be opened (dry run)."
    if outcome.status == Status.EXISTS:
        return f"#{outcome.number} is up to date."
    return f"The PR is held back ({outcome.status}: {outcome.detail or 'see the next run'})."


def _answer(request: CommandRequest, prepared: Prepared, published: list[Outcome]) -> tuple[str, dict]:
    repo = prepared.repo
    sha = (repo.sha or "")[:7]
    if request.command == Command.EXPLAIN:
        doc = CODES.get(request.argument) if request.argument in set(FlagCode) else None
        if doc is None:
            return (
                f"`{request.argument}` is not a lora-bot flag code. Codes: "
                + ", ".join(f"`{c}`" for c in FlagCode)
                + ".",
                {},
            )
        return f"**`{doc.code}`** ({doc.severity}): {doc.summary}.\n\n{doc.explanation}", {}
    if request.command == Command.VARIANT:
        return _variant_answer(int(request.argument), prepared, published)
    if request.command in (Command.CHECK, Command.RECREATE):
        findings = sum(len(f.flags) for f in repo.files)
        verb = "Recreated from" if request.command == Command.RECREATE else "Inspected again at"
        return (
            f"{verb} the current head `{sha}`: {plural(findings, 'finding')} in "
            f"{plural(len(repo.files), 'LoRA file')}. {_pr_sentence(_pr_outcome(published))}",
            {},
        )
    return f"lora-bot does not know `{request.argument}`. Commands: {COMMAND_LIST}.", {}


def _variant_answer(rank: int, prepared: Prepared, published: list[Outcome]) -> tuple[str, dict]:
    built = [p for p in prepared.proposals if p.kind == ProposalKind.VARIANT and p.facts.get("rank") == rank]
    if not built:
        return (
            f"No rank-{rank} variant could be made here: lora-bot converts single LoRA files of plain "
            "low-rank products (PEFT, diffusers, kohya) without error findings, to a rank they do not have "
            "already.",
            {},
        )
    paths = ", ".join(f"`{f.path}`" for p in built for f in p.files if not f.is_text)
    keys = {p.key for p in built}
    pr = next((o for o in published if keys & set(o.keys)), None)
    if pr is not None and pr.status in _DONE_PR:
        where = f"in #{pr.number}" if pr.number else "in a new PR (dry run)"
        return f"Added {paths}, a rank-{rank} copy, {where}.", {"rank": rank}
    detail = f" ({pr.status}: {pr.detail})" if pr is not None else ""
    return (
        f"Built {paths}, a rank-{rank} copy; its PR is held back{detail} and is opened on a later run.",
        {"rank": rank},
    )
