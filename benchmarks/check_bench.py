"""`lora-bot check` of a 700-module kohya SDXL LoRA against a sharded SDXL base on the sandbox Hub: requests.

The base is the real SDXL UNet (diffusers `UNet2DConditionModel` with stabilityai/stable-diffusion-xl-base-1.0's
unet/config.json values, built on the meta device), written fp16 in N shards with its index as sparse
safetensors files (real headers, data sections that are holes). The adapter has kohya SGM names and the real
widths of every attention and feed-forward linear (700 modules, with `.alpha` scalars), in its own repo.

From the sandbox's request log, per check: the requests that touched the adapter repo and the base repo.
Run 1 reads the base cold; run 2 is the same process again (finished base cached); run 3 is a new cache over
the same --cache-dir (a new process): the listing, and every header from disk by sha.

    python benchmarks/check_bench.py [--shards 3]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from bot.checking import check
from bot.sandbox import SandboxHub
from bot.sandbox.layouts import sdxl_sgm_shapes, write_sparse_safetensors
from bot.sources import base as base_source

SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)


def write_base(root: Path, shards: int) -> list[str]:
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    names = sorted(unet.state_dict())
    shapes = {n: ("F16", tuple(t.shape)) for n, t in unet.state_dict().items()}
    folder = root / "unet"
    folder.mkdir(parents=True)
    per = math.ceil(len(names) / shards)
    weight_map, files = {}, []
    for i in range(shards):
        part = names[i * per : (i + 1) * per]
        file = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_sparse_safetensors(folder / file, {n: shapes[n] for n in part})
        weight_map.update(dict.fromkeys(part, file))
        files.append(f"unet/{file}")
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **SDXL_UNET}))
    return files


def write_adapter(path: Path, rank: int = 16) -> int:
    shapes, values = {}, {}
    for module, (fan_in, fan_out) in sdxl_sgm_shapes().items():
        key = f"lora_unet_{module}"
        shapes[f"{key}.lora_down.weight"] = ("F16", (rank, fan_in))
        shapes[f"{key}.lora_up.weight"] = ("F16", (fan_out, rank))
        shapes[f"{key}.alpha"] = ("F16", ())
        values[f"{key}.alpha"] = float(rank)
    write_sparse_safetensors(
        path, shapes, {"ss_network_dim": str(rank), "ss_network_alpha": str(rank)}, values
    )
    return len(sdxl_sgm_shapes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="check-bench-") as scratch:
        root = Path(scratch)
        shard_files = write_base(root / "base", args.shards)
        modules = write_adapter(root / "lora.safetensors")
        with SandboxHub() as hub:
            base_files = {
                p.relative_to(root / "base").as_posix(): p for p in (root / "base").rglob("*") if p.is_file()
            }
            hub.add_repo("stabilityai/sdxl-bench", base_files)
            hub.add_repo("someone/sdxl-kohya-lora", {"lora.safetensors": root / "lora.safetensors"})
            cache = root / "cache"
            print(
                f"adapter: {modules} modules (kohya SGM names); base: SDXL UNet in {len(shard_files)} shards + index"
            )
            print(f"{'run':<34} {'verdict':<8} {'adapter req':>11} {'base req':>9} {'base shard reads':>17}")
            for label in ("1 cold", "2 same process", "3 new process (disk cache)"):
                if label.startswith("3"):
                    base_source._CACHES.clear()  # what a new process starts with: nothing in memory
                before = len(hub.requests)
                result = check(
                    "someone/sdxl-kohya-lora",
                    "stabilityai/sdxl-bench",
                    endpoint=hub.endpoint,
                    cache_dir=cache,
                )
                log = hub.requests[before:]
                adapter = [e for e in log if "someone/sdxl-kohya-lora" in e["path"]]
                base = [e for e in log if "stabilityai/sdxl-bench" in e["path"]]
                shard_reads = [e for e in base if e["path"].endswith(".safetensors")]
                print(
                    f"{label:<34} {result.verdict:<8} {len(adapter):>11} {len(base):>9} {len(shard_reads):>17}"
                )
            applied = sum(m.status == "applies" for m in result.modules)
            print(f"modules applied: {applied} of {len(result.modules)}")


if __name__ == "__main__":
    main()
