"""The propose stage of a scan: each repo's proposals built and planned, then handed to the publish stage.

Building proposals and reading the bot's threads are reads (and, for variants, CPU work): they run in the
worker pool. Publishing then happens one repo at a time, in discovery order, so the PR limits are exact.
A live run publishes on the Hub; a dry run's publisher only says what it would do.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import HfApi

from bot.config import Config
from bot.core.repo import RepoInspection
from bot.core.selection import CARD_NAME
from bot.hub.client import RetryPolicy, describe_error, with_retries
from bot.hub.download import DownloadBudget, Downloader
from bot.proposals.build import RepoFacts, build_proposals
from bot.proposals.metadata import MetadataFixBuilder
from bot.proposals.model import Outcome
from bot.proposals.plan import plan_repo
from bot.proposals.variants import VariantBuilder
from bot.publish.dry_run import DryRunPublisher
from bot.publish.hub import HubPublisher
from bot.publish.interface import PrBudget, Publisher, publish_plan
from bot.sources.hub import RemoteReader
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
    repo: RepoInspection, read_text: Callable[[str, str, str], str] | None = None, card: bool = True
) -> RepoFacts:
    """The builders' view of a repo, with the texts inspection read. README.md is not read by inspection
    when the listing carried the card's metadata: a card proposal needs its text, so it is read here, once."""
    texts = dict(repo.texts)
    if card and read_text is not None and CARD_NAME in repo.sizes and CARD_NAME not in texts:
        texts[CARD_NAME] = read_text(repo.repo_id, CARD_NAME, repo.sha)
    return RepoFacts(repo.repo_id, repo.sha, repo.files, texts, dict(repo.card_data), tuple(repo.sizes))


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
    budget: DownloadBudget | None = None,
) -> list[Outcome]:
    """Proposals for every fully inspected repo, in the order given; a failure is reported as the failed
    repo's own outcome (every eligible repo's, when the bot cannot even learn its own name), never raised.

    Repos are taken a few at a time (`repos` may be a census streamed from the store). `on_finished` hears
    of each repo whose proposals are all done, none held back by a limit, a failure or the download budget.
    `budget` (the run's, so the report can tell what was downloaded) defaults to a fresh one from config."""
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
    with tempfile.TemporaryDirectory(prefix="lora-bot-weights-") as scratch:
        if budget is None:
            budget = DownloadBudget(config.proposals.download_budget_bytes)
        downloader = Downloader(api, policy, Path(scratch) / "cache", budget)
        # A dry run reads headers only: proposals built from whole weight files (metadata fixes, variants)
        # are previewed only when asked for (`--build-previews`), never as a side effect.
        downloads = not dry_run or build_previews
        metadata_builder = (
            MetadataFixBuilder(downloader, Path(scratch))
            if config.proposals.config_fix and downloads
            else None
        )
        variant_builder = (
            VariantBuilder(downloader, config.proposals.variant_policy, Path(scratch))
            if config.proposals.variants and downloads
            else None
        )

        def prepare(repo: RepoInspection):
            facts = facts_of(repo, reader.read_text, card=config.proposals.card)
            proposals = build_proposals(facts, config.proposals, metadata_builder, variant_builder)
            deferred = budget.take_deferred(repo.repo_id)
            # An open PR of a deferred kind is not stale: its proposal was simply not built this run.
            planned_kinds = kinds - {d.kind for d in deferred}
            plan = plan_repo(
                proposals, publisher.threads(repo.repo_id), config.proposals.title_prefix, planned_kinds
            )
            return plan, deferred

        workers = config.hub.workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lora-bot-propose") as pool:
            while True:
                chunk = list(itertools.islice(eligible, workers * 2))
                if not chunk:
                    break
                plans = [pool.submit(prepare, repo) for repo in chunk]
                for repo, future in zip(chunk, plans, strict=True):
                    try:
                        plan, deferred = future.result()
                        done = publish_plan(repo.repo_id, plan, publisher, prs, config.proposals.title_prefix)
                        done += [
                            Outcome(d.repo_id, d.kind, Status.DEFERRED, d.title, (), detail=d.detail)
                            for d in deferred
                        ]
                    except Exception as error:  # noqa: BLE001 — one repo's failure never stops the run
                        done = [_failed(repo, error)]
                    outcomes += done
                    if on_finished and not any(o.status in UNFINISHED for o in done):
                        on_finished(repo.repo_id, repo.sha)
    return outcomes


def _failed(repo: RepoInspection, error: BaseException) -> Outcome:
    return Outcome(
        repo.repo_id, ProposalKind.REPO, Status.FAILED, "proposals", (), detail=describe_error(error)
    )
