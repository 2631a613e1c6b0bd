"""`lora-bot scan` against the sandbox Hub: request budget, bytes read, latency and faults, in one run.

(a) Budget: repos with one LoRA file each (PEFT on Llama-2-7B, kohya SDXL, diffusers FLUX.1 at real module
    widths, 30-45 MB each, and small ones). From the sandbox's request log: requests per repo (goal <= 6),
    header bytes read per file against max(100 kB, header size), and bytes read against file size.
(b) Latency: 200 small repos served with --latency-ms 50 and scanned by 8 workers. Every request waits out
    the latency on the server, so requests x latency / workers is the best a scan can do; the ratio
    wall / bound has a goal of <= 1.3. The same scan at --latency-ms 0 shows the cost latency cannot hide.
(c) Faults: the (b) repos with ~20% of requests failing (429 with Retry-After 1, 503, dropped connections):
    how many repos were inspected or failed with a reason, and whether every inspected repo's files equal
    the fault-free run's.

The sandbox runs as `lora-bot sandbox` and the scan as `lora-bot scan`, each in its own process as a user
runs them. Wall time is the scan's own timer (stats.seconds of its report): process start-up is left out.
The scans are anonymous with proposals off, so they only discover and inspect (the issue's scan).

    python benchmarks/scan_bench.py [--repos 200] [--latency-ms 50] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bot.sandbox import request_repo
from bot.sandbox.layouts import sdxl_sgm_shapes, write_sparse_safetensors

FIRST_READ = 100_000
FAULTS = "429:0.08,503:0.08,drop:0.06"  # tried in turn on each request: 1 - .92 x .92 x .94 = 20.4% fail
FAULT_SEED = 7
# Anonymous, and no token or cache of the user's is read.
ENV = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
ENV.update({"HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost"})

# ------------------------------------------------------------------------------------------ repo contents


def _card(front_matter: str) -> str:
    return f"---\n{front_matter}---\n\n# A LoRA\n"


def peft_llama(folder: Path, layers: int, hidden: int, rank: int) -> dict[str, int]:
    """PEFT LoRA on q/k/v/o of a Llama (32 layers x 4096 is Llama-2-7B), its adapter_config.json, a card."""
    shapes = {}
    for layer in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            shapes[f"{prefix}.lora_A.weight"] = ("F16", (rank, hidden))
            shapes[f"{prefix}.lora_B.weight"] = ("F16", (hidden, rank))
    header = write_sparse_safetensors(folder / "adapter_model.safetensors", shapes, {"format": "pt"})
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (folder / "README.md").write_text(
        _card("library_name: peft\nbase_model: meta-llama/Llama-2-7b-hf\ntags: [lora, peft]\n")
    )
    return {"adapter_model.safetensors": header}


def kohya(folder: Path, modules: dict[str, tuple[int, int]], rank: int, alpha: float) -> dict[str, int]:
    """kohya LoRA on `modules` (SGM name -> (in, out)), no card: F16 `.alpha` scalars between the factors
    (name order), as sd-scripts saves."""
    shapes = {}
    for module, (fan_in, fan_out) in modules.items():
        name = f"lora_unet_{module}"
        shapes[f"{name}.alpha"] = ("F16", ())
        shapes[f"{name}.lora_down.weight"] = ("F16", (rank, fan_in))
        shapes[f"{name}.lora_up.weight"] = ("F16", (fan_out, rank))
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": f"{alpha:g}",
    }
    scalars = {f"lora_unet_{module}.alpha": alpha for module in modules}
    return {
        "lora.safetensors": write_sparse_safetensors(folder / "lora.safetensors", shapes, metadata, scalars)
    }


def kohya_sd15_small(folder: Path) -> dict[str, int]:
    modules = {
        f"down_blocks_0_attentions_{a}_transformer_blocks_0_attn{n}_to_{p}": (
            768 if n == 2 and p != "q" else 320,
            320,
        )
        for a in (0, 1)
        for n in (1, 2)
        for p in ("q", "k", "v")
    }
    return kohya(folder, modules, rank=4, alpha=2)


def diffusers_flux(folder: Path, double: int, single: int, rank: int) -> dict[str, int]:
    """diffusers FLUX.1 LoRA (3072 wide) with the `lora_adapter_metadata` diffusers writes, and a card."""
    modules = [f"transformer_blocks.{i}.attn.to_{p}" for i in range(double) for p in ("q", "k", "v", "out.0")]
    modules += [f"single_transformer_blocks.{i}.attn.to_{p}" for i in range(single) for p in ("q", "k", "v")]
    shapes = {}
    for module in modules:
        shapes[f"transformer.{module}.lora_A.weight"] = ("BF16", (rank, 3072))
        shapes[f"transformer.{module}.lora_B.weight"] = ("BF16", (3072, rank))
    adapter = json.dumps({"transformer.r": rank, "transformer.lora_alpha": rank})
    path = folder / "pytorch_lora_weights.safetensors"
    header = write_sparse_safetensors(path, shapes, {"format": "pt", "lora_adapter_metadata": adapter})
    (folder / "README.md").write_text(
        _card("base_model: black-forest-labs/FLUX.1-dev\nlibrary_name: diffusers\ntags: [lora, flux]\n")
    )
    return {path.name: header}


KINDS = {
    "peft-llama-7b": lambda folder: peft_llama(folder, layers=32, hidden=4096, rank=16),
    "kohya-sdxl": lambda folder: kohya(folder, sdxl_sgm_shapes(), rank=8, alpha=4),  # all 700 linears
    "diffusers-flux": lambda folder: diffusers_flux(folder, double=19, single=38, rank=16),
    "peft-llama-tiny": lambda folder: peft_llama(folder, layers=2, hidden=64, rank=4),
    "kohya-sd15-small": kohya_sd15_small,
    "diffusers-flux-small": lambda folder: diffusers_flux(folder, double=1, single=1, rank=4),
}
SMALL_KINDS = ("peft-llama-tiny", "kohya-sd15-small", "diffusers-flux-small")


def build_repos(root: Path, namespace: str, kinds: list[str]) -> dict[str, dict[str, int]]:
    """root/<namespace>/<kind>-<n>/...; returns repo id -> {LoRA file: header size}."""
    built = {}
    for index, kind in enumerate(kinds):
        repo_id = f"{namespace}/{kind}-{index:03d}"
        (root / repo_id).mkdir(parents=True)
        built[repo_id] = KINDS[kind](root / repo_id)
    return built


# ------------------------------------------------------------------------------------------ running


class Sandbox:
    """`lora-bot sandbox` in its own process, serving `repos` and logging every request to a file."""

    def __init__(self, repos: Path, log: Path, latency_ms: int = 0, faults: str | None = None):
        command = [
            sys.executable,
            "-m",
            "bot",
            "sandbox",
            "--repos",
            str(repos),
            "--request-log",
            str(log),
            "--latency-ms",
            str(latency_ms),
        ] + (["--faults", faults] if faults else [])
        self.log = log
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV
        )
        self.endpoint = self.process.stdout.readline().strip()
        if not self.endpoint.startswith("http"):
            raise RuntimeError("the sandbox did not start")

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def write_config(path: Path, namespace: str, workers: int) -> Path:
    # Retry-After is 1 s; six tries with waits of at most 2 s ride out 20% faults.
    path.write_text(
        f"hub: {{workers: {workers}, retries: 6, max_retry_wait: 2, timeout: 30}}\n"
        f"discovery: {{queries: [{{filter: [], author: {namespace}}}], incremental: false}}\n"
        "proposals: {card: false, config_fix: false, variants: false, flag_discussions: false}\n"
    )
    return path


@dataclass(frozen=True)
class Run:
    report: dict
    entries: list[dict]  # the sandbox's request log

    @property
    def seconds(self) -> float:
        return self.report["stats"]["seconds"]

    def files_by_repo(self) -> dict[str, list]:
        return {repo["repo_id"]: repo["files"] for repo in self.report["repos"] if repo["error"] is None}


def scan(
    scratch: Path,
    name: str,
    repos: Path,
    namespace: str,
    workers: int,
    latency_ms: int = 0,
    faults: str | None = None,
) -> Run:
    """Serve `repos`, run `lora-bot scan` on them, and return its report and the sandbox's log."""
    sandbox = Sandbox(repos, scratch / f"{name}.jsonl", latency_ms, faults)
    report = scratch / f"{name}.json"
    try:
        command = [
            sys.executable,
            "-m",
            "bot",
            "scan",
            "--config",
            str(write_config(scratch / f"{name}.yaml", namespace, workers)),
            "--endpoint",
            sandbox.endpoint,
            "--report-json",
            str(report),
            "--json",
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={**ENV, "HF_HOME": str(scratch / "hf-home")},
        )
        if not report.exists():
            raise RuntimeError(f"scan failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return Run(json.loads(report.read_text()), sandbox.entries())
    finally:
        sandbox.close()


def file_reads(entries: list[dict], repo_id: str, path: str) -> list[int]:
    """Bytes of each read of one file, in the order they were answered (one worker reads a repo in turn)."""
    return [
        e["bytes"]
        for e in entries
        if e["route"] == "resolve" and request_repo(e) == repo_id and e["path"].split("/", 5)[-1] == path
    ]


def size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


# ------------------------------------------------------------------------------------------ (a) budget


def budget(scratch: Path, copies: int, workers: int) -> bool:
    built = build_repos(scratch / "budget", "budget", [kind for kind in KINDS for _ in range(copies)])
    run = scan(scratch, "budget", scratch / "budget", "budget", workers)
    sizes = {repo["repo_id"]: {f["path"]: f["size"] for f in repo["files"]} for repo in run.report["repos"]}
    per_repo = Counter(request_repo(e) for e in run.entries)
    print(
        f"(a) request budget and bytes: {len(built)} repos, one LoRA file each; {workers} workers, "
        f"{run.seconds:.2f} s"
    )
    print(
        f"{'repo':<33}{'size':>9}{'header':>9}{'requests':>9}{'header read':>13}{'max(100k,hdr)':>15}"
        f"{'other reads':>15}{'read/size':>11}"
    )
    ok, total_size = True, 0
    for repo_id, files in built.items():
        for path, header_size in files.items():
            size = sizes.get(repo_id, {}).get(path)
            if size is None:
                print(f"{repo_id:<33} not inspected")
                ok = False
                continue
            reads, header_read, other = file_reads(run.entries, repo_id, path), 0, []
            for nbytes in reads:  # the reads until the header is complete; the rest fetch alpha scalars
                if header_read < min(header_size, size):
                    header_read += nbytes
                else:
                    other.append(nbytes)
            allowed = max(FIRST_READ, header_size)
            ok &= per_repo[repo_id] <= 6 and header_read <= allowed
            total_size += size
            print(
                f"{repo_id:<33}{size_text(size):>9}{size_text(header_size):>9}{per_repo[repo_id]:>9}"
                f"{header_read:>13,}{allowed:>15,}{f'{len(other)} / {sum(other):,} B':>15}"
                f"{sum(reads) / size:>11.2%}"
            )
    read = sum(e["bytes"] for e in run.entries)
    print(
        f"most requests for one repo: {max(per_repo[r] for r in built)} (goal <= 6); every header read "
        f"within max(100 kB, header size): {'yes' if ok else 'NO'}"
    )
    print(
        f"bytes read (all {len(run.entries)} responses: listing, model_info, texts, ranges) / total LoRA "
        f"file size = {read:,} / {total_size:,} = {read / total_size:.3%}"
    )
    return ok


# ------------------------------------------------------------------------------------------ (b), (c)


def latency(scratch: Path, count: int, latency_ms: int, workers: int) -> tuple[bool, Run]:
    repos = scratch / "small"
    build_repos(repos, "small", [SMALL_KINDS[i % len(SMALL_KINDS)] for i in range(count)])
    scan(scratch, "warm-up", repos, "small", workers)  # first touch of the files and the code: not counted
    run = scan(scratch, "latency", repos, "small", workers, latency_ms)
    floor = scan(scratch, "no-latency", repos, "small", workers)
    requests = len(run.entries)
    bound = requests * latency_ms / 1000 / workers
    failed = sum(repo["error"] is not None for repo in run.report["repos"])
    print(
        f"\n(b) latency: {count} repos ({', '.join(SMALL_KINDS)}), sandbox --latency-ms {latency_ms}, "
        f"{workers} workers"
    )
    print(f"requests {requests} ({requests / count:.2f} per repo), repos failed {failed}")
    print(
        f"wall {run.seconds:.2f} s   bound requests x latency / workers = {requests} x {latency_ms} ms / "
        f"{workers} = {bound:.2f} s   ratio {run.seconds / bound:.2f} (goal <= 1.3)"
    )
    print(
        f"the same scan at --latency-ms 0: {floor.seconds:.2f} s for {len(floor.entries)} requests "
        "(client and server work that latency cannot hide)"
    )
    return run.seconds / bound <= 1.3 and failed == 0, run


def faults(scratch: Path, reference: Run, latency_ms: int, workers: int) -> bool:
    spec = f"{FAULTS},seed={FAULT_SEED},retry-after=1"
    run = scan(scratch, "faults", scratch / "small", "small", workers, latency_ms, spec)
    injected = Counter(e["fault"] for e in run.entries if e.get("fault"))
    repos = run.report["repos"]
    failed = [repo for repo in repos if repo["error"] is not None]
    expected = reference.files_by_repo()
    matching = sum(files == expected.get(repo_id) for repo_id, files in run.files_by_repo().items())
    inspected = len(repos) - len(failed)
    kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(injected.items()))
    print(f"\n(c) faults: sandbox --latency-ms {latency_ms} --faults {spec!r}")
    print(
        f"injected {sum(injected.values())} faults in {len(run.entries)} requests "
        f"({sum(injected.values()) / len(run.entries):.1%}: {kinds})"
    )
    print(
        f"repos: {len(repos)} of {len(expected)} reported, {inspected} inspected, {len(failed)} failed "
        "with a reason" + "".join(f"\n  {repo['repo_id']}: {repo['error']}" for repo in failed[:5])
    )
    print(
        f"inspected repos whose files equal the fault-free run's: {matching} of {inspected} "
        f"({'identical' if matching == inspected else 'DIFFERENT'}); wall {run.seconds:.2f} s"
    )
    every_repo = {repo["repo_id"] for repo in repos} == set(expected)
    return every_repo and matching == inspected and all(repo["error"].strip() for repo in failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=200, help="repos in the latency and fault runs")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--copies", type=int, default=2, help="repos of each kind in the budget run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as folder:
        scratch = Path(folder)
        budget_ok = budget(scratch, args.copies, args.workers)
        latency_ok, reference = latency(scratch, args.repos, args.latency_ms, args.workers)
        faults_ok = faults(scratch, reference, args.latency_ms, args.workers)
    print(
        f"\nbudget {'met' if budget_ok else 'MISSED'}; latency {'met' if latency_ok else 'MISSED'}; "
        f"faults {'handled' if faults_ok else 'MISHANDLED'}"
    )
    return 0 if budget_ok and latency_ok and faults_ok else 1


if __name__ == "__main__":
    sys.exit(main())
