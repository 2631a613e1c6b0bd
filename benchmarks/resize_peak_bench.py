"""Peak RSS of `lora-bot resize` on one huge factor: this tree against an earlier commit, side by side.

The file is a kohya LoRA with a single module whose down factor is [64, N] float32, just under 1 GB (the
issue's case was a 1 GiB factor peaking at 3.9 GB), reduced to rank 16. Each run is `python -m bot resize`
in its own process; wall time and peak RSS come from `/usr/bin/time -f "%e %M"` (the measured process is
exec'd from `time`, so its peak is not inherited from this parent). The "before" tree is `git archive` of
bot/ at `--before`.

    python benchmarks/resize_peak_bench.py [--before 9e3022f] [--columns 3900000] [--energy F]

`--energy F` resizes to an energy fraction instead of rank 16: a first pass computes every module's spectrum
before the second writes the file.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RANK, OUT_FEATURES, TARGET = 64, 320, 16
TIME = ("/usr/bin/time", "-f", "%e %M", "-o")  # elapsed seconds, peak RSS in KB, written to the next argument
MODULE = "lora_unet_down_blocks_0_attentions_0_proj_in"


def write_adapter(path: Path, columns: int) -> int:
    """A one-module kohya file, written tensor by tensor so this process never holds the big factor."""
    shapes = {
        f"{MODULE}.alpha": [],
        f"{MODULE}.lora_down.weight": [RANK, columns],
        f"{MODULE}.lora_up.weight": [OUT_FEATURES, RANK],
    }
    header, offset = {"__metadata__": {"ss_network_dim": str(RANK), "ss_network_alpha": "32"}}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    generator = torch.Generator().manual_seed(0)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        handle.write(torch.tensor([32.0]).numpy().tobytes())
        for _ in range(RANK):  # one row of the down factor at a time
            handle.write((torch.randn(columns, generator=generator) * 0.01).numpy().tobytes())
        handle.write((torch.randn(OUT_FEATURES * RANK, generator=generator) * 0.01).numpy().tobytes())
    return offset


def run(tree: Path, adapter: Path, output: Path, target: list[str]) -> tuple[float, int]:
    times = output.with_suffix(".time")
    done = subprocess.run(
        [
            *TIME,
            str(times),
            sys.executable,
            "-m",
            "bot",
            "resize",
            str(adapter),
            *target,
            "-o",
            str(output),
            "--force",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        sys.exit(f"resize in {tree} failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    wall, rss_kb = times.read_text().split()[-2:]
    output.unlink()
    return float(wall), int(rss_kb) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="9e3022f", help="git commit of the resizer to compare with")
    parser.add_argument("--columns", type=int, default=3_900_000, help="in-features of the down factor")
    parser.add_argument("--energy", type=float, help="resize to this energy fraction instead of rank 16")
    args = parser.parse_args()
    target = ["--energy", str(args.energy)] if args.energy else ["--rank", str(TARGET)]
    with tempfile.TemporaryDirectory() as folder:
        before = Path(folder) / "before"
        before.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.before, "bot"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        adapter = Path(folder) / "huge.safetensors"
        data_bytes = write_adapter(adapter, args.columns)
        factor = 4 * RANK * args.columns
        print(
            f"one module, down [{RANK}, {args.columns:,}] F32 = {factor / 1e6:.0f} MB, rank {RANK} → "
            + (f"energy {args.energy}" if args.energy else str(TARGET))
        )
        old_wall, old_rss = run(before, adapter, Path(folder) / "out-before.safetensors", target)
        new_wall, new_rss = run(ROOT, adapter, Path(folder) / "out-after.safetensors", target)
        for label, rss, wall in (
            (f"before ({args.before})", old_rss, old_wall),
            ("after (this tree)", new_rss, new_wall),
        ):
            print(f"{label:<20} peak RSS {rss / 1e6:,.0f} MB ({rss / factor:.2f}× the factor), {wall:.1f} s")
        print(f"peak RSS ratio before/after: {old_rss / new_rss:.2f}×; file data {data_bytes / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
