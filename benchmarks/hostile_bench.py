"""The hostile file corpus against the issue's goals: no case over 5 s of wall time or 1 GB of peak RSS.

The corpus is the malformed and adversarial files of tests/test_hostile_files.py (imported, so the benchmark
and the tests cannot drift apart), plus two legal adapters: the densest header just under
MAX_ADAPTER_HEADER_BYTES (one tiny tensor per ~125 bytes, the most work a header under the cap can ask for),
and the largest real kind under the cap, a PEFT LoRA on every linear layer of DeepSeek-V3, each expert included.
Each case is written to its own folder (with its adapter_config.json when it has one) and measured twice:

- local: `python -m bot inspect FOLDER/adapter_model.safetensors --json`;
- hub: `python -m bot inspect hostile/CASE --json` against one sandbox Hub (`python -m bot sandbox`, its own
  process) serving every case folder as a repo. This is the scan worker's path: model_info, then the header
  by HTTP range reads through huggingface_hub. The sandbox hashes a file the first time it is listed (the
  real Hub has the hashes already), so every repo is listed once before the clock starts.

Each case runs in its own process, two at a time. Wall time, CPU time and peak RSS are the child's own, from
`/usr/bin/time -f "%e %U %S %M"`: the process it measures is exec'd from `time`, a few-MB program, so the peak
is not inherited from this (larger) parent. The goal is on wall time; the CPU seconds (user + system) printed
beside it say how much of it was the child's own work when other work shares the machine. In the hub block
the sandbox shares the CPUs with the children, and its work is in their wall time, not their CPU time.

    python benchmarks/hostile_bench.py [--workers 2] [--timeout 120] [--no-hub]

Exits 0 when every case is within both goals and answered with strict JSON (one file) and no traceback, on
every path measured, else 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from header_bench import write_header_file  # noqa: E402
from test_hostile_files import CASES, CONFIGS, GOOD, tensor_file  # noqa: E402

from bot.core.limits import MAX_ADAPTER_HEADER_BYTES  # noqa: E402
from bot.core.selection import is_repo_id  # noqa: E402

WALL_GOAL_S = 5.0
RSS_GOAL_BYTES = 1_000_000_000
LEGAL_NAME = "legal-header-under-cap"
MOE_NAME = "legal-moe-every-expert"
NAMESPACE = "hostile"  # every case folder is <corpus>/hostile/<case>: the sandbox's <namespace>/<name> layout
# Elapsed, user and system seconds and peak RSS in KB, written to the file named by the next argument.
TIME = ("/usr/bin/time", "-f", "%e %U %S %M", "-o")
LOCAL_ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}


@dataclass(frozen=True)
class Outcome:
    name: str
    wall: float
    cpu: float  # the child's user + system seconds: wall time less what other work on the machine took
    rss: int  # bytes
    problem: str  # "" when the answer was strict JSON with one file and no traceback


def build_corpus(root: Path) -> list[tuple[str, Path]]:
    """Writes every case into its own folder, root/NAMESPACE/<case>; returns (case name, folder) pairs."""
    root = root / NAMESPACE
    root.mkdir()
    cases: list[tuple[str, Path]] = []
    written = [(name, content, config) for name, (content, config, _) in CASES.items()]
    written += [(name, tensor_file(GOOD), config) for name, (config, _) in CONFIGS.items()]
    for name, content, config in written:
        folder = root / name
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(content)
        if config is not None:
            (folder / "adapter_config.json").write_text(config, encoding="utf-8")
        cases.append((name, folder))
    folder = root / LEGAL_NAME
    folder.mkdir()
    header_bytes = write_densest_header(folder / "adapter_model.safetensors")
    print(f"{LEGAL_NAME}: {header_bytes:,} header bytes (cap {MAX_ADAPTER_HEADER_BYTES:,})")
    cases.append((LEGAL_NAME, folder))
    folder = root / MOE_NAME
    folder.mkdir()
    tensors, header_bytes = write_moe_lora(folder / "adapter_model.safetensors")
    print(f"{MOE_NAME}: {tensors:,} tensors, {header_bytes:,} header bytes")
    cases.append((MOE_NAME, folder))
    return cases


def write_densest_header(path: Path, cap: int = MAX_ADAPTER_HEADER_BYTES) -> int:
    """The largest header an adapter may have, made of the most tensors it can hold: within 0.5% under `cap`.
    Returns the header's size. (write_header_file's target is an estimate that undershoots by ~9%.)"""
    target = cap
    header_bytes = write_header_file(path, target)
    while not cap * 0.995 <= header_bytes <= cap:
        target = int(target * cap * 0.9975 / header_bytes)
        header_bytes = write_header_file(path, target)
    return header_bytes


def write_moe_lora(
    path: Path, dense_layers: int = 3, moe_layers: int = 58, experts: int = 256
) -> tuple[int, int]:
    """A rank-4 PEFT LoRA on every linear layer of DeepSeek-V3 (MLA attention, 256 routed experts and one
    shared expert per MoE layer): the largest kind of adapter the Hub holds whose header is under the cap.
    The data section is sparse (only the header is read). Returns (tensors, header bytes)."""
    rank, hidden, dense_inner, inner, offset, document = 4, 7168, 18432, 2048, 0, {}

    def add(module: str, fan_in: int, fan_out: int) -> None:
        nonlocal offset
        for factor, shape in (("lora_A", [rank, fan_in]), ("lora_B", [fan_out, rank])):
            size = shape[0] * shape[1] * 2
            entry = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
            document[f"{module}.{factor}.weight"] = entry
            offset += size

    def mlp(prefix: str, width: int) -> None:
        add(f"{prefix}.gate_proj", hidden, width)
        add(f"{prefix}.up_proj", hidden, width)
        add(f"{prefix}.down_proj", width, hidden)

    for layer in range(dense_layers + moe_layers):
        prefix = f"base_model.model.model.layers.{layer}"
        attention = f"{prefix}.self_attn"
        add(f"{attention}.q_a_proj", hidden, 1536)
        add(f"{attention}.q_b_proj", 1536, 24576)
        add(f"{attention}.kv_a_proj_with_mqa", hidden, 576)
        add(f"{attention}.kv_b_proj", 512, 32768)
        add(f"{attention}.o_proj", 16384, hidden)
        if layer < dense_layers:
            mlp(f"{prefix}.mlp", dense_inner)
            continue
        for expert in range(experts):
            mlp(f"{prefix}.mlp.experts.{expert}", inner)
        mlp(f"{prefix}.mlp.shared_experts", inner)
    blob = json.dumps(document, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as handle:
        handle.write(len(blob).to_bytes(8, "little") + blob)
        handle.truncate(8 + len(blob) + offset)
    return len(document), len(blob)


def run_case(name: str, inspect_args: list[str], env: dict[str, str], timeout: float) -> Outcome:
    """`python -m bot inspect *inspect_args` in its own process under /usr/bin/time; its answer checked."""
    with tempfile.TemporaryDirectory() as scratch:  # not the case folder: the sandbox serves those
        times = Path(scratch) / "time.txt"
        try:
            done = subprocess.run(
                [*TIME, str(times), sys.executable, "-m", "bot", "inspect", *inspect_args],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=ROOT,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return Outcome(name, timeout, 0.0, 0, f"killed after {timeout:.0f} s")
        wall, user, system, rss_kb = times.read_text().split()[-4:]
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
    return Outcome(name, float(wall), float(user) + float(system), int(rss_kb) * 1024, problem)


@contextmanager
def sandbox_hub(repos: Path, scratch: Path) -> Iterator[str]:
    """`python -m bot sandbox --repos REPOS` in its own process; yields its endpoint (its first stdout line)."""
    log = scratch / "sandbox.log"
    with log.open("w") as errors:
        server = subprocess.Popen(
            [sys.executable, "-m", "bot", "sandbox", "--repos", str(repos), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=ROOT,
            env=LOCAL_ENV,
        )
    try:
        endpoint = server.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise RuntimeError(f"the sandbox did not start: {log.read_text()[-2000:]}")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def list_once(endpoint: str, repo_ids: list[str]) -> float:
    """model_info with file metadata for every repo, as the inspection asks for it; returns the seconds taken.
    The sandbox hashes each file the first time (3 GB of sparse data for the MoE case), which the real Hub
    does not do on a read: done here, before the clock, it is not charged to a case."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
    started = time.monotonic()
    for repo_id in repo_ids:
        with direct.open(f"{endpoint}/api/models/{repo_id}?blobs=true", timeout=300) as response:
            response.read()
    return time.monotonic() - started


def hub_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    """The child's whole environment: nothing inherited, so no real token, cache or proxy is used."""
    return {
        **LOCAL_ENV,
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": "hf_hostile_bench_token",  # a scan worker has one; the sandbox accepts any token for reads
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",  # the sandbox speaks the classic LFS protocol, not Xet
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def summarize(label: str, outcomes: list[Outcome], workers: int, skipped: int = 0) -> bool:
    """Prints the block of summary lines for one path; returns whether every case met both goals cleanly."""
    slowest = sorted(outcomes, key=lambda o: o.wall, reverse=True)
    largest = sorted(outcomes, key=lambda o: o.rss, reverse=True)
    over_wall = [o for o in outcomes if o.wall > WALL_GOAL_S]
    over_rss = [o for o in outcomes if o.rss > RSS_GOAL_BYTES]
    failed = [o for o in outcomes if o.problem]
    print(f"== {label} ==")
    print(
        f"cases: {len(outcomes)} ({len(CASES)} files, {len(CONFIGS)} configs, 2 legal adapters"
        + (f"; {skipped} skipped" if skipped else "")
        + f"), {workers} at a time"
    )
    print(
        f"max wall: {slowest[0].wall:.2f} s ({slowest[0].name}, {slowest[0].cpu:.2f} s CPU); "
        f"ratio to the {WALL_GOAL_S:.0f} s goal: {slowest[0].wall / WALL_GOAL_S:.3f}"
    )
    print(
        f"max RSS:  {largest[0].rss / 1e6:.0f} MB ({largest[0].name}); "
        f"ratio to the 1 GB goal: {largest[0].rss / RSS_GOAL_BYTES:.3f}"
    )
    print("slowest 3: " + ", ".join(f"{o.name} {o.wall:.2f} s ({o.cpu:.2f} s CPU)" for o in slowest[:3]))
    print("largest 3: " + ", ".join(f"{o.name} {o.rss / 1e6:.0f} MB" for o in largest[:3]))
    print(f"over 5 s: {len(over_wall)}; over 1 GB: {len(over_rss)}; not answered cleanly: {len(failed)}")
    for outcome in failed:
        print(f"  {outcome.name}: {outcome.problem}")
    return not (over_wall or over_rss or failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="watchdog per case, seconds")
    parser.add_argument(
        "--hub",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure through the sandbox Hub",
    )
    args = parser.parse_args()

    def measure(runs: list[tuple[str, list[str], dict[str, str]]]) -> list[Outcome]:
        with ThreadPoolExecutor(args.workers) as pool:
            return list(pool.map(lambda run: run_case(*run, args.timeout), runs))

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        corpus = scratch / "corpus"
        corpus.mkdir()
        cases = build_corpus(corpus)
        local = [
            (name, [str(case / "adapter_model.safetensors"), "--json"], LOCAL_ENV) for name, case in cases
        ]
        ok = summarize("local: inspect FILE --json", measure(local), args.workers)
        if not args.hub:
            return 0 if ok else 1
        repo_ids = {name: f"{NAMESPACE}/{name}" for name, _ in cases}
        for name, repo_id in list(repo_ids.items()):
            if not is_repo_id(repo_id):  # `inspect` would take it for a missing local path
                print(f"hub: skipped {name}: {repo_id!r} is not a repo id")
                del repo_ids[name]
        with sandbox_hub(corpus, scratch) as endpoint:
            listed = list_once(endpoint, list(repo_ids.values()))
            print(
                f"hub: sandbox at {endpoint}, {len(repo_ids)} repos listed once in {listed:.1f} s (not timed)"
            )
            env = hub_env(endpoint, scratch / "hf-home")
            outcomes = measure([(name, [repo_id, "--json"], env) for name, repo_id in repo_ids.items()])
        ok &= summarize(
            "hub: inspect NAMESPACE/NAME --json, sandbox Hub",
            outcomes,
            args.workers,
            len(cases) - len(repo_ids),
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
