"""How findings are shown: a compact text table for terminals, JSON for tools (markdown comes with scan)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Sequence

from bot.lora.inspect import FileInspection
from bot.text import escape_markdown

_SEVERITY_MARK = {"error": "E", "warning": "W", "info": "i"}


def _ranks_text(inspection: FileInspection) -> str:
    if not inspection.ranks:
        return "-"
    if len(inspection.ranks) == 1:
        return str(inspection.rank)
    return f"{inspection.rank} (" + ", ".join(f"{r}×{n}" for r, n in sorted(inspection.ranks.items())) + ")"


def _alpha_text(inspection: FileInspection) -> str:
    if inspection.alpha is None:
        return "-"
    text = f"{inspection.alpha:g}"
    return text if inspection.alpha_declared else f"{text} (undeclared)"


def _base_text(inspection: FileInspection) -> str:
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
            f"  rank     {_ranks_text(item)}    alpha {_alpha_text(item)}"
            + (f"    scale {item.scale:g}" if item.scale is not None else "")
            + ("    rsLoRA" if item.use_rslora else ""),
            f"  base     {_base_text(item)}    source: {item.base_model.source}",
        ]
        if item.target_modules:
            lines.append(f"  targets  {', '.join(item.target_modules[:12])}"
                         + (" …" if len(item.target_modules) > 12 else ""))
        for found in item.flags:
            lines.append(f"  {_SEVERITY_MARK[found.severity]} {found.code}: {found.message}")
        if not item.flags:
            lines.append("  ok: no findings")
        blocks.append("\n".join(lines))
    if not blocks:
        return "no LoRA files found"
    return "\n\n".join(blocks)


def render_inspections_json(inspections: Sequence[FileInspection], with_modules: bool = False) -> str:
    return json.dumps({"files": [i.to_json(with_modules) for i in inspections]}, indent=2)


# ----------------------------------------------------------------------------------------------- scan


def scan_report(result) -> dict:
    """The report JSON of `lora-bot scan` (README: "Report format")."""
    return {
        "endpoint": result.endpoint,
        "dry_run": result.dry_run,
        "repos": [r.to_json() for r in result.repos],
        "skipped": [{"repo_id": repo_id, "reason": reason} for repo_id, reason in result.skipped],
        "proposals": [o.to_json() for o in result.outcomes],
        "stats": result.stats.to_json(),
    }


def _md(text: object) -> str:
    """Repo-controlled text inside a markdown table: no pipes, no HTML, no @mentions, no line breaks."""
    return escape_markdown(str(text)).replace("\n", " ")


def _severity_counts(result) -> dict[str, int]:
    counts = {"error": 0, "warning": 0, "info": 0}
    for repo in result.repos:
        for item in repo.files:
            for found in item.flags:
                counts[found.severity] += 1
    return counts


def scan_report_markdown(result) -> str:
    counts = _severity_counts(result)
    failed = [r for r in result.repos if r.error]
    mode = "dry run: nothing was written" if result.dry_run else "live run"
    lines = [
        "# lora-bot scan report",
        "",
        f"{result.stats.repos} repos, {result.stats.files} LoRA files ({mode}). "
        f"Findings: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes. "
        f"{len(failed)} repos could not be read. {result.stats.requests} requests, "
        f"{result.stats.bytes:,} bytes read in {result.stats.seconds:.1f} s.",
        "",
    ]
    if result.outcomes:
        lines += ["## Proposals", "", "| repo | kind | status | link |", "|---|---|---|---|"]
        for outcome in result.outcomes:
            lines.append(f"| {_md(outcome.repo_id)} | {outcome.kind} | {outcome.status} | {outcome.url or ''} |")
        lines.append("")
    with_findings = [r for r in result.repos if any(f.flags for f in r.files)]
    if with_findings:
        lines += ["## Findings", "", "| repo | file | format | rank | alpha | base model | flags |",
                  "|---|---|---|---|---|---|---|"]
        for repo in with_findings:
            for item in repo.files:
                if not item.flags:
                    continue
                flags = ", ".join(f"`{f.code}`" for f in item.flags)
                lines.append(f"| {_md(repo.repo_id)} | {_md(item.path)} | {item.format} | {_ranks_text(item)} | "
                             f"{_alpha_text(item)} | {_md(_base_text(item))} | {flags} |")
        lines.append("")
    if failed:
        lines += ["## Repos that could not be read", "", "| repo | reason |", "|---|---|"]
        lines += [f"| {_md(r.repo_id)} | {_md(r.error)} |" for r in failed]
        lines.append("")
    if result.skipped:
        lines += ["## Skipped", ""] + [f"- {_md(repo_id)}: {_md(reason)}" for repo_id, reason in result.skipped]
        lines.append("")
    lines.append("Flag codes are explained by `lora-bot explain CODE`.")
    return "\n".join(lines) + "\n"


def render_scan_text(result) -> str:
    """The terminal view: each repo's files in the inspect layout, then the failures."""
    parts = []
    for repo in result.repos:
        header = f"== {repo.repo_id} @ {(repo.sha or '?')[:10]}"
        if repo.error:
            header += f"  (error: {repo.error})"
        parts.append(header)
        if repo.files:
            parts.append(render_inspections_text([_prefixed(repo.repo_id, f) for f in repo.files]))
    counts = _severity_counts(result)
    parts.append(f"\n{result.stats.repos} repos, {result.stats.files} files, {counts['error']} errors, "
                 f"{counts['warning']} warnings; {result.stats.requests} requests, {result.stats.bytes:,} bytes"
                 + (" (dry run)" if result.dry_run else ""))
    return "\n".join(parts)


def _prefixed(repo_id: str, inspection: FileInspection) -> FileInspection:
    return replace(inspection, path=f"{repo_id}/{inspection.path}")
