"""Rank 64 → 16 on SDXL- and Flux-shaped LoRA files: lora-bot's factor-space SVD against kohya's dense SVD.

What runs, each in its own subprocess so peak RSS is honest (ru_maxrss of that process alone):
- `lora-bot` on the whole file (`resize_adapter`, the code behind `lora-bot resize --rank 16`): time and peak
  RSS against the streaming budget, input size + 300 MB;
- the same subset of modules (one per distinct module shape up to a size cap, so the dense runs fit the time
  budget on 2 cores) through three engines: lora-bot; kohya's method as sd-scripts `networks/resize_lora.py`
  runs it (load the whole file, `torch.linalg.svd(up @ down)` with its default full_matrices=True, keep
  U·S and Vh); and the stronger dense variant `full_matrices=False`. The script prints the time ratios and the
  largest relative difference between the singular values each engine keeps.

Module shapes come from the real models built on the meta device: every nn.Linear in the SDXL UNet's
Transformer2DModel blocks (what kohya's LoRA targets), and every nn.Linear in Flux's transformer blocks
(what ai-toolkit / diffusers Flux LoRAs target). Factors are random; the work does not depend on values.

Usage: python benchmarks/resize_bench.py [--threads 1] [--workdir DIR] [--keep]
"added" is peak RSS minus the RSS right after imports: an upper bound on what the conversion itself used
(importing torch can itself peak above the steady RSS, so a small "added" may be import noise).
Both engines get the same torch thread count (default 1: the 2-core machine is shared, and a single thread
gives the steadiest timings; pass --threads 2 to use both cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RANK, TARGET = 64, 16
SUBSET_MAX_ELEMENTS = 1280 * 2560  # the dense full_matrices=True SVD of larger shapes takes minutes each
SUBSET_PER_SHAPE = 2
MEMORY_BUDGET = 300 * 2**20

SDXL_UNET = {  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
FLUX_TRANSFORMER = {  # black-forest-labs/FLUX.1-dev transformer/config.json
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def current_rss() -> int:
    """Resident memory now (the peak of importing torch can be above it, and would hide the engine's own)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- building the files --------------------------------------------------------------------------------------


def linear_shapes(family: str) -> list[tuple[str, int, int]]:
    """(module key prefix, out, in) for every adapted Linear of the real model, built on the meta device."""
    import torch

    if family == "sdxl":
        from diffusers import UNet2DConditionModel

        with torch.device("meta"):
            model = UNet2DConditionModel(**SDXL_UNET)
        inside = ".attentions."
    else:
        from diffusers import FluxTransformer2DModel

        with torch.device("meta"):
            model = FluxTransformer2DModel(**FLUX_TRANSFORMER)
        inside = "transformer_blocks."
    shapes = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and inside in name:
            key = f"lora_unet_{name.replace('.', '_')}" if family == "sdxl" else f"transformer.{name}"
            shapes.append((key, module.out_features, module.in_features))
    return shapes


def factor_keys(family: str, key: str) -> tuple[str, str]:
    if family == "sdxl":  # kohya
        return f"{key}.lora_down.weight", f"{key}.lora_up.weight"
    return f"{key}.lora_A.weight", f"{key}.lora_B.weight"  # diffusers Flux


def write_lora(path: Path, family: str, shapes: list[tuple[str, int, int]], seed: int = 0) -> None:
    """A rank-64 file, written module by module so the builder never holds the whole file."""
    import torch

    from bot.files.stream import StreamingWriter, TensorSlot

    dtype, code = (torch.float16, "F16") if family == "sdxl" else (torch.bfloat16, "BF16")
    slots = []
    for key, out, inp in shapes:
        down, up = factor_keys(family, key)
        slots += [TensorSlot(down, code, (RANK, inp)), TensorSlot(up, code, (out, RANK))]
        if family == "sdxl":
            slots.append(TensorSlot(f"{key}.alpha", code, ()))
    metadata = (
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(RANK),
            "ss_network_alpha": "32.0",
            "ss_base_model_version": "sdxl_base_v1-0",
        }
        if family == "sdxl"
        else {"format": "pt"}
    )
    writer = StreamingWriter(path, slots, metadata)
    generator = torch.Generator().manual_seed(seed)
    for key, out, inp in shapes:
        down, up = factor_keys(family, key)
        writer.write_tensor(down, (torch.randn(RANK, inp, generator=generator) / inp**0.5).to(dtype))
        writer.write_tensor(up, (torch.randn(out, RANK, generator=generator) / RANK**0.5).to(dtype))
        if family == "sdxl":
            writer.write_tensor(f"{key}.alpha", torch.tensor(32.0, dtype=dtype))
    writer.finish()


def subset(shapes: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Up to SUBSET_PER_SHAPE modules of every distinct shape the dense SVD can do in the time budget (at least
    the smallest shape: every Flux shape is above the cap)."""
    cap = max(SUBSET_MAX_ELEMENTS, min(out * inp for _, out, inp in shapes))
    chosen, seen = [], {}
    for key, out, inp in shapes:
        if out * inp <= cap and seen.get((out, inp), 0) < SUBSET_PER_SHAPE:
            seen[(out, inp)] = seen.get((out, inp), 0) + 1
            chosen.append((key, out, inp))
    return chosen


# --- the engines (child processes) ---------------------------------------------------------------------------


def child_lora_bot(source: Path, out: Path) -> dict:
    from bot.resize.engine import resize_adapter
    from bot.resize.math import ResizeOptions

    start_rss = current_rss()
    start = time.perf_counter()
    report = resize_adapter(source, ResizeOptions(rank=TARGET), out, overwrite=True)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rss_start": start_rss,
        "rss_peak": peak_rss(),
        "sigma": {m.name: list(m.kept_singular_values) for m in report.modules},
    }


def _module_name(key: str) -> str:
    for suffix in (".lora_down.weight", ".lora_A.weight"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return ""


def child_dense(source: Path, out: Path, full_matrices: bool) -> dict:
    """sd-scripts resize_lora.py's method: whole file in memory, dense up @ down, torch.linalg.svd, keep U·S, Vh."""
    import torch
    from safetensors.torch import load_file, save_file

    start_rss = current_rss()
    start = time.perf_counter()
    tensors = load_file(str(source))
    result, sigma = {}, {}
    for key in list(tensors):
        name = _module_name(key)
        if not name:
            continue
        up_key = key.replace("lora_down", "lora_up").replace("lora_A", "lora_B")
        down, up = tensors[key].float(), tensors[up_key].float()
        alpha = tensors.get(f"{name}.alpha")
        scale = alpha.item() / RANK if alpha is not None else 1.0
        weight = up @ down
        u, s, vh = torch.linalg.svd(weight, full_matrices=full_matrices)
        result[up_key] = (u[:, :TARGET] @ torch.diag(s[:TARGET])).to(tensors[up_key].dtype).contiguous()
        result[key] = vh[:TARGET].to(tensors[key].dtype).contiguous()
        if alpha is not None:
            result[f"{name}.alpha"] = torch.tensor(scale * TARGET, dtype=alpha.dtype)
        sigma[name] = (s[:TARGET] * abs(scale)).tolist()
    save_file(result, str(out))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_start": start_rss, "rss_peak": peak_rss(), "sigma": sigma}


def run_child(mode: str, source: Path, out: Path, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(source), str(out), "--threads", str(threads)]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ----------------------------------------------------------------------------------------------


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def max_sigma_difference(ours: dict, theirs: dict) -> float:
    worst = 0.0
    for name, reference in theirs.items():
        for mine, dense in zip(ours[name], reference, strict=True):
            worst = max(worst, abs(mine - dense) / dense)
    return worst


def bench_family(family: str, workdir: Path, threads: int) -> None:
    shapes = linear_shapes(family)
    full_path, part_path = (
        workdir / f"{family}-r{RANK}.safetensors",
        workdir / f"{family}-subset-r{RANK}.safetensors",
    )
    chosen = subset(shapes)
    write_lora(full_path, family, shapes)
    write_lora(part_path, family, chosen, seed=1)
    size = full_path.stat().st_size
    label = {
        "sdxl": "SDXL UNet (kohya keys, fp16, alpha 32)",
        "flux": "Flux.1 transformer (diffusers keys, bf16)",
    }
    distinct = sorted({(o, i) for _, o, i in shapes}, key=lambda s: s[0] * s[1])
    print(
        f"\n== {label[family]}: {len(shapes)} modules, {len(distinct)} distinct shapes, rank {RANK} → {TARGET}, "
        f"{mb(size)} =="
    )

    whole = run_child("lora-bot", full_path, workdir / f"{family}-r{TARGET}.safetensors", threads)
    budget = size + MEMORY_BUDGET
    verdict = "within" if whole["rss_peak"] <= budget else "OVER"
    added = whole["rss_peak"] - whole["rss_start"]
    print(
        f"whole file, lora-bot: {whole['seconds']:.1f} s, peak RSS {mb(whole['rss_peak'])} (RSS after imports "
        f"{mb(whole['rss_start'])}, so the resize itself added at most {mb(added)}); "
        f"budget input + 300 MB = {mb(budget)}: {verdict}"
    )

    shown = ", ".join(
        f"{o}x{i}" for o, i in sorted({(o, i) for _, o, i in chosen}, key=lambda s: s[0] * s[1])
    )
    print(
        f"same subset for every engine: {len(chosen)} modules ({SUBSET_PER_SHAPE} per shape: {shown}); "
        f"larger shapes are left out of the dense runs for time"
    )
    ours = run_child("lora-bot", part_path, workdir / f"{family}-subset-ours.safetensors", threads)
    kohya = run_child("dense-kohya", part_path, workdir / f"{family}-subset-kohya.safetensors", threads)
    reduced = run_child("dense-reduced", part_path, workdir / f"{family}-subset-reduced.safetensors", threads)
    print(f"  {'engine':<46} {'time':>9} {'peak RSS':>10} {'added':>8} {'time ratio':>11}")
    for label_, result in (
        ("lora-bot (QR of factors + r×r SVD)", ours),
        ("dense, kohya resize_lora (full_matrices=True)", kohya),
        ("dense, torch.linalg.svd full_matrices=False", reduced),
    ):
        ratio = result["seconds"] / ours["seconds"]
        added = result["rss_peak"] - result["rss_start"]
        print(
            f"  {label_:<46} {result['seconds']:>8.2f}s {mb(result['rss_peak']):>10} {mb(added):>8} "
            f"{ratio:>10.1f}×"
        )
    print(
        f"  time ratio kohya/lora-bot: {kohya['seconds'] / ours['seconds']:.1f}× (goal ≥ 50×); "
        f"dense full_matrices=False/lora-bot: {reduced['seconds'] / ours['seconds']:.1f}×"
    )
    difference = max(
        max_sigma_difference(ours["sigma"], kohya["sigma"]),
        max_sigma_difference(ours["sigma"], reduced["sigma"]),
    )
    print(
        f"  largest relative difference of the {TARGET} kept singular values, lora-bot vs dense (float32): "
        f"{difference:.2e} (goal ≤ 1e-4)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--family", choices=("sdxl", "flux"), action="append")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        mode, source, out = args.child
        engines = {
            "lora-bot": lambda: child_lora_bot(Path(source), Path(out)),
            "dense-kohya": lambda: child_dense(Path(source), Path(out), full_matrices=True),
            "dense-reduced": lambda: child_dense(Path(source), Path(out), full_matrices=False),
        }
        print(json.dumps(engines[mode]()))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="resize-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"resize_bench: torch {torch.__version__}, {args.threads} thread(s) per engine, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; files in {workdir}"
    )
    started = time.perf_counter()
    try:
        for family in args.family or ("sdxl", "flux"):
            bench_family(family, workdir, args.threads)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
