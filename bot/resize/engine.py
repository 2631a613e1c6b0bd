"""Resize one LoRA adapter on disk: find it, refuse what cannot be resized, plan, and stream the output.

The input is read one module at a time (`read_tensor`: positioned reads, no mmap); the output is written by
`StreamingWriter` from a header planned up front. An energy target needs a first pass over the modules for
their singular values (QR of the factors, no tensor is kept), then the writing pass recomputes each
decomposition — cheaper than holding every module in memory.

The output keeps the input's format, key names, key order and dtypes. Tensors that are not LoRA factors
(PEFT modules_to_save, biases, unknown keys) are copied byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from bot.core.formats import LOHA, LOKR, LORA, LORA_TUCKER, Module, most_common, parse_keys
from bot.core.header import HeaderError, HeaderTooLarge, SafetensorsHeader
from bot.core.inspect import FileEvidence, FileInspection, inspect_evidence
from bot.core.peft_config import ConfigError, PeftConfig, lora_scale, parse_peft_config
from bot.core.selection import PICKLE_SUFFIXES, select_candidates
from bot.files.safetensors import file_sha256, read_local_header, read_local_scalars
from bot.files.stream import StreamingWriter, TensorSlot, read_tensor
from bot.resize.math import (
    ModulePlan,
    ModuleResize,
    ModuleSpec,
    ResizeError,
    ResizeOptions,
    ResizePlan,
    all_finite,
    plan_resize,
    resize_module,
    singular_values,
)
from bot.resize.metadata import (
    ENERGY_WIDTH,
    KOHYA_HASH_KEYS,
    provenance,
    rank_histogram,
    resized_metadata,
    resized_peft_config,
)

PEFT_WEIGHTS = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FACTOR_ROLES = ("down", "up")
# Factors a decomposition can be written back into; integer (quantized) factors would be truncated.
FLOAT_FACTOR_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
LEGACY_HASH_RANGE = (0x100000, 0x10000)  # sd-webui's old model hash: 64 KiB at 1 MiB into the file


class OutputPathError(ValueError):
    """The output path cannot be used (exists without --force, is the input, has the wrong shape)."""


@dataclass(frozen=True)
class Adapter:
    """A LoRA file found on disk that can be resized."""

    weights: Path
    header: SafetensorsHeader
    inspection: FileInspection
    modules: tuple[Module, ...]  # the LoRA modules, in file order
    specs: tuple[ModuleSpec, ...]
    config: PeftConfig | None  # PEFT only
    rslora: bool

    @property
    def format(self) -> str:
        return self.inspection.format

    @property
    def is_peft(self) -> bool:
        return self.format == "peft"

    def scale(self, spec: ModuleSpec) -> float:
        return lora_scale(spec.alpha, spec.old_rank, self.rslora) if spec.old_rank else 0.0


def overall_energy_retained(modules) -> float:
    """‖ΔW'‖²/‖ΔW‖² over every module of the file taken together."""
    total = sum(m.energy_total for m in modules)
    return sum(m.energy_kept for m in modules) / total if total > 0 else 1.0


@dataclass(frozen=True)
class ResizeReport:
    input: Path
    input_sha256: str  # of the whole input file, as `lora_bot.source_sha256` in the output records it
    output: Path  # the weights file
    output_config: Path | None
    format: str
    plan: ResizePlan
    modules: tuple[ModuleResize, ...]
    input_size: int
    output_size: int

    @property
    def old_rank(self) -> int | None:
        return most_common(self.plan.old_ranks)

    @property
    def new_rank(self) -> int | None:
        return most_common(self.plan.new_ranks)

    @property
    def energy_retained(self) -> float:
        return overall_energy_retained(self.modules)

    @property
    def relative_error(self) -> float:
        """‖ΔW − ΔW'‖_F / ‖ΔW‖_F over every module of the file taken together."""
        total = sum(m.energy_total for m in self.modules)
        dropped = sum(max(m.energy_total - m.energy_kept, 0.0) for m in self.modules)
        return (dropped / total) ** 0.5 if total > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "input": str(self.input),
            "output": str(self.output.parent if self.output_config else self.output),
            "format": self.format,
            "old_rank": self.old_rank,
            "new_rank": self.new_rank,
            "ranks": {"old": rank_histogram(self.plan.old_ranks), "new": rank_histogram(self.plan.new_ranks)},
            "energy_retained": self.energy_retained,
            "relative_error": self.relative_error,
            "modules": [m.to_json() for m in self.modules],
            "sizes": {"input": self.input_size, "output": self.output_size},
        }


# --- finding and vetting the input ---------------------------------------------------------------------------


def locate_weights(path: Path) -> Path:
    """The safetensors file to resize: the path itself, or the one LoRA file in a folder."""
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ResizeError(
                f"{path} is a pickle file; lora-bot never unpickles (it runs arbitrary code). "
                "Convert it to .safetensors first"
            )
        return path
    if (path / PEFT_WEIGHTS).is_file():
        return path / PEFT_WEIGHTS
    names = [p.name for p in sorted(path.iterdir()) if p.is_file()]
    candidates = select_candidates(names)
    safe = [c for c in candidates if not c.pickle]
    if len(safe) == 1:
        return path / safe[0].path
    if not safe and candidates:
        raise ResizeError(
            f"{path} holds only pickle weights ({candidates[0].path}); lora-bot never unpickles. "
            "Convert them to .safetensors first"
        )
    if not safe:
        raise ResizeError(f"{path} holds no .safetensors LoRA file")
    raise ResizeError(
        f"{path} holds {len(safe)} LoRA files ({', '.join(c.path for c in safe[:3])}); name one"
    )


def _first(modules: list[Module]) -> str:
    return f"{len(modules)} module(s), first {modules[0].name}"


# Why a module kind cannot be resized in factor space (lora-formats.md §3, "What not to convert").
_NOT_A_PRODUCT = {
    LOHA: "LyCORIS LoHa (hada_*): its update (W1a·W1b)⊙(W2a·W2b) is a Hadamard product, not a rank-r "
    "product B·A, so it has no factors to truncate or pad",
    LOKR: "LyCORIS LoKr (lokr_*): its update w1⊗w2 is a Kronecker product, not a rank-r product B·A, so it "
    "has no factors to truncate or pad",
    LORA_TUCKER: "LoCon with a Tucker mid tensor (lora_mid): its update up·mid·down is a core-tensor product, "
    "not a rank-r product B·A; resizing it would need the mid tensor decomposed too",
}


def _refusal(modules: tuple[Module, ...]) -> str | None:
    """Why these modules cannot be resized, in the words a user can act on; None when they can."""
    by_kind: dict[str, list[Module]] = {}
    for module in modules:
        by_kind.setdefault(module.kind, []).append(module)
    for kind, reason in _NOT_A_PRODUCT.items():
        if kind in by_kind:
            return f"{_first(by_kind[kind])} are {reason}"
    others = [m for m in modules if m.kind != LORA]  # Tucker, LoHa and LoKr were refused above
    if others:
        roles = ", ".join(sorted(others[0].tensors))
        return (
            f"{_first(others)} ({roles}) are not LoRA modules (IA3, OFT, GLoRA or full diffs); only rank-r "
            "products B·A can be resized"
        )
    dora = [m for m in modules if "magnitude" in m.tensors or "dora_scale" in m.tensors]
    if dora:
        what = "lora_magnitude_vector" if "magnitude" in dora[0].tensors else "dora_scale"
        return (
            f"{_first(dora)} carry DoRA magnitudes ({what}): DoRA divides by the norm of W + B·A, which "
            "truncation changes, so the resized adapter would not compute the same thing"
        )
    names = {m.name for m in modules}
    split = [m for m in modules if not m.is_paired and f"{m.name}.0" in names]
    if split:
        return (
            f"{_first(split)} are kohya split_qkv modules (lora_down.0/1/2 sharing one alpha); resizing "
            "them is not supported"
        )
    unpaired = [m for m in modules if not m.is_paired]
    if unpaired:
        roles = ", ".join(sorted(unpaired[0].tensors))
        return f"{_first(unpaired)} lack a factor (the first has only {roles}); there is no B·A to resize"
    mismatched = [m for m in modules if m.pair_shape_problem]
    if mismatched:
        return f"{_first(mismatched)} cannot multiply: {mismatched[0].pair_shape_problem}"
    odd_up = [m for m in modules if any(size != 1 for size in m.up.shape[2:])]
    if odd_up:
        return (
            f"{_first(odd_up)} have an up factor {list(odd_up[0].up.shape)} with a spatial kernel; only "
            "[out, r, 1, 1] conv factors are rank-r products"
        )
    odd_alpha = [m for m in modules if m.alpha_tensor is not None and m.alpha_tensor.numel != 1]
    if odd_alpha:
        return f"{_first(odd_alpha)} have an .alpha of shape {list(odd_alpha[0].alpha_tensor.shape)}, not a scalar"
    not_float = [m for m in modules if {m.down.dtype, m.up.dtype} - set(FLOAT_FACTOR_DTYPES)]
    if not_float:
        dtypes = "/".join(sorted({not_float[0].down.dtype, not_float[0].up.dtype}))
        return (
            f"{_first(not_float)} have {dtypes} factors; only floating-point factors "
            f"({', '.join(FLOAT_FACTOR_DTYPES)}) can be decomposed and written back"
        )
    return None


def _peft_config(weights: Path) -> tuple[PeftConfig, str]:
    path = weights.parent / CONFIG_NAME
    if not path.is_file():
        raise ResizeError(
            f"{weights} has PEFT keys but no {CONFIG_NAME} beside it: its alpha is unknown, so "
            "the scale cannot be kept"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        config = parse_peft_config(text)
    except ConfigError as error:
        raise ResizeError(str(error)) from None
    if config.peft_type not in (None, "LORA"):
        raise ResizeError(
            f"{CONFIG_NAME} has peft_type {config.peft_type!r}; only LORA adapters are products B·A"
        )
    if config.use_dora:
        raise ResizeError(
            f"{CONFIG_NAME} sets use_dora: DoRA divides by the norm of W + B·A, which truncation "
            "changes, so the resized adapter would not compute the same thing"
        )
    return config, text


def open_adapter(path: Path) -> Adapter:
    """Read the header (and the few `.alpha` bytes) and decide whether the file can be resized."""
    weights = locate_weights(Path(path))
    try:
        header = read_local_header(weights)
        alphas = [n for n, info in header.tensors.items() if n.endswith(".alpha") and info.numel == 1]
        scalars = read_local_scalars(weights, header, alphas)
    except (HeaderError, HeaderTooLarge) as error:
        raise ResizeError(f"{weights}: {error}") from None
    peek = parse_keys(header.tensors, header.metadata)
    config, config_text = _peft_config(weights) if peek.format == "peft" else (None, None)
    evidence = FileEvidence(
        path=str(weights),
        size=weights.stat().st_size,
        header=header,
        scalars=scalars,
        adapter_config_text=config_text,
    )
    inspection = inspect_evidence(evidence)
    parsed = parse_keys(header.tensors, header.metadata, config.modules_to_save if config else ())
    if not parsed.modules:
        raise ResizeError(
            f"{weights} holds no LoRA modules ({len(header.tensors)} tensors, none with a LoRA name)"
        )
    reason = _refusal(parsed.modules)
    if reason:
        raise ResizeError(f"{weights} ({parsed.format}): {reason}")
    reports = {r.name: r for r in inspection.modules}
    specs = tuple(
        ModuleSpec(
            name=m.name,
            old_rank=m.rank,
            alpha=reports[m.name].alpha,
            alpha_dtype=m.alpha_tensor.dtype if m.alpha_tensor is not None else None,
        )
        for m in parsed.modules
    )
    return Adapter(
        weights=weights,
        header=header,
        inspection=inspection,
        modules=parsed.modules,
        specs=specs,
        config=config,
        rslora=inspection.use_rslora,
    )


# --- output paths --------------------------------------------------------------------------------------------


def _tag(options: ResizeOptions) -> str:
    return f"r{options.rank}" if options.rank is not None else f"e{options.energy:g}"


def output_paths(
    adapter: Adapter, options: ResizeOptions, output: Path | None, overwrite: bool
) -> tuple[Path, Path | None]:
    """(weights file, adapter_config.json or None). PEFT adapters are folders; other formats single files."""
    if adapter.is_peft:
        folder = adapter.weights.parent.resolve()  # `.` has no name to derive the default output from
        if output is not None and output.suffix.lower() == ".safetensors":
            raise OutputPathError(
                f"a PEFT adapter is a folder ({PEFT_WEIGHTS} + {CONFIG_NAME}); give -o a folder"
            )
        folder_out = output if output is not None else folder.with_name(f"{folder.name}-{_tag(options)}")
        weights, config = folder_out / adapter.weights.name, folder_out / CONFIG_NAME
    else:
        default_name = f"{adapter.weights.stem}-{_tag(options)}.safetensors"
        if output is None:
            weights = adapter.weights.with_name(default_name)
        else:
            weights = output / default_name if output.is_dir() else output
        config = None
    if weights.resolve() == adapter.weights.resolve():
        raise OutputPathError(f"{weights} is the input; write the resized adapter somewhere else")
    existing = [p for p in (weights, config) if p is not None and p.exists()]
    if existing and not overwrite:
        raise OutputPathError(f"{existing[0]} exists; pass --force to overwrite it")
    return weights, config


# --- the two passes ------------------------------------------------------------------------------------------


def _load_pair(
    handle: BinaryIO, header: SafetensorsHeader, module: Module
) -> tuple[torch.Tensor, torch.Tensor]:
    down, up = read_tensor(handle, header, module.down.name), read_tensor(handle, header, module.up.name)
    for factor in (down, up):
        if not all_finite(factor):
            raise ResizeError(
                f"{module.name} has NaN or infinite values in its factors: the adapter is broken "
                "and there is no update to keep"
            )
    return down, up


def _spectra(adapter: Adapter) -> dict[str, torch.Tensor]:
    """σ of every ΔW (scale included), one module in memory at a time."""
    spectra = {}
    with adapter.weights.open("rb") as handle:
        for module, spec in zip(adapter.modules, adapter.specs, strict=True):
            down, up = _load_pair(handle, adapter.header, module)  # read again by the second pass
            spectra[module.name] = singular_values(down, up, adapter.scale(spec), overwrite_down=True)
    return spectra


def _output_slots(adapter: Adapter, plan: ResizePlan) -> list[TensorSlot]:
    new_shapes = {}
    for module in adapter.modules:
        k = plan[module.name].new_rank
        down, up = module.down.shape, module.up.shape
        new_shapes[module.down.name] = (k, *down[1:])
        new_shapes[module.up.name] = (up[0], k, *up[2:])
    return [
        TensorSlot(name, info.dtype, new_shapes.get(name, info.shape))
        for name, info in adapter.header.tensors.items()
    ]


def _owned_tensors(module: Module) -> list[str]:
    """The tensors rewritten together when the module is resized, in their input data order."""
    owned = [module.tensors[role] for role in (*FACTOR_ROLES, "alpha") if role in module.tensors]
    return [info.name for info in sorted(owned, key=lambda info: info.data_offsets)]


def _data_order(adapter: Adapter) -> tuple[list[str], dict[str, Module]]:
    """The input's data order, except that a module's factors and alpha are written together where the first
    of them was, so each module is computed once and held alone even if the input scattered its factors."""
    owner = {name: module for module in adapter.modules for name in _owned_tensors(module)}
    order, done = [], set()
    for info in sorted(adapter.header.tensors.values(), key=lambda info: info.data_offsets):
        module = owner.get(info.name)
        if module is None:
            order.append(info.name)
        elif module.name not in done:
            done.add(module.name)
            order.extend(_owned_tensors(module))
    return order, owner


def _stream(
    adapter: Adapter,
    plan: ResizePlan,
    writer: StreamingWriter,
    order: list[str],
    owner: Mapping[str, Module],
    spectra: Mapping[str, torch.Tensor] | None,
) -> list[ModuleResize]:
    results: dict[str, ModuleResize] = {}
    pending: dict[str, torch.Tensor] = {}  # the current module's tensors not yet written
    specs = {spec.name: spec for spec in adapter.specs}
    with adapter.weights.open("rb") as handle:
        for name in order:
            module = owner.get(name)
            if module is None:
                writer.copy_raw(name, handle, adapter.header.absolute_range(name)[0])
                continue
            if module.name not in results:
                sigma = spectra.get(module.name) if spectra else None
                pending, results[module.name] = _produce(
                    handle,
                    adapter.header,
                    module,
                    plan[module.name],
                    adapter.scale(specs[module.name]),
                    sigma,
                )
            writer.write_tensor(name, pending.pop(name))
    return [results[module.name] for module in adapter.modules]


def _produce(
    handle: BinaryIO,
    header: SafetensorsHeader,
    module: Module,
    plan: ModulePlan,
    scale: float,
    sigma: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], ModuleResize]:
    """The module's new tensors by name, and what resizing it cost."""
    down, up = _load_pair(handle, header, module)
    # The input factor was read into memory of its own and is not used again: truncation may overwrite it.
    new_down, new_up, result = resize_module(down, up, scale, plan, sigma, consume_down=True)
    tensors = {module.down.name: new_down, module.up.name: new_up}
    if module.alpha_tensor is not None:
        alpha = read_tensor(handle, header, module.alpha_tensor.name)
        tensors[module.alpha_tensor.name] = torch.full_like(alpha, plan.stored_alpha)
    return tensors, result


def _open_writer(
    path: Path, slots: list[TensorSlot], metadata: dict[str, str], order: list[str]
) -> StreamingWriter:
    """A writer with the values only known at the end (energy, kohya hashes) reserved in its header."""
    reserved = {"lora_bot.energy_retained": ENERGY_WIDTH}
    reserved.update({key: width for key, width in KOHYA_HASH_KEYS.items() if key in metadata})
    writer = StreamingWriter(path, slots, metadata, order, reserved)
    if "sshs_legacy_hash" in reserved and writer.data_start > LEGACY_HASH_RANGE[0]:
        # The legacy hash covers 64 KiB at 1 MiB; a header that long would contain its own hash. Drop it.
        writer.abort()
        metadata = {k: v for k, v in metadata.items() if k != "sshs_legacy_hash"}
        del reserved["sshs_legacy_hash"]
        writer = StreamingWriter(path, slots, metadata, order, reserved)
    return writer


def _patch_hashes(writer: StreamingWriter) -> None:
    """kohya's precomputed sd-webui hashes, recomputed for the bytes actually written."""
    if writer.has_placeholder("sshs_model_hash"):
        writer.patch("sshs_model_hash", writer.data_sha256)
    if writer.has_placeholder("sshs_legacy_hash"):
        start, length = LEGACY_HASH_RANGE
        writer.patch("sshs_legacy_hash", hashlib.sha256(writer.read_back(start, length)).hexdigest()[:8])


def resize_adapter(
    path: Path, options: ResizeOptions, output: Path | None = None, overwrite: bool = False
) -> ResizeReport:
    adapter = open_adapter(Path(path))
    weights_out, config_out = output_paths(adapter, options, output, overwrite)
    spectra = _spectra(adapter) if options.needs_spectra else None
    plan = plan_resize(adapter.specs, options, adapter.rslora, spectra)
    # kohya declares 1×1 convs (SD1's proj_in/proj_out) under network_dim; only larger kernels under conv_dim.
    conv = {m.name for m in adapter.modules if m.uses_conv_dim}
    source_sha256 = file_sha256(adapter.weights)
    metadata = resized_metadata(adapter.header.metadata, plan, conv, provenance(plan, source_sha256))
    order, owner = _data_order(adapter)
    weights_out.parent.mkdir(parents=True, exist_ok=True)
    writer = _open_writer(weights_out, _output_slots(adapter, plan), metadata, order)
    try:
        modules = tuple(_stream(adapter, plan, writer, order, owner, spectra))
        writer.patch("lora_bot.energy_retained", f"{overall_energy_retained(modules):.6f}")
        _patch_hashes(writer)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    if config_out is not None:
        config = resized_peft_config(adapter.config.raw, plan)
        config_out.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return ResizeReport(
        input=adapter.weights,
        input_sha256=source_sha256,
        output=weights_out,
        output_config=config_out,
        format=adapter.format,
        plan=plan,
        modules=modules,
        input_size=adapter.weights.stat().st_size,
        output_size=weights_out.stat().st_size,
    )
