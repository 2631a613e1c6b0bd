"""The model card's YAML front matter, read the way the Hub reads it (a `---` block at the very top)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from bot.core.yaml_bounded import YamlTooLarge, load_yaml

_FRONT_MATTER = re.compile(
    r"\A(?:\ufeff)?---[ \t]*\r?\n(?P<yaml>.*?)(?:\r?\n)?^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE
)


@dataclass(frozen=True)
class CardText:
    text: str
    yaml_text: str | None  # the front matter, without the fences; None when there is none
    data: dict  # parsed front matter ({} when absent or invalid)
    error: str | None  # why the front matter does not parse
    body_start: int  # offset of the body in `text`


def parse_card(text: str) -> CardText:
    found = _FRONT_MATTER.match(text)
    if not found:
        if text.lstrip("\ufeff").startswith("---"):
            return CardText(
                text, None, {}, "the YAML block that starts the card is never closed with '---'", 0
            )
        return CardText(text, None, {}, None, 0)
    yaml_text = found.group("yaml")
    try:
        data = load_yaml(yaml_text) if yaml_text.strip() else {}
    except YamlTooLarge as error:
        return CardText(text, yaml_text, {}, f"front matter is refused: {error}", found.end())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return CardText(text, yaml_text, {}, f"front matter is not valid YAML{where}: {problem}", found.end())
    except RecursionError:
        return CardText(text, yaml_text, {}, "front matter is nested too deeply to read", found.end())
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return CardText(text, yaml_text, {}, "front matter is not a YAML mapping", found.end())
    return CardText(text, yaml_text, data, None, found.end())
