"""From a repo's inspection to proposals. Pure, except the builders passed in for metadata fixes and
variants, which need the weights.

Which findings become what:
- rank-mismatch-config → config-fix PR (adapter_config.json says what the weights are);
- a card that lacks base_model / relation / library_name / tags / details → card PR;
- rank above the policy's threshold, or a rank a config declares → variant PR (via the resize engine);
- error findings no proposal fixes (and unreadable cards) → one flags discussion.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from bot.config import ProposalsConfig
from bot.core.card import parse_card
from bot.core.flags import CODES, ERROR
from bot.core.inspect import FileInspection
from bot.core.limits import MAX_CARD_BYTES
from bot.core.peft_config import ConfigError, parse_peft_config, peft_module_key
from bot.core.selection import CARD_NAME, select_candidates
from bot.proposals import card as card_edit
from bot.proposals.model import FileChange, Proposal, digest
from bot.report.text import code_span, code_text, escape_markdown, plural
from bot.vocab import FlagCode, ProposalKind

# Warnings that still belong in the discussion because lora-bot cannot act on them.
DISCUSS_WARNINGS = {FlagCode.CARD_INVALID}


@dataclass(frozen=True)
class RepoFacts:
    """What the proposal builders need to know about a repo, independent of where it came from."""

    repo_id: str
    revision: str
    files: tuple[FileInspection, ...]
    texts: Mapping[str, str]  # README.md and adapter_config.json contents
    card_data: Mapping
    paths: tuple[str, ...]  # every file in the repo


def text_hash(text: str | None) -> str:
    return "absent" if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def config_path_for(facts: RepoFacts, weights: str) -> str | None:
    for candidate in select_candidates(facts.paths):
        if candidate.path == weights:
            return candidate.config_path
    return None


# ------------------------------------------------------------------------------------------ config fix


def fixed_config_text(old_text: str, inspection: FileInspection) -> tuple[str, dict] | None:
    """adapter_config.json made to agree with the weights, keeping lora_alpha and every other field.

    Returns the new text and the facts (the new r and rank_pattern), or None when nothing is wrong or the
    config cannot be parsed (that is a flag, not a fix)."""
    try:
        config = parse_peft_config(old_text)
    except ConfigError:
        return None
    if config.unchecked:
        return None  # a refused pattern key: what PEFT declares for some modules is unknown
    lora = [m for m in inspection.modules if m.rank is not None and m.kind in ("lora", "lora-tucker")]
    if not lora or config.r is None or all(config.declared_rank(m.name) == m.rank for m in lora):
        return None
    new_r = inspection.rank
    pattern = {peft_module_key(m.name): m.rank for m in lora if m.rank != new_r}
    raw = dict(config.raw)
    raw["r"] = new_r
    if pattern or raw.get("rank_pattern"):
        raw["rank_pattern"] = pattern
    new_text = _minimal_json_edit(old_text, config.raw, raw)
    check = parse_peft_config(new_text)
    written = json.loads(new_text)
    # PEFT wants an int `r` (a float `8.0` fails its checks): the written value must be the int itself.
    if type(written.get("r")) is not int or any(
        type(v) is not int for v in (written.get("rank_pattern") or {}).values()
    ):
        return None
    if any(check.declared_rank(m.name) != m.rank for m in lora):
        return None  # never propose a config we could not verify
    return new_text, {"r": new_r, "rank_pattern": pattern}


def _minimal_json_edit(old_text: str, old: Mapping, new: Mapping) -> str:
    """Change only `"r": N` in place when that is all; otherwise re-serialise in the file's own indent."""
    if {k for k in new if new.get(k) != old.get(k)} == {"r"}:
        # The whole number token: `8.0` or `8e0` replaced by `4`, never left as `4.0`.
        edited, count = re.subn(
            r'("r"\s*:\s*)-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?',
            lambda m: f"{m.group(1)}{new['r']}",
            old_text,
            count=1,
        )
        if count == 1 and json.loads(edited) == new:
            return edited
    indent_match = re.search(r'\n([ \t]+)"', old_text)
    indent = indent_match.group(1) if indent_match else None
    sort = list(old) == sorted(old)
    return json.dumps(new, indent=indent or None, sort_keys=sort) + ("\n" if old_text.endswith("\n") else "")


def config_fix_proposal(facts: RepoFacts, inspection: FileInspection) -> Proposal | None:
    config_path = config_path_for(facts, inspection.path)
    old_text = facts.texts.get(config_path) if config_path else None
    if old_text is None or FlagCode.RANK_MISMATCH_CONFIG not in inspection.codes():
        return None
    fixed = fixed_config_text(old_text, inspection)
    if fixed is None:
        return None
    new_text, change = fixed
    old_r = parse_peft_config(old_text).r
    first = next(m for m in inspection.modules if m.rank is not None)
    mismatch = next(f for f in inspection.flags if f.code == FlagCode.RANK_MISMATCH_CONFIG)
    pattern_note = (
        f" and `rank_pattern` lists the {len(change['rank_pattern'])} modules at other ranks"
        if change["rank_pattern"]
        else ""
    )
    summary = (
        f"**{code_span(config_path)}: `r` {old_r} → {change['r']}**{pattern_note}. Nothing else in the file changes; "
        f"`lora_alpha` is kept, so the scale PEFT applies is `lora_alpha / {change['r']}`.\n\n"
        f"Why: the weights in {code_span(inspection.path)} were saved at rank {change['r']} "
        f"({escape_markdown(mismatch.message)}). PEFT builds the layers from the config first, so loading "
        f"this adapter fails today with:\n\n```\nsize mismatch for {code_text(first.name)}.lora_A.weight: "
        f"copying a param with shape torch.Size([{first.rank}, {first.in_features}]) from checkpoint, the shape "
        f"in current model is torch.Size([{old_r}, {first.in_features}]).\n```"
    )
    verification = (
        f"the new config was parsed with PEFT's pattern rules and every one of the "
        f"{sum(1 for m in inspection.modules if m.rank)} modules' declared rank equals the rank of its "
        f"`lora_A`/`lora_B` tensors in the safetensors header."
    )
    return Proposal(
        kind=ProposalKind.CONFIG_FIX,
        repo_id=facts.repo_id,
        revision=facts.revision,
        title=f"fix the rank in {config_path} ({old_r} → {change['r']})",
        summary=summary,
        verification=verification,
        files=(FileChange(config_path, new_text=new_text, old_text=old_text),),
        facts=change,
        about=config_path,
        base=text_hash(old_text),
        fixes=((inspection.path, FlagCode.RANK_MISMATCH_CONFIG),),
    )


# ------------------------------------------------------------------------------------------ card


def known_base(files: tuple[FileInspection, ...]) -> str | None:
    """The base model repo, when every inspected file agrees on one and nothing contradicts it."""
    repos = {f.base_model.repo_id for f in files}
    if len(repos) != 1 or any(FlagCode.BASE_MODEL_MISMATCH in f.codes() for f in files):
        return None
    return repos.pop()


def card_proposal(facts: RepoFacts) -> Proposal | None:
    inspected = tuple(f for f in facts.files if f.format != "unknown")
    if not inspected or any(
        FlagCode.BASE_MODEL_MISMATCH in f.codes() or FlagCode.PATTERN_UNCHECKED in f.codes()
        for f in inspected
    ):
        # nothing to describe, a contradiction the owner must settle (flags discussion), or ranks/alphas unknown
        return None
    if CARD_NAME in facts.paths and CARD_NAME not in facts.texts:
        return None  # the card exists but was not read whole and exactly: it is never rewritten
    old_text = facts.texts.get(CARD_NAME)
    if old_text is not None and parse_card(old_text).error:
        return None  # flagged as card-invalid, never rewritten
    card_data = parse_card(old_text).data if old_text is not None else {}
    base = known_base(inspected)
    additions = card_edit.plan_additions(card_data, old_text, inspected, base)
    if additions.empty:
        return None
    new_text = card_edit.apply_additions(old_text, additions, facts.repo_id)
    if new_text is None or new_text == old_text or len(new_text.encode("utf-8")) > MAX_CARD_BYTES:
        return None
    added = [code_span(f"{k}: {v}") for k, v in additions.keys.items()]
    added += [f"tag {code_span(t)}" for t in additions.tags]
    if additions.details:
        added.append('a "LoRA details" section (format, rank, alpha, target modules, files)')
    why = (
        "Without `base_model` the Hub cannot link this adapter to its base model, so it is missing from the "
        "base model's Adapters list and from `base_model:adapter:` filters, and inference providers cannot "
        "serve it. "
        if "base_model" in additions.keys
        else ""
    )
    source = (
        f" The base model comes from {escape_markdown(inspected[0].base_model.source)} "
        f"({escape_markdown(inspected[0].base_model.evidence)})."
        if "base_model" in additions.keys
        else ""
    )
    summary = (
        ("**Create README.md** with " if old_text is None else "**README.md: add** ")
        + ", ".join(added)
        + (
            ". Existing metadata, comments and text are kept byte for byte.\n\n"
            if old_text is not None
            else ".\n\n"
        )
        + f"Why: {why}Loaders and people choosing an adapter read rank, alpha and format from the card.{source}"
    )
    verification = (
        "the new front matter was parsed again: it equals the old metadata plus exactly the "
        "additions, the card body is unchanged, and the Hub's YAML validation accepts it."
    )
    return Proposal(
        kind=ProposalKind.CARD,
        repo_id=facts.repo_id,
        revision=facts.revision,
        title="add LoRA metadata to the model card" if old_text is not None else "add a model card",
        summary=summary,
        verification=verification,
        files=(FileChange(CARD_NAME, new_text=new_text, old_text=old_text),),
        facts=additions.facts() | {"files": sorted(f.path for f in inspected)},
        about=CARD_NAME,
        base=text_hash(old_text),
    )


# ------------------------------------------------------------------------------------------ flags


def discussable(facts: RepoFacts, fixed: set[tuple[str, str]]) -> list[tuple[FileInspection, object]]:
    """Error findings (and unreadable cards) that none of this run's proposals resolves."""
    found = []
    for item in facts.files:
        for finding in item.flags:
            if (item.path, finding.code) in fixed:
                continue
            if finding.severity == ERROR or finding.code in DISCUSS_WARNINGS:
                found.append((item, finding))
    return found


def flags_proposal(facts: RepoFacts, fixed: set[tuple[str, str]] = frozenset()) -> Proposal | None:
    findings = discussable(facts, fixed)
    if not findings:
        return None
    lines = ["| file | code | finding |", "|---|---|---|"]
    for item, finding in findings:
        lines.append(f"| {code_span(item.path)} | `{finding.code}` | {escape_markdown(finding.message)} |")
    explanations = []
    for code_name in sorted({f.code for _, f in findings}):
        entry = CODES[code_name]
        explanations.append(f"**`{entry.code}`**: {escape_markdown(entry.explanation)}")
    summary = (
        "lora-bot inspected this repo's LoRA files from their safetensors headers and found problems "
        "that would make them fail to load or load wrongly. No automatic fix is safe for these, so "
        "nothing was changed:\n\n" + "\n".join(lines) + "\n\n" + "\n\n".join(explanations)
    )
    key_facts = sorted([item.path, f.code, f.message] for item, f in findings)
    return Proposal(
        kind=ProposalKind.FLAGS,
        repo_id=facts.repo_id,
        revision=facts.revision,
        title=f"{plural(len(findings), 'problem')} found in this repo's LoRA files",
        summary=summary,
        verification="read-only inspection of the safetensors headers, adapter_config.json and README.md.",
        files=(),
        facts={"findings": key_facts},
        about="repo",
        base=digest(key_facts),
    )


# ------------------------------------------------------------------------------------------ all


@dataclass(frozen=True)
class BuildFailure:
    """One proposal that could not be built: it costs only itself, and the report says why."""

    kind: ProposalKind
    about: str  # the file it was about (README.md, the weights file), or "repo"
    error: BaseException = field(compare=False)


@dataclass(frozen=True)
class BuiltProposals:
    proposals: tuple[Proposal, ...]
    failures: tuple[BuildFailure, ...] = ()


def build_repo_proposals(
    facts: RepoFacts, policy: ProposalsConfig, metadata_builder=None, variant_builder=None
) -> BuiltProposals:
    """Every proposal for one repo, in the order they appear in a grouped PR; the flags discussion last.

    Each builder runs per file (card and flags per repo), and an exception in one becomes that proposal's
    `BuildFailure`: one odd file or one unbuildable change never costs the repo its other proposals.
    The two weight builders download (bot.proposals.metadata, bot.proposals.variants); the rest is pure."""
    proposals: list[Proposal | None] = []
    failures: list[BuildFailure] = []

    def attempt(kind: ProposalKind, about: str, build: Callable[[], list]) -> None:
        try:
            proposals.extend(build())
        except Exception as error:  # noqa: BLE001 — reported as this proposal's outcome
            failures.append(BuildFailure(kind, about, error))

    if policy.config_fix:
        for item in facts.files:
            attempt(ProposalKind.CONFIG_FIX, item.path, lambda item=item: [config_fix_proposal(facts, item)])
        if metadata_builder is not None:
            for item in facts.files:  # the weight builders walk facts.files: one file at a time
                alone = replace(facts, files=(item,))
                attempt(ProposalKind.METADATA_FIX, item.path, lambda alone=alone: metadata_builder(alone))
    if policy.card:
        attempt(ProposalKind.CARD, CARD_NAME, lambda: [card_proposal(facts)])
    if policy.variants and variant_builder is not None:
        for item in facts.files:
            alone = replace(facts, files=(item,))
            attempt(ProposalKind.VARIANT, item.path, lambda alone=alone: variant_builder(alone))
    built = [p for p in proposals if p is not None]
    if policy.flag_discussions:
        fixed = {fix for p in built for fix in p.fixes}
        attempt(ProposalKind.FLAGS, "repo", lambda: [flags_proposal(facts, fixed)])
        built = [p for p in proposals if p is not None]
    return BuiltProposals(tuple(built), tuple(failures))


def build_proposals(
    facts: RepoFacts, policy: ProposalsConfig, metadata_builder=None, variant_builder=None
) -> list[Proposal]:
    """The proposals `build_repo_proposals` could build (its failures are the proposal stage's to report)."""
    return list(build_repo_proposals(facts, policy, metadata_builder, variant_builder).proposals)
