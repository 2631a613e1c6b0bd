"""`lora-bot inspect` on the same SDXL kohya layout in a ~10 MB file and a 4 GiB file, side by side.

Inspect reads the header and the few `.alpha` scalars, never the weights, so its time should not depend on
the file size: the printed ratio should be close to 1.0. The 4 GiB file is sparse (header and alpha bytes are
written at their offsets, the rest is a hole), so the benchmark needs neither 4 GiB of disk nor of RAM. Bytes
read per run come from /proc/self/io `rchar` (Linux), which counts every read() the process makes.

    python benchmarks/inspect_bench.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot.cli import main
from bot.sandbox.layouts import sdxl_sgm_shapes, write_sparse_safetensors

SMALL_TARGET = 10_000_000
BIG_TARGET = 4 * 2**30


def sdxl_kohya_shapes(rank: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensors of a kohya LoRA on every attention and feed-forward linear of the SDXL UNet (SGM names)."""
    shapes = {}
    for module, (fan_in, fan_out) in sdxl_sgm_shapes().items():
        name = f"lora_unet_{module}"
        shapes[f"{name}.alpha"] = ("F32", ())  # kohya stores `.alpha` as a float32 scalar
        shapes[f"{name}.lora_down.weight"] = ("F16", (rank, fan_in))
        shapes[f"{name}.lora_up.weight"] = ("F16", (fan_out, rank))
    return shapes


def rank_for(target_bytes: int) -> int:
    per_rank = sum(2 * (fan_in + fan_out) for fan_in, fan_out in sdxl_sgm_shapes().values())
    return max(1, round(target_bytes / per_rank))


def write(path: Path, rank: int, alpha: float, sparse: bool) -> int:
    """Header, then the alpha scalars at their offsets; weights are zeros (a hole when sparse). Returns the
    header size."""
    shapes = sdxl_kohya_shapes(rank)
    metadata = {
        "ss_network_dim": str(rank),
        "ss_network_alpha": f"{alpha:g}",
        "ss_base_model_version": "sdxl_base_v1-0",
    }
    header_bytes = write_sparse_safetensors(
        path, shapes, metadata, values={name: alpha for name in shapes if name.endswith(".alpha")}
    )
    if not sparse:
        path.write_bytes(path.read_bytes())  # written back in full, the hole becomes zeros on disk
    return header_bytes


def rchar() -> int | None:
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith("rchar:")), None)


def inspect_once(path: Path) -> tuple[float, int | None, dict]:
    """Wall time and bytes read of one full `lora-bot inspect FILE --json`, output captured."""
    out = io.StringIO()
    before = rchar()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        main(["inspect", str(path), "--json"])
    elapsed = time.perf_counter() - start
    after = rchar()
    read = None if before is None or after is None else after - before
    return elapsed, read, json.loads(out.getvalue())["files"][0]


@dataclass(frozen=True)
class Result:
    label: str
    size: int
    on_disk: int
    header_bytes: int
    times: tuple[float, ...]
    bytes_read: int | None
    rank: int
    alpha: float

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def run(repeats: int) -> list[Result]:
    alpha = 8.0
    specs = [("10 MB", rank_for(SMALL_TARGET), False), ("4 GiB sparse", rank_for(BIG_TARGET), True)]
    with tempfile.TemporaryDirectory(prefix="inspect-bench-") as folder:
        paths, headers = [], []
        for _label, rank, sparse in specs:
            path = Path(folder) / f"rank{rank}.safetensors"
            headers.append(write(path, rank, alpha, sparse))
            paths.append(path)
        for path in paths:
            inspect_once(path)  # warm up: imports and the page cache of the header
        times: list[list[float]] = [[] for _ in paths]
        reads: list[list[int | None]] = [[] for _ in paths]
        reports: list[dict] = [{} for _ in paths]
        for _ in range(repeats):  # interleaved, so drift in machine load hits both files alike
            for i, path in enumerate(paths):
                elapsed, read, reports[i] = inspect_once(path)
                times[i].append(elapsed)
                reads[i].append(read)
        results = []
        for (label, _, _), path, header_bytes, t, r, report in zip(
            specs, paths, headers, times, reads, reports, strict=True
        ):
            stat = path.stat()
            results.append(
                Result(
                    label=label,
                    size=stat.st_size,
                    on_disk=stat.st_blocks * 512,
                    header_bytes=header_bytes,
                    times=tuple(t),
                    bytes_read=None if None in r else statistics.median(r),
                    rank=report["rank"],
                    alpha=report["alpha"],
                )
            )
    return results


def report(results: list[Result], repeats: int, modules: int) -> str:
    title = (
        f"inspect: SDXL kohya layout, {modules} modules ({3 * modules} tensors incl. .alpha), "
        f"{repeats} runs each, interleaved"
    )
    columns = (
        f"{'file':<14}{'size':>16}{'on disk':>14}{'header':>11}{'rank':>6}{'alpha':>7}"
        f"{'best ms':>10}{'median ms':>11}{'bytes read':>13}"
    )
    lines = [title, columns]
    for r in results:
        read = f"{r.bytes_read:,.0f}" if r.bytes_read is not None else "n/a"
        lines.append(
            f"{r.label:<14}{r.size:>16,}{r.on_disk:>14,}{r.header_bytes:>11,}{r.rank:>6}{r.alpha:>7g}"
            f"{1000 * r.best:>10.2f}{1000 * r.median:>11.2f}{read:>13}"
        )
    small, big = results
    lines.append(
        f"ratio 4 GiB / 10 MB: file size {big.size / small.size:,.0f}x, best {big.best / small.best:.2f}x, "
        f"median {big.median / small.median:.2f}x"
        + (
            f", bytes read {big.bytes_read / small.bytes_read:.2f}x"
            if small.bytes_read and big.bytes_read is not None
            else ""
        )
    )
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    results = run(args.repeats)
    print(report(results, args.repeats, len(sdxl_sgm_shapes())))


if __name__ == "__main__":
    cli()
