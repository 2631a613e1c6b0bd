"""GitHub Actions' side of a step: workflow commands on stdout, outputs and the summary through files.

The runner parses every stdout line, so text that reaches it from Hub repos goes through the escaping GitHub
defines for workflow commands, and free-form logs are fenced with `::stop-commands::` so a repo cannot inject
a command (a fake annotation, an `::add-mask::` that hides the log) through a file name or a card.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# GitHub rejects a step summary over 1024 KiB outright (the step shows none at all); stay below with room.
SUMMARY_LIMIT = 1_000_000
# GitHub keeps only the first 10 warning annotations of a step and drops the rest without a word
# (actions/toolkit docs/problem-matchers.md, "Limitations").
WARNINGS_SHOWN_PER_STEP = 10


def escape_data(text: object) -> str:
    """The message part of a command: one line, and `%` cannot start an escape of its own."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: object) -> str:
    """A `key=value` property: additionally no `:` (ends the properties) and no `,` (starts the next one)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: object = "", **properties: object) -> str:
    """`::name key=value,...::message`, escaped; properties that are None are left out."""
    props = ",".join(
        f"{key}={escape_property(value)}" for key, value in properties.items() if value is not None
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


@contextmanager
def commands_stopped(out: TextIO) -> Iterator[None]:
    """Inside, the runner treats every line as plain log text; the random end token cannot be guessed."""
    end_token = secrets.token_hex(16)
    print(f"::stop-commands::{end_token}", file=out)
    try:
        yield
    finally:
        print(f"::{end_token}::", file=out, flush=True)


def output_lines(outputs: Mapping[str, object]) -> str:
    """$GITHUB_OUTPUT lines: `name=value`, or a heredoc with a random delimiter when the value spans lines."""
    lines = []
    for name, value in outputs.items():
        text = str(value)
        if "\n" in text or "\r" in text:
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            lines.append(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")
        else:
            lines.append(f"{name}={text}\n")
    return "".join(lines)


def write_outputs(path: str | None, outputs: Mapping[str, object]) -> None:
    """Appends (other steps' writers may share the file); without GITHUB_OUTPUT, outside Actions, a no-op."""
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(output_lines(outputs))


def fit_summary(markdown: str, limit: int = SUMMARY_LIMIT) -> str:
    """The markdown, or as many whole lines as fit in `limit` bytes and a line saying where the rest is."""
    if len(markdown.encode("utf-8")) <= limit:
        return markdown
    note = "\n**Summary truncated**: GitHub shows at most 1 MiB per step; the JSON report has everything.\n"
    budget = limit - len(note.encode("utf-8"))
    kept, used = [], 0
    for line in markdown.splitlines(keepends=True):
        size = len(line.encode("utf-8"))
        if used + size > budget:
            break
        kept.append(line)
        used += size
    return "".join(kept) + note


def append_summary(path: str | None, markdown: str) -> None:
    if path:
        with open(Path(path), "a", encoding="utf-8") as handle:
            handle.write(fit_summary(markdown))
