"""`lora-bot inspect` output: a compact block per file for terminals, one JSON object for tools."""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.inspect import FileInspection
from bot.report.text import json_text, rank_counts, terminal_line

_SEVERITY_MARK = {"error": "E", "warning": "W", "info": "i"}


def ranks_text(inspection: FileInspection) -> str:
    if not inspection.ranks:
        return "-"
    if len(inspection.ranks) == 1:
        return str(inspection.rank)
    return f"{inspection.rank} ({rank_counts(inspection.ranks)})"


def alpha_text(inspection: FileInspection) -> str:
    if inspection.alpha is None:
        return "-"
    text = f"{inspection.alpha:g}"
    return text if inspection.alpha_declared else f"{text} (undeclared)"


def base_text(inspection: FileInspection) -> str:
    base = inspection.base_model
    if base.repo_id:
        return f"{base.repo_id} [{base.family or '?'}]"
    if base.family:
        return f"{base.family} (one of {', '.join(base.candidates)})" if base.candidates else base.family
    return "unknown"


def render_inspections_text(inspections: Sequence[FileInspection]) -> str:
    """One block per file: the key facts on aligned lines, then one line per flag."""
    blocks = []
    for item in inspections:
        variant = f" ({item.variant})" if item.variant else ""
        lines = [
            item.path,
            f"  format   {item.format}{variant}    modules {len(item.modules)}    tensors {item.tensors}",
            f"  rank     {ranks_text(item)}    alpha {alpha_text(item)}"
            + (f"    scale {item.scale:g}" if item.scale is not None else "")
            + ("    rsLoRA" if item.use_rslora else ""),
            f"  base     {base_text(item)}    source: {item.base_model.source}",
        ]
        if item.target_modules:
            lines.append(
                f"  targets  {', '.join(item.target_modules[:12])}"
                + (" …" if len(item.target_modules) > 12 else "")
            )
        for found in item.flags:
            lines.append(f"  {_SEVERITY_MARK[found.severity]} {found.code}: {found.message}")
        if not item.flags:
            lines.append("  ok: no findings")
        blocks.append("\n".join(terminal_line(line) for line in lines))
    if not blocks:
        return "no LoRA files found"
    return "\n\n".join(blocks)


def render_inspections_json(inspections: Sequence[FileInspection], with_modules: bool = False) -> str:
    return json_text({"files": [i.to_json(with_modules) for i in inspections]})
