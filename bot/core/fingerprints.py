"""Which base model a LoRA belongs to: shape fingerprints (lora-formats.md §4) and declared sources.

Shapes are the truth; declarations (card, config, trainer metadata) add the exact repo id when they agree
with the shapes, and become a `base-model-mismatch` finding when they do not.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.core.formats import Module, component_of
from bot.core.selection import is_repo_id
from bot.core.trainer_metadata import diffusers_adapter_metadata

SD1, SD2, SDXL, SD3, FLUX1, LLM = "sd1", "sd2", "sdxl", "sd3", "flux1", "llm"
FAMILIES = (SD1, SD2, SDXL, SD3, FLUX1, LLM)

FAMILY_NAMES = {
    SD1: "Stable Diffusion 1.x",
    SD2: "Stable Diffusion 2.x",
    SDXL: "SDXL",
    SD3: "SD3",
    FLUX1: "FLUX.1",
    LLM: "a language model",
}

# The repos whose module shapes each diffusion fingerprint matches. One entry means the shapes decide.
SD1_REPOS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "CompVis/stable-diffusion-v1-4")
SD2_REPOS = ("stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1-base")
SDXL_REPOS = ("stabilityai/stable-diffusion-xl-base-1.0",)
SDXL_REFINER_REPOS = ("stabilityai/stable-diffusion-xl-refiner-1.0",)
SD3_MEDIUM_REPOS = (
    "stabilityai/stable-diffusion-3-medium-diffusers",
    "stabilityai/stable-diffusion-3.5-medium",
)
SD35_LARGE_REPOS = ("stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-large-turbo")
FLUX1_REPOS = ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell")


@dataclass(frozen=True)
class LlmShape:
    repo_ids: tuple[str, ...]
    hidden: int
    kv: int
    intermediate: int
    layers: int
    vocab: int


LLM_SHAPES = (
    LlmShape(("meta-llama/Llama-2-7b-hf",), 4096, 4096, 11008, 32, 32000),
    LlmShape(("meta-llama/Llama-2-13b-hf",), 5120, 5120, 13824, 40, 32000),
    LlmShape(("meta-llama/Llama-2-70b-hf",), 8192, 1024, 28672, 80, 32000),
    LlmShape(("meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B"), 4096, 1024, 14336, 32, 128256),
    LlmShape(("mistralai/Mistral-7B-v0.1",), 4096, 1024, 14336, 32, 32000),
    LlmShape(("meta-llama/Meta-Llama-3-70B", "meta-llama/Llama-3.1-70B"), 8192, 1024, 28672, 80, 128256),
    LlmShape(("Qwen/Qwen2-7B",), 3584, 512, 18944, 28, 152064),
    LlmShape(("Qwen/Qwen2-0.5B",), 896, 128, 4864, 24, 151936),
)


@dataclass(frozen=True)
class ShapeFingerprint:
    family: str | None
    candidates: tuple[str, ...]
    evidence: str  # the shape that decided, in words


@dataclass(frozen=True)
class Declaration:
    source: str  # where it was read, e.g. "card base_model"
    value: str
    family: str | None
    repo_id: str | None


@dataclass(frozen=True)
class BaseModel:
    family: str | None
    repo_id: str | None
    candidates: tuple[str, ...]
    source: str
    evidence: str
    conflicts: tuple[Declaration, ...]  # declarations the shapes contradict

    def to_json(self) -> dict:
        return {
            "family": self.family,
            "repo_id": self.repo_id,
            "candidates": list(self.candidates),
            "source": self.source,
            "evidence": self.evidence,
        }


# ---------------------------------------------------------------------------------------------- shapes


def fingerprint(modules: Sequence[Module]) -> ShapeFingerprint:
    by_component: dict[str, list[Module]] = {}
    for module in modules:
        by_component.setdefault(component_of(module.name), []).append(module)
    denoiser = by_component.get("denoiser", [])
    model = by_component.get("model", [])
    text = by_component.get("text_encoder", []) + by_component.get("text_encoder_2", [])
    # PEFT on a bare UNet/transformer has no component prefix: recognise it by its block names.
    if model and not denoiser and any(_is_diffusion_block(m.canonical) for m in model):
        denoiser, model = model, []
    if denoiser or text:
        found = _diffusion(denoiser, by_component)
        if found.family:
            return found
    if model:
        return _llm(model)
    return ShapeFingerprint(None, (), "no module whose shape identifies a base model")


def _is_diffusion_block(canonical: str) -> bool:
    return bool(
        re.search(
            r"(^|_)(down_blocks|up_blocks|mid_block|transformer_blocks|single_transformer_blocks"
            r"|double_blocks|single_blocks|joint_blocks|input_blocks|output_blocks)_\d",
            canonical,
        )
    )


def _widths(modules: Sequence[Module], pattern: str, attr: str) -> Counter:
    regex = re.compile(pattern)
    return Counter(getattr(m, attr) for m in modules if regex.search(m.canonical) and getattr(m, attr))


# DiT layers whose input (or output) is the hidden size, in diffusers and kohya/BFL names. Attention alone is not
# enough: trainers let users adapt only the MLPs (`proj_mlp`, `ff.net.*`) or only the single blocks.
# XLabs Flux LoRAs name their processors' layers `double_blocks_N_qkv1` / `_proj2` (legacy keys).
_DIT_HIDDEN_IN = (
    r"(attn_to_[qkv]|add_[qkv]_proj|attn_qkv|linear1|proj_mlp|ff_net_0_proj|ff_context_net_0_proj"
    r"|(img|txt)_mlp_0|mlp_fc1|(img|txt)_mod_lin|norm1_linear|norm1_context_linear|norm_linear"
    r"|modulation_lin|blocks_\d+_qkv\d?)$"
)
_DIT_HIDDEN_OUT = (
    r"(to_out_0|to_add_out|ff_net_2|ff_context_net_2|blocks_\d+_proj_out|linear2|attn_proj"
    r"|(img|txt)_mlp_2|mlp_fc2|blocks_\d+_proj\d?)$"
)


def _hidden_widths(denoiser: Sequence[Module]) -> Counter:
    return _widths(denoiser, _DIT_HIDDEN_IN, "in_features") + _widths(
        denoiser, _DIT_HIDDEN_OUT, "out_features"
    )


def _dit(denoiser: Sequence[Module]) -> ShapeFingerprint | None:
    """Flux and SD3 transformers, by their block names and hidden size; None when neither is there."""
    names = [m.canonical for m in denoiser]
    if any(re.search(r"single_transformer_blocks|single_blocks|double_blocks", n) for n in names):
        widths = _hidden_widths(denoiser)
        if 3072 in widths:
            return ShapeFingerprint(
                FLUX1, FLUX1_REPOS, "double/single transformer blocks with hidden size 3072"
            )
        return ShapeFingerprint(None, (), f"Flux-style blocks with unexpected hidden size {sorted(widths)}")
    joint = any(re.search(r"joint_blocks|context_block|add_q_proj|add_k_proj", n) for n in names)
    if joint or any(re.search(r"(^|_)transformer_transformer_blocks_\d", n) for n in names):
        widths = _hidden_widths(denoiser)
        if 1536 in widths:
            return ShapeFingerprint(SD3, SD3_MEDIUM_REPOS, "joint transformer blocks with hidden size 1536")
        if 2432 in widths:
            return ShapeFingerprint(SD3, SD35_LARGE_REPOS, "joint transformer blocks with hidden size 2432")
    return None


def _diffusion(denoiser: Sequence[Module], by_component: Mapping[str, list[Module]]) -> ShapeFingerprint:
    dit = _dit(denoiser)
    if dit is not None:
        return dit
    names = [m.canonical for m in denoiser]
    context = _widths(denoiser, r"attn2_to_[kv]$", "in_features")
    if context:
        width = context.most_common(1)[0][0]
        decided = {
            768: (SD1, SD1_REPOS),
            1024: (SD2, SD2_REPOS),
            2048: (SDXL, SDXL_REPOS),
            1280: (SDXL, SDXL_REFINER_REPOS),
        }.get(width)
        if decided:
            return ShapeFingerprint(
                decided[0], decided[1], f"cross-attention (attn2.to_k) input width {width}"
            )
    if by_component.get("text_encoder_2"):
        return ShapeFingerprint(
            SDXL, SDXL_REPOS + SDXL_REFINER_REPOS, "a second text encoder (text_encoder_2 / lora_te2)"
        )
    # Only inside a UNet attention (diffusers `attentions_N`, SGM `input_blocks_N_1`): SD3 and other DiTs number
    # their `transformer_blocks` at the top level, and a small one must not pass for SDXL.
    if any(
        re.search(
            r"(attentions_\d+|(input|output)_blocks_\d+_\d+|middle_block_\d+)_transformer_blocks_[1-9]", n
        )
        for n in names
    ):
        return ShapeFingerprint(
            SDXL,
            SDXL_REPOS + SDXL_REFINER_REPOS,
            "UNet attention with more than one transformer block per level",
        )
    text_widths = _widths(by_component.get("text_encoder", []), r"(q_proj|self_attn_q_proj)$", "in_features")
    if 1024 in text_widths:
        return ShapeFingerprint(SD2, SD2_REPOS, "text encoder width 1024 (OpenCLIP ViT-H)")
    self_attention = _widths(denoiser, r"attn1_to_[qkv]$", "in_features")
    if 320 in self_attention:
        proj_in_conv = any(re.search(r"proj_in$", m.canonical) and m.is_conv for m in denoiser)
        if proj_in_conv:
            return ShapeFingerprint(SD1, SD1_REPOS, "attention at 320 channels with a 1x1-conv proj_in")
        return ShapeFingerprint(None, SD1_REPOS + SD2_REPOS, "attention at 320 channels (SD 1.x or 2.x)")
    if 768 in text_widths:
        return ShapeFingerprint(SD1, SD1_REPOS, "text encoder width 768 (CLIP ViT-L) and no second encoder")
    return ShapeFingerprint(None, (), "diffusion modules without an identifying shape")


# Llama-style `model.layers.N.self_attn.q_proj`, and GPT-2/Falcon/Bloom-style `transformer.h.N.attn.c_attn`.
_LLM_LAYER = re.compile(
    r"(?:layers|h)_(\d+)_(?:self_attn|mlp|attention|feed_forward|attn|self_attention)_(\w+)$"
)


# Which model dimension a decoder layer's LoRA shows, and on which side: (dimension, Module attribute).
_LLM_LEAF_DIMENSIONS = {
    "q_proj": ("hidden", "in_features"),
    "o_proj": ("hidden", "out_features"),
    "k_proj": ("kv", "out_features"),
    "v_proj": ("kv", "out_features"),
    "gate_proj": ("intermediate", "out_features"),
    "up_proj": ("intermediate", "out_features"),
    "down_proj": ("intermediate", "in_features"),
}


def _llm(modules: Sequence[Module]) -> ShapeFingerprint:
    seen: dict[str, int] = {}
    layers = -1
    vocab = None
    for module in modules:
        found = _LLM_LAYER.search(module.canonical)
        if found:
            layers = max(layers, int(found.group(1)))
            dimension, side = _LLM_LEAF_DIMENSIONS.get(found.group(2), (None, None))
            if dimension and getattr(module, side):
                seen[dimension] = getattr(module, side)
        elif module.canonical.endswith("embed_tokens") and module.in_features:
            vocab = module.in_features  # lora_embedding_A is [r, vocab]
        elif module.canonical.endswith("lm_head") and module.out_features:
            vocab = module.out_features
    if layers < 0 and vocab is None:
        return ShapeFingerprint(None, (), "no transformer layer names (model.layers.N...) to match")
    observed = dict(seen, layers=layers + 1)
    if vocab:
        observed["vocab"] = vocab
    candidates = _llm_candidates(observed)
    description = ", ".join(f"{k} {v}" for k, v in observed.items())
    if not candidates and "vocab" in observed:
        # Fine-tunes often add tokens (a pad token makes Llama-2's 32000 into 32001): a resized vocabulary
        # must not hide the base the layer shapes name.
        candidates = _llm_candidates({k: v for k, v in observed.items() if k != "vocab"})
        if candidates:
            description += " (a resized vocabulary)"
    return ShapeFingerprint(LLM, candidates, f"decoder layers with {description}")


def _llm_candidates(observed: Mapping[str, int]) -> tuple[str, ...]:
    return tuple(repo for shape in LLM_SHAPES if _llm_fits(shape, observed) for repo in shape.repo_ids)


def _llm_fits(shape: LlmShape, observed: Mapping[str, int]) -> bool:
    for key, value in observed.items():
        # layers_to_transform can leave the top layers out, so fewer layers than the model has still fits.
        if key == "layers":
            if value > shape.layers:
                return False
        elif getattr(shape, key) != value:
            return False
    return "hidden" in observed


# -------------------------------------------------------------------------------------------- declared


_KNOWN_REPOS = {
    repo.lower(): family
    for family, repos in (
        (SD1, (*SD1_REPOS, "runwayml/stable-diffusion-v1-5")),
        (SD2, SD2_REPOS),
        (SDXL, SDXL_REPOS + SDXL_REFINER_REPOS),
        (SD3, SD3_MEDIUM_REPOS + SD35_LARGE_REPOS),
        (FLUX1, FLUX1_REPOS),
        (LLM, tuple(r for s in LLM_SHAPES for r in s.repo_ids)),
    )
    for repo in repos
}

# Name patterns for the many fine-tunes a card may name; checked only when the repo is not a known base.
_NAME_PATTERNS = (
    (FLUX1, r"flux"),
    (SD3, r"stable-diffusion-3|(^|[-_/])sd-?3"),
    (SDXL, r"stable-diffusion-xl|sdxl|(^|[-_/ ])xl([-_. ]|$)|sd_xl|pony|illustrious"),
    (SD2, r"stable-diffusion-2|(^|[-_/])sd-?2|v2-1|768-v"),
    (SD1, r"stable-diffusion-v1|v1-5|(^|[-_/])sd-?1\.?5|sd15"),
    (LLM, r"llama|mistral|mixtral|qwen|gemma|phi-|gpt|falcon|opt-|bloom|pythia|smollm|deepseek"),
)


def family_of_name(value: str) -> str | None:
    lowered = value.strip().lower()
    if lowered in _KNOWN_REPOS:
        return _KNOWN_REPOS[lowered]
    for family, pattern in _NAME_PATTERNS:
        if re.search(pattern, lowered):
            return family
    return None


def _declaration(source: str, value: object) -> Declaration | None:
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    repo_id = value if is_repo_id(value) else None
    return Declaration(source=source, value=value, family=family_of_name(value), repo_id=repo_id)


_SS_VERSIONS = {"sd_v1": SD1, "sd_v2": SD2, "sd_v2_v": SD2, "flux1": FLUX1}
_ARCHITECTURES = (
    ("stable-diffusion-v1", SD1, None),
    ("stable-diffusion-v2", SD2, None),
    ("stable-diffusion-xl", SDXL, None),
    ("stable-diffusion-3", SD3, None),
    ("flux-1-dev", FLUX1, "black-forest-labs/FLUX.1-dev"),
    ("flux-1-schnell", FLUX1, "black-forest-labs/FLUX.1-schnell"),
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
        family = (
            _SS_VERSIONS.get(version)
            or (SDXL if version.startswith("sdxl") else None)
            or (SD3 if version.startswith("sd3") else None)
        )
        found.append(Declaration("metadata ss_base_model_version", version, family, None))
    elif metadata.get("ss_v2") in ("True", "true"):
        found.append(Declaration("metadata ss_v2", "True", SD2, None))
    name = metadata.get("ss_sd_model_name")
    if name:
        # Often a checkpoint's file name; only a name of a known family is trusted as a repo id.
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
    """Combine the shape fingerprint with the declarations; the shapes win a disagreement."""
    if shape.family:
        conflicts = tuple(d for d in declared if _contradicts(d, shape))
        # A declared repo agrees when it is of the shapes' family, or of no family we know (a fine-tune such as
        # Lykon/dreamshaper-8): the declaration is more specific than the shapes and nothing contradicts it.
        agreeing = [
            d for d in declared if d not in conflicts and d.repo_id and d.family in (shape.family, None)
        ]
        if agreeing:
            chosen = agreeing[0]
            return BaseModel(
                shape.family,
                chosen.repo_id,
                shape.candidates,
                f"{chosen.source} + shapes",
                shape.evidence,
                conflicts,
            )
        repo_id = shape.candidates[0] if len(shape.candidates) == 1 else None
        return BaseModel(shape.family, repo_id, shape.candidates, "shapes", shape.evidence, conflicts)
    with_family = [d for d in declared if d.family]
    if with_family:
        first = with_family[0]
        conflicts = tuple(d for d in with_family[1:] if d.family != first.family)
        repo_id = next((d.repo_id for d in with_family if d.repo_id and d.family == first.family), None)
        return BaseModel(first.family, repo_id, shape.candidates, first.source, shape.evidence, conflicts)
    named = next((d for d in declared if d.repo_id), None)
    if named:
        return BaseModel(None, named.repo_id, shape.candidates, named.source, shape.evidence, ())
    return BaseModel(None, None, shape.candidates, "none", shape.evidence, ())


# Repos that moved: the old id names the same weights as the new one.
_RENAMED = {"runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5"}


def _contradicts(declaration: Declaration, shape: ShapeFingerprint) -> bool:
    if declaration.family is None:
        return False
    if declaration.family != shape.family:
        return True
    # Within a family the shapes still tell Llama-2-7B from Llama-3-8B, SD3-medium from SD3.5-large, or the
    # SDXL base from the refiner: a base repo we know that is not among the candidates is wrong.
    declared = (declaration.repo_id or "").lower()
    declared = _RENAMED.get(declared, declared)
    candidates = {c.lower() for c in shape.candidates}
    return bool(declared in _KNOWN_REPOS and candidates and declared not in candidates)
