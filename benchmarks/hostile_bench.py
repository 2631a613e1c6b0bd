"""The hostile file corpus against the issue's goals: no case over 5 s of wall time or 1 GB of peak RSS.

The corpus is the malformed and adversarial files of tests/test_hostile_files.py (imported, so the benchmark
and the tests cannot drift apart), plus two legal adapters: the densest header just under
MAX_ADAPTER_HEADER_BYTES (one tiny tensor per ~125 bytes, the most work a header under the cap can ask for),
and the largest real kind, a PEFT LoRA on every expert of a 512-expert MoE (Qwen3-Next-80B-A3B's shapes).
Each case is written to its own folder (with its adapter_config.json when it has one) and inspected by `python
-m bot inspect FILE --json` in its own process, two at a time. Wall time and peak RSS are the child's own,
from `/usr/bin/time -f "%e %M"`: the process it measures is exec'd from `time`, a few-MB program, so the peak
is not inherited from this (larger) parent.

    python benchmarks/hostile_bench.py [--workers 2] [--timeout 120]

Exits 0 when every case is within both goals and answered with strict JSON and no traceback, else 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from header_bench import write_header_file  # noqa: E402
from test_hostile_files import CASES, CONFIGS, GOOD, tensor_file  # noqa: E402

from bot.core.limits import MAX_ADAPTER_HEADER_BYTES  # noqa: E402

WALL_GOAL_S = 5.0
RSS_GOAL_BYTES = 1_000_000_000
LEGAL_NAME = "legal-header-under-cap"
MOE_NAME = "legal-moe-every-expert"
TIME = ("/usr/bin/time", "-f", "%e %M", "-o")  # elapsed seconds, peak RSS in KB, written to the next argument


@dataclass(frozen=True)
class Outcome:
    name: str
    wall: float
    rss: int  # bytes
    problem: str  # "" when the answer was strict JSON with one file and no traceback


def build_corpus(root: Path) -> list[tuple[str, Path]]:
    """Writes every case into its own folder; returns (case name, adapter file) pairs."""
    cases: list[tuple[str, Path]] = []
    written = [(name, content, config) for name, (content, config, _) in CASES.items()]
    written += [(name, tensor_file(GOOD), config) for name, (config, _) in CONFIGS.items()]
    for name, content, config in written:
        folder = root / name
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(content)
        if config is not None:
            (folder / "adapter_config.json").write_text(config, encoding="utf-8")
        cases.append((name, folder / "adapter_model.safetensors"))
    folder = root / LEGAL_NAME
    folder.mkdir()
    legal = folder / "adapter_model.safetensors"
    # write_header_file's target is an estimate (it undershoots by ~9%): scale it until the header is within
    # 0.5% under the cap, the largest header an adapter may have.
    target = MAX_ADAPTER_HEADER_BYTES
    header_bytes = write_header_file(legal, target)
    while not MAX_ADAPTER_HEADER_BYTES * 0.995 <= header_bytes <= MAX_ADAPTER_HEADER_BYTES:
        target = int(target * MAX_ADAPTER_HEADER_BYTES * 0.9975 / header_bytes)
        header_bytes = write_header_file(legal, target)
    print(f"{LEGAL_NAME}: {header_bytes:,} header bytes (cap {MAX_ADAPTER_HEADER_BYTES:,})")
    cases.append((LEGAL_NAME, legal))
    folder = root / MOE_NAME
    folder.mkdir()
    moe = folder / "adapter_model.safetensors"
    tensors, header_bytes = write_moe_lora(moe)
    print(f"{MOE_NAME}: {tensors:,} tensors, {header_bytes:,} header bytes")
    cases.append((MOE_NAME, moe))
    return cases


def write_moe_lora(path: Path, layers: int = 48, experts: int = 512, hidden: int = 2048, inner: int = 512):
    """A rank-8 PEFT LoRA on every expert's gate/up/down projection, attention included; the data section is
    sparse (only the header is read). Returns (tensors, header bytes)."""
    rank, offset, document = 8, 0, {}

    def add(name: str, shape: list[int]) -> None:
        nonlocal offset
        size = shape[0] * shape[1] * 2
        document[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size

    for layer in range(layers):
        prefix = f"base_model.model.model.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            add(f"{prefix}.self_attn.{proj}.lora_A.weight", [rank, hidden])
            add(f"{prefix}.self_attn.{proj}.lora_B.weight", [hidden, rank])
        for expert in range(experts):
            for proj, (fan_in, fan_out) in (
                ("gate_proj", (hidden, inner)),
                ("up_proj", (hidden, inner)),
                ("down_proj", (inner, hidden)),
            ):
                add(f"{prefix}.mlp.experts.{expert}.{proj}.lora_A.weight", [rank, fan_in])
                add(f"{prefix}.mlp.experts.{expert}.{proj}.lora_B.weight", [fan_out, rank])
    blob = json.dumps(document, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as handle:
        handle.write(len(blob).to_bytes(8, "little") + blob)
        handle.truncate(8 + len(blob) + offset)
    return len(document), len(blob)


def run_case(name: str, file: Path, timeout: float) -> Outcome:
    times = file.parent / "time.txt"
    try:
        done = subprocess.run(
            [*TIME, str(times), sys.executable, "-m", "bot", "inspect", str(file), "--json"],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
    except subprocess.TimeoutExpired:
        return Outcome(name, timeout, 0, f"killed after {timeout:.0f} s")
    wall, rss_kb = times.read_text().split()[-2:]
    problem = ""
    if "Traceback" in done.stderr:
        problem = "traceback"
    elif done.returncode not in (0, 1):
        problem = f"exit {done.returncode}: {done.stderr.strip()[:200]}"
    else:
        try:
            files = json.loads(done.stdout, parse_constant=lambda c: 1 / 0)["files"]
            if len(files) != 1:
                problem = f"{len(files)} files in the answer"
        except (ValueError, KeyError, TypeError, ZeroDivisionError):
            problem = "not strict JSON"
    return Outcome(name, float(wall), int(rss_kb) * 1024, problem)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="watchdog per case, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cases = build_corpus(Path(folder))
        with ThreadPoolExecutor(args.workers) as pool:
            outcomes = list(pool.map(lambda case: run_case(*case, args.timeout), cases))
    slowest = sorted(outcomes, key=lambda o: o.wall, reverse=True)
    largest = sorted(outcomes, key=lambda o: o.rss, reverse=True)
    over_wall = [o for o in outcomes if o.wall > WALL_GOAL_S]
    over_rss = [o for o in outcomes if o.rss > RSS_GOAL_BYTES]
    failed = [o for o in outcomes if o.problem]
    print(
        f"cases: {len(outcomes)} ({len(CASES)} files, {len(CONFIGS)} configs, 2 legal adapters), "
        f"{args.workers} at a time"
    )
    print(
        f"max wall: {slowest[0].wall:.2f} s ({slowest[0].name}); "
        f"ratio to the {WALL_GOAL_S:.0f} s goal: {slowest[0].wall / WALL_GOAL_S:.3f}"
    )
    print(
        f"max RSS:  {largest[0].rss / 1e6:.0f} MB ({largest[0].name}); "
        f"ratio to the 1 GB goal: {largest[0].rss / RSS_GOAL_BYTES:.3f}"
    )
    print("slowest 3: " + ", ".join(f"{o.name} {o.wall:.2f} s" for o in slowest[:3]))
    print("largest 3: " + ", ".join(f"{o.name} {o.rss / 1e6:.0f} MB" for o in largest[:3]))
    print(f"over 5 s: {len(over_wall)}; over 1 GB: {len(over_rss)}; not answered cleanly: {len(failed)}")
    for outcome in failed:
        print(f"  {outcome.name}: {outcome.problem}")
    return 1 if over_wall or over_rss or failed else 0


if __name__ == "__main__":
    sys.exit(main())
