"""JSON that trainers store inside safetensors string metadata (kohya `ss_network_args`, diffusers
`lora_adapter_metadata`), read leniently: a value that is not a JSON object counts as absent."""

from __future__ import annotations

import json
from collections.abc import Mapping

from bot.core.limits import MAX_METADATA_JSON_DEPTH

DIFFUSERS_KEY = "lora_adapter_metadata"
NETWORK_ARGS_KEY = "ss_network_args"
DYNAMIC = "Dynamic"  # what kohya writes for a dim or alpha that differs between modules


class MetadataTooDeep(ValueError):
    """Metadata JSON nested past MAX_METADATA_JSON_DEPTH: not what any trainer writes."""


def nesting_depth(value: object) -> int:
    """Levels of lists and objects in a parsed JSON value, counted without recursion (a hostile value can be
    nested deeper than Python's stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_metadata_json(text: str, key: str) -> object:
    """The JSON value of a metadata string; ValueError when it is not JSON, MetadataTooDeep when it is nested
    past the limit (the decoder's RecursionError included), so no caller meets a RecursionError later."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
    else:
        if nesting_depth(value) <= MAX_METADATA_JSON_DEPTH:
            return value
    raise MetadataTooDeep(
        f"{key} in the header metadata is JSON nested deeper than {MAX_METADATA_JSON_DEPTH} levels"
    )


def json_object(text: str | None, key: str = "metadata") -> dict:
    """A metadata string's JSON object; one that is not JSON, not an object or nested too deeply counts as
    absent."""
    if not text:
        return {}
    try:
        value = load_metadata_json(text, key)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def diffusers_adapter_metadata(metadata: Mapping[str, str]) -> dict:
    """diffusers' per-component LoraConfig, flattened as `<component>.<field>` (e.g. `unet.r`)."""
    return json_object(metadata.get(DIFFUSERS_KEY), DIFFUSERS_KEY)


def network_args(metadata: Mapping[str, str]) -> dict:
    """kohya's network arguments (conv_dim, block_dims, LyCORIS algo, ...)."""
    return json_object(metadata.get(NETWORK_ARGS_KEY), NETWORK_ARGS_KEY)


def as_int(text: object) -> int | None:
    """A rank as trainers write it into string metadata ("16"); None for "Dynamic", "" or anything else."""
    try:
        return int(str(text))
    except ValueError:
        return None
