"""Card proposals: add what a model card lacks, touching nothing else.

The front matter is edited as text, not re-serialised: new keys are appended before the closing `---`,
new tags are inserted after the last existing tag in the style the card already uses. The result is parsed
again and must equal the old metadata plus exactly the additions; otherwise no card PR is proposed. The
card's body is kept byte for byte; the "LoRA details" section is appended after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from bot.core.card import parse_card
from bot.core.fingerprints import declared_repo_id
from bot.core.selection import is_repo_id
from bot.report.text import code_span, escape_markdown, human_size
from bot.vocab import FlagCode, Severity

DETAILS_HEADING = "## LoRA details"
_DETAILS_RE = re.compile(r"^#{1,6}\s*LoRA details\s*$", re.MULTILINE | re.IGNORECASE)
DIFFUSION_FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux1")


@dataclass(frozen=True)
class CardAdditions:
    keys: dict  # new top-level keys, in the order they are appended
    tags: tuple[str, ...]  # tags to add to the existing (or new) list
    details: str | None  # the "LoRA details" section, when the card has none

    @property
    def empty(self) -> bool:
        return not self.keys and not self.tags and not self.details

    def front_matter(self) -> dict:
        """The additions as new top-level metadata, for a card that has none of these keys yet."""
        return {**self.keys, "tags": list(self.tags)} if self.tags else dict(self.keys)

    def facts(self) -> dict:
        return {"keys": self.keys, "tags": list(self.tags), "details": self.details}


def library_for(inspection) -> str | None:
    if inspection.format == "peft":
        return "peft"
    if inspection.base_model.family in DIFFUSION_FAMILIES and inspection.format in (
        "diffusers",
        "diffusers-legacy",
        "kohya",
    ):
        return "diffusers"
    return None


def plan_additions(
    card_data: dict, card_text: str | None, inspections, base_repo: str | None
) -> CardAdditions:
    """What the card lacks, given the files' inspections. `base_repo` is the base model when it is known."""
    keys: dict = {}
    if base_repo and is_repo_id(base_repo) and not card_data.get("base_model"):
        keys["base_model"] = base_repo
    if (base_repo or card_data.get("base_model")) and not card_data.get("base_model_relation"):
        keys["base_model_relation"] = "adapter"
    libraries = {library_for(i) for i in inspections} - {None}
    if len(libraries) == 1 and not card_data.get("library_name"):
        keys["library_name"] = libraries.pop()
    existing = card_data.get("tags")
    wanted = ["lora"]
    base = card_data.get("base_model") or base_repo
    # The owner's own base_model may be a local path (`models/Qwen2_5-1_5b-Instruct`): no tag is made of it.
    if isinstance(base, str) and declared_repo_id(base):
        wanted.append(f"base_model:adapter:{base}")
    if isinstance(existing, str):
        tags = ()  # a scalar `tags:` would have to be rewritten; leave the owner's formatting alone
    else:
        tags = tuple(t for t in wanted if t not in (existing if isinstance(existing, list) else []))
    has_details = bool(card_text and _DETAILS_RE.search(card_text))
    details = None if has_details else details_section(inspections)
    return CardAdditions(keys, tags, details)


def details_section(inspections) -> str:
    lines = [
        DETAILS_HEADING,
        "",
        "Read from the safetensors headers by lora-bot; edit or remove freely.",
        "",
        "| file | format | rank | alpha | target modules | size |",
        "|---|---|---|---|---|---|",
    ]
    for item in inspections:
        if item.rank is None:
            rank = "-"
        elif len(item.ranks) == 1:
            rank = str(item.rank)
        else:
            rank = ", ".join(f"{r} ({n} modules)" for r, n in sorted(item.ranks.items()))
        alpha = (
            "-" if item.alpha is None else f"{item.alpha:g}" + ("" if item.alpha_declared else " (= rank)")
        )
        targets = ", ".join(item.target_modules[:10]) + (" …" if len(item.target_modules) > 10 else "")
        size = "-" if item.size is None else human_size(item.size)
        fmt = item.format + (f" ({item.variant})" if item.variant else "")
        lines.append(
            f"| {code_span(item.path)} | {fmt} | {rank} | {alpha} | {escape_markdown(targets)} | {size} |"
        )
    # Trainer metadata that states another rank breaks no loader (only info panels read it), so the weight
    # file is not rewritten for it; the card says which number to trust instead.
    stale = [
        (item, flag)
        for item in inspections
        for flag in item.flags
        if flag.code == FlagCode.RANK_MISMATCH_METADATA and flag.severity != Severity.ERROR
    ]
    if stale:
        lines.append("")
        lines += [
            f"Note: {code_span(item.path)}'s trainer metadata is out of date: {escape_markdown(flag.message)}. "
            "The rank above is the one the weights have."
            for item, flag in stale
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ editing


def _yaml_lines(mapping: dict) -> str:
    return yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def new_card(additions: CardAdditions, title: str) -> str:
    body = f"# {escape_markdown(title)}\n\n" + (additions.details or "")
    return "---\n" + _yaml_lines(additions.front_matter()) + "---\n\n" + body


def apply_additions(text: str | None, additions: CardAdditions, title: str) -> str | None:
    """The card with the additions, or None when they cannot be made without rewriting what is there."""
    if text is None:
        return new_card(additions, title)
    card = parse_card(text)
    if card.error:
        return None
    if card.yaml_text is None:
        front_matter = additions.front_matter()
        edited = "---\n" + _yaml_lines(front_matter) + "---\n\n" + text if front_matter else text
    else:
        edited = _edit_front_matter(text, card, additions)
        if edited is None:
            return None
    if additions.details:
        edited = edited + ("" if edited.endswith("\n") else "\n") + "\n" + additions.details
    return edited if _verify(text, edited, additions) else None


def _closing(text: str, card) -> int:
    """Offset of the closing `---` fence: the last one before the body starts."""
    return text.rfind("---", 0, card.body_start)


def _edit_front_matter(text: str, card, additions: CardAdditions) -> str | None:
    end = _closing(text, card)
    head, tail = text[:end], text[end:]
    newline = "\r\n" if "\r\n" in text[:end] else "\n"
    if head and not head.endswith("\n"):
        return None
    keys = additions.front_matter()
    if additions.tags and "tags" in card.data:
        head = _insert_tags(head, additions.tags, newline)
        if head is None:
            return None
        keys = additions.keys
    if keys:
        head += _yaml_lines(keys).replace("\n", newline)
    return head + tail


def _insert_tags(head: str, tags: tuple[str, ...], newline: str) -> str | None:
    lines = head.splitlines(keepends=True)
    index = next((i for i, line in enumerate(lines) if re.match(r"^tags\s*:", line)), None)
    if index is None:
        return None
    line = lines[index]
    flow = re.match(r"^(tags\s*:\s*\[)(.*)(\]\s*(#.*)?)$", line.rstrip("\r\n"))
    if flow:
        items = flow.group(2).strip()
        added = ", ".join(_flow_scalar(t) for t in tags)
        joined = f"{items}, {added}" if items else added
        lines[index] = f"{flow.group(1)}{joined}{flow.group(3)}{newline}"
        return "".join(lines)
    if not re.match(r"^tags\s*:\s*(#.*)?$", line.rstrip("\r\n")):
        return None
    last_item, indent = None, None
    for j in range(index + 1, len(lines)):
        item = re.match(r"^(\s*)-\s", lines[j])
        if item:
            last_item, indent = j, item.group(1)
        elif lines[j].strip() == "" or lines[j].lstrip().startswith("#"):
            continue
        elif re.match(r"^\s+\S", lines[j]) and last_item is not None:
            continue  # a continuation of a multi-line item
        else:
            break
    if last_item is None:
        return None
    # Continuation lines of the last item belong to it: insert after them.
    insert_at = last_item + 1
    while (
        insert_at < len(lines)
        and re.match(r"^\s+\S", lines[insert_at])
        and not re.match(r"^\s*-\s", lines[insert_at])
    ):
        insert_at += 1
    new_lines = [f"{indent}- {_block_scalar(t)}{newline}" for t in tags]
    return "".join(lines[:insert_at] + new_lines + lines[insert_at:])


def _block_scalar(value: str) -> str:
    """A tag as YAML writes it as a block list item (quoted only when it must be)."""
    return yaml.safe_dump([value], default_flow_style=False, width=1000).strip()[2:]


def _flow_scalar(value: str) -> str:
    """A tag as YAML writes it inside a list (quoted only when it must be)."""
    dumped = yaml.safe_dump([value], default_flow_style=True, width=1000).strip()
    return dumped[1:-1]


def _verify(old_text: str, new_text: str, additions: CardAdditions) -> bool:
    """The new card's metadata is exactly the old plus the additions, and the old body is intact."""
    old, new = parse_card(old_text), parse_card(new_text)
    if new.error:
        return False
    expected = dict(old.data)
    expected.update(additions.keys)
    if additions.tags:
        old_tags = old.data.get("tags") if isinstance(old.data.get("tags"), list) else []
        expected["tags"] = list(old_tags) + list(additions.tags)
    if new.data != expected:
        return False
    old_body = old_text[old.body_start :]
    return old_body in new_text[new.body_start :] or (old.yaml_text is None and old_text in new_text)
