"""Will this adapter load on this base, and will it do anything: the adapter's modules against the base's weights.

Pure: an inspected adapter (`FileInspection`) and the base's weight table (names, dtypes and shapes read from
its safetensors headers) in, a `CheckResult` value out. Reading the base is `bot/sources/base.py`'s job.

Each adapter module is mapped to the base weight it modifies with the inspection engine's own name mapping
(`signatures.readings`: PEFT, diffusers, kohya, SGM, BFL, … → the base's path), then:
- no such weight in the base → PEFT and diffusers leave the module's weights unused (unexpected keys) and the
  module does nothing (`target-missing-in-base`); when nothing at all fits, they refuse to load;
- the weight's in/out features differ from the module's → the load fails with a size mismatch
  (`shape-mismatch-base`);
- the adapter's own errors that break every load (a config rank the weights do not have, factors that cannot
  multiply, …) fail it too.
A module in an original-checkpoint naming (BFL `double_blocks`, Wan `blocks.N.self_attn`, SD3 `joint_blocks`)
that the base does not use is one a loader converts with rules this module does not model: such a module is
`unmapped` and the verdict is `unknown` rather than a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from bot.core import flags as F
from bot.core.flags import flag
from bot.core.inspect import FileInspection, ModuleReport
from bot.core.signatures import DENOISER, MODEL, TEXT_ENCODER, TEXT_ENCODER_2, TEXT_ENCODER_3, readings
from bot.vocab import FlagCode, ModuleStatus, Severity, Verdict

# Pipeline subfolders and the component each holds (diffusers `model_index.json` layout).
COMPONENT_FOLDERS = {
    "unet": DENOISER,
    "transformer": DENOISER,
    "prior": DENOISER,
    "text_encoder": TEXT_ENCODER,
    "text_encoder_2": TEXT_ENCODER_2,
    "text_encoder_3": TEXT_ENCODER_3,
}
INDEX_SUFFIX = ".safetensors.index.json"

# Adapter errors every PEFT / diffusers load stops on (the inspection engine found them from the adapter alone).
_LOAD_BREAKING = {
    FlagCode.RANK_MISMATCH_CONFIG,
    FlagCode.PAIR_SHAPE_MISMATCH,
    FlagCode.CORRUPT_HEADER,
    FlagCode.PICKLE_ONLY,
    FlagCode.NOT_AN_ADAPTER,
    FlagCode.CONFIG_INVALID,
}
# Top-level names of original checkpoints (BFL/ComfyUI Flux, Wan, SD3, HunyuanVideo, SGM UNets) that loaders
# rename into diffusers names; when the base does not use them, only a converter knows where they land.
_ORIGINAL_PREFIXES = re.compile(
    r"^(double_blocks|single_blocks|joint_blocks|blocks|input_blocks|middle_block|output_blocks"
    r"|img_in|txt_in|time_in|vector_in|guidance_in|final_layer|x_embedder|context_embedder)[._]"
)


# --------------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class BaseComponent:
    """One model of the base (a UNet, a text encoder, an LLM): its weights by tensor name."""

    component: str  # signatures' component: denoiser, text_encoder, …, or model
    folder: str  # the pipeline subfolder ("unet"), "" for a single model
    weights: Mapping[str, tuple[str, tuple[int, ...]]]  # tensor name → (dtype, shape)


@dataclass(frozen=True)
class BaseWeights:
    """What the base's headers say: its components and the files they were read from."""

    label: str  # the repo id or the local path
    is_repo: bool
    revision: str | None
    files: tuple[str, ...]
    components: tuple[BaseComponent, ...]

    @property
    def single_model(self) -> bool:
        """A base that is one model (an LLM, a bare UNet folder): any reading of a module name may land in it."""
        return len(self.components) == 1 and not self.components[0].folder

    def to_json(self) -> dict:
        where = {"repo_id": self.label, "revision": self.revision} if self.is_repo else {"path": self.label}
        return {
            **where,
            "files": list(self.files),
            "components": {c.folder or c.component: len(c.weights) for c in self.components},
        }


@dataclass(frozen=True)
class Problem:
    code: FlagCode
    severity: Severity
    message: str
    module: str | None = None

    def to_json(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message, "module": self.module}


@dataclass(frozen=True)
class ModuleCheck:
    name: str  # as the adapter names it
    base_weight: str | None  # `unet/down_blocks.0.….to_q.weight`, None when the base has none
    status: ModuleStatus
    adapter_shape: tuple[int | None, int | None]  # (in, out) the module's factors show
    base_shape: tuple[int, ...] | None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "base_weight": self.base_weight,
            "status": self.status,
            "in": self.adapter_shape[0],
            "out": self.adapter_shape[1],
            "base_shape": list(self.base_shape) if self.base_shape is not None else None,
        }


@dataclass(frozen=True)
class CheckResult:
    adapter: str
    verdict: Verdict
    applied_fraction: float  # share of the adapter's modules the loader applies
    reason: str  # the verdict line's explanation
    base: BaseWeights
    problems: tuple[Problem, ...]
    modules: tuple[ModuleCheck, ...]

    @property
    def loads(self) -> bool:
        return self.verdict == Verdict.LOADS

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for module in self.modules:
            found[module.status] = found.get(module.status, 0) + 1
        return found

    def to_json(self) -> dict:
        return {
            "adapter": self.adapter,
            "verdict": self.verdict,
            "applied_fraction": round(self.applied_fraction, 4),
            "reason": self.reason,
            "base": self.base.to_json(),
            "problems": [p.to_json() for p in self.problems],
            "modules": [m.to_json() for m in self.modules],
            "counts": self.counts(),
        }


# ------------------------------------------------------------------------------------ which files to read


@dataclass(frozen=True)
class ComponentFiles:
    """Where one component's weights are: an index JSON to read first, or the safetensors files themselves."""

    component: str
    folder: str
    index: str | None
    files: tuple[str, ...]


def plan_base_files(paths: Iterable[str]) -> tuple[ComponentFiles, ...]:
    """The files holding the base's weights, from a repo listing or a folder's relative paths. A pipeline's
    component subfolders each count; otherwise the top level is one model. Variant files (`.fp16.`) are read
    only where no plain file exists, and only one variant."""
    paths = sorted(set(paths))
    plans = []
    folders = sorted({p.split("/", 1)[0] for p in paths if "/" in p} & set(COMPONENT_FOLDERS))
    for folder in folders:
        plan = _plan_folder([p.split("/", 1)[1] for p in paths if p.startswith(folder + "/")], folder)
        if plan:
            plans.append(plan)
    if not plans:
        top = _plan_folder([p for p in paths if "/" not in p], "")
        if top:
            plans.append(top)
    return tuple(plans)


def _plan_folder(names: list[str], folder: str) -> ComponentFiles | None:
    component = COMPONENT_FOLDERS.get(folder, MODEL)
    prefix = folder + "/" if folder else ""
    indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
    files = [n for n in names if n.endswith(".safetensors")]
    if indexes:
        index = _prefer_plain(indexes)
        return ComponentFiles(component, folder, prefix + index, ())
    if not files:
        return None
    plain = [f for f in files if not _is_variant(f)]
    chosen = plain or [f for f in files if _variant_of(f) == _variant_of(_prefer_plain(files))]
    return ComponentFiles(component, folder, None, tuple(prefix + f for f in chosen))


def _variant_of(name: str) -> str | None:
    found = re.search(r"\.(fp16|fp32|bf16|non_ema|ema)\.safetensors", name)
    return found.group(1) if found else None


def _is_variant(name: str) -> bool:
    return _variant_of(name) is not None


def _prefer_plain(names: list[str]) -> str:
    plain = [n for n in names if not _is_variant(n)]
    return sorted(plain or names)[0]


def shards_of_index(index_path: str, text: str) -> tuple[str, ...]:
    """The shard files a `*.safetensors.index.json` names, relative to the same folder as the index."""
    try:
        weight_map = json.loads(text)["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{index_path} is not a safetensors index ({error})") from None
    folder = index_path.rsplit("/", 1)[0] + "/" if "/" in index_path else ""
    for name in names:
        if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"{index_path} names an unsafe shard {name!r}")
    return tuple(folder + name for name in names)


# ------------------------------------------------------------------------------------------- the mapping


@dataclass
class _ComponentIndex:
    """One component's module paths: exact, folded (kohya writes `_` for `.`) and SGM aliases (SDXL kohya)."""

    base: BaseComponent
    modules: dict[str, str] = field(default_factory=dict)  # module path → tensor name (`….weight`)
    folded: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, base: BaseComponent) -> _ComponentIndex:
        index = cls(base)
        for name in base.weights:
            if name.endswith(".weight"):
                index.modules[name[: -len(".weight")]] = name
        for path in list(index.modules):
            index.folded.setdefault(_fold(path), []).append(path)
        for sgm, path in sgm_aliases(index.modules).items():
            if sgm not in index.modules:
                index.folded.setdefault(_fold(sgm), []).append(path)
        return index

    def find(self, path: str) -> str | None:
        if path in self.modules:
            return path
        found = self.folded.get(_fold(path))
        return found[0] if found else None

    def uses_original_names(self) -> bool:
        return any(_ORIGINAL_PREFIXES.match(p) for p in self.modules)


def _fold(path: str) -> str:
    return path.replace(".", "_")


_RESNET_RENAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


# The UNet's layers outside the blocks, diffusers name → LDM / SGM name.
_UNET_TOP_RENAMES = {
    "conv_in": "input_blocks.0.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def sgm_aliases(paths: Iterable[str]) -> dict[str, str]:
    """SGM / LDM name → diffusers module path, for a diffusers UNet with two resnets per down level (SD1, SD2,
    SDXL): kohya writes SDXL LoRAs as `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, and
    diffusers' `_maybe_map_sgm_blocks_to_diffusers` maps them back the same way. Down level i, layer j is input
    block 3i+j+1; up level i, layer j is output block 3i+j; the mid attention is `middle_block.1`."""
    paths = list(paths)
    if not any(p.startswith("down_blocks.") for p in paths):
        return {}
    up_with_attention = {int(p.split(".")[1]) for p in paths if re.match(r"up_blocks\.\d+\.attentions\.", p)}
    aliases = {}
    for path in paths:
        found = re.match(
            r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$", path
        )
        if found:
            side, level, kind, j, rest = found.groups()
            level, j = int(level), int(j)
            if side == "down":
                block = 3 * (level + 1) if kind == "downsamplers" else 3 * level + j + 1
                layer = {"resnets": "0", "attentions": "1", "downsamplers": "0"}[kind]
                prefix = f"input_blocks.{block}.{layer}"
                rest = "op" if kind == "downsamplers" and rest == "conv" else rest
            else:
                block = 3 * level + (2 if kind == "upsamplers" else j)
                layer = {"resnets": "0", "attentions": "1"}.get(kind) or (
                    "2" if level in up_with_attention else "1"
                )
                prefix = f"output_blocks.{block}.{layer}"
        elif found := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", path):
            kind, j, rest = found.groups()
            prefix = f"middle_block.{1 if kind == 'attentions' else 2 * int(j)}"
        elif path in _UNET_TOP_RENAMES:
            aliases[_UNET_TOP_RENAMES[path]] = path
            continue
        else:
            continue
        if ".resnets." in path:
            rest = _RESNET_RENAMES.get(rest, rest)
        aliases[f"{prefix}.{rest}"] = path
    return aliases


# ------------------------------------------------------------------------------------------------ checking


def check_compatibility(inspection: FileInspection, base: BaseWeights) -> CheckResult:
    """The adapter's modules against the base's weights: a verdict, the problems and each module's status."""
    indexes = [(c, _ComponentIndex.build(c)) for c in base.components]
    problems: list[Problem] = [
        Problem(f.code, f.severity, f.message)
        for f in inspection.flags
        if f.code in _LOAD_BREAKING or (f.code == FlagCode.RANK_MISMATCH_METADATA and f.severity == F.ERROR)
    ]
    breaking = list(problems)
    checks = [_check_module(m, base, indexes) for m in inspection.modules]
    missing = [c for c in checks if c.status == ModuleStatus.MISSING]
    mismatched = [c for c in checks if c.status == ModuleStatus.SHAPE_MISMATCH]
    unmapped = [c for c in checks if c.status == ModuleStatus.UNMAPPED]
    applied = [c for c in checks if c.status == ModuleStatus.APPLIES]
    total = len(checks)
    fraction = len(applied) / total if total else 0.0

    for module in mismatched[:20]:
        problems.append(_shape_problem(module))
    if len(mismatched) > 20:
        problems.append(
            Problem(
                FlagCode.SHAPE_MISMATCH_BASE,
                F.ERROR,
                f"{len(mismatched) - 20} more module(s) do not fit their base weight",
            )
        )
    if missing:
        severity = F.ERROR if not applied and not unmapped else F.WARNING
        problems.append(
            Problem(
                FlagCode.TARGET_MISSING_IN_BASE,
                severity,
                f"{len(missing)} of {total} module(s) adapt layers {base.label} does not have; the loader "
                f"leaves them unused ({len(missing) / total:.0%} of the adapter is dropped); first: "
                f"{_first([m.name for m in missing])}",
                missing[0].name,
            )
        )
    if unmapped:
        problems.append(
            Problem(
                FlagCode.UNMAPPED_NAMING,
                F.WARNING,
                f"{len(unmapped)} module(s) use an original-checkpoint naming {base.label} does not use "
                f"(first: {unmapped[0].name}); loaders convert such names with rules lora-bot does not model, "
                "so whether they apply is unknown",
                unmapped[0].name,
            )
        )

    verdict, reason = _verdict(breaking, mismatched, missing, unmapped, applied, total, base)
    return CheckResult(
        adapter=inspection.path,
        verdict=verdict,
        applied_fraction=fraction,
        reason=reason,
        base=base,
        problems=tuple(problems),
        modules=tuple(checks),
    )


def _verdict(breaking, mismatched, missing, unmapped, applied, total, base) -> tuple[Verdict, str]:
    if breaking:
        return Verdict.FAILS, f"{breaking[0].code}: {breaking[0].message}"
    if mismatched:
        first = mismatched[0]
        return Verdict.FAILS, (
            f"{len(mismatched)} of {total} module(s) do not fit the base's weights; first: {first.name} is "
            f"{_shape_words(first)}: {_load_error(first)}"
        )
    if not total:
        return Verdict.FAILS, "the adapter has no modules to apply"
    if unmapped:
        return Verdict.UNKNOWN, (
            f"{len(unmapped)} of {total} module(s) use names only a converter maps onto {base.label}"
        )
    if not applied:
        return Verdict.FAILS, (
            f"none of the {total} modules adapts a layer {base.label} has (first: {missing[0].name}); PEFT and "
            "diffusers refuse to load: 'Target modules ... not found in the base model'"
        )
    if missing:
        return Verdict.PARTIAL, (
            f"loads but ignores {len(missing)} of {total} module(s) ({len(missing) / total:.0%}): the base has no "
            f"layer for them (first: {missing[0].name})"
        )
    return Verdict.LOADS, f"all {total} modules fit a weight of {base.label}"


def _check_module(
    module: ModuleReport, base: BaseWeights, indexes: list[tuple[BaseComponent, _ComponentIndex]]
) -> ModuleCheck:
    shape = (module.in_features, module.out_features)
    names = readings(module.name)
    original = False
    for component, path in names:
        for base_component, index in indexes:
            if not (base.single_model or base_component.component == component):
                continue
            found = index.find(path)
            if found is None:
                original = original or (_ORIGINAL_PREFIXES.match(path) and not index.uses_original_names())
                continue
            tensor = index.modules[found]
            where = f"{base_component.folder}/{tensor}" if base_component.folder else tensor
            base_shape = base_component.weights[tensor][1]
            status = ModuleStatus.APPLIES if _fits(module, found, base_shape) else ModuleStatus.SHAPE_MISMATCH
            return ModuleCheck(module.name, where, status, shape, tuple(base_shape))
    status = ModuleStatus.UNMAPPED if original else ModuleStatus.MISSING
    return ModuleCheck(module.name, None, status, shape, None)


def _fits(module: ModuleReport, path: str, base_shape: tuple[int, ...]) -> bool:
    """The module's in/out features against the weight's: Linear [out, in], Conv [out, in, kh, kw],
    Embedding [num, dim] (PEFT's lora_embedding_A is [r, num] and _B is [dim, r])."""
    if len(base_shape) < 2:
        return False
    widths = (module.in_features, module.out_features)
    if None in widths:  # LoKr and the like: only the widths the factors show can be compared
        known = {w for w in widths if w is not None}
        return known <= set(base_shape[:2])
    if (base_shape[1], base_shape[0]) == widths:
        return True
    is_embedding = "embed" in path or path.endswith(("wte", "wpe"))
    return is_embedding and tuple(base_shape[:2]) == widths


def _shape_words(check: ModuleCheck) -> str:
    a_in, a_out = check.adapter_shape
    return f"in {a_in}, out {a_out} but {check.base_weight} is {list(check.base_shape or ())}"


def _load_error(check: ModuleCheck) -> str:
    """The error the loader raises: the LoRA layer is built from the base layer's widths, then the adapter's
    factors are copied in."""
    a_in, a_out = check.adapter_shape
    base_out, base_in = (check.base_shape or (None, None))[:2]
    if a_in != base_in:
        return f"'size mismatch for ...lora_A.weight': the checkpoint has in {a_in}, the model {base_in}"
    return f"'size mismatch for ...lora_B.weight': the checkpoint has out {a_out}, the model {base_out}"


def _shape_problem(check: ModuleCheck) -> Problem:
    return Problem(
        FlagCode.SHAPE_MISMATCH_BASE,
        F.ERROR,
        f"{check.name}: {_shape_words(check)}; loading fails with {_load_error(check)}",
        check.name,
    )


def _first(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def mismatch_evidence(result: CheckResult) -> str | None:
    """For the scan: the first module whose shape contradicts the base, with both shapes; None if all fit."""
    first = next((m for m in result.modules if m.status == ModuleStatus.SHAPE_MISMATCH), None)
    if first is None:
        return None
    return f"{first.name} is {_shape_words(first)}"


# ------------------------------------------------------------------------------------- the scan's use


def declared_base_repo(inspection: FileInspection) -> str | None:
    """The Hub repo a source declares as the base (card, adapter_config.json, metadata), if the inspection
    kept one: the base the scan may verify. A repo id the shapes alone suggested is not a declaration."""
    base = inspection.base_model
    if base.repo_id and base.source not in ("shapes", "none"):
        return base.repo_id
    return base.unverified.repo_id if base.unverified is not None else None


def amend_with_check(inspection: FileInspection, result: CheckResult) -> FileInspection:
    """The inspection after checking it against its declared base: `+ verified` in `base_model.source` when
    every module fits, a `base-model-mismatch` naming the module and both shapes when a weight does not.
    Anything less clear (modules the base lacks, names only a converter maps) changes nothing."""
    if result.verdict == Verdict.LOADS:
        base = inspection.base_model
        if base.repo_id is None and base.unverified is not None:
            # No known base fits, but the declared one's own weights take every module: that settles it.
            declared = base.unverified
            base = replace(base, family=declared.family, repo_id=declared.repo_id, source=declared.source)
        base = replace(base, source=f"{base.source} + verified")
        return replace(inspection, base_model=base)
    evidence = mismatch_evidence(result)
    if evidence is None:
        return inspection
    base = inspection.base_model
    source = base.unverified.source if base.repo_id is None and base.unverified is not None else base.source
    found = flag(
        FlagCode.BASE_MODEL_MISMATCH,
        f"{source} declares {result.base.label}, but its weights do not fit the adapter: "
        f"{evidence} ({sum(m.status == ModuleStatus.SHAPE_MISMATCH for m in result.modules)} of "
        f"{len(result.modules)} modules differ)",
    )
    return replace(inspection, flags=(*inspection.flags, found))
