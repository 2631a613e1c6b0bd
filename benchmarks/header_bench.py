"""Parsing a large legal safetensors header: this tree's parser against an earlier commit's, side by side.

Each header holds many small tensors (the worst case per byte: one object, two lists and a name per ~125
bytes). Each parse runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own: the raw header bytes
read from disk plus everything the parse holds. CPU seconds are the subprocess's own (the machine may be
shared, so wall time is printed too, but the ratio is of CPU time).

    python benchmarks/header_bench.py [--before 1d17982] [--sizes 32000000,91000000]

The "before" parser is bot/core/header.py at `--before`, loaded from git into a temporary module.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PARSE = r"""
import importlib.util, json, os, resource, sys, time
module_path, file, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location("header_under_test", module_path)
header = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(header)
size = os.path.getsize(file)
with open(file, "rb") as handle:
    raw = handle.read(8)
    raw += handle.read(int.from_bytes(raw, "little"))
wall, cpu = time.perf_counter(), time.process_time()
extra = {"limit": limit} if limit else {}
parsed = header.parse_header(raw, size, **extra)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"tensors": len(parsed.tensors), "wall": wall, "cpu": cpu, "rss": rss}))
"""


def write_header_file(path: Path, target_bytes: int) -> int:
    """A legal file whose header is about `target_bytes` of one-element F16 tensors; returns the header size."""
    document: dict = {"__metadata__": {"ss_network_dim": "1"}}
    offset, size, index = 0, 30, 0
    while size < target_bytes - 200:
        name = f"lora_unet_down_blocks_{index}_attentions_proj.lora_down.weight"
        document[name] = {"dtype": "F16", "shape": [1, 1], "data_offsets": [offset, offset + 2]}
        size += len(name) + 75
        offset, index = offset + 2, index + 1
    blob = json.dumps(document, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        handle.truncate(8 + len(blob) + offset)
    return len(blob)


def measure(module: Path, file: Path, limit: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(module), str(file), str(limit)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1d17982", help="git commit of the parser to compare with")
    parser.add_argument("--sizes", default="32000000,91000000", help="header sizes in bytes, comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        before = Path(folder) / "header_before.py"
        before.write_bytes(
            subprocess.run(
                ["git", "show", f"{args.before}:bot/core/header.py"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
        )
        after = ROOT / "bot" / "core" / "header.py"
        print(
            f"{'header':>12} {'tensors':>9} | {'before cpu s':>12} {'rss MB':>7} | {'after cpu s':>11} "
            f"{'rss MB':>7} | {'cpu ratio':>9} {'rss ratio':>9} | wall before/after"
        )
        for target in (int(s) for s in args.sizes.split(",")):
            file = Path(folder) / f"h{target}.safetensors"
            header_bytes = write_header_file(file, target)
            old = measure(before, file, 0)
            new = measure(after, file, 10**8)  # the format's cap: the adapter cap is what is measured here
            print(
                f"{header_bytes:>12,} {new['tensors']:>9,} | {old['cpu']:>12.2f} {old['rss'] / 1e6:>7.0f} | "
                f"{new['cpu']:>11.2f} {new['rss'] / 1e6:>7.0f} | {old['cpu'] / new['cpu']:>8.2f}x "
                f"{old['rss'] / new['rss']:>8.2f}x | {old['wall']:.1f}/{new['wall']:.1f} s"
            )
            file.unlink()


if __name__ == "__main__":
    main()
