"""Text that comes from someone else's repo, made safe to put in markdown we publish.

Two tools: `escape_markdown` for prose (markup, HTML and @mentions become inert) and `code_span` for
identifiers (file names, module names, repo ids), which read best as code and cannot break out of it.
"""

from __future__ import annotations

import html
import json
import math
import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def escape_markdown(text: str) -> str:
    """Inert in markdown and HTML: no emphasis, links, tables cells, raw HTML or @mentions."""
    text = html.escape(str(text), quote=False)
    # A lone CR ends a line in markdown as LF does: either would end a table row mid-cell.
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\r", " ").replace("\n", " ")
    # A zero-width joiner after @ keeps the text readable while the Hub no longer sees a mention.
    return text.replace("@", "@\u200d")


def code_span(text: str) -> str:
    """`text` as inline code. Backticks and line breaks cannot occur inside, so nothing escapes the span;
    markdown, HTML and mentions are not interpreted in code. Pipes are escaped for table cells."""
    cleaned = str(text).replace("`", "'").replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return f"`{cleaned}`"


def code_text(text: str) -> str:
    """Text for inside a fenced code block: no backtick runs that could close the fence."""
    return str(text).replace("`", "'")


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def human_size(size: float) -> str:
    """Bytes in decimal units, as the Hub shows file sizes (1.6 MB = 1,600,000 bytes)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            break
        size /= 1000
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def rank_counts(ranks) -> str:
    """A rank histogram for terminals: `8×3, 4×2` (rank × modules), lowest rank first."""
    return ", ".join(f"{rank}×{count}" for rank, count in sorted(ranks.items()))


def terminal_line(text: str) -> str:
    """One line safe for a terminal or a CI log: every non-printable character (ESC, CR, BEL, NUL, line
    breaks, bidi overrides) shown as an escape, so a file or tensor name cannot move the cursor, recolour
    the screen or start a line of its own (a `::error::` workflow command in a GitHub log)."""
    return "".join(c if c.isprintable() else _escaped(c) for c in str(text))


def terminal_text(text: str) -> str:
    """`terminal_line` for each line of text we laid out ourselves."""
    return "\n".join(terminal_line(line) for line in str(text).split("\n"))


def _escaped(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def json_text(value, indent: int | None = 2) -> str:
    """Strict JSON: NaN and ±Infinity (a header can declare them) become null, which every parser reads."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
