"""Metadata-fix proposals: diffusers' `lora_adapter_metadata` made to agree with the weights. The file is
re-uploaded with a new header over byte-identical tensor data.

Only load-breaking metadata is worth re-uploading a weight file for: diffusers builds the LoraConfig from
`lora_adapter_metadata`, so a wrong rank there fails the load. kohya's `ss_network_dim` is read by info
panels, never by a loader: the card's "LoRA details" (the card proposal) states the rank the weights have,
and the finding stays in the scan report; no PR replaces the owner's weights for it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bot.core.inspect import inspect_evidence
from bot.core.metadata import corrected_metadata
from bot.core.trainer_metadata import DIFFUSERS_KEY
from bot.files.safetensors import file_sha256, read_local_header, rewrite_metadata
from bot.hub.download import Deferral, Downloader, OverBudget
from bot.proposals.build import RepoFacts
from bot.proposals.model import FileChange, Proposal
from bot.report.text import code_span, escape_markdown
from bot.sources.local import collect
from bot.vocab import FlagCode, ProposalKind


def _digests(path: Path, data_start: int) -> tuple[str, str]:
    """(whole file, tensor data section) SHA-256 in one read: the first says which upload a fix was built
    on, the second shows that a fix changed nothing but the header."""
    whole, data = hashlib.sha256(), hashlib.sha256()
    with path.open("rb") as handle:
        whole.update(handle.read(data_start))
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            whole.update(chunk)
            data.update(chunk)
    return whole.hexdigest(), data.hexdigest()


def load_breaking(metadata, fixed: dict | None) -> dict | None:
    """The correction limited to what a loader reads (`lora_adapter_metadata`), or None when only cosmetic
    keys were wrong."""
    if fixed is None or fixed.get(DIFFUSERS_KEY) == metadata.get(DIFFUSERS_KEY):
        return None
    return {**metadata, DIFFUSERS_KEY: fixed[DIFFUSERS_KEY]}


def metadata_title(path: str) -> str:
    return f"correct the rank in {path}'s metadata"


class MetadataFixBuilder:
    def __init__(self, downloader: Downloader, scratch: Path) -> None:
        self.downloader = downloader
        self.scratch = scratch

    def __call__(self, facts: RepoFacts) -> list[Proposal]:
        proposals = []
        for item in facts.files:
            other_errors = any(
                f.severity == "error" and f.code != FlagCode.RANK_MISMATCH_METADATA for f in item.flags
            )
            if FlagCode.RANK_MISMATCH_METADATA not in item.codes() or other_errors:
                continue  # nothing to correct, or a file broken in ways a metadata fix would hide
            fixed = load_breaking(item.metadata, corrected_metadata(item.metadata, item.modules))
            if fixed is None:
                continue
            try:
                proposals.append(self._build(facts, item, fixed))
            except OverBudget as over:
                self.downloader.budget.defer(
                    Deferral(facts.repo_id, ProposalKind.METADATA_FIX, metadata_title(item.path), over.detail)
                )
        return [p for p in proposals if p is not None]

    def _build(self, facts: RepoFacts, item, fixed: dict) -> Proposal | None:
        source = self.downloader.fetch(
            facts.repo_id, item.path, facts.revision, size=item.size, reason=ProposalKind.METADATA_FIX
        )
        output = self.scratch / "metadata" / facts.repo_id / facts.revision / item.path
        header = rewrite_metadata(source, output, fixed)
        source_sha, source_data = _digests(source, read_local_header(source).data_start)
        output_data = file_sha256(output, header.data_start)
        verified = inspect_evidence(collect(output)[0])
        if source_data != output_data or FlagCode.RANK_MISMATCH_METADATA in verified.codes():
            return None  # never propose a file we could not show to be the same adapter, corrected
        changes = {k: (item.metadata.get(k), v) for k, v in fixed.items() if item.metadata.get(k) != v}
        rows = "\n".join(
            f"| `{k}` | {code_span(old)} | {code_span(new)} |" for k, (old, new) in changes.items()
        )
        mismatch = next(f for f in item.flags if f.code == FlagCode.RANK_MISMATCH_METADATA)
        summary = (
            f"**{code_span(item.path)}: correct the trainer metadata** so it states the rank the weights have. "
            f"The tensors are byte for byte the same; only the header's `__metadata__` changes:\n\n"
            f"| key | before | after |\n|---|---|---|\n{rows}\n\n"
            f"Why: {escape_markdown(mismatch.message)}. Tools that read the rank from metadata (A1111's and "
            "ComfyUI's info panels, lora-inspector, diffusers for `lora_adapter_metadata`) show or build the "
            "wrong rank."
        )
        return Proposal(
            kind=ProposalKind.METADATA_FIX,
            repo_id=facts.repo_id,
            revision=facts.revision,
            title=metadata_title(item.path),
            summary=summary,
            verification=(
                "the tensor data section of the new file has the same SHA-256 as the original's, and "
                "the new header inspects with no rank-mismatch-metadata finding."
            ),
            files=(FileChange(item.path, source=output, size=output.stat().st_size, replaces=True),),
            facts={"metadata": {k: new for k, (_, new) in changes.items()}},
            about=item.path,
            base=source_sha[:16],
            fixes=((item.path, FlagCode.RANK_MISMATCH_METADATA),),
        )
