"""The inspection engine: evidence about one file in, one `FileInspection` out. Pure: no I/O, no Hub types.

Evidence is what a source (a local folder, a Hub repo) could read: the parsed safetensors header or why it
could not be parsed, the few scalar `.alpha` values, and the text of the sibling adapter_config.json and
README.md. Everything later — scan reports, PRs, resize — consumes the `FileInspection` this returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.core import flags as F
from bot.core.card import parse_card
from bot.core.fingerprints import FAMILY_NAMES, BaseModel, Declaration, declarations, fingerprint, resolve
from bot.core.flags import Flag, flag
from bot.core.formats import (
    LOHA,
    LOKR,
    LORA,
    LORA_LIKE,
    LORA_TUCKER,
    OTHER,
    Module,
    ParsedKeys,
    component_of,
    leaf_name,
    most_common,
    parse_keys,
)
from bot.core.header import SafetensorsHeader
from bot.core.peft_config import ConfigError, PeftConfig, config_from_mapping, lora_scale, parse_peft_config
from bot.core.signatures import misfit_against
from bot.core.trainer_metadata import as_int, diffusers_adapter_metadata, network_args
from bot.vocab import FlagCode, Format, Severity


@dataclass(frozen=True)
class FileEvidence:
    path: str
    size: int | None = None
    header: SafetensorsHeader | None = None
    header_error: str | None = None  # set when the header could not be read or validated
    # Why lora-bot did not read it (its header is over the bot's cap): a limit of the bot, not a defect of the file.
    not_inspected: str | None = None
    scalars: Mapping[str, float] = field(default_factory=dict)  # `.alpha` values by tensor name
    adapter_config_text: str | None = None
    card_text: str | None = None
    # The card's metadata as the Hub's listing parsed it (`cardData`), used when README.md was not read:
    # the Hub parsed it, so the front matter is valid and there is nothing to flag about it.
    card_data: Mapping | None = None
    pickle: bool = False  # a .bin/.pt/.ckpt/.pth file: never opened


@dataclass(frozen=True)
class ModuleReport:
    name: str
    kind: str
    rank: int | None
    alpha: float | None  # what loaders apply
    alpha_declared: bool
    in_features: int | None
    out_features: int | None
    conv: bool
    conv_dim: bool = False  # a kernel larger than 1x1: kohya declares its rank as conv_dim

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "rank": self.rank,
            "alpha": self.alpha,
            "alpha_declared": self.alpha_declared,
            "in": self.in_features,
            "out": self.out_features,
            "conv": self.conv,
        }


@dataclass(frozen=True)
class FileInspection:
    path: str
    format: str
    variant: str | None
    rank: int | None
    ranks: Mapping[int, int]
    alpha: float | None
    alpha_declared: bool
    scale: float | None
    use_rslora: bool
    modules: tuple[ModuleReport, ...]
    target_modules: tuple[str, ...]
    components: tuple[str, ...]
    base_model: BaseModel
    flags: tuple[Flag, ...]
    size: int | None
    header_bytes: int | None
    tensors: int
    unknown_keys: tuple[str, ...]
    metadata: Mapping[str, str]

    @property
    def has_error(self) -> bool:
        return any(f.severity == F.ERROR for f in self.flags)

    def codes(self) -> set[str]:
        return {f.code for f in self.flags}

    def to_json(self, with_modules: bool = False) -> dict:
        out = {
            "path": self.path,
            "format": self.format,
            "rank": self.rank,
            "ranks": {str(r): n for r, n in sorted(self.ranks.items())},
            "alpha": self.alpha,
            "alpha_declared": self.alpha_declared,
            "modules": len(self.modules),
            "base_model": self.base_model.to_json(),
            "flags": [f.to_json() for f in self.flags],
            "variant": self.variant,
            "scale": self.scale,
            "use_rslora": self.use_rslora,
            "target_modules": list(self.target_modules),
            "components": list(self.components),
            "size": self.size,
            "header_bytes": self.header_bytes,
            "tensors": self.tensors,
            "unknown_keys": list(self.unknown_keys[:20]),
        }
        if with_modules:
            out["module_details"] = [m.to_json() for m in self.modules]
        return out


def inspection_record(item: FileInspection) -> dict:
    """Everything of a FileInspection as JSON values, so a stored inspection is the same value read back
    (`inspection_from_record`): reports, proposals and the census use it as if it had just been made."""
    record = item.to_json(with_modules=True)
    record["unknown_keys"] = list(item.unknown_keys)
    record["metadata"] = dict(item.metadata)
    record["conflicts"] = [[c.source, c.value, c.family, c.repo_id] for c in item.base_model.conflicts]
    record["module_details"] = [
        [m.name, m.kind, m.rank, m.alpha, m.alpha_declared, m.in_features, m.out_features, m.conv, m.conv_dim]
        for m in item.modules
    ]
    return record


def inspection_from_record(record: Mapping) -> FileInspection:
    base = record["base_model"]
    return FileInspection(
        path=record["path"],
        format=record["format"],
        variant=record["variant"],
        rank=record["rank"],
        ranks={int(rank): count for rank, count in record["ranks"].items()},
        alpha=record["alpha"],
        alpha_declared=record["alpha_declared"],
        scale=record["scale"],
        use_rslora=record["use_rslora"],
        modules=tuple(ModuleReport(*fields) for fields in record["module_details"]),
        target_modules=tuple(record["target_modules"]),
        components=tuple(record["components"]),
        base_model=BaseModel(
            family=base["family"],
            repo_id=base["repo_id"],
            candidates=tuple(base["candidates"]),
            source=base["source"],
            evidence=base["evidence"],
            conflicts=tuple(Declaration(*fields) for fields in record["conflicts"]),
        ),
        flags=tuple(
            Flag(FlagCode(f["code"]), Severity(f["severity"]), f["message"]) for f in record["flags"]
        ),
        size=record["size"],
        header_bytes=record["header_bytes"],
        tensors=record["tensors"],
        unknown_keys=tuple(record["unknown_keys"]),
        metadata=dict(record["metadata"]),
    )


def inspect_evidence(evidence: FileEvidence) -> FileInspection:
    if evidence.pickle:
        return _empty(
            evidence,
            [
                flag(
                    FlagCode.PICKLE_ONLY,
                    f"{evidence.path} is a pickle file; it was not opened (unpickling runs "
                    "arbitrary code). Convert it to .safetensors to make it safe to load.",
                )
            ],
        )
    if evidence.not_inspected is not None:
        return _empty(evidence, [flag(FlagCode.NOT_INSPECTED, f"{evidence.path}: {evidence.not_inspected}")])
    if evidence.header is None:
        reason = evidence.header_error or "the header could not be read"
        return _empty(evidence, [flag(FlagCode.CORRUPT_HEADER, f"{evidence.path}: {reason}")])
    return _inspect_header(evidence, evidence.header)


def _empty(evidence: FileEvidence, found: list[Flag]) -> FileInspection:
    config, card_data, context_flags = _context(evidence)
    base = resolve(fingerprint(()), declarations(config.raw if config else None, card_data, {}))
    return FileInspection(
        path=evidence.path,
        format="unknown",
        variant=None,
        rank=None,
        ranks={},
        alpha=None,
        alpha_declared=False,
        scale=None,
        use_rslora=False,
        modules=(),
        target_modules=(),
        components=(),
        base_model=base,
        flags=tuple(found + context_flags),
        size=evidence.size,
        header_bytes=None,
        tensors=0,
        unknown_keys=(),
        metadata={},
    )


def _context(evidence: FileEvidence) -> tuple[PeftConfig | None, dict, list[Flag]]:
    found: list[Flag] = []
    config = None
    if evidence.adapter_config_text is not None:
        try:
            config = parse_peft_config(evidence.adapter_config_text)
        except ConfigError as error:
            found.append(flag(FlagCode.CONFIG_INVALID, str(error)))
    card_data: dict = dict(evidence.card_data or {})
    if evidence.card_text is not None:
        card = parse_card(evidence.card_text)
        if card.error:
            found.append(flag(FlagCode.CARD_INVALID, f"README.md: {card.error}"))
        card_data = card.data
    return config, card_data, found


def _inspect_header(evidence: FileEvidence, header: SafetensorsHeader) -> FileInspection:
    config, card_data, found = _context(evidence)
    metadata = dict(header.metadata)
    parsed = parse_keys(header.tensors, metadata, config.modules_to_save if config else ())
    diffusers_configs = _diffusers_configs(diffusers_adapter_metadata(metadata))
    rslora = bool(config and config.use_rslora) or any(c.use_rslora for c in diffusers_configs.values())
    reports = tuple(_module_report(m, config, diffusers_configs, evidence.scalars) for m in parsed.modules)
    lora_reports = [r for r in reports if r.rank is not None]
    ranks = Counter(r.rank for r in lora_reports)
    rank = most_common(ranks)
    alphas = Counter(r.alpha for r in lora_reports if r.alpha is not None)
    alpha = most_common(alphas)
    alpha_declared = any(r.alpha_declared for r in reports)
    base = resolve(fingerprint(reports), declarations(config.raw if config else None, card_data, metadata))

    found += _structure_flags(parsed, evidence, config)
    found += _rank_flags(parsed, reports, config, metadata, diffusers_configs, ranks)
    unchecked = (config.unchecked if config else ()) + tuple(
        line for c in diffusers_configs.values() for line in c.unchecked
    )
    if unchecked:
        found.append(
            flag(
                FlagCode.PATTERN_UNCHECKED,
                f"{len(unchecked)} pattern key(s) not evaluated (first: {unchecked[0]}); the declared rank "
                "and alpha of the modules they could match are unknown",
            )
        )
    else:  # with a refused key, "no alpha declared" may be false: the key may declare it
        found += _alpha_flags(alpha_declared, ranks, rank, parsed.format)
    found += _base_model_flags(base, reports)
    return FileInspection(
        path=evidence.path,
        format=parsed.format,
        variant=parsed.variant,
        rank=rank,
        ranks=dict(ranks),
        alpha=alpha,
        alpha_declared=alpha_declared,
        scale=None if alpha is None or not rank else lora_scale(alpha, rank, rslora),
        use_rslora=rslora,
        modules=reports,
        target_modules=tuple(sorted({leaf_name(m.name) for m in parsed.modules})),
        components=tuple(sorted({component_of(m.name) for m in parsed.modules})),
        base_model=base,
        flags=tuple(found),
        size=evidence.size,
        header_bytes=header.header_length + 8,
        tensors=len(header.tensors),
        unknown_keys=parsed.unknown_keys,
        metadata=metadata,
    )


def _diffusers_configs(diffusers_meta: Mapping) -> dict[str, PeftConfig]:
    """diffusers' `lora_adapter_metadata` is one LoraConfig per component, keyed `<component>.<field>`
    (`unet.r`, `transformer.rank_pattern`). diffusers rebuilds a LoraConfig from it when loading, so its
    patterns are PEFT regexes matched against the module path inside the component. Unprefixed keys go to ""."""
    grouped: dict[str, dict] = {}
    for key, value in diffusers_meta.items():
        component, _, field_name = key.partition(".") if "." in key else ("", "", key)
        grouped.setdefault(component, {})[field_name] = value
    configs = {}
    for component, fields in grouped.items():
        try:
            configs[component] = config_from_mapping(fields)
        except ConfigError:
            continue  # a malformed component declares nothing; the shapes still speak
    return configs


def _diffusers_config_for(configs: Mapping[str, PeftConfig], module: str) -> tuple[PeftConfig | None, str]:
    """The component's config and the module's path inside that component (what patterns match against)."""
    if not configs:
        return None, module
    component, _, inner = module.partition(".")
    if component in configs and inner:
        return configs[component], inner
    return configs.get(""), module


def _module_report(
    module: Module,
    config: PeftConfig | None,
    diffusers_configs: Mapping[str, PeftConfig],
    scalars: Mapping[str, float],
) -> ModuleReport:
    rank = module.rank  # None for OTHER kinds: they have no rank
    alpha = _declared_alpha(module, config, diffusers_configs, scalars)
    declared = alpha is not None
    if alpha is None and rank is not None:
        alpha = float(rank)  # every loader's fallback when nothing declares alpha: scale 1
    return ModuleReport(
        name=module.name,
        kind=module.kind,
        rank=rank,
        alpha=alpha,
        alpha_declared=declared,
        in_features=module.in_features,
        out_features=module.out_features,
        conv=module.is_conv,
        conv_dim=module.uses_conv_dim,
    )


def _declared_alpha(
    module: Module,
    config: PeftConfig | None,
    diffusers_configs: Mapping[str, PeftConfig],
    scalars: Mapping[str, float],
) -> float | None:
    """The module's own `.alpha` scalar, else adapter_config.json, else diffusers' lora_adapter_metadata."""
    if module.alpha_tensor is not None and module.alpha_tensor.name in scalars:
        return scalars[module.alpha_tensor.name]
    alpha = config.declared_alpha(module.name) if config is not None else None
    if alpha is None:
        component_config, inner = _diffusers_config_for(diffusers_configs, module.name)
        alpha = component_config.declared_alpha(inner) if component_config is not None else None
    return alpha


def _first(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _peft_method(config: PeftConfig | None) -> str | None:
    """The PEFT method adapter_config.json declares when it is not LoRA (IA3, VERA, OFT, ...), else None."""
    method = str(config.peft_type or "").upper() if config is not None else ""
    return method if method and method != "LORA" else None


def _structure_flags(parsed: ParsedKeys, evidence: FileEvidence, config: PeftConfig | None) -> list[Flag]:
    found = []
    header = evidence.header
    method = _peft_method(config)
    # LoHa and LoKr modules are reported below by their factors; other methods have no factors lora-bot reads.
    if method is not None and not any(m.kind in (LOHA, LOKR) for m in parsed.modules):
        found.append(
            flag(
                FlagCode.NON_LORA_ADAPTER,
                f"adapter_config.json declares a PEFT {method} adapter, not LoRA: PEFT loads it with its "
                f"{method} config; its tensors are no rank-r factors, so rank checks and resizing do not apply",
            )
        )
        return found
    if not parsed.modules:
        lora_like = [k for k in parsed.unknown_keys if LORA_LIKE.search(k)]
        if not header.tensors:
            found.append(flag(FlagCode.NOT_AN_ADAPTER, "the file holds no tensors at all"))
        elif lora_like:
            found.append(
                flag(
                    FlagCode.UNKNOWN_KEYS,
                    f"{len(lora_like)} tensor(s) look like adapter weights but under names no LoRA loader "
                    f"knows (e.g. {_first(lora_like, 2)}), so loaders would load nothing",
                    F.ERROR,
                )
            )
        else:
            found.append(
                flag(
                    FlagCode.NOT_AN_ADAPTER,
                    f"none of the {len(header.tensors)} tensors has a LoRA name (e.g. "
                    f"{_first(list(header.tensors), 2)}); this looks like a full checkpoint or an "
                    "embedding, not a LoRA",
                )
            )
        return found
    unpaired = [m for m in parsed.modules if not m.is_paired]
    if unpaired:
        first = unpaired[0]
        roles = ", ".join(sorted(first.tensors))
        found.append(
            flag(
                FlagCode.UNPAIRED_MODULE,
                f"{len(unpaired)} module(s) lack a factor; first: {first.name} has only {roles}",
            )
        )
    mismatched = [(m, problem) for m in parsed.modules if (problem := m.pair_shape_problem)]
    if mismatched:
        module, problem = mismatched[0]
        found.append(
            flag(
                FlagCode.PAIR_SHAPE_MISMATCH,
                f"{len(mismatched)} module(s) cannot multiply; first: {module.name}: {problem}",
            )
        )
    if parsed.unknown_keys:
        found.append(
            flag(
                FlagCode.UNKNOWN_KEYS,
                f"{len(parsed.unknown_keys)} tensor(s) match no LoRA format and "
                f"are ignored by loaders: {_first(list(parsed.unknown_keys))}",
            )
        )
    magnitude = [m for m in parsed.modules if "magnitude" in m.tensors]
    dora_scale = [m for m in parsed.modules if "dora_scale" in m.tensors]
    if magnitude:
        found.append(
            flag(FlagCode.DORA_PRESENT, f"{len(magnitude)} module(s) carry PEFT DoRA magnitude vectors")
        )
    if dora_scale:
        shape = list(dora_scale[0].tensors["dora_scale"].shape)
        axis = "output" if len(shape) == 2 and shape[1] == 1 else "input"
        found.append(
            flag(
                FlagCode.DORA_PRESENT,
                f"{len(dora_scale)} module(s) carry LyCORIS dora_scale {shape} "
                f"(normalised along the {axis} axis); diffusers drops these",
                F.WARNING,
            )
        )
    non_lora = Counter(m.kind for m in parsed.modules if m.kind in (LOHA, LOKR, OTHER))
    if non_lora:
        kinds = ", ".join(f"{n} {k.upper() if k != OTHER else 'non-LoRA'}" for k, n in non_lora.items())
        found.append(
            flag(
                FlagCode.NON_LORA_ADAPTER,
                f"{kinds} module(s): not rank-r products B·A; only "
                "LyCORIS-aware loaders apply them and they cannot be resized",
            )
        )
    return found


def _rank_flags(
    parsed: ParsedKeys,
    reports: Sequence[ModuleReport],
    config: PeftConfig | None,
    metadata: Mapping[str, str],
    diffusers_configs: Mapping[str, PeftConfig],
    ranks: Counter,
) -> list[Flag]:
    found = []
    lora = [
        (m, r)
        for m, r in zip(parsed.modules, reports, strict=True)
        if m.kind in (LORA, LORA_TUCKER) and r.rank
    ]
    if config is not None and config.r is not None and parsed.format in ("peft", "diffusers"):
        declared_ranks = ((m, r, config.declared_rank(m.name)) for m, r in lora)
        # None: a refused pattern key decides (pattern-unchecked); the rank PEFT would build is unknown.
        wrong = [(m, r, d) for m, r, d in declared_ranks if d is not None and d != r.rank]
        if wrong:
            module, report, declared = wrong[0]
            where = "rank_pattern" if declared != config.r else "r"
            # The rank came from lora_A when it has one; a module missing lora_A got it from lora_B.
            factor, label = (module.down, "lora_A") if module.down is not None else (module.up, "lora_B")
            found.append(
                flag(
                    FlagCode.RANK_MISMATCH_CONFIG,
                    f"adapter_config.json {where} says {declared} but the weights have rank "
                    f"{report.rank} ({len(wrong)} of {len(lora)} modules; first: {module.name}, "
                    f"{label} {list(factor.shape)}); PEFT will fail with 'size mismatch'",
                )
            )
    found += _metadata_rank_flags(lora, metadata)
    found += _diffusers_rank_flags(lora, diffusers_configs)
    per_module_declared = bool(
        (config and config.rank_pattern)
        or any(c.rank_pattern for c in diffusers_configs.values())
        or network_args(metadata).keys() & {"conv_dim", "block_dims", "conv_block_dims"}
        or metadata.get("ss_network_dim") == "Dynamic"
        # diffusers metadata declares r per component (an SDXL UNet at 8 and its text encoders at 4 is normal).
        or all(_metadata_declares_rank(diffusers_configs, m.name) for m, _ in lora)
        # kohya/LyCORIS: every module carries its own `.alpha`, and their loaders take each rank from its shape.
        or all(m.alpha_tensor is not None for m, _ in lora)
    )
    if (
        len(ranks) > 1
        and not per_module_declared
        and not any(f.code == FlagCode.RANK_MISMATCH_CONFIG for f in found)
    ):
        histogram = ", ".join(f"rank {r}: {n}" for r, n in sorted(ranks.items()))
        found.append(
            flag(
                FlagCode.MIXED_RANK_UNDECLARED,
                f"modules have different ranks ({histogram}) and nothing declares a per-module rank",
            )
        )
    return found


def _metadata_rank_flags(lora, metadata: Mapping[str, str]) -> list[Flag]:
    found = []
    linear = Counter(r.rank for _, r in lora if not r.conv_dim)
    conv = Counter(r.rank for _, r in lora if r.conv_dim)
    checks = (
        ("ss_network_dim", as_int(metadata.get("ss_network_dim", "")), linear),
        ("ss_network_args conv_dim", as_int(network_args(metadata).get("conv_dim", "")), conv),
    )
    for source, declared, observed in checks:
        if declared is not None and observed and set(observed) != {declared}:
            shown = ", ".join(str(r) for r in sorted(observed))
            found.append(
                flag(
                    FlagCode.RANK_MISMATCH_METADATA,
                    f"{source} says {declared} but the weights have rank {shown}",
                )
            )
    return found


def _metadata_declares_rank(configs: Mapping[str, PeftConfig], module: str) -> bool:
    config, _ = _diffusers_config_for(configs, module)
    return config is not None and config.r is not None


def _diffusers_rank_flags(lora, configs: Mapping[str, PeftConfig]) -> list[Flag]:
    """diffusers builds the LoRA layers from `lora_adapter_metadata` (r, then rank_pattern), so a rank the
    metadata gets wrong fails the load: an error, checked per module like adapter_config.json."""
    wrong = []
    for module, report in lora:
        config, inner = _diffusers_config_for(configs, module.name)
        declared = config.declared_rank(inner) if config is not None and config.r is not None else None
        if declared is not None and declared != report.rank:
            wrong.append((module, report, config, inner))
    if not wrong:
        return []
    module, report, config, inner = wrong[0]
    declared = config.declared_rank(inner)
    component = module.name[: -len(inner)] if inner != module.name else ""
    source = f"lora_adapter_metadata {component}{'rank_pattern' if declared != config.r else 'r'}"
    return [
        flag(
            FlagCode.RANK_MISMATCH_METADATA,
            f"{source} says {declared} but the weights have rank {report.rank} ({len(wrong)} of {len(lora)} "
            f"modules; first: {module.name}); diffusers will fail with 'size mismatch'",
            F.ERROR,
        )
    ]


# Formats whose files normally carry their alpha (kohya and LyCORIS `.alpha` tensors): a missing one is news.
# diffusers and the legacy attention processors never store alpha, and every loader applies scale 1.
_ALPHA_FORMATS = frozenset({Format.KOHYA, Format.LYCORIS})


def _alpha_flags(alpha_declared: bool, ranks: Counter, rank: int | None, file_format: str) -> list[Flag]:
    if alpha_declared or rank is None:
        return []
    if len(ranks) == 1 and file_format not in _ALPHA_FORMATS:
        return []
    if len(ranks) > 1:
        return [
            flag(
                FlagCode.ALPHA_MISSING,
                "no alpha is declared and the ranks are mixed; loaders apply alpha = "
                "rank per module (scale 1), but some use one alpha for the whole file",
                F.WARNING,
            )
        ]
    return [
        flag(FlagCode.ALPHA_MISSING, f"no alpha is declared; loaders apply alpha = rank = {rank} (scale 1)")
    ]


def _base_model_flags(base: BaseModel, modules: Sequence[ModuleReport]) -> list[Flag]:
    found = []
    for conflict in base.conflicts:
        declared = FAMILY_NAMES.get(conflict.family, conflict.family)
        if "shapes" in base.source:
            fits = FAMILY_NAMES.get(base.family, base.family) if base.family else "other bases"
            candidates = f" ({', '.join(base.candidates[:6])})" if base.candidates else ""
            misfit = misfit_against(modules, conflict.family, conflict.repo_id)
            message = (
                f"{conflict.source} is {conflict.value!r} ({declared}) but the shapes fit {fits}{candidates}"
                + (f"; {misfit}" if misfit else "")
                + f": {base.evidence}"
            )
        else:
            message = (
                f"{conflict.source} is {conflict.value!r} ({declared}) but {base.source} "
                f"declares {FAMILY_NAMES.get(base.family, base.family)}"
            )
        found.append(flag(FlagCode.BASE_MODEL_MISMATCH, message))
    for declaration in base.not_repos:
        found.append(
            flag(
                FlagCode.BASE_MODEL_NOT_A_REPO,
                f"{declaration.source} is {declaration.value!r}, which is not a Hub repo id (a local path, a "
                "URL or a placeholder): the Hub cannot link the adapter to its base, and AutoPeftModel "
                "cannot load the base from it",
            )
        )
    return found
