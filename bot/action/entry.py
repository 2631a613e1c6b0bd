"""`lora-bot action`: the entry step of the GitHub Action (action.yml), one scan in-process.

GitHub hands the step its inputs as INPUT_<NAME> variables and takes results back through files: the markdown
report in $GITHUB_STEP_SUMMARY, outputs in $GITHUB_OUTPUT, and one `::warning` annotation per error flag on
stdout. `main(environ)` speaks exactly that, so a test runs it the way the runner does.

Relative paths (config, report, the watermark's state file) are the workspace's, where the workflow's cache
step restores the watermark and its upload step looks for the report.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.action.runner import (
    WARNINGS_SHOWN_PER_STEP,
    append_summary,
    command,
    commands_stopped,
    write_outputs,
)
from bot.config import Config, ConfigError, load_config
from bot.core.selection import is_repo_id
from bot.hub.client import describe_error
from bot.pipeline import ScanOptions, run_scan
from bot.report.scan import error_flags, render_scan_text, report_counts, scan_report, scan_report_markdown
from bot.report.text import json_text
from bot.sources.discovery import Shard

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_REPORT = "lora-bot-report.json"
# The YAML 1.2 booleans, as GitHub's toolkit accepts them (getBooleanInput).
_TRUE, _FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")


class InputError(ValueError):
    """An action input with a value it cannot take; the message names the input and what it accepts."""


@dataclass(frozen=True)
class ActionInputs:
    config: Path | None  # None: the action's own config.yaml
    token: str | None
    dry_run: bool
    max_prs: int | None  # None: the config's proposals.max_prs_per_run
    shard: Shard | None
    repos: tuple[str, ...]
    report_path: Path
    max_annotations: int


def input_value(environ: Mapping[str, str], name: str) -> str:
    """GitHub upper-cases input names and keeps hyphens (INPUT_HF-TOKEN); action.yml passes them with
    underscores, which every shell keeps (dash drops variables whose names have a hyphen)."""
    upper = name.upper()
    for key in (f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"):
        value = environ.get(key, "").strip()
        if value:
            return value
    return ""


def read_inputs(environ: Mapping[str, str], workspace: Path) -> ActionInputs:
    config = input_value(environ, "config")
    action_config = Path(environ.get("GITHUB_ACTION_PATH", "")) / "config.yaml"
    return ActionInputs(
        config=workspace / config if config else (action_config if action_config.is_file() else None),
        token=input_value(environ, "hf-token") or None,
        dry_run=_boolean(input_value(environ, "dry-run") or "true", "dry-run"),
        max_prs=_count(input_value(environ, "max-prs"), "max-prs", default=None),
        shard=_shard(input_value(environ, "shard")),
        repos=_repo_ids(input_value(environ, "repos")),
        report_path=_report_path(input_value(environ, "report-path"), workspace),
        max_annotations=_count(
            input_value(environ, "max-annotations"), "max-annotations", default=WARNINGS_SHOWN_PER_STEP
        ),
    )


def _boolean(text: str, name: str) -> bool:
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InputError(f"input {name}: {text!r} is not allowed; allowed values: true, false")


def _count(text: str, name: str, default: int | None) -> int | None:
    if not text:
        return default
    # ASCII digits only: str.isdigit() admits `²` and `①`, which int() then refuses.
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise InputError(f"input {name}: expected a whole number, 0 or more; got {text!r}")
    return int(text)


def _report_path(text: str, workspace: Path) -> Path:
    """A file inside the workspace: the report is the job's artifact, never written elsewhere on the runner."""
    path = (workspace / (text or DEFAULT_REPORT)).resolve()
    root = workspace.resolve()
    if root not in path.parents or path.is_dir() or any(ord(c) < 32 for c in text):
        raise InputError(
            f"input report-path: {text!r} is not a file path inside the workspace (e.g. {DEFAULT_REPORT})"
        )
    return path


def _shard(text: str) -> Shard | None:
    if not text:
        return None
    try:
        return Shard.parse(text)
    except ValueError:
        raise InputError(f"input shard: expected K/N with 1 <= K <= N (e.g. 2/4); got {text!r}") from None


def _repo_ids(text: str) -> tuple[str, ...]:
    ids = tuple(part for part in re.split(r"[\s,]+", text) if part)
    for repo_id in ids:
        if not is_repo_id(repo_id, namespace=False):
            raise InputError(
                f"input repos: {repo_id!r} is not a repo id (owner/name); separate ids with "
                "spaces, commas or new lines"
            )
    return ids


def _in_workspace(config: Config, workspace: Path) -> Config:
    state_file = workspace / config.discovery.state_file  # an absolute state_file stays as it is
    discovery = dataclasses.replace(config.discovery, state_file=str(state_file))
    census = dataclasses.replace(
        config.census, store=str(workspace / config.census.store)
    )  # cached per shard
    return dataclasses.replace(config, discovery=discovery, census=census)


def _annotate(report: dict, cap: int) -> None:
    found = error_flags(report)
    for repo_id, path, flag in found[:cap]:
        print(command("warning", f"{repo_id}/{path}: {flag['message']}", title=f"lora-bot {flag['code']}"))
    if len(found) > cap:
        # A notice, not an 11th warning: GitHub drops warnings past the tenth, and this line with them.
        print(
            command(
                "notice",
                f"{len(found) - cap} more error flags are not annotated; the job summary and "
                "the JSON report list them all",
                title="lora-bot",
            )
        )


def main(environ: Mapping[str, str] = os.environ) -> int:
    token_input = input_value(environ, "hf-token")
    if token_input:
        print(command("add-mask", token_input), flush=True)  # before anything that could echo it
    workspace = Path(environ.get("GITHUB_WORKSPACE") or os.getcwd())
    try:
        inputs = read_inputs(environ, workspace)
        config = _in_workspace(load_config(inputs.config), workspace)
    except (InputError, ConfigError) as error:
        print(command("error", error, title="lora-bot: bad input"))
        return EXIT_USAGE
    token = inputs.token or environ.get(config.hub.token_env, "").strip() or None
    if token and token != token_input:
        print(command("add-mask", token), flush=True)
    if not inputs.dry_run and not token:
        missing = (
            f"input hf-token is empty and {config.hub.token_env} is not set: a live run needs a token "
            "with write access (or set dry-run: true)"
        )
        print(command("error", missing, title="lora-bot: bad input"))
        return EXIT_USAGE
    return _scan(config, inputs, token, environ)


def _scan(config: Config, inputs: ActionInputs, token: str | None, environ: Mapping[str, str]) -> int:
    options = ScanOptions(
        endpoint=config.hub.endpoint or environ.get("HF_ENDPOINT") or None,
        token=token,
        dry_run=inputs.dry_run,
        repos=inputs.repos,
        shard=inputs.shard,
        max_prs=inputs.max_prs,
    )
    try:
        result = run_scan(config, options)
    except Exception as error:  # noqa: BLE001 — discovery itself failed: nothing to report but the reason
        print(command("error", f"the scan could not list repos: {describe_error(error)}", title="lora-bot"))
        return EXIT_FAILED
    report = scan_report(result)
    inputs.report_path.parent.mkdir(parents=True, exist_ok=True)
    inputs.report_path.write_text(json_text(report) + "\n", encoding="utf-8")
    append_summary(environ.get("GITHUB_STEP_SUMMARY"), scan_report_markdown(result))
    counts = report_counts(report)
    write_outputs(
        environ.get("GITHUB_OUTPUT"),
        {
            "repos-scanned": counts["repos_scanned"],
            "prs-opened": counts["prs_opened"],
            "discussions-opened": counts["discussions_opened"],
            "error-flags": counts["error_flags"],
            "report-path": inputs.report_path,
        },
    )
    with commands_stopped(sys.stdout):  # the log holds repo-controlled names and messages
        print(render_scan_text(result))
    _annotate(report, inputs.max_annotations)
    print(f"lora-bot: report written to {inputs.report_path}", flush=True)
    # Findings are the scan's product, not a failure; only a run where no repo could be read fails.
    all_failed = result.repos and all(r.error and not r.files for r in result.repos)
    return EXIT_FAILED if all_failed else EXIT_OK
