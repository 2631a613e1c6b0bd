"""The propose stage of a scan: each repo's proposals built and planned, then handed to the publish stage.

Building proposals and reading the bot's threads are reads (and, for variants, CPU work): they run in the
worker pool. Publishing then happens one repo at a time, in discovery order, so the PR limits are exact.
A live run publishes on the Hub; a dry run's publisher only says what it would do.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import HfApi

from bot.config import Config
from bot.core.repo import RepoInspection
from bot.hub.client import RetryPolicy, describe_error, is_transient, with_retries
from bot.hub.download import Downloader
from bot.proposals.build import BuildFailure, RepoFacts, build_repo_proposals
from bot.proposals.metadata import MetadataFixBuilder
from bot.proposals.model import Outcome
from bot.proposals.plan import RepoPlan, plan_repo
from bot.proposals.variants import VariantBuilder
from bot.publish.dry_run import DryRunPublisher
from bot.publish.hub import HubPublisher
from bot.publish.interface import PrBudget, Publisher, publish_plan
from bot.vocab import ProposalKind, Status


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
    publisher: Publisher = DryRunPublisher(api, me, policy) if dry_run else HubPublisher(api, me, policy)
    budget = PrBudget(
        remaining=config.proposals.max_prs_per_run if max_prs is None else max_prs,
        per_repo=config.proposals.max_prs_per_repo,
    )
    kinds = enabled_kinds(config)
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

        def prepare(repo: RepoInspection) -> tuple[RepoPlan, tuple[BuildFailure, ...]]:
            built = build_repo_proposals(facts_of(repo), config.proposals, metadata_builder, variant_builder)
            failed_kinds = {f.kind for f in built.failures}
            # An open PR of a kind that failed to build this run is not "no longer needed": it is left alone,
            # like a kind switched off; a findings discussion is never closed as resolved on a failed build.
            plan = plan_repo(
                list(built.proposals),
                publisher.threads(repo.repo_id),
                config.proposals.title_prefix,
                kinds - failed_kinds,
            )
            if ProposalKind.FLAGS in failed_kinds:
                plan = dataclasses.replace(plan, flags_thread=None)
            return plan, built.failures

        with ThreadPoolExecutor(
            max_workers=config.hub.workers, thread_name_prefix="lora-bot-propose"
        ) as pool:
            plans = [pool.submit(prepare, repo) for repo in eligible]
            for repo, future in zip(eligible, plans, strict=True):
                try:
                    plan, failures = future.result()
                    outcomes += [_unbuilt(repo, failure) for failure in failures]
                    outcomes += publish_plan(
                        repo.repo_id, plan, publisher, budget, config.proposals.title_prefix
                    )
                except Exception as error:  # noqa: BLE001 — one repo's failure never stops the run
                    outcomes.append(_failed(repo, error))
    return outcomes


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
