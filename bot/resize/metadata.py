"""Where a resized file says its new ranks and alphas: safetensors `__metadata__` and adapter_config.json.

Each format keeps alpha in its own place (lora-formats.md §1-2): PEFT in adapter_config.json (`r`,
`lora_alpha`, `rank_pattern`, `alpha_pattern`), diffusers in the `lora_adapter_metadata` JSON (the same
fields prefixed by component), kohya in `.alpha` tensors with `ss_network_dim`/`ss_network_alpha` as a
summary. Everything not about rank or alpha is kept as it was. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping

from bot.core.formats import most_common
from bot.core.peft_config import peft_module_key
from bot.core.trainer_metadata import (
    DIFFUSERS_KEY,
    DYNAMIC,
    NETWORK_ARGS_KEY,
    MetadataTooDeep,
    load_metadata_json,
)
from bot.resize.math import ModulePlan, ResizeError, ResizePlan

DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
KOHYA_HASH_KEYS = {"sshs_model_hash": 64, "sshs_legacy_hash": 8}  # width of each value
# Hashes of the tensor data that no longer describe the file and that lora-bot cannot recompute faithfully.
STALE_KEYS = ("modelspec.hash_sha256",)
# Per-block kohya dims/alphas (ss_network_args) that a resize makes wrong; there is no module→block map here.
STALE_NETWORK_ARGS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
PROVENANCE_PREFIX = "lora_bot."
ENERGY_WIDTH = 8  # "0.987654": reserved in the header, filled in once every module is done


def json_number(value: float) -> int | float:
    """16.0 → 16 so configs read as people write them; 5.333… stays a float."""
    return int(value) if float(value).is_integer() else float(value)


def rank_histogram(ranks: Counter) -> dict[str, int]:
    """{"8": 10, "16": 3}: modules per rank, smallest rank first."""
    return {str(r): n for r, n in sorted(ranks.items())}


def rank_summary(ranks: Counter) -> str:
    """ "16" for one rank, else a JSON histogram such as {"8": 10, "16": 3}."""
    if len(ranks) == 1:
        return str(next(iter(ranks)))
    return json.dumps(rank_histogram(ranks))


def _uniform(values: Iterable) -> object | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _patterns(plans: Iterable[ModulePlan], key_of: Mapping[str, str]) -> tuple[int, float, dict, dict]:
    """r and lora_alpha = the most common values; per-module patterns for the modules that differ.

    Patterns name a module by its full path; it is anchored with `^` only when another module's path ends
    with it (Flux has `proj_out` and `single_transformer_blocks.0.proj_out`), because PEFT matches a
    pattern against any dotted suffix and older readers do not understand the anchor.
    """
    plans = list(plans)
    r = most_common(Counter(p.new_rank for p in plans))
    alpha = most_common(Counter(p.new_alpha for p in plans))
    keys = [key_of[p.name] for p in plans]

    def pattern(key: str) -> str:
        return f"^{key}" if any(other != key and other.endswith("." + key) for other in keys) else key

    rank_pattern = {pattern(key_of[p.name]): p.new_rank for p in plans if p.new_rank != r}
    alpha_pattern = {pattern(key_of[p.name]): json_number(p.new_alpha) for p in plans if p.new_alpha != alpha}
    return r, alpha, rank_pattern, alpha_pattern


def resized_peft_config(raw: Mapping, plan: ResizePlan) -> dict:
    """adapter_config.json for the resized weights: rank and alpha fields rewritten, everything else kept."""
    key_of = {p.name: peft_module_key(p.name) for p in plan.modules}
    r, alpha, rank_pattern, alpha_pattern = _patterns(plan.modules, key_of)
    config = dict(raw)
    config.update(r=r, lora_alpha=json_number(alpha), rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    return config


def _component(module: str, diffusers_meta: Mapping) -> str:
    """`unet` for `unet.down_blocks…`, when the metadata is keyed by component; "" when it is not."""
    first = module.split(".", 1)[0]
    return first if any(key.startswith(first + ".") for key in diffusers_meta) else ""


def _loaded(text: str, key: str) -> object | None:
    """The metadata's JSON; None when it is not JSON (not ours to repair: inspect flags it). Nested too deeply
    to rewrite, it is refused: kept as it was, it would state the old rank in the resized file."""
    try:
        return load_metadata_json(text, key)
    except MetadataTooDeep as error:
        raise ResizeError(f"{error}; cannot rewrite it for the new rank") from None
    except ValueError:
        return None


def _resized_diffusers_metadata(text: str, plan: ResizePlan) -> str:
    meta = _loaded(text, DIFFUSERS_KEY)
    if not isinstance(meta, dict):
        return text
    groups: dict[str, list[ModulePlan]] = {}
    for module in plan.modules:
        groups.setdefault(_component(module.name, meta), []).append(module)
    for component, plans in groups.items():
        prefix = f"{component}." if component else ""
        key_of = {p.name: p.name[len(prefix) :] for p in plans}
        r, alpha, rank_pattern, alpha_pattern = _patterns(plans, key_of)
        meta.update(
            {
                f"{prefix}r": r,
                f"{prefix}lora_alpha": json_number(alpha),
                f"{prefix}rank_pattern": rank_pattern,
                f"{prefix}alpha_pattern": alpha_pattern,
            }
        )
    return json.dumps(meta, indent=2, sort_keys=True)  # as diffusers writes it (lora_base.py L1061)


def _kohya_summary(plans: list[ModulePlan]) -> tuple[str, str]:
    """ss_network_dim / ss_network_alpha values: the shared value, or "Dynamic" as kohya's resize writes."""
    dim = _uniform(p.new_rank for p in plans)
    alpha = _uniform(p.stored_alpha for p in plans)
    return (DYNAMIC if dim is None else str(dim)), (DYNAMIC if alpha is None else str(float(alpha)))


def _resized_network_args(text: str, conv: list[ModulePlan]) -> str:
    args = _loaded(text, NETWORK_ARGS_KEY)
    if not isinstance(args, dict):
        return text
    for key in STALE_NETWORK_ARGS:
        args.pop(key, None)
    if conv:
        dim, alpha = _kohya_summary(conv)
        if "conv_dim" in args:
            args["conv_dim"] = dim
        if "conv_alpha" in args:
            args["conv_alpha"] = alpha
    return json.dumps(args)


def resized_metadata(
    metadata: Mapping[str, str], plan: ResizePlan, conv_modules: set[str], provenance: Mapping[str, str]
) -> dict[str, str]:
    """The output's `__metadata__`: the input's, with rank/alpha summaries updated and provenance added."""
    out = {k: v for k, v in metadata.items() if k not in STALE_KEYS}
    linear = [p for p in plan.modules if p.name not in conv_modules]
    conv = [p for p in plan.modules if p.name in conv_modules]
    if linear or conv:
        dim, alpha = _kohya_summary(linear or conv)
        if "ss_network_dim" in out:
            out["ss_network_dim"] = dim
        if "ss_network_alpha" in out:
            out["ss_network_alpha"] = alpha
    if "ss_network_args" in out:
        out["ss_network_args"] = _resized_network_args(out["ss_network_args"], conv)
    if DIFFUSERS_METADATA_KEY in out:
        out[DIFFUSERS_METADATA_KEY] = _resized_diffusers_metadata(out[DIFFUSERS_METADATA_KEY], plan)
    out.update({PROVENANCE_PREFIX + key: value for key, value in provenance.items()})
    return out


def provenance(plan: ResizePlan, source_sha256: str) -> dict[str, str]:
    """What the file says about how it was made (`energy_retained` is reserved and filled in at the end)."""
    methods = sorted({p.method for p in plan.modules}) or ["copy"]
    out = {
        "source_sha256": source_sha256,
        "source_rank": rank_summary(plan.old_ranks),
        "target_rank": rank_summary(plan.new_ranks),
        "method": "+".join(methods),
    }
    if plan.options.energy is not None:
        out["energy_target"] = f"{plan.options.energy:g}" + (" per module" if plan.options.per_module else "")
    return out
