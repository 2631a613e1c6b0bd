"""`lora-bot scan` against the sandbox Hub: request budget, bytes read, latency and faults, in one run.

(a) Budget: repos with one LoRA file each (PEFT Llama-7B, kohya SDXL, diffusers FLUX.1 at real module widths,
    a few to tens of MB, plus small ones). From the sandbox's request log: requests per repo (goal <= 6),
    header bytes read per file against max(100 kB, header size), and bytes read against file size.
(b) Latency: 200 small repos served with --latency-ms 50 and scanned with 8 workers. Every request waits
    the latency on the server, so requests x latency / workers is the best a scan can do; the printed ratio
    wall / bound has a goal of <= 1.3. The same scan at --latency-ms 0 shows the client's own cost.
(c) Faults: the (b) repos with ~20% of requests failing (429 with Retry-After 1, 503, dropped connections):
    how many repos were inspected or failed (with a reason), and whether each inspected repo's files equal
    the fault-free run's.

The sandbox runs as `lora-bot sandbox` and the scan as `lora-bot scan`, each in its own process as a user
runs them; wall time is the scan's own timer (stats.seconds of its report), so process start-up is left out.
The scans are read-only (no token, proposals off): this measures discovery and inspection.

    python benchmarks/scan_bench.py [--repos 200] [--latency-ms 50] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FIRST_READ = 100_000
FAULTS = "429:0.08,503:0.08,drop:0.06"  # tried in turn on each request: 1 - .92 x .92 x .94 = 20.4% fail
FAULT_SEED = 7

# ------------------------------------------------------------------------------------------ repo contents

Shapes = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def write_safetensors(path: Path, shapes: Shapes, metadata: dict[str, str] | None = None,
                      scalars: dict[str, float] | None = None) -> int:
    """A valid safetensors file laid out in name order; the data is a sparse hole except the F16 scalars.
    Returns the header size (8-byte length prefix included)."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in sorted(shapes):
        dtype, shape = shapes[name]
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + count * _DTYPE_BYTES[dtype]]}
        offset += count * _DTYPE_BYTES[dtype]
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    start = 8 + len(blob)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        for name, value in (scalars or {}).items():
            handle.seek(start + header[name]["data_offsets"][0])
            handle.write(struct.pack("<e", value))
        handle.truncate(start + offset)
    return start


def _card(front_matter: str, title: str) -> str:
    return f"---\n{front_matter}---\n\n# {title}\n"


def peft_llama(folder: Path, layers: int, hidden: int, rank: int) -> dict[str, int]:
    """PEFT LoRA on q/k/v/o of a Llama (32 layers x 4096 is Llama-2-7B), with its adapter_config.json."""
    shapes: Shapes = {}
    for layer in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            shapes[f"{prefix}.lora_A.weight"] = ("F16", (rank, hidden))
            shapes[f"{prefix}.lora_B.weight"] = ("F16", (hidden, rank))
    headers = {"adapter_model.safetensors": write_safetensors(folder / "adapter_model.safetensors", shapes,
                                                              {"format": "pt"})}
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "task_type": "CAUSAL_LM",
              "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (folder / "README.md").write_text(_card("library_name: peft\nbase_model: meta-llama/Llama-2-7b-hf\n"
                                            "tags: [lora, peft]\n", "Llama LoRA"))
    return headers


def sdxl_linears() -> list[tuple[str, int, int]]:
    """(kohya module, in, out) of every attention and feed-forward linear of the SDXL UNet: 700 modules."""
    blocks = [(f"input_blocks_{i}_1", 640, 2) for i in (4, 5)] + [(f"input_blocks_{i}_1", 1280, 10) for i in (7, 8)]
    blocks += [("middle_block_1", 1280, 10)] + [(f"output_blocks_{i}_1", 1280, 10) for i in (0, 1, 2)]
    blocks += [(f"output_blocks_{i}_1", 640, 2) for i in (3, 4, 5)]
    linears = []
    for block, dim, depth in blocks:
        for n in range(depth):
            prefix = f"lora_unet_{block}_transformer_blocks_{n}"
            linears += [(f"{prefix}_attn1_to_{p}", dim, dim) for p in ("q", "k", "v", "out_0")]
            linears += [(f"{prefix}_attn2_to_q", dim, dim), (f"{prefix}_attn2_to_k", 2048, dim),
                        (f"{prefix}_attn2_to_v", 2048, dim), (f"{prefix}_attn2_to_out_0", dim, dim)]
            linears += [(f"{prefix}_ff_net_0_proj", dim, 8 * dim), (f"{prefix}_ff_net_2", 4 * dim, dim)]
    return linears


def kohya(folder: Path, linears: list[tuple[str, int, int]], rank: int, alpha: float) -> dict[str, int]:
    """kohya LoRA: F16 `.alpha` scalars interleaved with the factors (name order), as sd-scripts saves them."""
    shapes: Shapes = {}
    for name, fan_in, fan_out in linears:
        shapes[f"{name}.alpha"] = ("F16", ())
        shapes[f"{name}.lora_down.weight"] = ("F16", (rank, fan_in))
        shapes[f"{name}.lora_up.weight"] = ("F16", (fan_out, rank))
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": f"{alpha:g}"}
    scalars = {f"{name}.alpha": alpha for name, _, _ in linears}
    return {"lora.safetensors": write_safetensors(folder / "lora.safetensors", shapes, metadata, scalars)}


def kohya_sdxl(folder: Path) -> dict[str, int]:
    return kohya(folder, sdxl_linears(), rank=8, alpha=4)


def kohya_sd15_small(folder: Path) -> dict[str, int]:
    linears = [(f"lora_unet_down_blocks_0_attentions_{a}_transformer_blocks_0_attn{n}_to_{p}",
                320 if n == 1 or p == "q" else 768, 320) for a in (0, 1) for n in (1, 2) for p in ("q", "k", "v")]
    return kohya(folder, linears, rank=4, alpha=2)


def diffusers_flux(folder: Path, double: int, single: int, rank: int) -> dict[str, int]:
    """diffusers FLUX.1 LoRA (3072 wide) with the `lora_adapter_metadata` diffusers writes, and a card."""
    shapes: Shapes = {}
    modules = [f"transformer_blocks.{i}.attn.to_{p}" for i in range(double) for p in ("q", "k", "v", "out.0")]
    modules += [f"single_transformer_blocks.{i}.attn.to_{p}" for i in range(single) for p in ("q", "k", "v")]
    for module in modules:
        shapes[f"transformer.{module}.lora_A.weight"] = ("BF16", (rank, 3072))
        shapes[f"transformer.{module}.lora_B.weight"] = ("BF16", (3072, rank))
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps({"transformer.r": rank,
                                                                     "transformer.lora_alpha": rank})}
    headers = {"pytorch_lora_weights.safetensors": write_safetensors(folder / "pytorch_lora_weights.safetensors",
                                                                     shapes, metadata)}
    (folder / "README.md").write_text(_card("base_model: black-forest-labs/FLUX.1-dev\nlibrary_name: diffusers\n"
                                            "tags: [lora, flux]\n", "FLUX LoRA"))
    return headers


BUDGET_KINDS = {
    "peft-llama-7b": lambda folder: peft_llama(folder, layers=32, hidden=4096, rank=16),
    "kohya-sdxl": kohya_sdxl,
    "diffusers-flux": lambda folder: diffusers_flux(folder, double=19, single=38, rank=16),
    "peft-llama-tiny": lambda folder: peft_llama(folder, layers=2, hidden=64, rank=4),
    "kohya-sd15-small": kohya_sd15_small,
    "diffusers-flux-small": lambda folder: diffusers_flux(folder, double=1, single=1, rank=4),
}
LATENCY_KINDS = ("peft-llama-tiny", "kohya-sd15-small", "diffusers-flux-small")


def build_repos(root: Path, namespace: str, kinds: list[str]) -> dict[str, dict[str, int]]:
    """root/<namespace>/<kind>-<n>/...; returns repo id -> {LoRA file: header size}."""
    built = {}
    for index, kind in enumerate(kinds):
        repo_id = f"{namespace}/{kind}-{index:03d}"
        folder = root / repo_id
        folder.mkdir(parents=True)
        built[repo_id] = BUDGET_KINDS[kind](folder)
    return built


# ------------------------------------------------------------------------------------------ running

# No token and no cache of the user's: the scan is anonymous and read-only.
ENV = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
ENV.update({"HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost"})


class Sandbox:
    """`lora-bot sandbox` in its own process, serving `repos`, logging every request to a file."""

    def __init__(self, repos: Path, log: Path, latency_ms: int = 0, faults: str | None = None):
        command = [sys.executable, "-m", "bot", "sandbox", "--repos", str(repos), "--request-log", str(log),
                   "--latency-ms", str(latency_ms)]
        if faults:
            command += ["--faults", faults]
        self.log = log
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                        env=ENV)
        self.endpoint = self.process.stdout.readline().strip()
        if not self.endpoint.startswith("http"):
            raise RuntimeError("the sandbox did not start")

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def scan(endpoint: str, config: Path, report: Path) -> dict:
    """`lora-bot scan` in a subprocess; its report JSON."""
    command = [sys.executable, "-m", "bot", "scan", "--config", str(config), "--endpoint", endpoint,
               "--report-json", str(report), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env={**ENV, "HF_HOME": str(report.parent / "hf-home")})
    if not report.exists():
        raise RuntimeError(f"scan failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(report.read_text())


def write_config(path: Path, namespace: str, workers: int, retries: int = 6, max_wait: float = 2) -> Path:
    path.write_text(
        f"hub: {{workers: {workers}, retries: {retries}, max_retry_wait: {max_wait}, timeout: 30}}\n"
        f"discovery: {{queries: [{{filter: [], author: {namespace}}}], incremental: false}}\n"
        "proposals: {card: false, config_fix: false, variants: false, flag_discussions: false}\n")
    return path


def repo_of(entry: dict) -> str | None:
    """The repo a request was about: /api/models/{repo}[/...] or /{repo}/resolve/..."""
    parts = entry["path"].strip("/").split("/")
    if parts[:2] == ["api", "models"] and len(parts) >= 4:
        return "/".join(parts[2:4])
    if len(parts) >= 4 and parts[2] == "resolve":
        return "/".join(parts[:2])
    return None


def file_reads(entries: list[dict], repo_id: str, path: str) -> list[int]:
    """Bytes of each read of one file, in the order they were answered."""
    return [e["bytes"] for e in entries if e["route"] == "resolve" and repo_of(e) == repo_id
            and e["path"].split("/", 5)[-1] == path]


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


# ------------------------------------------------------------------------------------------ (a) budget


def budget(scratch: Path, copies: int) -> bool:
    kinds = [kind for kind in BUDGET_KINDS for _ in range(copies)]
    built = build_repos(scratch / "budget-repos", "budget", kinds)
    sandbox = Sandbox(scratch / "budget-repos", scratch / "budget.jsonl")
    try:
        report = scan(sandbox.endpoint, write_config(scratch / "budget.yaml", "budget", 8), scratch / "budget.json")
        entries = sandbox.entries()
    finally:
        sandbox.close()
    sizes = {repo["repo_id"]: {f["path"]: f["size"] for f in repo["files"]} for repo in report["repos"]}
    per_repo = Counter(repo_of(e) for e in entries)
    print(f"(a) request budget and bytes: {len(built)} repos, one LoRA file each; read-only scan, 8 workers, "
          f"{report['stats']['seconds']:.2f} s")
    print(f"{'repo':<33}{'size':>10}{'header':>10}{'requests':>10}{'header read':>13}{'max(100k,hdr)':>15}"
          f"{'other reads':>13}{'read/size':>11}")
    ok = True
    total_size = 0
    for repo_id, files in built.items():
        for path, header_size in files.items():
            size = sizes.get(repo_id, {}).get(path)
            if size is None:
                print(f"{repo_id:<33} not inspected")
                ok = False
                continue
            reads = file_reads(entries, repo_id, path)
            header_read, other = 0, []
            for nbytes in reads:  # reads until the header is complete are header reads; the rest fetch alphas
                if header_read < min(header_size, size):
                    header_read += nbytes
                else:
                    other.append(nbytes)
            allowed = max(FIRST_READ, header_size)
            requests = per_repo[repo_id]
            ok &= requests <= 6 and header_read <= allowed
            total_size += size
            print(f"{repo_id:<33}{mb(size):>10}{mb(header_size):>10}{requests:>10}{header_read:>13,}{allowed:>15,}"
                  f"{f'{len(other)} / {sum(other):,} B':>13}{sum(reads) / size:>11.2%}")
    read = sum(e["bytes"] for e in entries)
    print(f"most requests for one repo: {max(per_repo[r] for r in built)} (goal <= 6); all header reads within "
          f"max(100 kB, header size): {'yes' if ok else 'NO'}")
    print(f"bytes read (all {len(entries)} responses, listing and model_info included) / total LoRA file size: "
          f"{read:,} / {total_size:,} = {read / total_size:.3%}")
    return ok


# ------------------------------------------------------------------------------------------ (b), (c)


@dataclass(frozen=True)
class Run:
    report: dict
    entries: list[dict]

    @property
    def seconds(self) -> float:
        return self.report["stats"]["seconds"]

    def files_by_repo(self) -> dict[str, list]:
        return {repo["repo_id"]: repo["files"] for repo in self.report["repos"] if repo["error"] is None}


def scan_with(scratch: Path, name: str, repos: Path, workers: int, latency_ms: int, faults: str | None = None) -> Run:
    sandbox = Sandbox(repos, scratch / f"{name}.jsonl", latency_ms, faults)
    try:
        report = scan(sandbox.endpoint, write_config(scratch / f"{name}.yaml", "lat", workers),
                      scratch / f"{name}.json")
        return Run(report, sandbox.entries())
    finally:
        sandbox.close()


def latency(scratch: Path, count: int, latency_ms: int, workers: int) -> tuple[bool, Run]:
    repos = scratch / "latency-repos"
    build_repos(repos, "lat", [LATENCY_KINDS[i % len(LATENCY_KINDS)] for i in range(count)])
    scan_with(scratch, "warm-up", repos, workers, 0)  # first touch of the files and the code: not measured
    run = scan_with(scratch, "latency", repos, workers, latency_ms)
    floor = scan_with(scratch, "latency0", repos, workers, 0)
    requests = len(run.entries)
    bound = requests * latency_ms / 1000 / workers
    ratio = run.seconds / bound
    failed = sum(repo["error"] is not None for repo in run.report["repos"])
    print(f"\n(b) latency: {count} repos ({', '.join(LATENCY_KINDS)}), sandbox --latency-ms {latency_ms}, "
          f"{workers} workers")
    print(f"requests {requests} ({requests / count:.2f} per repo), repos failed {failed}")
    print(f"wall {run.seconds:.2f} s   bound requests x latency / workers = {requests} x {latency_ms} ms / {workers}"
          f" = {bound:.2f} s   ratio {ratio:.2f} (goal <= 1.3)")
    print(f"same scan at --latency-ms 0: {floor.seconds:.2f} s for {len(floor.entries)} requests (client and "
          f"server work the latency cannot hide)")
    return ratio <= 1.3 and failed == 0, run


def faults(scratch: Path, reference: Run, latency_ms: int, workers: int) -> bool:
    spec = f"{FAULTS},seed={FAULT_SEED},retry-after=1"
    run = scan_with(scratch, "faults", scratch / "latency-repos", workers, latency_ms, spec)
    injected = Counter(e["fault"] for e in run.entries if e.get("fault"))
    repos = run.report["repos"]
    failed = [repo for repo in repos if repo["error"] is not None]
    expected = reference.files_by_repo()
    matching = sum(files == expected.get(repo_id) for repo_id, files in run.files_by_repo().items())
    succeeded = len(repos) - len(failed)
    print(f"\n(c) faults: sandbox --faults {spec!r}")
    print(f"injected {sum(injected.values())} faults in {len(run.entries)} requests "
          f"({sum(injected.values()) / len(run.entries):.1%}: " + ", ".join(f"{k} x{n}" for k, n in
                                                                         sorted(injected.items())) + ")")
    print(f"repos: {len(repos)} of {len(expected)} reported, {succeeded} inspected, {len(failed)} failed with a "
          f"reason" + "".join(f"\n  {repo['repo_id']}: {repo['error']}" for repo in failed[:5]))
    print(f"inspected repos whose files equal the fault-free run's: {matching} of {succeeded} "
          f"({'identical' if matching == succeeded else 'DIFFERENT'}); wall {run.seconds:.2f} s")
    every_repo = {repo["repo_id"] for repo in repos} == set(expected)
    return every_repo and matching == succeeded and all(repo["error"] for repo in failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=200, help="repos for the latency and fault runs")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--copies", type=int, default=2, help="repos of each kind in the budget run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as folder:
        scratch = Path(folder)
        budget_ok = budget(scratch, args.copies)
        latency_ok, reference = latency(scratch, args.repos, args.latency_ms, args.workers)
        faults_ok = faults(scratch, reference, args.latency_ms, args.workers)
    print(f"\nbudget {'met' if budget_ok else 'MISSED'}; latency {'met' if latency_ok else 'MISSED'}; "
          f"faults {'handled' if faults_ok else 'MISHANDLED'}")
    return 0 if budget_ok and latency_ok and faults_ok else 1


if __name__ == "__main__":
    sys.exit(main())
