"""Which files of a folder or repo are LoRA files, which config and card describe each, and the rules for
names: what a safe path inside a repo is, and what a Hub repo id looks like. Pure: strings in."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
CONFIG_NAME = "adapter_config.json"
CARD_NAME = "README.md"

# Weights of full pipelines and sharded checkpoints: not LoRA files even when they sit in a LoRA repo.
_FULL_MODEL = re.compile(r"(^|/)(diffusion_pytorch_model[^/]*|[^/]*-\d{5}-of-\d{5})\.safetensors$")
# Pickles are only considered when their name says LoRA: training_args.bin or optimizer.pt are not adapters.
_PICKLE_LORA_NAME = re.compile(r"(^|/)(adapter_model|pytorch_lora_weights)\.bin$|lora", re.IGNORECASE)


# A repo id's parts, as the Hub accepts them: letters, digits, `_`, `.`, `-`, not starting or ending with `.`/`-`.
_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID_WITH_NAMESPACE = re.compile(rf"{_REPO_PART}/{_REPO_PART}")
_REPO_ID = re.compile(rf"(?:{_REPO_PART}/)?{_REPO_PART}")


def is_repo_id(text: object, *, namespace: bool = True) -> bool:
    """`owner/name` (with `namespace=False`, also a canonical id without an owner, such as `gpt2`)."""
    if not isinstance(text, str) or "--" in text or ".." in text:
        return False
    pattern = _REPO_ID_WITH_NAMESPACE if namespace else _REPO_ID
    return pattern.fullmatch(text) is not None


def is_safe_repo_path(path: object) -> bool:
    """A plain relative path inside a repo: not absolute, no empty, `.` or `..` segment, no backslash and no
    control character (a newline could smuggle another path into a request). Every path the bot reads from a
    repo listing and every path it writes must pass."""
    if not isinstance(path, str) or not path or len(path) > 1000:
        return False
    if any(ord(c) < 32 or c in "\\\x7f" for c in path):
        return False
    return all(segment not in ("", ".", "..") for segment in path.split("/"))


@dataclass(frozen=True)
class Candidate:
    path: str  # posix path relative to the folder or repo root
    pickle: bool
    config_path: str | None  # sibling adapter_config.json, when present
    card_path: str | None  # sibling README.md, else the root README.md


def select_candidates(paths: Iterable[str]) -> list[Candidate]:
    present = set(paths)
    paths = sorted(present)
    stems = {posixpath.splitext(p)[0] for p in paths if p.endswith(".safetensors")}
    chosen = []
    for path in paths:
        lowered = path.lower()
        if lowered.endswith(".safetensors"):
            if _FULL_MODEL.search(path):
                continue
            pickle = False
        elif lowered.endswith(PICKLE_SUFFIXES) and _PICKLE_LORA_NAME.search(path):
            if posixpath.splitext(path)[0] in stems:
                continue  # a safetensors twin exists: the pickle is redundant, not the only copy
            pickle = True
        else:
            continue
        folder = posixpath.dirname(path)
        config = posixpath.join(folder, CONFIG_NAME) if folder else CONFIG_NAME
        card = posixpath.join(folder, CARD_NAME) if folder else CARD_NAME
        chosen.append(
            Candidate(
                path=path,
                pickle=pickle,
                config_path=config if config in present else None,
                card_path=card if card in present else (CARD_NAME if CARD_NAME in present else None),
            )
        )
    return chosen
