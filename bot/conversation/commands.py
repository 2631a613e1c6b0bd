"""Owners' comment commands, read from the bot's own threads. Pure: event values in, values out.

An owner writes `@lora-bot <command>` on a line of its own in a comment on one of the bot's PRs or
discussions. The bot answers each command once, in a reply that carries a hidden record
(`<!-- lora-bot-command: {...} -->`) naming the comment it answers. The Hub is the only record: a comment
whose id a record names was acted on already, whoever reads it again and however often.

Records also hold what a command left behind for later runs: an ignored thread, a repo opted out, a
requested variant rank.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from bot.vocab import Command

MENTION = "@lora-bot"
RECORD = "lora-bot-command"
_RECORD_RE = re.compile(r"<!--\s*" + RECORD + r":\s*(\{.*?\})\s*-->", re.DOTALL)
_COMMAND_LINE = re.compile(r"^[ \t]*" + re.escape(MENTION) + r"\b[ \t]*(?P<words>[^\n]*)$", re.MULTILINE)
_RANK = re.compile(r"^r?(\d{1,4})$", re.IGNORECASE)
MAX_RANK = 1024


@dataclass(frozen=True)
class CommandRequest:
    """One command as an owner (or anyone) wrote it in a comment of one of the bot's threads."""

    comment_id: str
    author: str
    thread: int
    command: Command
    argument: str | None = None  # the flag code of `explain`, the rank of `variant` (digits)


def parse_command(text: str) -> tuple[Command, str | None] | None:
    """The first `@lora-bot ...` line of a comment, or None. Quoted lines (`> ...`) are someone else's words."""
    for match in _COMMAND_LINE.finditer(text or ""):
        words = match.group("words").strip().rstrip(".!").split()
        lowered = [w.lower() for w in words]
        if lowered[:2] == ["ignore", "repo"] and len(words) == 2:
            return Command.IGNORE_REPO, None
        if lowered == ["ignore"]:
            return Command.IGNORE, None
        if lowered == ["recreate"]:
            return Command.RECREATE, None
        if lowered == ["check"]:
            return Command.CHECK, None
        if len(words) == 2 and lowered[0] == "explain":
            return Command.EXPLAIN, words[1].strip("`")
        if len(words) == 2 and lowered[0] == "variant":
            rank = _RANK.match(words[1])
            if rank and 1 <= int(rank.group(1)) <= MAX_RANK:
                return Command.VARIANT, rank.group(1).lstrip("0") or "0"
        return Command.UNKNOWN, " ".join(words)[:80]
    return None


def render_record(record: dict) -> str:
    """The hidden record of an answered command; invisible in the rendered comment."""
    return f"<!-- {RECORD}: {json.dumps(record, sort_keys=True)} -->"


def parse_records(text: str) -> list[dict]:
    """Every command record in a comment; unparseable ones are ignored, not trusted."""
    found = []
    for match in _RECORD_RE.finditer(text or ""):
        try:
            record = json.loads(match.group(1))
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("comment"), str):
            found.append(record)
    return found


def thread_commands(events, thread: int, me: str) -> tuple[tuple[CommandRequest, ...], tuple[dict, ...]]:
    """(commands others wrote, records the bot wrote) in one thread's events, in order. The bot's own
    comments are never commands (its bodies list the commands as help), and hidden comments do not count."""
    requests, records = [], []
    for event in events:
        if event.type != "comment":
            continue
        content = getattr(event, "content", "") or ""
        if event.author == me:
            records += parse_records(content)
            continue
        if getattr(event, "hidden", False):
            continue
        parsed = parse_command(content)
        if parsed is not None:
            requests.append(CommandRequest(event.id, event.author, thread, parsed[0], parsed[1]))
    return tuple(requests), tuple(records)


def ignored_state(events, me: str) -> bool | None:
    """Whether the thread's latest owner command about it was `ignore` (True) or `recreate` (False); None
    when neither was answered here."""
    state = None
    for event in events:
        if event.type == "comment" and event.author == me:
            for record in parse_records(getattr(event, "content", "")):
                if record.get("command") == Command.IGNORE:
                    state = True
                elif record.get("command") == Command.RECREATE:
                    state = False
    return state
