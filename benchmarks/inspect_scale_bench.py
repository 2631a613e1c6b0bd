"""Inspecting the largest adapters: this tree against an earlier commit, side by side, same files, same run.

Two legal adapters, each inspected by `python -m bot inspect FILE --json` in its own process (the best of
`--runs`, one process at a time), with wall time and peak RSS from `/usr/bin/time`:
- the densest header under this tree's MAX_ADAPTER_HEADER_BYTES: one one-element tensor per ~125 bytes, an
  unpaired `lora_down` each, so every tensor is a module (the most work per header byte);
- a rank-8 PEFT LoRA on every expert of a 512-expert MoE (Qwen3-Next-80B-A3B's shapes, 147,840 tensors), the
  largest kind of adapter on the Hub.

The earlier commit runs from a temporary `git worktree` of `--before`, with the same interpreter.

    python benchmarks/inspect_scale_bench.py [--before 3fd4868] [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from hostile_bench import write_densest_header, write_moe_lora  # noqa: E402


def inspect_once(tree: Path, file: Path, times: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one `inspect --json` run of `tree`'s code."""
    subprocess.run(
        [
            "/usr/bin/time",
            "-f",
            "%e %M",
            "-o",
            str(times),
            sys.executable,
            "-m",
            "bot",
            "inspect",
            str(file),
            "--json",
        ],
        capture_output=True,
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        check=False,  # exit 1 is a finding (the dense header's modules are unpaired), not a failure
    )
    wall, rss_kb = times.read_text().split()[-2:]
    return float(wall), int(rss_kb) * 1024


def best_of(runs: int, tree: Path, file: Path, times: Path) -> tuple[float, int]:
    measured = [inspect_once(tree, file, times) for _ in range(runs)]
    return min(wall for wall, _ in measured), min(rss for _, rss in measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="3fd4868", help="git commit to compare with")
    parser.add_argument("--runs", type=int, default=3, help="runs per case and tree; the best is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        before = scratch / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(before), args.before], cwd=ROOT, check=True
        )
        try:
            dense, moe = scratch / "dense.safetensors", scratch / "moe.safetensors"
            dense_bytes = write_densest_header(dense)
            tensors, moe_bytes = write_moe_lora(moe)
            cases = (
                (f"densest header ({dense_bytes:,} bytes)", dense),
                (f"MoE every expert ({tensors:,} tensors, {moe_bytes:,} bytes)", moe),
            )
            print(f"{'case':<52} | {'before s':>8} {'MB':>5} | {'after s':>7} {'MB':>5} | {'time ratio':>10}")
            for label, file in cases:
                old_wall, old_rss = best_of(args.runs, before, file, scratch / "time.txt")
                new_wall, new_rss = best_of(args.runs, ROOT, file, scratch / "time.txt")
                print(
                    f"{label:<52} | {old_wall:>8.2f} {old_rss / 1e6:>5.0f} | {new_wall:>7.2f} {new_rss / 1e6:>5.0f} | "
                    f"{old_wall / new_wall:>9.2f}x"
                )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
