"""Trainer metadata that disagrees with the weights, corrected: a new header over the same tensor bytes.

kohya's `ss_network_dim` (and `conv_dim` in `ss_network_args`) and diffusers' `lora_adapter_metadata`
`<component>.r` are rewritten to the ranks the shapes have. Nothing else changes: same tensors, same
offsets, same data bytes — only `__metadata__` differs, so the file is verifiably the same adapter.

Writing the corrected file is I/O and lives in `bot.files.safetensors.rewrite_metadata`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping

from bot.core.trainer_metadata import (
    DIFFUSERS_KEY,
    DYNAMIC,
    NETWORK_ARGS_KEY,
    as_int,
    diffusers_adapter_metadata,
    network_args,
)


def _declared(ranks: Counter) -> str:
    """The value kohya metadata should state for these ranks: the one rank, or "Dynamic" when they differ."""
    return str(next(iter(ranks))) if len(ranks) == 1 else DYNAMIC


def corrected_metadata(metadata: Mapping[str, str], modules) -> dict[str, str] | None:
    """The metadata with every declared rank made true, or None when nothing declared is wrong.

    `modules` are the inspection's module reports (name, kind, rank, conv_dim)."""
    lora = [m for m in modules if m.rank is not None and m.kind in ("lora", "lora-tucker")]
    linear = Counter(m.rank for m in lora if not m.conv_dim)
    conv = Counter(m.rank for m in lora if m.conv_dim)
    fixed = dict(metadata)
    dim = as_int(metadata.get("ss_network_dim", ""))
    if dim is not None and linear and set(linear) != {dim}:
        fixed["ss_network_dim"] = _declared(linear)
    args = network_args(metadata)
    if args and conv:
        conv_dim = as_int(args.get("conv_dim", ""))
        if conv_dim is not None and set(conv) != {conv_dim}:
            args["conv_dim"] = _declared(conv)
            fixed[NETWORK_ARGS_KEY] = json.dumps(args)
    adapter = diffusers_adapter_metadata(metadata)
    if adapter:
        changed = False
        for component in sorted({m.name.split(".", 1)[0] for m in lora}):
            declared = adapter.get(f"{component}.r")
            if not isinstance(declared, int) or adapter.get(f"{component}.rank_pattern"):
                continue
            ranks = Counter(m.rank for m in lora if m.name.startswith(component + "."))
            if len(ranks) == 1 and set(ranks) != {declared}:
                adapter[f"{component}.r"] = next(iter(ranks))
                changed = True
        if changed:
            fixed[DIFFUSERS_KEY] = json.dumps(adapter)
    return fixed if fixed != dict(metadata) else None
