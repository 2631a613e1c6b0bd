"""Real module layouts and sparse safetensors files for the sandbox's sample repos, the tests and the benchmarks.

A layout maps module paths to (in features, out features) at the real widths of a base model, so a LoRA
built on it has the names and shapes of a real upload. A sparse file is a valid safetensors file whose data
section is a hole: it reads as zeros except a few scalars, and a 4 GiB LoRA costs a few kB of disk and no RAM.

No torch here: a sparse file needs none, so the benchmarks that write real-size files stay light.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path

from bot.core.header import DTYPE_BITS

# ------------------------------------------------------------------------------------------ layouts

# SD 1.5 UNet attention blocks: (diffusers path, channels). Cross-attention keys/values read 768-wide CLIP-L.
SD15_ATTENTION = [
    *[
        (f"down_blocks.{b}.attentions.{a}.transformer_blocks.0", c)
        for b, c in enumerate((320, 640, 1280))
        for a in range(2)
    ],
    ("mid_block.attentions.0.transformer_blocks.0", 1280),
    *[
        (f"up_blocks.{b}.attentions.{a}.transformer_blocks.0", c)
        for b, c in zip((1, 2, 3), (1280, 640, 320), strict=True)
        for a in range(3)
    ],
]
# SDXL UNet transformer stacks in the SGM naming kohya uses: (block, channels, transformer blocks).
SDXL_TRANSFORMERS = [
    *[(f"input_blocks_{i}_1", 640, 2) for i in (4, 5)],
    *[(f"input_blocks_{i}_1", 1280, 10) for i in (7, 8)],
    ("middle_block_1", 1280, 10),
    *[(f"output_blocks_{i}_1", 1280, 10) for i in (0, 1, 2)],
    *[(f"output_blocks_{i}_1", 640, 2) for i in (3, 4, 5)],
]
SD15_CONTEXT = 768
SDXL_CONTEXT = 2048
FLUX_HIDDEN = 3072


def attention_shapes(blocks, context: int) -> dict[str, tuple[int, int]]:
    """module path → (in, out) for the four projections of self- and cross-attention."""
    shapes = {}
    for path, channels in blocks:
        for attn, kv_in in (("attn1", channels), ("attn2", context)):
            shapes[f"{path}.{attn}.to_q"] = (channels, channels)
            shapes[f"{path}.{attn}.to_k"] = (kv_in, channels)
            shapes[f"{path}.{attn}.to_v"] = (kv_in, channels)
            shapes[f"{path}.{attn}.to_out.0"] = (channels, channels)
    return shapes


def sdxl_sgm_shapes(
    transformers=SDXL_TRANSFORMERS, *, feed_forward: bool = True
) -> dict[str, tuple[int, int]]:
    """SGM module name (what kohya writes after `lora_unet_`) → (in, out) of the attention and feed-forward
    linears of the SDXL UNet: all 700 by default."""
    shapes = {}
    for block, channels, depth in transformers:
        for n in range(depth):
            path = f"{block}.transformer_blocks.{n}"
            shapes |= attention_shapes([(path, channels)], SDXL_CONTEXT)
            if feed_forward:
                shapes[f"{path}.ff.net.0.proj"] = (channels, 8 * channels)  # GEGLU: value and gate, 4x each
                shapes[f"{path}.ff.net.2"] = (4 * channels, channels)
    return {name.replace(".", "_"): shape for name, shape in shapes.items()}


def flux_shapes() -> dict[str, tuple[int, int]]:
    """A slice of FLUX.1 in diffusers naming: one double block's image attention and one single block."""
    shapes = {f"transformer_blocks.0.attn.{p}": (FLUX_HIDDEN, FLUX_HIDDEN) for p in ("to_q", "to_k", "to_v")}
    shapes["transformer_blocks.0.attn.to_out.0"] = (FLUX_HIDDEN, FLUX_HIDDEN)
    shapes["single_transformer_blocks.0.attn.to_q"] = (FLUX_HIDDEN, FLUX_HIDDEN)
    shapes["single_transformer_blocks.0.proj_out"] = (FLUX_HIDDEN + 4 * FLUX_HIDDEN, FLUX_HIDDEN)
    return shapes


# ------------------------------------------------------------------------------------------ sparse files

# Scalar dtypes a sparse file can hold a value in (BF16 is packed as the top half of an F32).
_SCALAR_PACK = {"F64": "<d", "F32": "<f", "F16": "<e", "I64": "<q", "I32": "<i"}


def _scalar_bytes(dtype: str, value: float) -> bytes:
    if dtype == "BF16":
        return struct.pack("<f", value)[2:]
    fmt = _SCALAR_PACK[dtype]
    return struct.pack(fmt, int(value) if fmt in ("<q", "<i") else value)


def write_sparse_safetensors(
    path: str | Path,
    shapes: Mapping[str, tuple[str, tuple[int, ...]]],
    metadata: Mapping[str, str] | None = None,
    values: Mapping[str, float] | None = None,
) -> int:
    """A valid safetensors file of `shapes` (tensor name → (safetensors dtype, shape)); the data reads as
    zeros except the one-element tensors given in `values`. Returns the header size, its 8-byte length
    prefix included: where the data starts.

    Tensors are laid out in name order, as safetensors does for one dtype. The data section is made by
    truncating the file to its full length, so it is a hole that costs neither disk nor RAM.
    """
    values = values or {}
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in sorted(shapes):
        dtype, shape = shapes[name]
        end = offset + math.prod(shape) * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8 bytes with spaces
    data_start = 8 + len(blob)
    with Path(path).open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        for name, value in values.items():
            dtype, shape = shapes[name]
            if math.prod(shape) != 1:
                raise ValueError(f"{name} is not a scalar: shape {list(shape)}")
            handle.seek(data_start + header[name]["data_offsets"][0])
            handle.write(_scalar_bytes(dtype, value))
        handle.truncate(data_start + offset)
    return data_start
