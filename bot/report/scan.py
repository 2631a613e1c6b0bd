"""`lora-bot scan` output: the terminal view, the report JSON and markdown, and the merge of shard reports."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import replace

from bot.core.inspect import FileInspection
from bot.report.bodies import preview
from bot.report.inspect import alpha_text, base_text, ranks_text, render_inspections_text
from bot.report.text import escape_markdown, json_text, terminal_line, terminal_text
from bot.vocab import Status


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


def iter_scan_report_json(result) -> Iterator[str]:
    """`json_text(scan_report(result))` (strict JSON), in pieces: the repos are streamed from the census store
    one at a time, so writing the report of 10⁵ repos does not hold them all in memory."""
    yield "{\n"
    for key in ("endpoint", "dry_run"):
        yield f'  "{key}": {json_text(getattr(result, key))},\n'
    yield '  "repos": ['
    first = True
    for repo in result.repos:
        yield (("\n" if first else ",\n") + "    " + json_text(repo.to_json()).replace("\n", "\n    "))
        first = False
    yield "\n  ],\n" if not first else "],\n"
    rest = {
        "skipped": [{"repo_id": repo_id, "reason": reason} for repo_id, reason in result.skipped],
        "proposals": [o.to_json() for o in result.outcomes],
        "stats": result.stats.to_json(),
    }
    tail = json_text(rest)
    yield tail[2:]  # the same object's members, after "repos"


def _md(text: object) -> str:
    """Repo-controlled text inside a markdown table: no pipes, no HTML, no @mentions, no line breaks."""
    return escape_markdown(text)


def _bytes_split(stats) -> str:
    """Inspection reads headers only; building a variant or a metadata fix needs the weights themselves:
    say how many bytes went to which proposals, within which budget."""
    if stats.bytes == stats.inspect_bytes:
        return ""
    split = f"{stats.inspect_bytes:,} to inspect headers, {stats.bytes - stats.inspect_bytes:,} to build proposals"
    kinds = (stats.downloads or {}).get("by_kind", {})
    if not kinds:
        return f" ({split} from the weights)"
    why = ", ".join(f"{v['bytes']:,} for {v['files']} {k} source file(s)" for k, v in kinds.items())
    return f" ({split}: {why}; download budget {stats.downloads['budget_bytes']:,})"


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
        (
            f"{result.stats.repos} repos, {result.stats.files} LoRA files ({mode}). "
            f"Findings: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes. "
            f"{len(failed)} repos could not be read. {result.stats.requests} requests, "
            f"{result.stats.bytes:,} bytes read in {result.stats.seconds:.1f} s{_bytes_split(result.stats)}."
        ),
        "",
    ]
    if result.outcomes:
        lines += ["## Proposals", "", "| repo | kind | status | title | link |", "|---|---|---|---|---|"]
        for outcome in result.outcomes:
            lines.append(
                f"| {_md(outcome.repo_id)} | {outcome.kind} | {outcome.status} | {_md(outcome.title)} | "
                f"{_link(outcome.url)} |"
            )
        lines.append("")
    with_findings = [r for r in result.repos if any(f.flags for f in r.files)]
    if with_findings:
        lines += [
            "## Findings",
            "",
            "| repo | file | format | rank | alpha | base model | flags |",
            "|---|---|---|---|---|---|---|",
        ]
        for repo in with_findings:
            for item in repo.files:
                if not item.flags:
                    continue
                flags = ", ".join(f"`{f.code}`" for f in item.flags)
                lines.append(
                    f"| {_md(repo.repo_id)} | {_md(item.path)} | {item.format} | {ranks_text(item)} | "
                    f"{alpha_text(item)} | {_md(base_text(item))} | {flags} |"
                )
        lines.append("")
    lines += _unread_and_skipped([(r.repo_id, r.error) for r in failed], result.skipped)
    left_out = [(r.repo_id, path, reason) for r in result.repos for path, reason in r.skipped_files]
    if left_out:
        lines += ["## Files left out", "", "| repo | file | reason |", "|---|---|---|"]
        lines += [f"| {_md(repo_id)} | {_md(path)} | {_md(reason)} |" for repo_id, path, reason in left_out]
        lines.append("")
    return "\n".join(lines) + "\n"


def _unread_and_skipped(failed: Sequence[tuple[str, str]], skipped: Sequence[tuple[str, str]]) -> list[str]:
    """The end both markdown reports share: (repo id, reason) of the repos not read and of those skipped."""
    lines = []
    if failed:
        lines += ["## Repos that could not be read", "", "| repo | reason |", "|---|---|"]
        lines += [f"| {_md(repo_id)} | {_md(reason)} |" for repo_id, reason in failed]
        lines.append("")
    if skipped:
        lines += ["## Skipped", ""] + [f"- {_md(repo_id)}: {_md(reason)}" for repo_id, reason in skipped]
        lines.append("")
    lines.append("Flag codes are explained by `lora-bot explain CODE`.")
    return lines


def render_scan_text(result) -> str:
    """The terminal view: each repo's files in the inspect layout, then the failures."""
    return "\n".join(iter_scan_text(result))


def iter_scan_text(result) -> Iterator[str]:
    """The terminal view in lines, repo by repo (streamed from the store)."""
    for repo in result.repos:
        header = f"== {repo.repo_id} @ {(repo.sha or '?')[:10]}"
        if repo.error:
            header += f"  (error: {repo.error})"
        yield terminal_line(header)
        for path, reason in repo.skipped_files:
            yield terminal_line(f"  skipped {path}: {reason}")
        if repo.files:
            yield render_inspections_text([_prefixed(repo.repo_id, f) for f in repo.files])
    if result.outcomes:
        yield ("\n== proposals" + (" (dry run: nothing was written)" if result.dry_run else ""))
        for outcome in result.outcomes:
            where = f" {outcome.url}" if outcome.url else ""
            detail = f" ({outcome.detail})" if outcome.detail else ""
            yield terminal_line(
                f"{outcome.status:<16} {outcome.kind:<10} {outcome.repo_id}: {outcome.title}{where}{detail}"
            )
        for outcome in result.outcomes:
            if result.dry_run and outcome.submission is not None and outcome.status.startswith("would"):
                yield "\n" + terminal_text(preview(outcome.submission))
    counts = _severity_counts(result)
    yield (
        f"\n{result.stats.repos} repos, {result.stats.files} files, {counts['error']} errors, "
        f"{counts['warning']} warnings; {result.stats.requests} requests, {result.stats.bytes:,} bytes"
        f"{_bytes_split(result.stats)}" + (" (dry run)" if result.dry_run else "")
    )


def _prefixed(repo_id: str, inspection: FileInspection) -> FileInspection:
    return replace(inspection, path=f"{repo_id}/{inspection.path}")


# ---------------------------------------------------------------- report JSON: counts and shard merging
# These read the report JSON, not ScanResult: the GitHub Action's final job merges shard reports that
# other machines wrote, and it installs the bot without torch to do so.

REPORT_KEYS = ("endpoint", "dry_run", "repos", "skipped", "proposals", "stats")
_SUMMED_STATS = ("files", "requests", "bytes", "write_requests")


def error_flags(report: dict) -> list[tuple[str, str, dict]]:
    """(repo id, file path, flag) for every error-severity flag, in report order."""
    return [
        (repo["repo_id"], item["path"], found)
        for repo in report["repos"]
        for item in repo["files"]
        for found in item["flags"]
        if found["severity"] == "error"
    ]


def report_counts(report: dict) -> dict[str, int]:
    """The numbers an operator watches. A comment on an existing discussion (`updated`) opens nothing."""
    opened = [p for p in report["proposals"] if p["status"] == Status.OPENED]
    return {
        "repos_scanned": len(report["repos"]),
        "files": sum(len(repo["files"]) for repo in report["repos"]),
        "error_flags": len(error_flags(report)),
        "prs_opened": sum(p["kind"] != "flags" for p in opened),
        "discussions_opened": sum(p["kind"] == "flags" for p in opened),
        "repos_failed": sum(bool(repo["error"]) for repo in report["repos"]),
    }


def check_report(data: object, source: str) -> dict:
    """A report JSON as `lora-bot scan --report-json` writes it, or a ValueError naming what is missing."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a lora-bot report (expected a JSON object)")
    missing = [key for key in REPORT_KEYS if key not in data]
    if missing:
        raise ValueError(f"{source}: not a lora-bot report (no {', '.join(missing)})")
    try:
        merged_report_markdown(data)  # touches every field merging reads: a bad one fails here, by name
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{source}: not a lora-bot report (malformed near {error})") from None
    return data


def merge_reports(reports: Sequence[dict]) -> dict:
    """One report from the shards of one run. Shards split the repos but each lists the same skips."""
    if not reports:
        return {
            "endpoint": None,
            "dry_run": True,
            "repos": [],
            "skipped": [],
            "proposals": [],
            "stats": {"repos": 0, **dict.fromkeys(_SUMMED_STATS, 0), "seconds": 0.0},
            "shards": 0,
        }
    endpoints = {r["endpoint"] for r in reports}
    if len(endpoints) > 1:
        raise ValueError(f"the reports come from different Hubs: {', '.join(sorted(map(str, endpoints)))}")
    repos = {repo["repo_id"]: repo for r in reports for repo in r["repos"]}
    skipped = {entry["repo_id"]: entry for r in reports for entry in r["skipped"]}
    summed = {key: sum(r["stats"].get(key, 0) for r in reports) for key in _SUMMED_STATS}
    # Shards run side by side: the run took as long as its slowest shard.
    stats = {"repos": len(repos), **summed, "seconds": max(r["stats"].get("seconds", 0.0) for r in reports)}
    return {
        "endpoint": endpoints.pop(),
        "dry_run": all(r["dry_run"] for r in reports),
        "repos": list(repos.values()),
        "skipped": list(skipped.values()),
        "proposals": [p for r in reports for p in r["proposals"]],
        "stats": stats,
        "shards": len(reports),
    }


def _link(url: object) -> str:
    """URLs come from the Hub's answers; anything that is not a plain http(s) URL is left out."""
    text = str(url or "")
    plain = text.startswith(("https://", "http://")) and not any(c in text for c in " |<>()[]\"'`\n\r\t")
    return f"[link]({text})" if plain else ""


def _code(text: object) -> str:
    """A flag code in backticks; anything else a report file might hold is escaped text instead."""
    text = str(text)
    return f"`{text}`" if re.fullmatch(r"[a-z0-9][a-z0-9-]*", text) else _md(text)


def merged_report_markdown(merged: dict, expected_shards: int | None = None) -> str:
    shards = merged.get("shards", 1)
    mode = "dry run: nothing was written" if merged["dry_run"] else "live run"
    lines = [f"# lora-bot scan report ({shards} shard report{'s' if shards != 1 else ''} merged, {mode})", ""]
    if expected_shards is not None and shards < expected_shards:
        lines += [
            (
                f"**{expected_shards - shards} of {expected_shards} shard reports are missing**: those "
                "shards failed before writing one; their job logs say why. The numbers below leave them "
                "out."
            ),
            "",
        ]
    lines += _totals_table(merged)
    if merged["proposals"]:
        lines += ["## Proposals", "", "| repo | kind | status | title | link |", "|---|---|---|---|---|"]
        lines += [
            f"| {_md(p['repo_id'])} | {_md(p['kind'])} | {_md(p['status'])} "
            f"| {_md(p.get('title', ''))} | {_link(p.get('url'))} |"
            for p in merged["proposals"]
        ]
        lines.append("")
    findings = [
        (repo["repo_id"], item["path"], f)
        for repo in merged["repos"]
        for item in repo["files"]
        for f in item["flags"]
        if f["severity"] in ("error", "warning")
    ]
    if findings:
        findings.sort(key=lambda row: row[2]["severity"] != "error")  # errors first; sorted() keeps the order
        lines += ["## Findings", "", "| repo | file | severity | flag | message |", "|---|---|---|---|---|"]
        lines += [
            f"| {_md(repo_id)} | {_md(path)} | {_md(f['severity'])} | {_code(f['code'])} "
            f"| {_md(f['message'])} |"
            for repo_id, path, f in findings
        ]
        lines.append("")
    lines += _unread_and_skipped(
        [(repo["repo_id"], repo["error"]) for repo in merged["repos"] if repo["error"]],
        [(entry["repo_id"], entry["reason"]) for entry in merged["skipped"]],
    )
    return "\n".join(lines) + "\n"


def _totals_table(report: dict) -> list[str]:
    counts = report_counts(report)
    warnings = sum(
        f["severity"] == "warning"
        for repo in report["repos"]
        for item in repo["files"]
        for f in item["flags"]
    )
    cells = [
        counts["repos_scanned"],
        counts["files"],
        counts["error_flags"],
        warnings,
        counts["prs_opened"],
        counts["discussions_opened"],
        counts["repos_failed"],
        report["stats"]["requests"],
    ]
    return [
        (
            "| repos scanned | LoRA files | error flags | warnings | PRs opened | discussions opened "
            "| repos not read | requests |"
        ),
        "|---|---|---|---|---|---|---|---|",
        "| " + " | ".join(str(int(c)) for c in cells) + " |",
        "",
    ]
