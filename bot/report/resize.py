"""How a resize is shown: a summary and a per-module table for terminals, JSON for tools."""

from __future__ import annotations

from bot.report.text import human_size, json_text, rank_counts, terminal_line
from bot.resize.engine import ResizeReport

# Big files (SDXL has ~700 modules) show only the modules that lost the most; --json has them all.
MAX_ROWS = 20


def _ranks(counter) -> str:
    if len(counter) == 1:
        return str(next(iter(counter)))
    return f"mixed ({rank_counts(counter)})"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def render_resize_text(report: ResizeReport) -> str:
    """File and tensor names come from the file: each goes through `terminal_line`, so an ESC, CR or BEL in
    one is shown as an escape instead of acting on the terminal (and widths count what is shown)."""
    methods = ", ".join(sorted({m.method for m in report.modules}))
    output = (
        terminal_line(report.output)
        if report.output_config is None
        else terminal_line(f"{report.output.parent}/ ({report.output.name} + {report.output_config.name})")
    )
    lines = [
        f"{terminal_line(report.input)} → {output}",
        (
            f"  format   {report.format}    modules {len(report.modules)}    rank {_ranks(report.plan.old_ranks)} → "
            f"{_ranks(report.plan.new_ranks)}    method {methods}"
        ),
        f"  energy   {report.energy_retained:.4%} retained    relative error {report.relative_error:.6f}",
        f"  size     {human_size(report.input_size)} → {human_size(report.output_size)}",
    ]
    rows = sorted(report.modules, key=lambda m: m.relative_error, reverse=True)[:MAX_ROWS]
    shown = [terminal_line(m.name) for m in rows]
    width = min(max((len(name) for name in shown), default=6), 64)
    lines += ["", f"  {'module':<{width}}  {'rank':>9}  {'energy':>9}  {'rel.error':>9}  method"]
    for m, name in zip(rows, shown, strict=True):
        lines.append(
            f"  {_short(name, width):<{width}}  {f'{m.old_rank}→{m.new_rank}':>9}  "
            f"{m.energy_retained:>9.4%}  {m.relative_error:>9.6f}  {m.method}"
        )
    hidden = len(report.modules) - len(rows)
    if hidden:
        lines.append(f"  … {hidden} more module(s), all with a smaller error (--json lists every module)")
    return "\n".join(lines)


def render_resize_json(report: ResizeReport) -> str:
    return json_text(report.to_json())
