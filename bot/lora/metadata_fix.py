"""Trainer metadata that disagrees with the weights, corrected: a new header over the same tensor bytes.

kohya's `ss_network_dim` (and `conv_dim` in `ss_network_args`) and diffusers' `lora_adapter_metadata`
`<component>.r` are rewritten to the ranks the shapes have. Nothing else changes: same tensors, same
offsets, same data bytes — only `__metadata__` differs, so the file is verifiably the same adapter.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Mapping

from bot.lora.header import SafetensorsHeader, read_local_header
from bot.lora.trainer_metadata import DIFFUSERS_KEY, NETWORK_ARGS_KEY, diffusers_adapter_metadata, network_args


def _most_common(values: Counter) -> int | None:
    if not values:
        return None
    return max(values.items(), key=lambda item: (item[1], item[0]))[0]


def _as_int(text: object) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


def corrected_metadata(metadata: Mapping[str, str], modules) -> dict[str, str] | None:
    """The metadata with every declared rank made true, or None when nothing declared is wrong.

    `modules` are the inspection's module reports (name, kind, rank, conv_dim)."""
    lora = [m for m in modules if m.rank is not None and m.kind in ("lora", "lora-tucker")]
    linear = Counter(m.rank for m in lora if not m.conv_dim)
    conv = Counter(m.rank for m in lora if m.conv_dim)
    fixed = dict(metadata)
    dim = _as_int(metadata.get("ss_network_dim", ""))
    if dim is not None and linear and set(linear) != {dim}:
        fixed["ss_network_dim"] = str(_most_common(linear)) if len(linear) == 1 else "Dynamic"
    args = network_args(metadata)
    if args and conv:
        conv_dim = _as_int(args.get("conv_dim", ""))
        if conv_dim is not None and set(conv) != {conv_dim}:
            args["conv_dim"] = str(_most_common(conv))
            fixed[NETWORK_ARGS_KEY] = json.dumps(args)
    adapter = diffusers_adapter_metadata(metadata)
    if adapter:
        changed = False
        for component in sorted({m.name.split(".", 1)[0] for m in lora}):
            declared = adapter.get(f"{component}.r")
            if not isinstance(declared, int) or adapter.get(f"{component}.rank_pattern"):
                continue
            ranks = Counter(m.rank for m in lora if m.name.startswith(component + "."))
            if ranks and set(ranks) != {declared} and len(ranks) == 1:
                adapter[f"{component}.r"] = _most_common(ranks)
                changed = True
        if changed:
            fixed[DIFFUSERS_KEY] = json.dumps(adapter)
    return fixed if fixed != dict(metadata) else None


def _header_bytes(header: SafetensorsHeader, metadata: Mapping[str, str]) -> bytes:
    document: dict = {"__metadata__": dict(metadata)}
    for name, info in header.tensors.items():
        document[name] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": list(info.data_offsets)}
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors writers do
    return len(text).to_bytes(8, "little") + text


def rewrite_metadata(source: Path, destination: Path, metadata: Mapping[str, str]) -> SafetensorsHeader:
    """Copy `source` with a new `__metadata__`; the data section is streamed unchanged."""
    header = read_local_header(source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, destination.open("wb") as writer:
        writer.write(_header_bytes(header, metadata))
        reader.seek(header.data_start)
        shutil.copyfileobj(reader, writer, length=1 << 20)
    return read_local_header(destination)
