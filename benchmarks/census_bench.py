"""The census at Hub scale: `lora-bot scan` against the sandbox serving N synthetic LoRA repos under free-token
quotas with a shortened window, measured against the goals of issue #11.

The sandbox (in this process) generates the repos on demand (bot/sandbox/synthetic.py: a PEFT / kohya SDXL /
diffusers FLUX mix, a few kB each) and meters them like the Hub: api 1000 and resolvers 5000 requests per
window (hub-scale.md's free tier; the window is 300 s on the Hub, `--window` seconds here). Each scan runs as its
own process (`python -m bot scan`, census only: no proposals), so its peak RSS is its own.

Passes, in one run:
1. first:  a new store, every repo read;
2. second: the same store after 1% of the repos changed (new sha, newer lastModified);
3. killed: a new store, the scan killed (SIGKILL) once half the repos are in the store, then run again:
   the share of finished work redone is (repos finished before the kill - repos the rerun reused) / finished.

Printed per pass: requests per repo by bucket, 429s, wall time against the rate-limit bound
(max over buckets of requests / quota x window), the scan process's peak RSS (VmHWM); and every goal as
measured / goal (<= 1 meets it).

    python benchmarks/census_bench.py [--repos 6000] [--window 20] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bot.sandbox import SandboxHub
from bot.sandbox.synthetic import SyntheticRepos

API_QUOTA, RESOLVER_QUOTA = 1000, 5000  # free token, per window (hub-scale.md)
ROOT = Path(__file__).resolve().parent.parent


def write_config(folder: Path, name: str, repos: int, workers: int) -> Path:
    config = folder / f"{name}.yaml"
    config.write_text(
        f"discovery: {{incremental: true, limit: {repos + 1000}, state_file: {folder / name}-state.json, "
        "queries: [{filter: []}]}\n"
        "proposals: {card: false, config_fix: false, variants: false, flag_discussions: false}\n"
        f"hub: {{workers: {workers}, retries: 5, max_retry_wait: 120}}\n"
    )
    return config


# The scan, then its own peak RSS: VmHWM belongs to the process's address space, which exec starts afresh.
# (getrusage's ru_maxrss would not do: a forked child inherits this process's high-water mark, and this
# process holds the sandbox and its request log.)
SCAN = """
import sys
from bot.cli import main
code = main(sys.argv[2:])
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
with open(sys.argv[1], "w") as out:
    out.write(str(peak_kb))
sys.exit(code)
"""


def start_scan(endpoint: str, config: Path, store: Path, report: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", SCAN, f"{report}.rss", "scan", "--endpoint", endpoint]
    command += ["--config", str(config), "--store", str(store), "--report-json", str(report)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_pass(endpoint: str, config: Path, store: Path, report: Path) -> dict:
    started = time.monotonic()
    process = start_scan(endpoint, config, store, report)
    _, errors = process.communicate()
    wall = time.monotonic() - started
    if process.returncode not in (0, 1):
        sys.exit(f"scan failed ({process.returncode}): {errors.decode()[-2000:]}")
    stats = json.loads(report.read_text())["stats"]
    rss = int(Path(f"{report}.rss").read_text()) / 1024
    return {"stats": stats, "wall": wall, "rss": rss}


def finished_repos(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM repos WHERE error IS NULL").fetchone()[0]
    except sqlite3.Error:
        return 0  # not created yet


def bound_seconds(stats: dict, window: float) -> float:
    buckets = stats["requests_by_bucket"]
    return max(buckets.get("api", 0) / API_QUOTA, buckets.get("resolvers", 0) / RESOLVER_QUOTA) * window


def describe(name: str, result: dict, repos: int, window: float) -> dict:
    stats = result["stats"]
    buckets = stats["requests_by_bucket"]
    api, resolvers = buckets.get("api", 0), buckets.get("resolvers", 0)
    bound = bound_seconds(stats, window)
    row = {
        "pass": name,
        "api/repo": api / repos,
        "resolvers/repo": resolvers / repos,
        "all/repo": (api + resolvers + buckets.get("other", 0)) / repos,
        "429s": buckets.get("429", 0),
        "reused": stats["reused"],
        "wall s": result["wall"],
        "bound s": bound,
        "wall/bound": result["wall"] / bound if bound else float("nan"),
        "peak RSS MB": result["rss"],
    }
    print(
        f"{name:<14} api/repo {row['api/repo']:.4f}  resolvers/repo {row['resolvers/repo']:.4f}  "
        f"all/repo {row['all/repo']:.4f}  429s {row['429s']}  reused {row['reused']}  "
        f"wall {row['wall s']:.1f} s / bound {bound:.1f} s = {row['wall/bound']:.2f}  "
        f"peak RSS {row['peak RSS MB']:.0f} MB"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=6000, help="synthetic repos served (default 6000)")
    parser.add_argument("--window", type=float, default=20.0, help="rate-limit window in seconds (Hub: 300)")
    parser.add_argument("--workers", type=int, default=8, help="scan workers (hub.workers)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of repos changed before pass 2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.repos
    synthetic = SyntheticRepos(n, seed=args.seed)
    quotas = f"api={API_QUOTA}/{args.window:g},resolvers={RESOLVER_QUOTA}/{args.window:g}"
    print(
        f"{n} synthetic repos (PEFT / kohya SDXL / diffusers FLUX), quotas {quotas} "
        f"(free token, window shortened from 300 s), {args.workers} workers, python {sys.version.split()[0]}"
    )
    hub = SandboxHub(quotas=quotas)
    hub.store.synthetic = synthetic
    with tempfile.TemporaryDirectory(prefix="census-bench-") as scratch, hub:
        folder = Path(scratch)
        rows = []
        config = write_config(folder, "census", n, args.workers)
        store = folder / "census.sqlite"
        first = run_pass(hub.endpoint, config, store, folder / "first.json")
        rows.append(describe("first pass", first, n, args.window))

        changed = random.Random(args.seed).sample(range(n), max(1, round(n * args.changed)))
        synthetic.change(changed)
        second = run_pass(hub.endpoint, config, store, folder / "second.json")
        rows.append(describe(f"{args.changed:.0%} changed", second, n, args.window))

        killed_config = write_config(folder, "killed", n, args.workers)
        killed_store = folder / "killed.sqlite"
        started = time.monotonic()
        process = start_scan(hub.endpoint, killed_config, killed_store, folder / "killed.json")
        while process.poll() is None and finished_repos(killed_store) < n // 2:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        killed_wall = time.monotonic() - started
        done_before = finished_repos(killed_store)
        after = run_pass(hub.endpoint, killed_config, killed_store, folder / "after.json")
        redone = done_before - after["stats"]["reused"]
        print(
            f"killed run: SIGKILL after {killed_wall:.1f} s with {done_before} of {n} repos in the store "
            "(the rerun below resumes from it)"
        )
        rows.append(describe("after the kill", after, n, args.window))
        redone_share = redone / done_before if done_before else float("nan")
        print(f"finished work redone after the kill: {redone} of {done_before} repos = {redone_share:.2%}")

    peak = max(r["peak RSS MB"] for r in rows)
    goals = [
        ("first pass: api requests per repo <= 0.02", rows[0]["api/repo"], 0.02),
        ("first pass: resolver requests per repo <= 2.2", rows[0]["resolvers/repo"], 2.2),
        ("first pass: wall <= 1.15 x rate-limit bound", rows[0]["wall/bound"], 1.15),
        (f"peak RSS <= 300 MB (measured at {n} repos)", peak, 300),
        ("second pass (1% changed): requests per repo <= 0.05", rows[1]["all/repo"], 0.05),
        ("after a kill: finished work redone <= 1%", redone_share, 0.01),
    ]
    print("\ngoal                                                  measured   goal    measured/goal")
    for label, measured, goal in goals:
        print(f"{label:<52} {measured:>9.4g} {goal:>7g}    {measured / goal:.3f}")
    total_429 = sum(r["429s"] for r in rows)
    print(f"{'429s received, all passes (goal: 0)':<52} {total_429:>9d}")


if __name__ == "__main__":
    main()
