"""A corpus of malformed safetensors files, each made from one good kohya LoRA file.

Every variant must come back from `lora-bot inspect` as one `corrupt-header` finding whose message names the
actual problem, with exit status 1 and no traceback; a folder holding all of them must still report the good
files beside them. Files that are odd but valid (space-padded header) must not be flagged.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bot.cli import main
from bot.core.inspect import inspect_evidence
from bot.sources.local import file_evidence

# Two kohya modules; data order in the file is whatever safetensors chooses, so variants look it up.
DOWN = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"
UP = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"
ALPHA = "lora_unet_down_blocks_0_attentions_0_proj_in.alpha"


def write_kohya_lora(path: Path, rank: int, alpha: float) -> None:
    tensors = {}
    for module, width in (
        ("lora_unet_down_blocks_0_attentions_0_proj_in", 32),
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 16),
    ):
        tensors[f"{module}.lora_down.weight"] = torch.full((rank, width), 0.5)
        tensors[f"{module}.lora_up.weight"] = torch.full((width, rank), 0.25)
        tensors[f"{module}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path), metadata={"ss_network_dim": str(rank), "ss_network_alpha": str(alpha)})


@dataclass(frozen=True)
class Good:
    """The good file taken apart: its header as a dict and as text, and its data section."""

    raw: bytes
    header: dict
    text: str
    data: bytes

    @classmethod
    def load(cls, path: Path) -> Good:
        raw = path.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        text = raw[8 : 8 + length].decode()
        return cls(raw=raw, header=json.loads(text), text=text.rstrip(), data=raw[8 + length :])

    def by_offset(self) -> list[str]:
        names = [n for n in self.header if n != "__metadata__"]
        return sorted(names, key=lambda n: self.header[n]["data_offsets"])


def pack(header: bytes | str, data: bytes) -> bytes:
    blob = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(blob)) + blob + data


def edited(change: Callable[[dict, Good], None]) -> Callable[[Good], bytes]:
    """A variant that edits a copy of the header dict; the data section is kept."""

    def build(good: Good) -> bytes:
        header = copy.deepcopy(good.header)
        change(header, good)
        return pack(json.dumps(header, separators=(",", ":")), good.data)

    return build


def text_edit(change: Callable[[str], str]) -> Callable[[Good], bytes]:
    """A variant that edits the header text; the declared length follows the edited text."""
    return lambda good: pack(change(good.text), good.data)


def set_field(name: str, field: str, value) -> Callable[[Good], bytes]:
    def change(header: dict, good: Good) -> None:
        header[name][field] = value

    return edited(change)


def drop_field(field: str) -> Callable[[Good], bytes]:
    return edited(lambda header, good: header[DOWN].pop(field))


def shift(which: int, by: int) -> Callable[[Good], bytes]:
    """Move the `which`-th tensor in data order by `by` bytes, keeping its length."""

    def change(header: dict, good: Good) -> None:
        entry = header[good.by_offset()[which]]
        entry["data_offsets"] = [o + by for o in entry["data_offsets"]]

    return edited(change)


def grow_last(header: dict, good: Good) -> None:
    """The last tensor in data order claims twice its bytes, consistently with its shape: out of range."""
    entry = header[good.by_offset()[-1]]
    begin, end = entry["data_offsets"]
    entry["shape"] = [entry["shape"][0] * 2, *entry["shape"][1:]]
    entry["data_offsets"] = [begin, begin + 2 * (end - begin)]


def first_tensor_twice(text: str) -> str:
    # json.dumps cannot write a duplicate key, so the entry is spliced into the text.
    header = json.loads(text)
    return text[:-1] + f',"{DOWN}":' + json.dumps(header[DOWN]) + "}"


def nested(depth: int) -> Callable[[str], str]:
    return lambda text: text[:-1] + ',"deep":' + "[" * depth + "]" * depth + "}"


def length_prefix(value: int) -> Callable[[Good], bytes]:
    return lambda good: struct.pack("<Q", value) + good.raw[8:]


# (id, builder, words the corrupt-header message must contain)
VARIANTS: list[tuple[str, Callable[[Good], bytes], tuple[str, ...]]] = [
    ("empty-file", lambda good: b"", ("empty",)),
    ("one-byte", lambda good: good.raw[:1], ("only 1 byte long",)),
    ("seven-bytes", lambda good: good.raw[:7], ("only 7 bytes long",)),
    ("header-length-zero", length_prefix(0), ("header length is 0",)),
    (
        "header-length-past-end",
        lambda good: struct.pack("<Q", len(good.raw)) + good.raw[8:],
        ("runs past the end",),
    ),
    ("huge-declared-header", length_prefix(2**63), ("exceeds", "limit")),
    ("truncated-in-header", lambda good: good.raw[: 8 + len(good.text) // 2], ("runs past the end",)),
    ("truncated-in-data", lambda good: good.raw[:-6], ("past the end of the file", "data ends at byte")),
    ("trailing-bytes", lambda good: good.raw + b"\0" * 16, ("16 trailing bytes",)),
    ("json-cut", text_edit(lambda text: text[: len(text) // 2]), ("not valid JSON",)),
    ("json-trailing-comma", text_edit(lambda text: text[:-1] + ",}"), ("not valid JSON",)),
    (
        "json-single-quotes",
        text_edit(lambda text: text.replace('"', "'")),
        ("not valid JSON", "double quotes"),
    ),
    ("json-garbage-after", text_edit(lambda text: text + " x"), ("not valid JSON", "Extra data")),
    ("json-array", text_edit(lambda text: f"[{text}]"), ("not a JSON object",)),
    (
        "json-control-char",
        text_edit(lambda text: text.replace("ss_network_dim", "ss_network\tdim")),
        ("not valid JSON", "control character"),
    ),
    (
        "non-utf8",
        lambda good: pack(good.text.encode().replace(b"proj_in", b"proj\xffin", 1), good.data),
        ("UTF-8",),
    ),
    (
        "byte-order-mark",
        lambda good: pack(b"\xef\xbb\xbf" + good.text.encode(), good.data),
        ("byte-order mark",),
    ),
    (
        "lone-surrogate",
        text_edit(lambda text: text.replace("proj_in.lora_down", "proj_in\\ud800.lora_down")),
        ("surrogate",),
    ),
    ("duplicate-tensor-key", text_edit(first_tensor_twice), (DOWN, "twice")),
    (
        "duplicate-metadata",
        text_edit(lambda text: text[:-1] + ',"__metadata__":{}}'),
        ("__metadata__", "twice"),
    ),
    (
        "duplicate-field",
        text_edit(lambda text: text.replace('"dtype":"F32"', '"dtype":"F32","dtype":"F16"', 1)),
        ("dtype twice",),
    ),
    # The parser counts keys in the text to prove none is written twice; strings that look like keys
    # (`","` then `:`) and spaced-out JSON must not hide a duplicate from that count.
    (
        "duplicate-beside-key-like-strings",
        text_edit(
            lambda text: text.replace(
                '"__metadata__":{', '"__metadata__":{"a":"\\",\\":","b":":","a":"x",', 1
            )
        ),
        ("a twice",),
    ),
    (
        "duplicate-in-spaced-json",
        text_edit(lambda text: first_tensor_twice(text).replace('":', '" : ').replace(',"', ',\n  "')),
        (DOWN, "twice"),
    ),
    (
        "duplicate-field-spaced",
        text_edit(lambda text: text.replace('"dtype":"F32"', '"dtype" : "F32" , "dtype" :\n"F16"', 1)),
        ("dtype twice",),
    ),
    (
        "metadata-non-string",
        edited(lambda header, good: header["__metadata__"].update(ss_network_dim=4)),
        ("__metadata__", "strings to strings", "ss_network_dim"),
    ),
    (
        "metadata-not-object",
        edited(lambda header, good: header.update(__metadata__=["ss_network_dim"])),
        ("__metadata__ must be an object",),
    ),
    (
        "entry-not-object",
        edited(lambda header, good: header.update({DOWN: [4, 32]})),
        ("entry is not an object",),
    ),
    ("missing-dtype", drop_field("dtype"), ("lacks dtype",)),
    ("missing-shape", drop_field("shape"), ("lacks shape",)),
    ("missing-data-offsets", drop_field("data_offsets"), ("lacks data_offsets",)),
    ("extra-field", set_field(DOWN, "strides", [32, 1]), ("unexpected field", "strides")),
    ("unknown-dtype", set_field(DOWN, "dtype", "F33"), ("unknown dtype", "F33")),
    ("dtype-not-string", set_field(DOWN, "dtype", ["F32"]), ("unknown dtype",)),
    ("dtype-100k-chars", set_field(DOWN, "dtype", "F" * 100_000), ("unknown dtype", "FFFF…")),
    (
        "entry-huge-list",
        edited(lambda header, good: header.update({DOWN: list(range(100_000))})),
        ("entry is not an object", "..."),
    ),
    ("shape-negative", set_field(DOWN, "shape", [-4, 32]), ("shape must be",)),
    ("shape-float", set_field(DOWN, "shape", [4.0, 32]), ("shape must be",)),
    ("shape-string", set_field(DOWN, "shape", ["4", 32]), ("shape must be",)),
    ("shape-not-list", set_field(DOWN, "shape", 128), ("shape must be",)),
    ("shape-past-u64", set_field(DOWN, "shape", [2**64, 1]), ("shape must be", "64-bit")),
    ("shape-overflows", set_field(DOWN, "shape", [2**40, 2**40]), ("overflows",)),
    ("shape-offset-disagree", set_field(DOWN, "shape", [4, 33]), ("needs 528 bytes", "span 512")),
    (
        "sub-byte-shape",
        edited(lambda header, good: header[DOWN].update(dtype="F4", shape=[255])),
        ("not a whole number of bytes",),
    ),
    (
        "offsets-three",
        edited(lambda header, good: header[DOWN]["data_offsets"].append(0)),
        ("data_offsets must be",),
    ),
    (
        "offsets-negative",
        edited(lambda header, good: header[DOWN].update(data_offsets=[-512, 0])),
        ("data_offsets must be",),
    ),
    (
        "offsets-reversed",
        edited(lambda header, good: header[DOWN]["data_offsets"].reverse()),
        ("before begin",),
    ),
    (
        "offsets-float",
        edited(
            lambda header, good: header[DOWN].update(
                data_offsets=[float(o) for o in header[DOWN]["data_offsets"]]
            )
        ),
        ("data_offsets must be",),
    ),
    (
        "offsets-bool",
        edited(lambda header, good: header[ALPHA].update(shape=[1], dtype="U8", data_offsets=[False, True])),
        ("data_offsets must be",),
    ),
    ("offsets-overlap", shift(1, -4), ("overlaps",)),
    ("offsets-gap", shift(1, +4), ("gap of 4 unused bytes",)),
    ("offsets-out-of-range", edited(grow_last), ("past the end of the file",)),
    ("deeply-nested", text_edit(nested(100_000)), ("nested too deeply",)),
    (
        "huge-integer",
        text_edit(lambda text: text.replace('"shape":[', '"shape":[' + "9" * 5000 + ",", 1)),
        ("5,000-digit integer",),
    ),
    ("nan-literal", text_edit(lambda text: text.replace('"shape":[', '"shape":[NaN,', 1)), ("NaN",)),
    (
        "infinity-literal",
        text_edit(lambda text: text.replace('"shape":[', '"shape":[-Infinity,', 1)),
        ("-Infinity",),
    ),
]
VARIANT_IDS = [variant[0] for variant in VARIANTS]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Good:
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    write_kohya_lora(path, rank=4, alpha=2.0)
    return Good.load(path)


def inspect_json(capsys, target: Path) -> tuple[int, dict, str]:
    status = main(["inspect", str(target), "--json"])
    captured = capsys.readouterr()
    return status, json.loads(captured.out), captured.err


def corrupt_messages(entry: dict) -> list[str]:
    return [f["message"] for f in entry["flags"] if f["code"] == "corrupt-header"]


def test_corpus_is_large_and_distinct(good):
    assert len(VARIANTS) >= 30 and len(set(VARIANT_IDS)) == len(VARIANTS)
    blobs = [build(good) for _, build, _ in VARIANTS]
    assert len(set(blobs)) == len(blobs) and good.raw not in blobs


@pytest.mark.parametrize(("name", "build", "words"), VARIANTS, ids=VARIANT_IDS)
def test_variant_is_flagged_with_a_specific_message(capsys, tmp_path, good, name, build, words):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(build(good))
    status, report, err = inspect_json(capsys, path)
    assert status == 1
    assert "Traceback" not in err
    [entry] = report["files"]
    [message] = corrupt_messages(entry)
    for word in words:
        assert word in message, f"{name}: {word!r} not in {message!r}"
    assert "\n" not in message and len(message) < 400
    assert entry["rank"] is None


SUBPROCESS_VARIANTS = [
    "empty-file",
    "huge-declared-header",
    "non-utf8",
    "lone-surrogate",
    "deeply-nested",
    "huge-integer",
    "shape-overflows",
    "offsets-overlap",
]


@pytest.mark.parametrize("name", SUBPROCESS_VARIANTS)
def test_no_traceback_reaches_the_terminal(tmp_path, good, name):
    build = {v[0]: v[1] for v in VARIANTS}[name]
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(build(good))
    for extra in ([], ["--json"]):  # the text renderer prints names too
        done = subprocess.run(
            [sys.executable, "-m", "bot", "inspect", str(path), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "corrupt-header" in done.stdout


def test_space_padded_header_is_valid(capsys, tmp_path, good):
    # The format allows trailing 0x20 padding (safetensors itself pads to 8 bytes); it is not corruption.
    path = tmp_path / "padded.safetensors"
    path.write_bytes(pack(good.text + " " * 61, good.data))
    status, report, _ = inspect_json(capsys, path)
    [entry] = report["files"]
    assert corrupt_messages(entry) == []
    assert (entry["rank"], entry["alpha"], entry["tensors"]) == (4, 2.0, 6)
    assert entry["header_bytes"] == 8 + len(good.text) + 61
    assert status == 0


def test_folder_reports_every_bad_file_and_the_good_ones(capsys, tmp_path, good):
    folder = tmp_path / "repo"
    folder.mkdir()
    for name, build, _ in VARIANTS:
        (folder / f"{name}.safetensors").write_bytes(build(good))
    write_kohya_lora(folder / "good_rank4.safetensors", rank=4, alpha=2.0)
    (folder / "nested").mkdir()
    write_kohya_lora(folder / "nested" / "good_rank8.safetensors", rank=8, alpha=8.0)
    # Things that are not readable files must neither crash the scan nor hide the good files.
    (folder / "a-directory.safetensors").mkdir()
    (folder / "loop.safetensors").symlink_to(folder / "loop.safetensors")
    (folder / "dangling.safetensors").symlink_to(folder / "nowhere.safetensors")
    (folder / "again").symlink_to(folder, target_is_directory=True)

    status, report, err = inspect_json(capsys, folder)
    by_path = {entry["path"]: entry for entry in report["files"]}
    assert status == 1 and "Traceback" not in err
    for name in VARIANT_IDS:
        assert corrupt_messages(by_path.pop(f"{name}.safetensors")), name
    good_four, good_eight = (
        by_path.pop("good_rank4.safetensors"),
        by_path.pop("nested/good_rank8.safetensors"),
    )
    assert (good_four["rank"], good_four["alpha"], corrupt_messages(good_four)) == (4, 2.0, [])
    assert (good_eight["rank"], good_eight["alpha"], corrupt_messages(good_eight)) == (8, 8.0, [])
    assert by_path == {}


def _write_sparse(path: Path, header: dict, scalars: dict[int, bytes], size: int) -> None:
    """Header + the given bytes at their data offsets; the rest is a hole the file system never stores."""
    text = json.dumps(header, separators=(",", ":"))
    with path.open("wb") as handle:
        handle.write(pack(text, b""))
        start = handle.tell()
        for offset, blob in scalars.items():
            handle.seek(start + offset)
            handle.write(blob)
    os.truncate(path, start + size)


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_header_of_a_1gb_sparse_file_is_read_without_the_data(capsys, tmp_path, good):
    rank, width = 8, 2**24  # each factor is 512 MiB of float32
    module = "lora_unet_down_blocks_0_attentions_0_proj_in"
    header = {
        f"{module}.alpha": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
        f"{module}.lora_down.weight": {
            "dtype": "F32",
            "shape": [rank, width],
            "data_offsets": [4, 4 + 4 * rank * width],
        },
        f"{module}.lora_up.weight": {
            "dtype": "F32",
            "shape": [width, rank],
            "data_offsets": [4 + 4 * rank * width, 4 + 8 * rank * width],
        },
    }
    path = tmp_path / "big.safetensors"
    _write_sparse(path, header, {0: struct.pack("<f", 4.0)}, 4 + 8 * rank * width)
    assert path.stat().st_size > 2**30

    small = tmp_path / "small.safetensors"
    small.write_bytes(good.raw)
    inspect_json(capsys, small)  # warm up: lazy imports read files too
    before = _rchar()
    status, report, _ = inspect_json(capsys, path)
    read = _rchar() - before
    [entry] = report["files"]
    assert corrupt_messages(entry) == []
    assert (entry["rank"], entry["alpha"], entry["size"]) == (rank, 4.0, path.stat().st_size)
    assert status == 0
    assert read < 1_000_000, f"inspect read {read:,} bytes of a {path.stat().st_size:,}-byte file"


def test_header_over_the_limit_is_refused_even_when_the_file_holds_it(capsys, tmp_path):
    # 101 MB of file, 100,000,001 bytes declared: only the limit stops the reader from allocating it.
    path = tmp_path / "huge-header.safetensors"
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", 100_000_001) + b"{")
    os.truncate(path, 101_000_000)
    status, report, _ = inspect_json(capsys, path)
    [message] = corrupt_messages(report["files"][0])
    assert "100,000,001" in message and "limit" in message and status == 1


def test_a_legal_header_over_lora_bots_cap_is_not_inspected_and_not_called_corrupt(capsys, tmp_path, good):
    # Valid for safetensors (spaces may pad the JSON, and the format allows 100 MB), but over what lora-bot
    # reads for an adapter: a limit of the bot, so no claim about the file and no failing exit.
    from bot.core.limits import MAX_ADAPTER_HEADER_BYTES

    path = tmp_path / "moe-every-expert.safetensors"
    path.write_bytes(pack(good.text + " " * (MAX_ADAPTER_HEADER_BYTES - len(good.text) + 8), good.data))
    status, report, _ = inspect_json(capsys, path)
    (entry,) = report["files"]
    assert corrupt_messages(entry) == [] and status == 0
    ((code, severity, message),) = [(f["code"], f["severity"], f["message"]) for f in entry["flags"]]
    assert (code, severity) == ("not-inspected", "info")
    assert f"{MAX_ADAPTER_HEADER_BYTES:,}-byte cap" in message and "not a defect of the file" in message


def test_a_directory_where_a_file_is_expected_is_a_finding(tmp_path):
    folder = tmp_path / "adapter.safetensors"
    folder.mkdir()
    inspection = inspect_evidence(file_evidence(folder, "adapter.safetensors", None, None, pickle=False))
    [found] = [f for f in inspection.flags if f.code == "corrupt-header"]
    assert "cannot read the file" in found.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_a_finding(capsys, tmp_path, good):
    path = tmp_path / "locked.safetensors"
    path.write_bytes(good.raw)
    path.chmod(0)
    status, report, _ = inspect_json(capsys, path)
    [message] = corrupt_messages(report["files"][0])
    assert "cannot read the file" in message and status == 1


def test_a_symlink_loop_as_target_is_a_usage_error(capsys, tmp_path):
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop)
    status = main(["inspect", str(loop)])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("lora-bot: error:") and str(loop) in captured.err
    assert captured.err.count("\n") == 1


def test_a_string_full_of_escaped_quotes_is_read_in_one_pass(capsys, tmp_path, good):
    # 8 MB of `\"`: a key count that restarted inside strings would take hours here (quadratic).
    text = good.text.replace('"__metadata__":{', '"__metadata__":{"note":"' + '\\\\\\"' * 2_000_000 + '",', 1)
    path = tmp_path / "quotes.safetensors"
    path.write_bytes(pack(text.encode(), good.data))
    assert main(["inspect", str(path), "--json"]) in (0, 1)
    (file,) = json.loads(capsys.readouterr().out)["files"]
    assert not any(flag["code"] == "corrupt-header" for flag in file["flags"])
    assert file["rank"] is not None and file["tensors"] == len(json.loads(good.text)) - 1
