"""Which base model a LoRA belongs to: its modules matched against the real models' signatures, then the
declarations (card, adapter_config.json, trainer metadata) checked against what the shapes allow.

Shapes are the truth, and they name a class more often than a checkpoint (FLUX.1 dev / schnell / Kontext /
Krea are shape-identical). So:
- every module fits one family → that family and the class's candidates; a repo id only when the class has
  one checkpoint or a declaration inside the class names it;
- the modules fit several families (a text-encoder-only LoRA) → no family unless a declaration inside the
  fitting set settles it;
- some module fits no known base → unknown: no family, no repo id, whatever is declared;
- no modules with shapes at all (a pickle, a corrupt header) → only the declarations speak.
A declaration outside what the shapes allow is a `base-model-mismatch`; one that is not a Hub repo id (a local
path, a URL, `None`) is never reported as a repo id (`base-model-not-a-repo`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.core import signatures
from bot.core.formats import OTHER
from bot.core.selection import is_repo_id
from bot.core.trainer_metadata import diffusers_adapter_metadata

LLM = "llm"
FAMILY_NAMES: Mapping[str, str] = signatures.FAMILIES


@dataclass(frozen=True)
class ShapeFingerprint:
    family: str | None
    candidates: tuple[str, ...]
    evidence: str  # what decided, in words a person can check
    observed: int = 0  # modules with shapes to match
    matched: bool = False  # every one of them fits some base
    compatible_families: tuple[str, ...] = ()  # every family the shapes allow (variants included)
    compatible_repo_ids: tuple[str, ...] = ()

    @property
    def abstains(self) -> bool:
        """The shapes were there and matched no known base completely: nothing may be claimed."""
        return self.observed > 0 and not self.matched


@dataclass(frozen=True)
class Declaration:
    source: str  # where it was read, e.g. "card base_model"
    value: str
    family: str | None
    repo_id: str | None
    not_a_repo: bool = False  # a local path, URL or placeholder where a repo id belongs


@dataclass(frozen=True)
class BaseModel:
    family: str | None
    repo_id: str | None
    candidates: tuple[str, ...]
    source: str
    evidence: str
    conflicts: tuple[Declaration, ...]  # declarations the shapes contradict
    not_repos: tuple[Declaration, ...] = ()  # declarations that are no Hub repo id
    # When the shapes fit no known base, the first declared repo: unclaimed until the scan checks the adapter
    # against that repo's own weights (`bot.core.compat.amend_with_check`).
    unverified: Declaration | None = None

    def to_json(self) -> dict:
        return {
            "family": self.family,
            "repo_id": self.repo_id,
            "candidates": list(self.candidates),
            "source": self.source,
            "evidence": self.evidence,
        }


# ---------------------------------------------------------------------------------------------- shapes

NO_MODULES = "no module whose shape identifies a base model"
# Fine-tunes often add tokens (a pad token makes Llama-2's 32000 into 32001): the embedding and the head
# then fit no table, though every layer names the base.
_VOCABULARY = re.compile(r"(^|[._])(embed_tokens|lm_head|wte|word_embeddings)$")


class Adapted(signatures.Observed, Protocol):
    """A module with its kind: `formats.Module` or `inspect.ModuleReport`."""

    @property
    def kind(self) -> str: ...


def fingerprint(modules: Sequence[Adapted]) -> ShapeFingerprint:
    observed = [m for m in modules if m.kind != OTHER]
    if not observed:
        return ShapeFingerprint(None, (), NO_MODULES)
    found = signatures.match(observed)
    if not found.complete:
        trunk = [o for o in observed if not _VOCABULARY.search(o.name)]
        if trunk and len(trunk) < len(observed):
            again = signatures.match(trunk)
            if again.complete and again.family == LLM:
                return _from_match(
                    again, len(observed), " (a resized vocabulary: the embedding fits no listed size)"
                )
        return ShapeFingerprint(None, (), found.evidence, observed=len(observed))
    return _from_match(found, len(observed))


def _from_match(found: signatures.SignatureMatch, observed: int, note: str = "") -> ShapeFingerprint:
    return ShapeFingerprint(
        found.family,
        found.candidates,
        found.evidence + note,
        observed=observed,
        matched=True,
        compatible_families=found.compatible_families,
        compatible_repo_ids=found.compatible_repo_ids,
    )


# -------------------------------------------------------------------------------------------- declared

_KNOWN_REPOS = {repo.lower(): entry.family for entry in signatures.ENTRIES for repo in entry.repo_ids}
_KNOWN_REPOS["runwayml/stable-diffusion-v1-5"] = "sd1"  # moved; the old id names the same weights
_RENAMED = {"runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5"}

# Name patterns for the many fine-tunes a card may name; checked only when the repo is not a known base.
# Specific names first: `qwen-image` before the LLM `qwen`, FLUX.2 before FLUX.1, LTX-2 before LTX-Video.
_NAME_PATTERNS = (
    ("flux2", r"flux\.?-?2"),
    ("chroma", r"(^|/)chroma"),
    ("flux1", r"flux"),
    ("qwen-image", r"qwen-?image"),
    ("hidream", r"hidream"),
    ("lumina2", r"lumina-?image-?2|lumina2"),
    ("z-image", r"z-?image"),
    ("hunyuan-video", r"hunyuan-?video"),
    ("hunyuan-image", r"hunyuan-?image"),
    ("wan", r"(^|[/_-])wan-?2|(^|/)wan2|wan-ai/"),
    ("ltx2", r"ltx-?2"),
    ("ltx-video", r"ltx-?video|ltxv"),
    ("sana", r"(^|/)sana"),
    ("pixart", r"pixart"),
    ("auraflow", r"auraflow"),
    ("cogview4", r"cogview-?4"),
    ("cogvideox", r"cogvideox"),
    ("mochi", r"mochi"),
    ("sd3", r"stable-diffusion-3|(^|[-_/])sd-?3"),
    ("sdxl", r"stable-diffusion-xl|sdxl|(^|[-_/ ])xl([-_. ]|$)|sd_xl|pony|illustrious|noobai"),
    ("sd2", r"stable-diffusion-2|(^|[-_/])sd-?2|v2-1|768-v"),
    ("sd1", r"stable-diffusion-v1|v1-5|(^|[-_/])sd-?1\.?5|sd15"),
    (LLM, r"llama|mistral|mixtral|qwen|gemma|phi-|gpt|falcon|opt-|bloom|pythia|smollm|deepseek|bert"),
)


def family_of_name(value: str) -> str | None:
    lowered = value.strip().lower()
    if lowered in _KNOWN_REPOS:
        return _KNOWN_REPOS[lowered]
    for family, pattern in _NAME_PATTERNS:
        if re.search(pattern, lowered):
            return family
    return None


# Where a training script's base_model_name_or_path points when it is a folder on the trainer's disk: the
# first segment of `models/Qwen2_5-1_5b-Instruct` is a directory, not a Hub user.
_LOCAL_FOLDERS = frozenset(
    {
        "models",
        "model",
        "checkpoints",
        "checkpoint",
        "ckpt",
        "ckpts",
        "output",
        "outputs",
        "pretrained",
        "pretrained_models",
        "weights",
        "data",
        "tmp",
        "cache",
        "home",
        "root",
        "workspace",
        "content",
        "mnt",
        "kaggle",
        "local",
        "base_model",
        "base_models",
        "hf_models",
        "llm",
        "llms",
    }
)
_WEIGHT_FILE = re.compile(r"\.(safetensors|ckpt|bin|pt|pth|gguf)$", re.IGNORECASE)


def declared_repo_id(value: str) -> str | None:
    """The value as a Hub repo id, or None when it is a path, a URL, a file or a placeholder.

    Canonical ids without an owner (`gpt2`, `distilgpt2`) are repo ids."""
    if not is_repo_id(value, namespace=False) or _WEIGHT_FILE.search(value):
        return None
    if value.lower() in ("none", "null", "nan", "undefined", "base_model"):
        return None
    owner = value.split("/", 1)[0] if "/" in value else None
    if owner is not None and owner.lower() in _LOCAL_FOLDERS:
        return None
    return value


def _declaration(source: str, value: object) -> Declaration | None:
    if value is None or not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    repo_id = declared_repo_id(value)
    family = family_of_name(value)
    return Declaration(source=source, value=value, family=family, repo_id=repo_id, not_a_repo=repo_id is None)


_SS_VERSIONS = {"sd_v1": "sd1", "sd_v2": "sd2", "sd_v2_v": "sd2", "flux1": "flux1"}
_SS_PREFIXES = (("sdxl", "sdxl"), ("sd3", "sd3"), ("flux2", "flux2"), ("chroma", "chroma"), ("hunyuan", None))
# modelspec.architecture prefixes (SAI's model spec; kohya and musubi-tuner write it).
_ARCHITECTURES = (
    ("stable-diffusion-v1", "sd1", None),
    ("stable-diffusion-v2", "sd2", None),
    ("stable-diffusion-xl", "sdxl", None),
    ("stable-diffusion-3", "sd3", None),
    ("flux-1-dev", "flux1", "black-forest-labs/FLUX.1-dev"),
    ("flux-1-schnell", "flux1", "black-forest-labs/FLUX.1-schnell"),
    ("flux-1", "flux1", None),
    ("flux-2", "flux2", None),
    ("chroma", "chroma", None),
    ("wan2", "wan", None),
    ("hunyuan-video", "hunyuan-video", None),
    ("qwen-image", "qwen-image", None),
)


def declarations(
    adapter_config: Mapping | None, card_data: Mapping | None, metadata: Mapping[str, str]
) -> list[Declaration]:
    """Every place that states a base model, most authoritative first."""
    found: list[Declaration | None] = []
    if adapter_config:
        found.append(
            _declaration(
                "adapter_config.json base_model_name_or_path", adapter_config.get("base_model_name_or_path")
            )
        )
    if card_data:
        base = card_data.get("base_model")
        for value in base if isinstance(base, list) else [base]:
            found.append(_declaration("card base_model", value))
    architecture = metadata.get("modelspec.architecture", "")
    for prefix, family, repo_id in _ARCHITECTURES:
        if architecture.startswith(prefix):
            found.append(Declaration("metadata modelspec.architecture", architecture, family, repo_id))
            break
    version = metadata.get("ss_base_model_version", "")
    if version:
        family = _SS_VERSIONS.get(version) or next(
            (f for p, f in _SS_PREFIXES if version.startswith(p)), None
        )
        found.append(Declaration("metadata ss_base_model_version", version, family, None))
    elif metadata.get("ss_v2") in ("True", "true"):
        found.append(Declaration("metadata ss_v2", "True", "sd2", None))
    name = metadata.get("ss_sd_model_name")
    if name:
        # Often a checkpoint's file name; only an owner/name of a known family is trusted as a repo id.
        family = family_of_name(name)
        found.append(
            Declaration(
                "metadata ss_sd_model_name", name, family, name if family and is_repo_id(name) else None
            )
        )
    for key, value in diffusers_adapter_metadata(metadata).items():
        if key.endswith("base_model_name_or_path"):
            found.append(_declaration("metadata lora_adapter_metadata", value))
    return [d for d in found if d is not None]


# -------------------------------------------------------------------------------------------- combined


def resolve(shape: ShapeFingerprint, declared: Sequence[Declaration]) -> BaseModel:
    """Combine the shape fingerprint with the declarations; the shapes bound what a declaration may claim."""
    not_repos = tuple(d for d in declared if d.not_a_repo)
    if shape.abstains:
        unverified = next((d for d in declared if d.repo_id), None)
        return BaseModel(None, None, (), "unknown", shape.evidence, (), not_repos, unverified)
    if shape.matched:
        return _within_shapes(shape, declared, not_repos)
    # No shapes to go by (a pickle, an unreadable header): the declarations alone, first with a family first.
    with_family = [d for d in declared if d.family]
    if with_family:
        first = with_family[0]
        conflicts = tuple(d for d in with_family[1:] if d.family != first.family)
        repo_id = next((d.repo_id for d in with_family if d.repo_id and d.family == first.family), None)
        return BaseModel(first.family, repo_id, (), first.source, shape.evidence, conflicts, not_repos)
    named = next((d for d in declared if d.repo_id), None)
    if named:
        return BaseModel(None, named.repo_id, (), named.source, shape.evidence, (), not_repos)
    return BaseModel(None, None, (), "none", shape.evidence, (), not_repos)


def _within_shapes(shape: ShapeFingerprint, declared: Sequence[Declaration], not_repos) -> BaseModel:
    conflicts = tuple(d for d in declared if _contradicts(d, shape))
    # A declared repo agrees when the shapes allow it: a listed checkpoint of the class, or an unlisted repo
    # (a fine-tune such as Lykon/dreamshaper-8) of an allowed family or of no family a name tells.
    agreeing = [
        d
        for d in declared
        if d not in conflicts
        and d.repo_id
        and (_listed(d.repo_id, shape.compatible_repo_ids) or d.family in (*shape.compatible_families, None))
    ]
    family = shape.family
    if family is None:  # several families fit: a consistent declaration of one of them settles it
        family = next((d.family for d in declared if d.family in shape.compatible_families), None)
        if family is not None:
            agreeing = [
                d for d in agreeing if d.family in (family, None) or _listed(d.repo_id, shape.candidates)
            ]
    if agreeing:
        chosen = agreeing[0]
        family = family or _KNOWN_REPOS.get(chosen.repo_id.lower())
        return BaseModel(
            family,
            chosen.repo_id,
            shape.candidates,
            f"{chosen.source} + shapes",
            shape.evidence,
            conflicts,
            not_repos,
        )
    repo_id = shape.candidates[0] if family and len(shape.candidates) == 1 else None
    return BaseModel(family, repo_id, shape.candidates, "shapes", shape.evidence, conflicts, not_repos)


def _listed(repo_id: str | None, repos: Sequence[str]) -> bool:
    wanted = _RENAMED.get((repo_id or "").lower(), (repo_id or "").lower())
    return wanted in {r.lower() for r in repos}


def _contradicts(declaration: Declaration, shape: ShapeFingerprint) -> bool:
    if declaration.family is None:
        return False
    if declaration.family not in shape.compatible_families:
        return True
    # Inside an allowed family the shapes still tell Llama-2-7B from Llama-3-8B, SD3-medium from SD3.5-large
    # or the SDXL base from the refiner: a listed base checkpoint the shapes do not allow is wrong.
    declared = _RENAMED.get((declaration.repo_id or "").lower(), (declaration.repo_id or "").lower())
    return bool(declared in _KNOWN_REPOS and not _listed(declared, shape.compatible_repo_ids))
