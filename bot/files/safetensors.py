"""Safetensors files on the local disk: header-only reads, scalar reads, hashing and metadata rewrites.

The parsing itself is pure and lives in `bot.core.header`; this module only moves bytes between the disk and it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from bot.core.header import (
    HeaderError,
    SafetensorsHeader,
    declared_header_length,
    decode_scalar,
    encode_header,
    parse_header,
)
from bot.core.limits import MAX_ADAPTER_HEADER_BYTES


def read_local_header(path: str | os.PathLike, limit: int = MAX_ADAPTER_HEADER_BYTES) -> SafetensorsHeader:
    """Read only the header of a local file: two small reads, whatever the file's size. `limit` caps the
    header's length before it is read (HeaderTooLarge above it); a base model's shards pass a larger one."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = declared_header_length(prefix, size, limit)
        raw = bytearray(8 + length)  # read in place: `prefix + read()` would hold the header twice
        raw[:8] = prefix
        with memoryview(raw) as view:
            done = 8
            while done < len(raw):
                got = handle.readinto(view[done:])
                if not got:
                    raise HeaderError(
                        f"file ends inside the header: {done - 8:,} of {length:,} header bytes present"
                    )
                done += got
        return parse_header(raw, size, limit)


def read_local_scalars(
    path: str | os.PathLike, header: SafetensorsHeader, names: list[str]
) -> dict[str, float]:
    """Read the few bytes of each named scalar tensor (kohya `.alpha`) by seeking, never the whole file."""
    values = {}
    # Unbuffered: a buffered reader would fetch 8 KiB around each 4-byte alpha, hundreds of times per file.
    with Path(path).open("rb", buffering=0) as handle:
        for name in names:
            start, end = header.absolute_range(name)
            handle.seek(start)
            values[name] = decode_scalar(header.tensors[name], handle.read(end - start))
    return values


def file_sha256(path: Path, start: int = 0) -> str:
    """sha256 of the file from byte `start` on (the header's `data_start`: the tensor data alone)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        handle.seek(start)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rewrite_metadata(source: Path, destination: Path, metadata: Mapping[str, str]) -> SafetensorsHeader:
    """Copy `source` with a new `__metadata__`; the data section is streamed unchanged."""
    header = read_local_header(source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, destination.open("wb") as writer:
        writer.write(encode_header(header.tensors.values(), metadata))
        reader.seek(header.data_start)
        shutil.copyfileobj(reader, writer, length=1 << 20)
    return read_local_header(destination)
