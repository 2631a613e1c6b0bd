"""JSON that trainers store inside safetensors string metadata (kohya `ss_network_args`, diffusers
`lora_adapter_metadata`), read leniently: a value that is not a JSON object counts as absent."""

from __future__ import annotations

import json
from collections.abc import Mapping

DIFFUSERS_KEY = "lora_adapter_metadata"
NETWORK_ARGS_KEY = "ss_network_args"
DYNAMIC = "Dynamic"  # what kohya writes for a dim or alpha that differs between modules


def json_object(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for the JSON decoder
        return {}
    return value if isinstance(value, dict) else {}


def diffusers_adapter_metadata(metadata: Mapping[str, str]) -> dict:
    """diffusers' per-component LoraConfig, flattened as `<component>.<field>` (e.g. `unet.r`)."""
    return json_object(metadata.get(DIFFUSERS_KEY))


def network_args(metadata: Mapping[str, str]) -> dict:
    """kohya's network arguments (conv_dim, block_dims, LyCORIS algo, ...)."""
    return json_object(metadata.get(NETWORK_ARGS_KEY))


def as_int(text: object) -> int | None:
    """A rank as trainers write it into string metadata ("16"); None for "Dynamic", "" or anything else."""
    try:
        return int(str(text))
    except ValueError:
        return None
