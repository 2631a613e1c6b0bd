"""The propose stage of a scan: each repo's proposals built and planned, then handed to the publish stage.

Building proposals and reading the bot's threads are reads (and, for variants, CPU work): they run in the
worker pool. Publishing then happens one repo at a time, in discovery order, so the PR limits are exact.
A live run publishes on the Hub; a dry run's publisher only says what it would do.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from bot.config import Config
from bot.conversation.act import Prepared, Responder, carry_out
from bot.conversation.talk import Owners, apply_pending, read_conversation
from bot.core.repo import RepoInspection
from bot.core.selection import CARD_NAME
from bot.hub.client import RetryPolicy, describe_error, is_transient, with_retries
from bot.hub.download import DownloadBudget, Downloader
from bot.manners import MannersFile, cooling_down, listed, opted_in
from bot.proposals.build import BuildFailure, RepoFacts, build_repo_proposals
from bot.proposals.metadata import MetadataFixBuilder
from bot.proposals.model import Outcome
from bot.proposals.plan import plan_repo
from bot.proposals.variants import VariantBuilder
from bot.publish.dry_run import DryRunPublisher
from bot.publish.hub import HubPublisher
from bot.publish.interface import PrBudget, Publisher
from bot.sources.hub import RemoteReader, TextRefused
from bot.vocab import UNFINISHED, ProposalKind, Status


def bot_user(api: HfApi, policy: RetryPolicy) -> str | None:
    """The token's user name: the author the bot's own PRs and discussions are recognised by."""
    if not api.token:
        return None
    return with_retries(policy, lambda: api.whoami())["name"]


def enabled_kinds(config: Config) -> frozenset[str]:
    policy = config.proposals
    switches = {
        ProposalKind.CARD: policy.card,
        ProposalKind.CONFIG_FIX: policy.config_fix,
        ProposalKind.METADATA_FIX: policy.config_fix,
        ProposalKind.VARIANT: policy.variants,
    }
    return frozenset(kind for kind, on in switches.items() if on)


def facts_of(
    repo: RepoInspection, read_text: Callable[..., str] | None = None, card: bool = True
) -> tuple[RepoFacts, tuple[BuildFailure, ...]]:
    """The builders' view of a repo, with the texts inspection read. README.md is not read by inspection
    when the listing carried the card's metadata: a card proposal needs its text, so it is read here, once.
    A card that cannot be read whole and exactly (too big, not UTF-8) stays out of `texts`, so it is never
    rewritten, and the refusal is the card proposal's failure, for the report."""
    texts = dict(repo.texts)
    failures: tuple[BuildFailure, ...] = ()
    if card and read_text is not None and CARD_NAME in repo.sizes and CARD_NAME not in texts:
        try:
            texts[CARD_NAME] = read_text(repo.repo_id, CARD_NAME, repo.sha, repo.sizes.get(CARD_NAME))
        except TextRefused as error:
            failures = (BuildFailure(ProposalKind.CARD, CARD_NAME, error),)

    facts = RepoFacts(repo.repo_id, repo.sha, repo.files, texts, dict(repo.card_data), tuple(repo.sizes))
    return facts, failures


def run_proposals(
    api: HfApi,
    config: Config,
    repos: Iterable[RepoInspection],
    policy: RetryPolicy,
    *,
    dry_run: bool,
    max_prs: int | None,
    on_finished: Callable[[str, str | None], None] | None = None,
    build_previews: bool = False,
    now: datetime | None = None,
    downloads: DownloadBudget | None = None,
) -> list[Outcome]:
    """Proposals for every fully inspected repo, in the order given; a failure is reported as the failed
    repo's own outcome (every eligible repo's, when the bot cannot even learn its own name), never raised.

    Repos are taken a few at a time (`repos` may be a census streamed from the store). `on_finished` hears
    of each repo whose proposals are all done, none held back by a limit, a failure or the download budget.
    `downloads` (the run's, so the report can tell what was downloaded) defaults to a fresh one from config."""
    policy_switches = config.proposals
    if not (
        policy_switches.card
        or policy_switches.config_fix
        or policy_switches.variants
        or policy_switches.flag_discussions
    ):
        return []  # nothing to propose: not even the bot's name is asked for
    eligible = (r for r in repos if r.error is None)  # a partial picture is no ground for writing
    first = next(eligible, None)
    if first is None:
        return []
    eligible = itertools.chain([first], eligible)
    try:
        me = bot_user(api, policy)
    except Exception as error:  # noqa: BLE001 — the findings stand; these repos are proposed next run
        return [_failed(repo, error) for repo in eligible]
    publisher: Publisher = DryRunPublisher(api, me, policy) if dry_run else HubPublisher(api, me, policy)
    prs = PrBudget(
        remaining=config.proposals.max_prs_per_run if max_prs is None else max_prs,
        per_repo=config.proposals.max_prs_per_repo,
    )
    kinds = enabled_kinds(config)
    reader = RemoteReader(api, policy)
    outcomes: list[Outcome] = []
    now = now or datetime.now(timezone.utc)
    manners = MannersFile.beside(config.discovery.state_file, now)
    owners = Owners(api, policy)
    responder = Responder(api, policy, me, dry_run)
    with tempfile.TemporaryDirectory(prefix="lora-bot-weights-") as scratch:
        if downloads is None:
            downloads = DownloadBudget(config.proposals.download_budget_bytes)
        downloader = Downloader(api, policy, Path(scratch) / "cache", downloads)
        # A dry run reads headers only: proposals built from whole weight files (metadata fixes, variants)
        # are previewed only when asked for (`--build-previews`), never as a side effect.
        whole_files = not dry_run or build_previews
        metadata_builder = (
            MetadataFixBuilder(downloader, Path(scratch))
            if config.proposals.config_fix and whole_files
            else None
        )
        variant_builder = (
            VariantBuilder(downloader, config.proposals.variant_policy, Path(scratch))
            if config.proposals.variants and whole_files
            else None
        )

        def prepare(repo: RepoInspection) -> Prepared:
            return _prepare(
                repo,
                config,
                publisher,
                owners,
                manners,
                now,
                kinds,
                metadata_builder,
                variant_builder,
                reader,
                downloads,
            )

        workers = config.hub.workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lora-bot-propose") as pool:
            while True:  # a few repos at a time: `eligible` may stream a whole census from the store
                chunk = list(itertools.islice(eligible, workers * 2))
                if not chunk:
                    break
                plans = [pool.submit(prepare, repo) for repo in chunk]
                for repo, future in zip(chunk, plans, strict=True):
                    try:
                        prepared = future.result()
                        done = [_unbuilt(repo, failure) for failure in prepared.failures]
                        done += carry_out(
                            prepared,
                            publisher,
                            responder,
                            prs,
                            config.proposals.title_prefix,
                            manners,
                            config.proposals,
                        )
                        done += [
                            Outcome(d.repo_id, d.kind, Status.DEFERRED, d.title, (), detail=d.detail)
                            for d in prepared.deferred
                        ]
                    except Exception as error:  # noqa: BLE001 — one repo's failure never stops the run
                        done = [_failed(repo, error)]
                    outcomes += done
                    if on_finished and not any(o.status in UNFINISHED for o in done):
                        on_finished(repo.repo_id, repo.sha)
    if not dry_run:
        manners.save()
    return outcomes


def _held(repo: RepoInspection, status: Status, detail: str) -> Prepared:
    return Prepared(
        repo, held=Outcome(repo.repo_id, ProposalKind.REPO, status, "proposals", (), detail=detail)
    )


def _disabled(error: BaseException) -> bool:
    """The Hub refuses to list a repo's discussions: its PRs and discussions are disabled (a 403 on a read
    of a public repo's discussions means nothing else the bot could fix by asking again)."""
    response = getattr(error, "response", None)
    return isinstance(error, HfHubHTTPError) and response is not None and response.status_code == 403


def _prepare(
    repo: RepoInspection,
    config: Config,
    publisher: Publisher,
    owners: Owners,
    manners: MannersFile,
    now: datetime,
    kinds: frozenset[str],
    metadata_builder,
    variant_builder,
    reader: RemoteReader,
    downloads: DownloadBudget,
) -> Prepared:
    """Read the repo's threads and its owners' commands, apply the manners, build and plan the proposals."""
    policy = config.proposals
    since = manners.disabled_since(repo.repo_id, policy)
    if since is not None:
        return _held(repo, Status.DISABLED, f"PRs/discussions disabled (recorded {since.date().isoformat()})")
    try:
        threads = publisher.threads(repo.repo_id)
    except Exception as error:
        if not _disabled(error):
            raise
        manners.record_disabled(repo.repo_id)
        return _held(repo, Status.DISABLED, "PRs/discussions disabled; not asked again for a while")
    conversation = read_conversation(threads, lambda author: owners.may_command(author, repo.repo_id))
    if conversation.opted_out:
        return Prepared(repo, tuple(threads), conversation)
    if not opted_in(repo.repo_id, repo.tags, policy, conversation.asked):
        return _held(repo, Status.NOT_OPTED_IN, "mode opt-in: the owner has not asked for lora-bot")
    writes_anything = bool(kinds) or policy.flag_discussions
    rest = (
        cooling_down(repo.last_modified, policy, now)
        if writes_anything and not conversation.pending
        else None
    )
    if rest is not None:
        minutes = int(rest.total_seconds() // 60) + 1
        return _held(repo, Status.COOLDOWN, f"modified recently; writes wait {minutes} more minute(s)")
    variants = (
        functools.partial(
            variant_builder,
            requested=conversation.variant_ranks,
            by_policy=listed(repo.repo_id, policy.variant_repos),
        )
        if variant_builder is not None
        else None
    )
    facts, unread = facts_of(repo, reader.read_text, card=policy.card)
    built = build_repo_proposals(facts, policy, metadata_builder, variants)
    built = dataclasses.replace(built, failures=unread + built.failures)
    deferred = downloads.take_deferred(repo.repo_id)
    # An open PR of a kind that failed to build, or that the download budget put off, is not "no longer
    # needed": it is left alone, like a kind switched off; a findings discussion is never closed as resolved
    # on a failed build.
    failed_kinds = {f.kind for f in built.failures} | {d.kind for d in deferred}
    plan = plan_repo(
        list(built.proposals), apply_pending(threads, conversation), policy.title_prefix, kinds - failed_kinds
    )
    if ProposalKind.FLAGS in failed_kinds:
        plan = dataclasses.replace(plan, flags_thread=None)
    return Prepared(
        repo,
        tuple(threads),
        conversation,
        tuple(built.proposals),
        plan,
        failures=built.failures,
        deferred=deferred,
    )


def _unbuilt(repo: RepoInspection, failure: BuildFailure) -> Outcome:
    """A proposal that could not be built. A Hub failure (a download) is tried again next run and holds the
    watermark; anything else is about the repo's files and would fail the same way next run."""
    status = Status.FAILED if is_transient(failure.error) else Status.UNBUILDABLE
    return Outcome(
        repo.repo_id,
        failure.kind,
        status,
        f"{failure.kind} for {failure.about}",
        (),
        detail=f"not built: {describe_error(failure.error)}",
    )


def _failed(repo: RepoInspection, error: BaseException) -> Outcome:
    return Outcome(
        repo.repo_id, ProposalKind.REPO, Status.FAILED, "proposals", (), detail=describe_error(error)
    )
