"""Synthetic repos for the sandbox: a Hub-sized census (10⁵ LoRA repos) made on demand, never written anywhere.

Repo number i is a pure function of (seed, i, its generation): id, sha, lastModified, siblings, card metadata
and the bytes of a small safetensors file. The store asks for a repo when a request names it (a header range
read, an adapter_config.json read), and the listing asks for pages of them, so memory holds one page at a time.
`change(indices)` bumps repos to a new generation: a new sha and a newer lastModified, as a push would.

The mix cycles through three writers, each with the one module whose shape names its base family:
- PEFT on a Llama-width model (`adapter_model.safetensors` + `adapter_config.json`),
- kohya on SDXL (`lora_unet_..._attn2_to_k`, cross-attention width 2048, with `.alpha`),
- diffusers on FLUX.1 (`transformer.transformer_blocks.0.attn.to_q`, width 3072).
Files are a few kB: the bench measures requests, and a first range read covers the whole file.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from bot.sandbox.store import MAIN_REF, Blob, Commit, Repo, StoredFile

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
OWNER = "synthetic"
KINDS = ("peft", "kohya-sdxl", "diffusers-flux")


def safetensors_bytes(
    tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict | None = None, scalars: dict | None = None
) -> bytes:
    """A valid safetensors file whose tensors are zeros (F16 / F32 only), except F32 `scalars` by name."""
    itemsize = {"F16": 2, "F32": 4}
    header: dict = {"__metadata__": metadata} if metadata else {}
    data = bytearray()
    for name, (dtype, shape) in tensors.items():
        size = itemsize[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + size]}
        data += struct.pack("<f", scalars[name]) if scalars and name in scalars else bytes(size)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(text)) + text + bytes(data)


class SyntheticRepos:
    """`count` repos named `synthetic/lora-NNNNNN`; thread-safe (the sandbox answers from many threads)."""

    def __init__(self, count: int, seed: int = 0) -> None:
        self.count = count
        self.seed = seed
        self._lock = threading.Lock()
        self._generation: dict[int, int] = {}  # only changed repos are here
        self._changed_order: list[int] = []  # changed repos, newest change first
        self._unchanged: list[int] | None = None  # the listing's tail, built when first needed

    # ----- identity

    def repo_id(self, index: int) -> str:
        return f"{OWNER}/lora-{index:06d}"

    def index(self, repo_id: str) -> int | None:
        owner, _, name = repo_id.partition("/")
        if owner != OWNER or not name.startswith("lora-") or not name[5:].isdigit():
            return None
        index = int(name[5:])
        return index if 0 <= index < self.count else None

    def kind(self, index: int) -> str:
        return KINDS[index % len(KINDS)]

    def generation(self, index: int) -> int:
        return self._generation.get(index, 0)

    def sha(self, index: int) -> str:
        return hashlib.sha1(f"{self.seed}:{index}:{self.generation(index)}".encode()).hexdigest()

    def last_modified(self, index: int) -> datetime:
        """Repo i was pushed i seconds after the epoch; a change is newer than every original push."""
        generation = self.generation(index)
        if not generation:
            return EPOCH + timedelta(seconds=index)
        return EPOCH + timedelta(seconds=self.count + generation * self.count + index)

    def rank(self, index: int) -> int:
        # Small ranks keep each file a few kB; a rank change is what a push looks like to the census.
        return (2, 4)[(index // len(KINDS) + self.generation(index)) % 2]

    # ----- changes

    def change(self, indices: Iterable[int]) -> None:
        """A new commit on each of these repos: new sha, newer lastModified, another rank."""
        with self._lock:
            for index in indices:
                self._generation[index] = self._generation.get(index, 0) + 1
            changed = sorted(self._generation, key=self.last_modified, reverse=True)
            self._changed_order = changed
            self._unchanged = None

    # ----- the listing

    def listing(self, start: int, size: int) -> list[int]:
        """Indices of the newest-first listing (sort=lastModified, direction=-1), [start, start+size)."""
        with self._lock:
            if self._unchanged is None:
                changed = set(self._generation)
                self._unchanged = [i for i in range(self.count - 1, -1, -1) if i not in changed]
            ordered_head = self._changed_order
            tail = self._unchanged
        out = ordered_head[start : start + size]
        if len(out) < size:
            tail_start = max(0, start - len(ordered_head))
            out += tail[tail_start : tail_start + size - len(out)]
        return out

    def card_data(self, index: int) -> dict:
        kind = self.kind(index)
        library = "peft" if kind == "peft" else "diffusers"
        return {"library_name": library, "tags": ["lora", kind], "license": "apache-2.0"}

    def paths(self, index: int) -> list[str]:
        kind = self.kind(index)
        if kind == "peft":
            return [".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors"]
        if kind == "kohya-sdxl":
            return [".gitattributes", "README.md", "style_sdxl.safetensors"]
        return [".gitattributes", "README.md", "pytorch_lora_weights.safetensors"]

    def model_json(self, index: int, expand: set[str] | None) -> dict:
        card = self.card_data(index)
        item = {
            "_id": self.repo_id(index),
            "id": self.repo_id(index),
            "modelId": self.repo_id(index),
            "author": OWNER,
            "sha": self.sha(index),
            "lastModified": self.last_modified(index).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "createdAt": (EPOCH + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [*card["tags"], card["library_name"], f"license:{card['license']}"],
            "library_name": card["library_name"],
            "cardData": card,
            "siblings": [{"rfilename": path} for path in self.paths(index)],
        }
        if expand:
            item = {key: value for key, value in item.items() if key in expand | {"id", "_id", "modelId"}}
        return item

    # ----- files

    def files(self, index: int) -> dict[str, bytes]:
        kind, rank = self.kind(index), self.rank(index)
        card = self.card_data(index)
        readme = (
            "---\n"
            + f"library_name: {card['library_name']}\nlicense: {card['license']}\ntags: [lora, {kind}]\n"
            + f"---\n\n# synthetic adapter {index}\n"
        ).encode()
        files = {
            ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
            "README.md": readme,
        }
        if kind == "peft":
            prefix = "base_model.model.model.layers.0.self_attn.q_proj"
            files["adapter_model.safetensors"] = safetensors_bytes(
                {
                    f"{prefix}.lora_A.weight": ("F16", (rank, 4096)),
                    f"{prefix}.lora_B.weight": ("F16", (4096, rank)),
                }
            )
            config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj"]}
            files["adapter_config.json"] = json.dumps(config).encode()
        elif kind == "kohya-sdxl":
            prefix = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
            files["style_sdxl.safetensors"] = safetensors_bytes(
                {
                    f"{prefix}.alpha": ("F32", ()),
                    f"{prefix}.lora_down.weight": ("F16", (rank, 2048)),
                    f"{prefix}.lora_up.weight": ("F16", (640, rank)),
                },
                {"ss_network_dim": str(rank), "ss_network_alpha": str(rank)},
                {f"{prefix}.alpha": float(rank)},
            )
        else:
            prefix = "transformer.transformer_blocks.0.attn.to_q"
            files["pytorch_lora_weights.safetensors"] = safetensors_bytes(
                {
                    f"{prefix}.lora_A.weight": ("F16", (rank, 3072)),
                    f"{prefix}.lora_B.weight": ("F16", (3072, rank)),
                }
            )
        return files

    def repo(self, repo_id: str) -> Repo | None:
        """The repo as the store holds repos: one commit, made now from the index (not kept)."""
        index = self.index(repo_id)
        if index is None:
            return None
        sha, modified = self.sha(index), self.last_modified(index)
        stored = {
            path: StoredFile(Blob(data=data), lfs=path.endswith(".safetensors"))
            for path, data in self.files(index).items()
        }
        commit = Commit(sha, None, stored, "synthetic", "", modified, OWNER)
        return Repo(repo_id, EPOCH + timedelta(seconds=index), modified, {MAIN_REF: sha}, {sha: commit})
