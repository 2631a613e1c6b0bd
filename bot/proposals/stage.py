"""The proposal stage of a scan: build each repo's proposals, then open, update or preview them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import HfApi

from bot.config import Config
from bot.core.repo import RepoInspection
from bot.hub.client import RetryPolicy, describe_error, with_retries
from bot.hub.download import Downloader
from bot.proposals.build import RepoFacts, build_proposals
from bot.proposals.execute import FAILED, Outcome, Writer
from bot.proposals.metadata import MetadataFixBuilder
from bot.proposals.model import CARD, CONFIG_FIX, METADATA_FIX, VARIANT
from bot.proposals.variants import VariantBuilder


def bot_user(api: HfApi, policy: RetryPolicy) -> str | None:
    """The token's user name: the author the bot's own PRs and discussions are recognised by."""
    if not api.token:
        return None
    return with_retries(policy, lambda: api.whoami())["name"]


def enabled_kinds(config: Config) -> frozenset[str]:
    policy = config.proposals
    switches = {
        CARD: policy.card,
        CONFIG_FIX: policy.config_fix,
        METADATA_FIX: policy.config_fix,
        VARIANT: policy.variants,
    }
    return frozenset(kind for kind, on in switches.items() if on)


def facts_of(repo: RepoInspection) -> RepoFacts:
    return RepoFacts(
        repo.repo_id, repo.sha, repo.files, dict(repo.texts), dict(repo.card_data), tuple(repo.sizes)
    )


def run_proposals(
    api: HfApi,
    config: Config,
    repos: Iterable[RepoInspection],
    policy: RetryPolicy,
    *,
    dry_run: bool,
    max_prs: int | None,
) -> list[Outcome]:
    """Proposals for every fully inspected repo, in discovery order; a failure is reported as the failed
    repo's own outcome (every eligible repo's, when the bot cannot even learn its own name), never raised."""
    eligible = [r for r in repos if r.error is None]  # a partial picture is no ground for writing
    try:
        me = bot_user(api, policy)
    except Exception as error:  # noqa: BLE001 — the findings stand; these repos are proposed next run
        return [_failed(repo, error) for repo in eligible]
    writer = Writer(
        api,
        me,
        policy,
        dry_run=dry_run,
        max_prs=config.proposals.max_prs_per_run if max_prs is None else max_prs,
        max_prs_per_repo=config.proposals.max_prs_per_repo,
        title_prefix=config.proposals.title_prefix,
        kinds=enabled_kinds(config),
    )
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="lora-bot-weights-") as scratch:
        downloader = Downloader(api, policy, Path(scratch) / "cache")
        metadata_builder = (
            MetadataFixBuilder(downloader, Path(scratch)) if config.proposals.config_fix else None
        )
        variant_builder = (
            VariantBuilder(downloader, config.proposals.variant_policy, Path(scratch))
            if config.proposals.variants
            else None
        )
        # Building proposals and reading the bot's threads are reads (and, for variants, CPU work): they run
        # in the worker pool. The writes then happen one repo at a time, in discovery order.

        def prepare(repo: RepoInspection):
            proposals = build_proposals(facts_of(repo), config.proposals, metadata_builder, variant_builder)
            return writer.plan(repo.repo_id, proposals)

        with ThreadPoolExecutor(
            max_workers=config.hub.workers, thread_name_prefix="lora-bot-propose"
        ) as pool:
            plans = [pool.submit(prepare, repo) for repo in eligible]
            for repo, future in zip(eligible, plans, strict=True):
                try:
                    outcomes += writer.execute(repo.repo_id, future.result())
                except Exception as error:  # noqa: BLE001 — one repo's failure never stops the run
                    outcomes.append(_failed(repo, error))
    return outcomes


def _failed(repo: RepoInspection, error: BaseException) -> Outcome:
    return Outcome(repo.repo_id, "repo", FAILED, "proposals", (), detail=describe_error(error))
