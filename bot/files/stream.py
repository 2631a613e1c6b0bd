"""Safetensors one tensor at a time: a reader of single tensors and a writer that streams.

The writer puts the header first, planned from names/dtypes/shapes, then each tensor's bytes as they are
produced. The reader uses positioned reads rather than mmap: pages of a mapped multi-GB input stay resident
and count toward the process's peak memory, while a read costs only the tensor itself. Memory stays at one
tensor whatever the file's size.

The data section may be written in any order (readers locate tensors by `data_offsets`), so the caller
announces the order it will produce tensors in, while the JSON keeps the input's key order. Values that
depend on the written bytes (kohya's `sshs_model_hash`) are reserved as fixed-width placeholders in the
header and patched in place once the data is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from bot.core.header import DTYPE_BITS, SafetensorsHeader, TensorInfo, encode_header

TORCH_DTYPES: Mapping[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_COPY_CHUNK = 1 << 20


class StreamError(ValueError):
    """The tensors produced do not match the header that was written for them."""


@dataclass(frozen=True)
class TensorSlot:
    name: str
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BITS[self.dtype] // 8


def read_tensor(handle: BinaryIO, header: SafetensorsHeader, name: str) -> torch.Tensor:
    """One tensor of an open safetensors file, read from its byte range into memory of its own."""
    info = header.tensors[name]
    dtype = TORCH_DTYPES.get(info.dtype)
    if dtype is None:
        raise StreamError(f"{name}: torch has no dtype for {info.dtype}")
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    start, _ = header.absolute_range(name)
    buffer = bytearray(info.nbytes)
    handle.seek(start)
    if handle.readinto(buffer) != info.nbytes:
        raise StreamError(f"{name}: the file ends inside its data")
    return torch.frombuffer(buffer, dtype=dtype).reshape(info.shape)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor, without a copy when it is already contiguous."""
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


class StreamingWriter:
    """Write one safetensors file tensor by tensor, in the order given by `data_order`.

    `placeholders` maps metadata keys to the width of the value they will get; `finish` fills them in.
    The file is written under a temporary name and renamed on `finish`, so a failed run leaves nothing behind.
    """

    def __init__(
        self,
        path: Path,
        slots: Sequence[TensorSlot],
        metadata: Mapping[str, str],
        data_order: Sequence[str] | None = None,
        placeholders: Mapping[str, int] | None = None,
    ):
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        by_name = {slot.name: slot for slot in slots}
        order = list(data_order) if data_order is not None else [slot.name for slot in slots]
        if sorted(order) != sorted(by_name):
            raise StreamError("the data order must name every tensor exactly once")
        self._queue = [by_name[name] for name in order]
        self._position = 0
        self._markers = {key: secrets.token_hex(width)[:width] for key, width in (placeholders or {}).items()}
        header = _header_bytes(slots, self._queue, {**metadata, **self._markers})
        self._header_length = len(header) - 8
        self._header = header
        self._data_hash = hashlib.sha256()
        self._handle: BinaryIO = self._partial.open("wb")
        self._handle.write(header)

    @property
    def data_start(self) -> int:
        return 8 + self._header_length

    def _next(self, name: str) -> TensorSlot:
        if self._position >= len(self._queue):
            raise StreamError(f"{name}: every planned tensor has already been written")
        slot = self._queue[self._position]
        if slot.name != name:
            raise StreamError(f"expected {slot.name} next, got {name}")
        self._position += 1
        return slot

    def write_tensor(self, name: str, tensor: torch.Tensor) -> None:
        slot = self._next(name)
        if tuple(tensor.shape) != slot.shape or tensor.dtype != TORCH_DTYPES.get(slot.dtype):
            raise StreamError(
                f"{name}: planned {slot.dtype} {list(slot.shape)}, got {tensor.dtype} {list(tensor.shape)}"
            )
        self._emit(tensor_bytes(tensor))

    def copy_raw(self, name: str, source: BinaryIO, start: int) -> None:
        """Copy a tensor's bytes unchanged from an open file, in chunks (any dtype, even ones torch lacks)."""
        slot = self._next(name)
        source.seek(start)
        remaining = slot.nbytes
        while remaining:
            chunk = source.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise StreamError(f"{name}: the input file ended {remaining} bytes early")
            self._emit(chunk)
            remaining -= len(chunk)

    def _emit(self, data) -> None:
        self._data_hash.update(data)
        self._handle.write(data)

    @property
    def data_sha256(self) -> str:
        """sha256 of the data section: what kohya and sd-webui call the model hash."""
        return self._data_hash.hexdigest()

    def has_placeholder(self, key: str) -> bool:
        return key in self._markers

    def patch(self, key: str, value: str) -> None:
        """Replace a placeholder in the written header by a value of the same width."""
        marker = self._markers[key]
        if len(value) != len(marker):
            raise StreamError(f"{key}: value width {len(value)} differs from the reserved {len(marker)}")
        offset = self._header.index(json.dumps(marker).encode()) + 1
        self._handle.flush()
        self._handle.seek(offset)
        self._handle.write(value.encode())
        self._handle.seek(0, os.SEEK_END)

    def read_back(self, start: int, length: int) -> bytes:
        self._handle.flush()
        with self._partial.open("rb") as handle:
            handle.seek(start)
            return handle.read(length)

    def finish(self) -> None:
        if self._position != len(self._queue):
            missing = self._queue[self._position].name
            raise StreamError(
                f"{len(self._queue) - self._position} planned tensor(s) never written, first {missing}"
            )
        self._handle.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._handle.close()
        self._partial.unlink(missing_ok=True)


def _header_bytes(
    slots: Iterable[TensorSlot], data_order: Sequence[TensorSlot], metadata: Mapping[str, str]
) -> bytes:
    """The header for `slots` (JSON in their order) whose data follows in `data_order`."""
    offsets, position = {}, 0
    for slot in data_order:
        offsets[slot.name] = (position, position + slot.nbytes)
        position += slot.nbytes
    return encode_header(
        [TensorInfo(slot.name, slot.dtype, slot.shape, offsets[slot.name]) for slot in slots], metadata
    )
