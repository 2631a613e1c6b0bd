"""Variant proposals: rank-converted copies of a LoRA file, made by the resize engine.

By the config's policy: a reduced variant when a file's rank is above `reduce_above_rank` and
`reduce_to_rank` keeps at least `min_energy` of the Frobenius energy; a zero-padded variant at the rank a
config declares when the weights have another (the FaceChain case: code that expects r=8 gets r=8).

Placed where loaders find them: a PEFT adapter gets a subfolder with its own adapter_config.json
(`subfolder="r8"`), a single-file LoRA a sibling file (`weight_name="x-r16.safetensors"`).
Like metadata fixes, variants need the weights themselves, so the source file is downloaded.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from bot.config import VariantPolicy
from bot.core.inspect import FileInspection, inspect_evidence
from bot.core.limits import MAX_VARIANT_BYTES
from bot.core.peft_config import ConfigError, parse_peft_config
from bot.core.selection import CONFIG_NAME
from bot.hub.download import Deferral, Downloader, OverBudget
from bot.proposals.build import RepoFacts, config_path_for
from bot.proposals.model import FileChange, Proposal
from bot.report.text import code_span, human_size
from bot.sources.local import collect
from bot.vocab import FlagCode, ProposalKind

RESIZABLE_FORMATS = ("peft", "diffusers", "diffusers-legacy", "kohya")
# Findings that make a file unfit to convert: a variant of a broken or non-product file would be broken too.
BLOCKING = {
    FlagCode.CORRUPT_HEADER,
    FlagCode.UNPAIRED_MODULE,
    FlagCode.PAIR_SHAPE_MISMATCH,
    FlagCode.DORA_PRESENT,
    FlagCode.NON_LORA_ADAPTER,
    FlagCode.NOT_AN_ADAPTER,
    FlagCode.PICKLE_ONLY,
    FlagCode.CONFIG_INVALID,
    FlagCode.PATTERN_UNCHECKED,
}


@dataclass(frozen=True)
class Target:
    rank: int
    reason: str  # "reduce", "pad", or "request" (an owner's `@lora-bot variant rN`)


def declared_rank(facts: RepoFacts, item: FileInspection) -> int | None:
    """The rank the sibling adapter_config.json declares for the whole file, when it is not the weights'."""
    config_path = config_path_for(facts, item.path)
    text = facts.texts.get(config_path) if config_path else None
    if text is None:
        return None
    try:
        config = parse_peft_config(text)
    except ConfigError:
        return None
    return config.r if config.r and not config.rank_pattern and config.r != item.rank else None


def targets_for(
    facts: RepoFacts,
    item: FileInspection,
    policy: VariantPolicy,
    requested: tuple[int, ...] = (),
    by_policy: bool = True,
) -> list[Target]:
    """The ranks to build: the policy's (only for repos the operator listed, `by_policy`) and the ranks the
    owner asked for in a comment, which are built whatever the policy says."""
    if item.format not in RESIZABLE_FORMATS or item.rank is None or item.codes() & BLOCKING:
        return []
    if item.size is not None and item.size > policy.max_variant_bytes:
        return []
    single_rank = len(item.ranks) == 1
    # Padding a mixed-rank file to one rank is not a copy of it; reducing it is.
    asked = [
        Target(rank, "request")
        for rank in sorted(set(requested))
        if rank != item.rank and (single_rank or rank < item.rank)
    ]
    if not by_policy:
        return _within_cap(item, asked, policy)
    found = []
    if item.rank > policy.reduce_above_rank and policy.reduce_to_rank < item.rank:
        found.append(Target(policy.reduce_to_rank, "reduce"))
    declared = declared_rank(facts, item)
    if policy.pad_to_declared_rank and declared and declared > item.rank and single_rank:
        found.append(Target(declared, "pad"))
    ranks = {t.rank for t in found}
    return _within_cap(item, found + [t for t in asked if t.rank not in ranks], policy)


def _within_cap(item: FileInspection, targets: list[Target], policy: VariantPolicy) -> list[Target]:
    cap = min(policy.max_variant_bytes, MAX_VARIANT_BYTES)
    # Checked before anything is downloaded or built: a declared r of 4096 must not write 3 GB to find out.
    return [t for t in targets if estimated_variant_bytes(item, t.rank) <= cap]


def estimated_variant_bytes(item: FileInspection, rank: int) -> int:
    """The variant's size from the header alone: the factors scale with the rank (every module of a
    resizable file is a rank-r product), so size × new rank / rank, with room for the header."""
    if item.size is None or not item.rank:
        return 0 if item.size is None else item.size
    return item.size * rank // item.rank + (item.header_bytes or 0)


def variant_path(item: FileInspection, rank: int) -> str:
    """Where the variant goes in the repo: a PEFT subfolder, or a sibling file."""
    folder = posixpath.dirname(item.path)
    if item.format == "peft":
        return posixpath.join(folder, f"r{rank}", posixpath.basename(item.path))
    stem, extension = posixpath.splitext(item.path)
    return f"{stem}-r{rank}{extension}"


def variant_title(item: FileInspection, target: Target) -> str:
    return f"add a rank-{target.rank} variant of {posixpath.basename(item.path)}"


def how_to_load(repo_id: str, item: FileInspection, path: str) -> str:
    if item.format == "peft":
        folder = posixpath.dirname(path)
        return (
            f'```python\nmodel = PeftModel.from_pretrained(base_model, "{repo_id}", '
            f'subfolder="{folder}")\n```'
        )
    return (
        f'```python\npipe.load_lora_weights("{repo_id}", weight_name="{path}")\n```\n'
        "or use the file directly in ComfyUI / A1111."
    )


class VariantBuilder:
    """Callable on a repo's facts; downloads the weights it converts into `scratch`."""

    def __init__(self, downloader: Downloader, policy: VariantPolicy, scratch: Path) -> None:
        self.downloader = downloader
        self.policy = policy
        self.scratch = scratch

    def __call__(
        self, facts: RepoFacts, requested: tuple[int, ...] = (), by_policy: bool = True
    ) -> list[Proposal]:
        proposals = []
        for item in facts.files:
            for target in targets_for(facts, item, self.policy, requested, by_policy):
                path = variant_path(item, target.rank)
                if path in facts.paths:
                    continue  # the owner already has a file there; never overwrite it
                try:
                    proposal = self._build(facts, item, target, path)
                except OverBudget as over:
                    self.downloader.budget.defer(
                        Deferral(
                            facts.repo_id, ProposalKind.VARIANT, variant_title(item, target), over.detail
                        )
                    )
                    continue
                if proposal is not None:
                    proposals.append(proposal)
        return proposals

    def _build(self, facts: RepoFacts, item: FileInspection, target: Target, path: str) -> Proposal | None:
        # torch is imported here, not at the top: every scan imports this module, few build a variant,
        # and importing torch costs seconds at start-up.
        from bot.resize.engine import resize_adapter
        from bot.resize.math import ResizeError, ResizeOptions

        source = self.downloader.fetch(
            facts.repo_id, item.path, facts.revision, size=item.size, reason=ProposalKind.VARIANT
        )
        config_path = config_path_for(facts, item.path)
        if item.format == "peft" and config_path:
            # It lands beside the weights in the download's snapshot folder, where the engine looks for it.
            self.downloader.fetch(facts.repo_id, config_path, facts.revision)
        out_dir = self.scratch / "out" / facts.repo_id / facts.revision
        output = out_dir / (posixpath.dirname(path) if item.format == "peft" else posixpath.basename(path))
        try:
            report = resize_adapter(source, ResizeOptions(rank=target.rank), output=output, overwrite=True)
        except (ResizeError, ValueError):
            return None  # the engine says why in `lora-bot resize`; a proposal is simply not made
        if target.reason == "reduce" and report.energy_retained < self.policy.min_energy:
            return None
        if report.output_size > self.policy.max_variant_bytes:
            return None
        verified = inspect_evidence(collect(report.output)[0])
        if verified.rank != target.rank or verified.format != item.format or verified.has_error:
            return None  # never propose a file that does not inspect as what it claims to be
        files = [FileChange(path, source=report.output, size=report.output_size)]
        if report.output_config is not None:
            config_in_repo = posixpath.join(posixpath.dirname(path), CONFIG_NAME)
            files.append(
                FileChange(config_in_repo, new_text=report.output_config.read_text(encoding="utf-8"))
            )
        source_sha = report.input_sha256  # the engine hashed the source as it read it
        return Proposal(
            kind=ProposalKind.VARIANT,
            repo_id=facts.repo_id,
            revision=facts.revision,
            title=variant_title(item, target),
            summary=self._summary(facts, item, target, path, report),
            verification=(
                "converted from the factors (QR of both factors and an SVD of the r×r core; padding adds zero "
                "rows and columns), keeping the effective scale exactly (alpha' = alpha·K/r). The output was "
                f"inspected again: format {verified.format}, rank {verified.rank} in all "
                f"{len(verified.modules)} modules, the same key names, no findings."
            ),
            files=tuple(files),
            facts={"source": item.path, "source_sha256": source_sha, "rank": target.rank},
            about=path,
            base=source_sha[:16],
        )

    def _summary(self, facts, item, target, path, report) -> str:
        energy = report.energy_retained
        why = (
            f"Rank {item.rank} is above {self.policy.reduce_above_rank}: servers such as vLLM default to "
            f"`max_lora_rank` 16, and a smaller file loads faster. Rank {target.rank} keeps "
            f"{energy:.2%} of the update's energy (the best any rank-{target.rank} LoRA can keep)."
            if target.reason == "reduce"
            else f"The owner asked for a rank-{target.rank} copy (`@lora-bot variant r{target.rank}`); it keeps "
            f"{energy:.2%} of the update's energy."
            if target.reason == "request"
            else f"The adapter's config declares rank {declared_rank(facts, item)} while the weights have rank "
            f"{item.rank}; code written for rank {target.rank} gets a file of that rank that computes "
            "exactly the same update (the new ranks are zero)."
        )
        table = "\n".join(
            [
                "| | rank | energy retained | relative error | size |",
                "|---|---|---|---|---|",
                f"| {code_span(item.path)} | {item.rank} | 100% | 0 | {human_size(report.input_size)} |",
                (
                    f"| {code_span(path)} | {target.rank} | {energy:.4%} | {report.relative_error:.2e} | "
                    f"{human_size(report.output_size)} |"
                ),
            ]
        )
        return (
            f"**Add {code_span(path)}**, a rank-{target.rank} copy of {code_span(item.path)}. The original "
            f"is not touched.\n\nWhy: {why}\n\n{table}\n\nHow to load it:\n\n"
            f"{how_to_load(facts.repo_id, item, path)}"
        )
