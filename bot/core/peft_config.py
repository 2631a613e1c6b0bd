"""adapter_config.json as PEFT reads it: the declared rank and alpha of each module.

PEFT looks a module up in `rank_pattern` / `alpha_pattern` (regex → value, matched against the module's
name inside the base model) and falls back to `r` / `lora_alpha`. Getting this lookup exactly right is what
keeps lora-bot from flagging adapters that legitimately use per-module ranks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.core.limits import MAX_RANK
from bot.core.patterns import UNKNOWN, PatternTable

PEFT_PREFIX = "base_model.model."


class ConfigError(ValueError):
    """adapter_config.json cannot be used; the message names the field."""


@dataclass(frozen=True)
class PeftConfig:
    raw: Mapping  # the whole JSON object, kept so fixes can change only what they must
    r: int | None
    lora_alpha: float | None
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: tuple[str, ...] = ()
    target_modules: tuple[str, ...] | str | None = None
    peft_type: str | None = None
    # Pattern keys lora-bot refuses to run (see bot.core.patterns), as "rank_pattern key '…': why" lines.
    # A module such a key could match has an unknown declared rank/alpha: the lookups return None for it.
    unchecked: tuple[str, ...] = ()
    rank_table: PatternTable | None = field(default=None, compare=False, repr=False)
    alpha_table: PatternTable | None = field(default=None, compare=False, repr=False)

    def declared_rank(self, module: str) -> int | None:
        """The rank PEFT builds for the module; None when no value applies or a refused key comes first."""
        return _lookup(self.rank_table, self.rank_pattern, peft_module_key(module), self.r)

    def declared_alpha(self, module: str) -> float | None:
        return _lookup(self.alpha_table, self.alpha_pattern, peft_module_key(module), self.lora_alpha)


def peft_module_key(module: str) -> str:
    """The name PEFT matches patterns against: the module's path inside the base model."""
    return module[len(PEFT_PREFIX) :] if module.startswith(PEFT_PREFIX) else module


def _lookup(table: PatternTable | None, patterns: Mapping[str, float], key: str, default):
    """PEFT's `get_pattern_key`: the first key, in the config's order, matching `(.*\\.)?(key)$`."""
    if not patterns:
        return default
    table = table or PatternTable(patterns)
    found = table.first_match(key)
    if found is UNKNOWN:
        return None  # a refused key might match: what PEFT would use is unknown
    return default if found is None else patterns[table.keys[found]]


def refused_keys(table: PatternTable, name: str) -> tuple[str, ...]:
    found = []
    for index, why in table.refused.items():
        pattern = table.keys[index]
        shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
        found.append(f"{name} key {shown!r}: {why}")
    return tuple(found)


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _number(value: object, name: str, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"adapter_config.json: {name} must be a number, got {value!r}")
    # Python's JSON reader admits NaN, Infinity and integers past float range: no loader can use them, and
    # int() or float() of them raises.
    if not _is_finite(value):
        raise ConfigError(f"adapter_config.json: {name} must be a finite number, got {value!r}")
    if integer and (int(value) != value or value <= 0):
        raise ConfigError(f"adapter_config.json: {name} must be a positive integer, got {value!r}")
    if integer and value > MAX_RANK:
        raise ConfigError(
            f"adapter_config.json: {name} is {value!r}, beyond any buildable rank (> {MAX_RANK:,})"
        )
    return int(value) if integer else float(value)


def _patterns(value: object, name: str, integer: bool) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"adapter_config.json: {name} must be an object, got {type(value).__name__}")
    return {str(k): _number(v, f"{name}[{k!r}]", integer) for k, v in value.items()}


def parse_peft_config(text: str) -> PeftConfig:
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"adapter_config.json is not valid JSON: {error}") from None
    except RecursionError:
        raise ConfigError("adapter_config.json is nested too deeply to be a PEFT config") from None
    if not isinstance(raw, dict):
        raise ConfigError("adapter_config.json is not a JSON object")
    return config_from_mapping(raw)


def config_from_mapping(raw: Mapping) -> PeftConfig:
    """A LoraConfig given as a dict: adapter_config.json, or one component of diffusers' lora_adapter_metadata."""
    r = raw.get("r")
    # PEFT's LoHa and LoKr configs keep alpha in `alpha`; LoRA's is `lora_alpha`.
    alpha = (
        raw.get("alpha")
        if str(raw.get("peft_type", "")).upper() in ("LOHA", "LOKR")
        else raw.get("lora_alpha")
    )
    modules_to_save = raw.get("modules_to_save") or ()
    target = raw.get("target_modules")
    rank_pattern = _patterns(raw.get("rank_pattern"), "rank_pattern", integer=True)
    alpha_pattern = _patterns(raw.get("alpha_pattern"), "alpha_pattern", integer=False)
    rank_table, alpha_table = PatternTable(rank_pattern), PatternTable(alpha_pattern)
    return PeftConfig(
        raw=raw,
        r=None if r is None else _number(r, "r", integer=True),
        lora_alpha=None if alpha is None else _number(alpha, "lora_alpha"),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_rslora=bool(raw.get("use_rslora", False)),
        use_dora=bool(raw.get("use_dora", False)),
        modules_to_save=tuple(str(m) for m in modules_to_save) if isinstance(modules_to_save, list) else (),
        target_modules=tuple(target) if isinstance(target, list) else target,
        peft_type=raw.get("peft_type"),
        unchecked=refused_keys(rank_table, "rank_pattern") + refused_keys(alpha_table, "alpha_pattern"),
        rank_table=rank_table,
        alpha_table=alpha_table,
    )


def lora_scale(alpha: float, rank: int, rslora: bool) -> float:
    """What the update is multiplied by: alpha/r, or alpha/√r with rsLoRA."""
    return alpha / (rank**0.5 if rslora else rank)
