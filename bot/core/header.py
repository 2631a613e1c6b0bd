"""The safetensors header: parsed and validated strictly, without touching the tensor data.

A safetensors file is `u64 little-endian N` + `N bytes of JSON` + data. Everything lora-bot knows about a
file comes from that JSON (names, dtypes, shapes, offsets, `__metadata__`) plus, for kohya/LyCORIS files, a
few scalar `.alpha` tensors read separately. Reading is the caller's business (local file, HTTP range);
this module only turns bytes into a `SafetensorsHeader` or a `HeaderError` that says what is wrong.
"""

from __future__ import annotations

import gc
import json
import math
import re
import reprlib
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.core.limits import MAX_ADAPTER_HEADER_BYTES, MAX_HEADER_BYTES

# Shapes and offsets are u64 in the format; a longer integer literal is corrupt, and refusing it by its digit
# count keeps Python from building (or refusing with a bare ValueError) a 4,300-digit int.
MAX_COUNT = 2**64
_MAX_INT_DIGITS = len(str(MAX_COUNT))
# Names and values echoed in messages are cut so a corrupt header cannot flood the terminal.
_SHOWN_CHARS = 80
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN_CHARS

# Bits per element. Sub-byte float types exist in newer safetensors; a tensor of them must fill whole bytes.
DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


class HeaderError(ValueError):
    """The file is not a valid safetensors file; the message says why in terms a user can act on."""


class HeaderTooLarge(ValueError):
    """A header within the format's limit but above lora-bot's cap for the file at hand: not a defect of the
    file (so never a `corrupt-header` claim), just more than the bot reads for it. Not a HeaderError on
    purpose: readers that turn a HeaderError into a finding let this one through as "not inspected"."""


@dataclass(frozen=True, slots=True)  # a header can hold 100,000s of them
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]  # relative to the start of the data section

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: Mapping[str, TensorInfo]  # in file order
    metadata: Mapping[str, str]
    header_length: int  # N, the JSON length
    file_size: int | None  # None when the caller could not know it

    @property
    def data_start(self) -> int:
        return 8 + self.header_length

    def absolute_range(self, name: str) -> tuple[int, int]:
        """Byte range [start, end) of a tensor's data in the file."""
        begin, end = self.tensors[name].data_offsets
        return self.data_start + begin, self.data_start + end


def declared_header_length(
    prefix: bytes, file_size: int | None = None, limit: int = MAX_ADAPTER_HEADER_BYTES
) -> int:
    """N from the first 8 bytes, checked against the file size, the format's 100 MB limit (corrupt above it)
    and `limit`, the cap for this kind of file (HeaderTooLarge above it, before anything is read or parsed).
    The default is the cap for a LoRA adapter; a base model's shards pass MAX_HEADER_BYTES."""
    if not prefix:
        raise HeaderError("file is empty; a safetensors file starts with an 8-byte header length")
    if len(prefix) < 8:
        raise HeaderError(
            f"file is only {len(prefix)} byte{'s' if len(prefix) > 1 else ''} long; "
            "a safetensors file starts with an 8-byte header length"
        )
    (length,) = struct.unpack("<Q", prefix[:8])
    if length == 0:
        raise HeaderError("header length is 0; a safetensors header is at least '{}'")
    if length > MAX_HEADER_BYTES:
        raise HeaderError(f"header length {length:,} bytes exceeds the {MAX_HEADER_BYTES:,}-byte limit")
    if file_size is not None and 8 + length > file_size:
        raise HeaderError(f"header length {length:,} bytes runs past the end of the {file_size:,}-byte file")
    if length > limit:
        raise HeaderTooLarge(
            f"header is {length:,} bytes, over lora-bot's {limit:,}-byte cap for a LoRA adapter's header "
            "(a limit of the bot, not a defect of the file); not inspected"
        )
    return length


def parse_header(
    raw: bytes, file_size: int | None = None, limit: int = MAX_ADAPTER_HEADER_BYTES
) -> SafetensorsHeader:
    """Parse and validate `raw` = the first 8 + N bytes of a file (more bytes are ignored)."""
    collecting = gc.isenabled()
    # The parse makes a few objects per tensor and none refer back: the cyclic collector, run again and
    # again as they pile up, would go over all of them each time (most of the time of a large header).
    gc.disable()
    try:
        return _parse_header(raw, file_size, limit)
    finally:
        if collecting:
            gc.enable()


def _parse_header(raw: bytes, file_size: int | None, limit: int) -> SafetensorsHeader:
    length = declared_header_length(raw, file_size, limit)
    if len(raw) < 8 + length:
        raise HeaderError(f"file ends inside the header: {len(raw) - 8:,} of {length:,} header bytes present")
    with memoryview(raw) as view:  # decoded in place: a slice would copy the whole header once more
        text = _decode(view[8 : 8 + length])
    document = _load_json(text)
    del text
    metadata = _metadata(document.pop("__metadata__", None))
    # Each entry is dropped as its TensorInfo is made, so the parsed JSON and the tensors are not both held
    # whole; equal shapes share one tuple (a header repeats a few shapes thousands of times).
    shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
    tensors = {name: _tensor(name, document.pop(name), shapes) for name in list(document)}
    data_size = None if file_size is None else file_size - 8 - length
    _check_layout(tensors, data_size)
    return SafetensorsHeader(tensors=tensors, metadata=metadata, header_length=length, file_size=file_size)


_SCALAR_FORMATS = {
    "F16": "<e",
    "F32": "<f",
    "F64": "<d",
    "I8": "<b",
    "U8": "<B",
    "I16": "<h",
    "U16": "<H",
    "I32": "<i",
    "U32": "<I",
    "I64": "<q",
    "U64": "<Q",
}
SCALAR_DTYPES = frozenset(_SCALAR_FORMATS) | {"BF16"}


def decode_scalar(info: TensorInfo, raw: bytes) -> float:
    """The value of a one-element tensor; bf16 is the top half of a float32."""
    if len(raw) != info.nbytes:
        raise HeaderError(f"{info.name}: expected {info.nbytes} bytes of data, got {len(raw)}")
    if info.dtype == "BF16":
        return struct.unpack("<f", b"\x00\x00" + raw[:2])[0]
    fmt = _SCALAR_FORMATS.get(info.dtype)
    if fmt is None:
        raise HeaderError(f"{info.name}: cannot read a scalar of dtype {info.dtype}")
    return float(struct.unpack(fmt, raw[: struct.calcsize(fmt)])[0])


def _decode(blob: bytes | memoryview) -> str:
    try:
        return str(blob, "utf-8")
    except UnicodeDecodeError as error:
        raise HeaderError(f"header is not valid UTF-8 (byte {error.start} of the header)") from None


def _shown(value: object) -> str:
    """A name or value for a message: quoted when it holds odd characters, cut when long."""
    if isinstance(value, str) and value.isprintable():
        return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"
    return _SHOWN.repr(value)  # bounded in length and depth, whatever the header holds


def _check_text(text: str) -> None:
    # JSON lets `\ud800` escape half a surrogate pair; that is no character, safetensors refuses it, and it
    # would crash anything that prints or re-encodes the name.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HeaderError(
            f"header holds a string with an unpaired \\u surrogate escape: {_shown(text)}"
        ) from None


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    made = dict(pairs)
    if len(made) != len(pairs):
        # Parsers disagree on which entry wins (Python and serde keep the last), so tools would see
        # different tensors or metadata in the same file.
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise HeaderError(f"header names {_shown(key)} twice; readers disagree on which entry counts")
            seen.add(key)
    return made


def _checked_object(pairs: list[tuple[str, object]]) -> dict:
    for key, _ in pairs:
        _check_text(key)
    return _unique_object(pairs)


# Text decoded from valid UTF-8 holds no surrogates; only a `\uD800`-`\uDFFF` escape can make one. Without
# such an escape anywhere, the per-string checks are skipped (one linear scan instead of a call per string).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Pythons with a cap on int() digits (3.10.7+) refuse a huge literal in C with a ValueError, caught below;
# others need the per-integer hook, or a million-digit literal would take minutes to convert.
_INT_DIGITS_CAPPED = getattr(sys, "get_int_max_str_digits", lambda: 0)() > 0


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _MAX_INT_DIGITS:
        raise HeaderError(f"header holds a {len(digits):,}-digit integer; shapes and offsets are 64-bit")
    return int(digits)


def _reject_constant(name: str) -> None:
    raise HeaderError(f"header is not valid JSON: {name} is not a JSON value")


def _load_json(text: str) -> dict:
    if text.startswith("\ufeff"):
        raise HeaderError("header starts with a byte-order mark (BOM); it must start with '{'")
    if not text.lstrip().startswith("{"):
        raise HeaderError("header is not a JSON object (it must start with '{')")
    surrogates = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    hooks: dict = {"object_pairs_hook": _checked_object if surrogates else _unique_object}
    if not _INT_DIGITS_CAPPED:
        hooks["parse_int"] = _parse_int
    try:
        document = json.loads(text, parse_constant=_reject_constant, **hooks)
    except json.JSONDecodeError as error:
        at_byte = len(text[: error.pos].encode("utf-8"))
        raise HeaderError(
            f"header is not valid JSON: {error.msg.removesuffix(' at')} at byte {at_byte}"
        ) from None
    except RecursionError:
        raise HeaderError("header JSON is nested too deeply") from None
    except HeaderError:
        raise
    except ValueError as error:  # int(): a literal over the interpreter's digit cap
        digits = re.search(r"has (\d+) digits", str(error))
        count = f"{int(digits[1]):,}-digit" if digits else "very long"
        raise HeaderError(f"header holds a {count} integer; shapes and offsets are 64-bit") from None
    if not isinstance(document, dict):
        raise HeaderError("header is not a JSON object")
    return document


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HeaderError(f"__metadata__ must be an object of strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise HeaderError(f"__metadata__ must map strings to strings; {_shown(key)} is {_shown(item)}")
        _check_text(item)
    return value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNT


_FIELDS = {"dtype", "shape", "data_offsets"}


def _tensor(name: str, entry: object, shapes: dict | None = None) -> TensorInfo:
    """The entry's TensorInfo; a fast path takes well-formed entries, the checks below say what is wrong."""
    if type(entry) is dict and len(entry) == 3:
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if (
            type(dtype) is str
            and dtype in DTYPE_BITS
            and type(shape) is list
            and type(offsets) is list
            and len(offsets) == 2
        ):
            begin, end = offsets
            if (
                type(begin) is int
                and type(end) is int
                and 0 <= begin <= end < MAX_COUNT
                and all(type(d) is int and 0 <= d < MAX_COUNT for d in shape)
            ):
                numel = math.prod(shape)
                bits = numel * DTYPE_BITS[dtype]
                if numel < MAX_COUNT and bits % 8 == 0 and bits // 8 == end - begin:
                    dims = tuple(shape)
                    if shapes is not None:
                        dims = shapes.setdefault(dims, dims)
                    return TensorInfo(name, dtype, dims, (begin, end))
    return _checked_tensor(name, entry)


def _checked_tensor(name: str, entry: object) -> TensorInfo:
    label = _shown(name)
    if not isinstance(entry, dict):
        raise HeaderError(f"{label}: entry is not an object but {_shown(entry)}")
    missing = _FIELDS - entry.keys()
    if missing:
        raise HeaderError(f"{label}: entry lacks {', '.join(sorted(missing))}")
    extra = entry.keys() - _FIELDS
    if extra:
        # safetensors itself ignores extra fields, but the format has none: they come from a broken writer.
        raise HeaderError(
            f"{label}: unexpected field(s) {_shown(', '.join(sorted(extra)))}; "
            "a tensor entry holds only dtype, shape and data_offsets"
        )
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise HeaderError(f"{label}: unknown dtype {_shown(dtype)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise HeaderError(
            f"{label}: shape must be a list of non-negative 64-bit integers, got {_shown(shape)}"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise HeaderError(
            f"{label}: data_offsets must be two non-negative 64-bit integers, got {_shown(offsets)}"
        )
    begin, end = offsets
    if end < begin:
        raise HeaderError(f"{label}: data_offsets end {end} is before begin {begin}")
    numel = math.prod(shape)
    if numel >= MAX_COUNT:
        raise HeaderError(f"{label}: shape {_shown(shape)} overflows: more than 2^64 elements")
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8:
        raise HeaderError(
            f"{label}: shape {_shown(shape)} of {dtype} is {bits} bits, not a whole number of bytes"
        )
    if bits // 8 != end - begin:
        raise HeaderError(
            f"{label}: shape {_shown(shape)} of {dtype} needs {bits // 8:,} bytes "
            f"but data_offsets span {end - begin:,}"
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), data_offsets=(begin, end))


def _check_layout(tensors: Mapping[str, TensorInfo], data_size: int | None) -> None:
    """Tensors must tile the data section exactly: no gaps, no overlaps, nothing past the end."""
    position, previous = 0, None
    for info in sorted(tensors.values(), key=lambda t: t.data_offsets):
        begin, end = info.data_offsets
        if begin < position:
            raise HeaderError(
                f"{_shown(info.name)}: data [{begin:,}, {end:,}) overlaps {_shown(previous.name)}, "
                f"which ends at {position:,}"
            )
        if begin > position:
            raise HeaderError(
                f"{_shown(info.name)}: gap of {begin - position:,} unused bytes before its data "
                f"at offset {begin:,}"
            )
        position, previous = end, info
    if data_size is not None:
        if position > data_size:
            raise HeaderError(
                f"{_shown(previous.name)}: data ends at byte {position:,} of the data section, past "
                f"the end of the file ({data_size:,} data bytes): truncated or wrong offsets"
            )
        if position < data_size:
            raise HeaderError(f"file has {data_size - position:,} trailing bytes after the last tensor")


def encode_header(tensors: Iterable[TensorInfo], metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length and JSON header of a safetensors file holding these tensors, in the order given."""
    document: dict = {"__metadata__": dict(metadata)} if metadata else {}
    for info in tensors:
        document[info.name] = {
            "dtype": info.dtype,
            "shape": list(info.shape),
            "data_offsets": list(info.data_offsets),
        }
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the reference writer aligns the data section to 8 bytes
    return len(text).to_bytes(8, "little") + text


def scalar_names(header: SafetensorsHeader) -> list[str]:
    """The one-element `.alpha` tensors whose values the engine needs (kohya, LyCORIS).

    An alpha in a dtype with no scalar reading (bool, fp8) stays unread: alpha then counts as undeclared
    for that module, which is reported, rather than the whole file being called corrupt."""
    return [
        name
        for name, info in header.tensors.items()
        if name.endswith(".alpha") and info.numel == 1 and info.dtype in SCALAR_DTYPES
    ]
