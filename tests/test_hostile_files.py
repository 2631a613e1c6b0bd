"""Hostile corpus, part 1: malformed and adversarial safetensors files and sibling configs, inspected
locally. Each case asserts what a user sees: one block per file with a clear flag or an ok line, strict JSON,
no control character reaching the terminal, no traceback, and (one subprocess over the whole corpus, with a
timeout as the watchdog) no hang."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent


def raw_file(header: bytes, data: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def tensor_file(tensors: dict, metadata: dict | None = None, data: bytes | None = None) -> bytes:
    doc = dict(tensors)
    if metadata is not None:
        doc["__metadata__"] = metadata
    end = max(
        (t["data_offsets"][1] for t in tensors.values() if isinstance(t, dict) and "data_offsets" in t),
        default=0,
    )
    header = json.dumps(doc).encode()
    header += b" " * (-len(header) % 8)
    return raw_file(
        header, data if data is not None else bytes(end if isinstance(end, int) and end < 10**7 else 0)
    )


def pair(name: str, rank: int = 4, width: int = 8, dtype: str = "F32") -> dict:
    size = {"F32": 4, "F16": 2, "BF16": 2}.get(dtype, 4)
    a = rank * width * size
    return {
        f"{name}.lora_A.weight": {"dtype": dtype, "shape": [rank, width], "data_offsets": [0, a]},
        f"{name}.lora_B.weight": {"dtype": dtype, "shape": [width, rank], "data_offsets": [a, 2 * a]},
    }


GOOD = pair("base_model.model.layers.0.self_attn.q_proj")

# name -> (file bytes, adapter_config.json text or None, expected flag code or None for "a clean block")
CASES: dict[str, tuple[bytes, str | None, str | None]] = {
    "empty": (b"", None, "corrupt-header"),
    "one-byte": (b"\x01", None, "corrupt-header"),
    "seven-bytes": (b"\x00" * 7, None, "corrupt-header"),
    "length-zero": (raw_file(b""), None, "corrupt-header"),
    "length-huge": (raw_file(b"{}", length=2**63), None, "corrupt-header"),
    "length-over-cap": (raw_file(b"{}", length=100_000_001), None, "corrupt-header"),
    "length-past-eof": (raw_file(b"{}", length=1000), None, "corrupt-header"),
    "not-json": (raw_file(b"this is not json"), None, "corrupt-header"),
    "json-array": (raw_file(b"[1,2,3]"), None, "corrupt-header"),
    "json-string": (raw_file(b'"x"'), None, "corrupt-header"),
    "json-null": (raw_file(b"null"), None, "corrupt-header"),
    "empty-object": (raw_file(b"{}"), None, "not-an-adapter"),
    "invalid-utf8": (raw_file(b'{"\xff\xfe": 1}'), None, "corrupt-header"),
    "nan-literal": (raw_file(b'{"a": NaN}'), None, "corrupt-header"),
    "deep-nesting": (
        raw_file(b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        None,
        "corrupt-header",
    ),
    "huge-int": (
        raw_file(b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'),
        None,
        "corrupt-header",
    ),
    "negative-shape": (
        tensor_file({"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}),
        None,
        "corrupt-header",
    ),
    "float-shape": (
        tensor_file({"a": {"dtype": "F32", "shape": [1.5, 4], "data_offsets": [0, 16]}}),
        None,
        "corrupt-header",
    ),
    "bool-shape": (
        tensor_file({"a": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}}),
        None,
        "corrupt-header",
    ),
    "unknown-dtype": (
        tensor_file({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}),
        None,
        "corrupt-header",
    ),
    "dtype-not-string": (
        tensor_file({"a": {"dtype": 7, "shape": [4], "data_offsets": [0, 16]}}),
        None,
        "corrupt-header",
    ),
    "offsets-reversed": (
        tensor_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, data=bytes(16)),
        None,
        "corrupt-header",
    ),
    "offsets-wrong-size": (
        tensor_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}),
        None,
        "corrupt-header",
    ),
    "offsets-overlap": (
        tensor_file(
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
            }
        ),
        None,
        "corrupt-header",
    ),
    "offsets-past-eof": (
        tensor_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, data=b""),
        None,
        "corrupt-header",
    ),
    "offsets-missing": (tensor_file({"a": {"dtype": "F32", "shape": [4]}}), None, "corrupt-header"),
    "tensor-not-object": (raw_file(b'{"a": 5}'), None, "corrupt-header"),
    "shape-overflow": (
        tensor_file({"a": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 16]}}),
        None,
        "corrupt-header",
    ),
    "metadata-not-object": (raw_file(b'{"__metadata__": [1]}'), None, "corrupt-header"),
    "metadata-non-string": (tensor_file(GOOD, metadata={"x": 5}), None, "corrupt-header"),
    "duplicate-keys": (
        raw_file(
            b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
            bytes(4),
        ),
        None,
        "corrupt-header",
    ),
    "name-with-esc": (tensor_file(pair("x\x1b[31mred\x07")), None, None),
    "name-with-cr": (tensor_file(pair("a\rb")), None, None),
    "name-with-nul": (tensor_file(pair("a\x00b")), None, None),
    "name-with-newline-command": (tensor_file(pair("x\n::error::pwned")), None, None),
    "name-bidi": (tensor_file(pair("a\u202eb")), None, None),
    "name-very-long": (tensor_file(pair("m." * 5000 + "q_proj")), None, None),
    "many-tensors": (
        tensor_file(
            {k: v for i in range(2000) for k, v in pair(f"base_model.model.l{i}.q_proj", 1, 1).items()}
        ),
        None,
        None,
    ),
    "metadata-nan-alpha": (
        tensor_file(
            {
                "lora_unet_a.lora_down.weight": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]},
                "lora_unet_a.lora_up.weight": {"dtype": "F32", "shape": [8, 4], "data_offsets": [128, 256]},
                "lora_unet_a.alpha": {"dtype": "F32", "shape": [], "data_offsets": [256, 260]},
            },
            data=bytes(256) + struct.pack("<f", float("nan")),
        ),
        None,
        None,
    ),
    "metadata-inf-alpha": (
        tensor_file(
            {
                "lora_unet_a.lora_down.weight": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]},
                "lora_unet_a.lora_up.weight": {"dtype": "F32", "shape": [8, 4], "data_offsets": [128, 256]},
                "lora_unet_a.alpha": {"dtype": "F32", "shape": [], "data_offsets": [256, 260]},
            },
            data=bytes(256) + struct.pack("<f", float("inf")),
        ),
        None,
        None,
    ),
    "ss-dim-digits": (tensor_file(GOOD, metadata={"ss_network_dim": "²"}), None, None),
    "ss-dim-circled": (tensor_file(GOOD, metadata={"ss_network_dim": "①"}), None, None),
    "ss-dim-huge": (tensor_file(GOOD, metadata={"ss_network_dim": "9" * 40}), None, None),
    "ss-dim-inf": (tensor_file(GOOD, metadata={"ss_network_dim": ".inf"}), None, None),
    "ss-alpha-nan": (tensor_file(GOOD, metadata={"ss_network_alpha": "nan"}), None, None),
    "ss-args-not-json": (tensor_file(GOOD, metadata={"ss_network_args": "{not json"}), None, None),
    "ss-args-deep": (tensor_file(GOOD, metadata={"ss_network_args": "[" * 10000 + "]" * 10000}), None, None),
    "diffusers-meta-not-json": (tensor_file(GOOD, metadata={"lora_adapter_metadata": "{{{"}), None, None),
    "diffusers-meta-redos": (
        tensor_file(
            GOOD, metadata={"lora_adapter_metadata": json.dumps({"r": 4, "rank_pattern": {"(.*.*)*y": 8}})}
        ),
        None,
        "pattern-unchecked",
    ),
    "diffusers-meta-deep": (
        tensor_file(GOOD, metadata={"lora_adapter_metadata": "[" * 50000 + "]" * 50000}),
        None,
        None,
    ),
    "modelspec-arch-garbage": (tensor_file(GOOD, metadata={"modelspec.architecture": "\x1b[2J"}), None, None),
}

# Sibling adapter_config.json texts next to a good PEFT file.
CONFIGS: dict[str, tuple[str, str | None]] = {
    "config-redos": (
        json.dumps({"r": 4, "lora_alpha": 8, "rank_pattern": {"(.*.*)*y": 8}}),
        "pattern-unchecked",
    ),
    "config-redos-alpha": (
        json.dumps({"r": 4, "lora_alpha": 8, "alpha_pattern": {"(a+)+$": 2}}),
        "pattern-unchecked",
    ),
    "config-redos-nested-class": (
        json.dumps({"r": 4, "rank_pattern": {"([a-z]+)*q": 8}}),
        "pattern-unchecked",
    ),
    "config-star-star-linear": (json.dumps({"r": 4, "rank_pattern": {".*.*.*.*.*.*y": 8}}), None),
    "config-regex-match": (json.dumps({"r": 8, "rank_pattern": {".*q_pro[j]": 4}}), None),
    "config-backref": (json.dumps({"r": 4, "rank_pattern": {"(q)\\1": 8}}), "pattern-unchecked"),
    "config-lookahead": (json.dumps({"r": 4, "rank_pattern": {"(?=q)q_proj": 8}}), "pattern-unchecked"),
    "config-long-pattern": (
        json.dumps({"r": 4, "rank_pattern": {"a|" * 600 + "q_proj": 8}}),
        "pattern-unchecked",
    ),
    "config-repeat-bomb": (json.dumps({"r": 4, "rank_pattern": {"(a{1000}){1000}": 8}}), "pattern-unchecked"),
    "config-invalid-regex": (json.dumps({"r": 4, "rank_pattern": {"(": 8}}), None),
    "config-r-float": (json.dumps({"r": 4.0, "lora_alpha": 8}), None),
    "config-r-30-digits": ('{"r": 123456789012345678901234567890, "lora_alpha": 8}', "config-invalid"),
    "config-r-nan": ('{"r": NaN}', "config-invalid"),
    "config-r-inf": ('{"r": Infinity}', "config-invalid"),
    "config-r-string": (json.dumps({"r": "4"}), "config-invalid"),
    "config-r-negative": (json.dumps({"r": -4}), "config-invalid"),
    "config-r-bool": (json.dumps({"r": True}), "config-invalid"),
    "config-alpha-huge-int": ('{"r": 4, "lora_alpha": ' + "9" * 400 + "}", "config-invalid"),
    "config-not-json": ("{r: 4", "config-invalid"),
    "config-array": ("[4]", "config-invalid"),
    "config-deep": ("[" * 100_000 + "]" * 100_000, "config-invalid"),
    "config-patterns-not-object": (json.dumps({"r": 4, "rank_pattern": [1]}), "config-invalid"),
    "config-r-mismatch": (json.dumps({"r": 8, "lora_alpha": 8}), "rank-mismatch-config"),
    "config-many-patterns": (
        json.dumps({"r": 4, "rank_pattern": {f"layers.{i}.self_attn.q_proj": 4 for i in range(3000)}}),
        None,
    ),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-files")
    for name, (content, config, _) in CASES.items():
        folder = root / name
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(content)
        if config is not None:
            (folder / "adapter_config.json").write_text(config)
    for name, (config, _) in CONFIGS.items():
        folder = root / name
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(tensor_file(GOOD))
        (folder / "adapter_config.json").write_text(config, encoding="utf-8")
    return root


def inspect(folder: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["inspect", str(folder), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _expect(name: str) -> str | None:
    return CASES[name][2] if name in CASES else CONFIGS[name][1]


@pytest.mark.parametrize("name", [*CASES, *CONFIGS])
def test_hostile_file_gives_one_clear_block(corpus, capsys, name):
    code, out, err = inspect(corpus / name, capsys)
    assert "Traceback" not in err and not err.strip(), err
    assert code in (0, 1)
    assert out.startswith("adapter_model.safetensors\n"), out[:200]
    # Nothing from the file reaches the terminal raw: only our own layout's line breaks.
    assert not any(not c.isprintable() and c != "\n" for c in out)
    expected = _expect(name)
    if expected is not None:
        assert f" {expected}: " in out, out[:2000]
    assert len(out) < 20_000, "a hostile file cannot flood the terminal"


@pytest.mark.parametrize("name", [*CASES, *CONFIGS])
def test_hostile_file_json_is_strict(corpus, capsys, name):
    _code, out, err = inspect(corpus / name, capsys, "--json")
    assert not err.strip(), err
    document = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    (entry,) = document["files"]
    expected = _expect(name)
    if expected is not None:
        assert expected in {f["code"] for f in entry["flags"]}


def test_whole_corpus_in_one_process_finishes_under_a_watchdog(corpus):
    # The watchdog is the timeout: a hang (ReDoS, alias bomb, huge allocation) fails here instead of stalling.
    done = subprocess.run(
        [sys.executable, "-m", "bot", "inspect", str(corpus), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    files = json.loads(done.stdout)["files"]
    assert len(files) == len(CASES) + len(CONFIGS)


def test_redos_pattern_is_answered_promptly_with_a_flag(tmp_path, capsys):
    # The issue's case: `{"(.*.*)*y": 8}` hung `inspect` past 120 s. The subprocess timeout is the watchdog.
    (tmp_path / "adapter_model.safetensors").write_bytes(
        tensor_file(pair("base_model.model." + "x" * 40 + ".q_proj"))
    )
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"(.*.*)*y": 8}}))
    done = subprocess.run(
        [sys.executable, "-m", "bot", "inspect", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert "pattern-unchecked" in done.stdout and "(.*.*)*y" in done.stdout
    assert "rank-mismatch-config" not in done.stdout, "an unknown declared rank is no ground for a claim"


def test_inspect_on_a_fifo_is_a_usage_error(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    code, _out, err = inspect(fifo, capsys)
    assert code == 2 and "not a regular file" in err and err.count("\n") == 1
