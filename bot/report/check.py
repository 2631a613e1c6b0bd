"""`lora-bot check` output: the verdict line and the module table, or the JSON object other tools rely on."""

from __future__ import annotations

import json

from bot.core.compat import CheckResult
from bot.vocab import ModuleStatus, Verdict

_VERDICT_WORDS = {
    Verdict.LOADS: "loads and applies fully",
    Verdict.PARTIAL: "loads but ignores part of the adapter",
    Verdict.FAILS: "fails to load",
    Verdict.UNKNOWN: "unknown",
}
_SEVERITY_LETTER = {"error": "E", "warning": "W", "info": "I"}
SHOWN_ROWS = 20
PROBLEMS_PER_CODE = 2  # a terminal shows the first few of a kind; --json has them all


def render_check_json(result: CheckResult) -> str:
    return json.dumps(result.to_json(), indent=2)


def render_check_text(result: CheckResult, all_modules: bool = False) -> str:
    total = len(result.modules)
    applied = result.counts().get(ModuleStatus.APPLIES, 0)
    lines = [
        f"{result.adapter} on {result.base.label}",
        f"  verdict  {result.verdict}: {_VERDICT_WORDS[result.verdict]} — {result.reason}",
        f"  applied  {result.applied_fraction:.0%} ({applied} of {total} modules)    "
        f"base: {len(result.base.files)} file(s), "
        + ", ".join(f"{c.folder or c.component} {len(c.weights)} tensors" for c in result.base.components),
    ]
    shown_per_code: dict[str, int] = {}
    for problem in result.problems:
        shown_per_code[problem.code] = shown_per_code.get(problem.code, 0) + 1
        if shown_per_code[problem.code] <= PROBLEMS_PER_CODE:
            lines.append(f"  {_SEVERITY_LETTER.get(problem.severity, '?')} {problem.code}: {problem.message}")
    for code, count in shown_per_code.items():
        if count > PROBLEMS_PER_CODE:
            lines.append(f"    … {count - PROBLEMS_PER_CODE} more {code} (the table and --json list them)")
    rows = (
        list(result.modules)
        if all_modules
        else [m for m in result.modules if m.status != ModuleStatus.APPLIES]
    )
    if rows:
        shown = rows if all_modules else rows[:SHOWN_ROWS]
        name_width = min(max(len(m.name) for m in shown), 80)
        lines.append("")
        lines.append(f"  {'module':<{name_width}}  {'status':<14}  base weight")
        for module in shown:
            where = module.base_weight or "—"
            if module.base_shape is not None and module.status == ModuleStatus.SHAPE_MISMATCH:
                in_, out = module.adapter_shape
                where += f" {list(module.base_shape)} (adapter in {in_}, out {out})"
            lines.append(f"  {module.name:<{name_width}}  {module.status:<14}  {where}")
        if len(rows) > len(shown):
            lines.append(f"  … and {len(rows) - len(shown)} more (--modules lists every module)")
    return "\n".join(lines)
