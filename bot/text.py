"""Text that comes from someone else's repo, made safe to put in markdown we publish."""

from __future__ import annotations

import html
import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


def escape_markdown(text: str) -> str:
    """Inert in markdown and HTML: escapes markup, entities and @mentions so a repo name cannot ping anyone,
    open a link, or inject HTML into a PR body or report."""
    text = html.escape(text, quote=True)
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    # A zero-width joiner after @ keeps the text readable while the Hub no longer sees a mention.
    return text.replace("@", "@\u200d")
