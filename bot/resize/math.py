"""Rank conversion of LoRA modules in factor space: the math and the plan, no file I/O.

A LoRA module applies ΔW = s·B·A with B = up [out, r], A = down [r, in] and s = alpha/r (alpha/√r with
rsLoRA). Lowering the rank to k keeps the best rank-k approximation of ΔW (Eckart–Young). It is computed
from the factors, never from the dense out×in matrix: with B = Q_b·R_b and Aᵀ = Q_a·R_a,
B·A = Q_b·(R_b·R_aᵀ)·Q_aᵀ, so the SVD of the small r×r core gives the singular vectors of B·A
(lora-formats.md §3, "Performance note"). Raising the rank pads A with zero rows and B with zero columns,
which leaves B·A unchanged. Either way alpha becomes alpha·k/r (alpha·√(k/r) with rsLoRA), so s and with it
the applied ΔW stay what they were.

Conv modules are the same product once flattened: down [r, in, kh, kw] → [r, in·kh·kw], up [out, r, 1, 1]
→ [out, r].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

SVD, PAD, COPY = "svd", "pad", "copy"


class ResizeError(ValueError):
    """The adapter cannot be resized; the message names the file or module and says why."""


@dataclass(frozen=True)
class ResizeOptions:
    """Either a target rank for every module, or an energy fraction (per file, or per module)."""

    rank: int | None = None
    energy: float | None = None
    per_module: bool = False

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of a target rank or an energy fraction")
        if self.rank is not None and (isinstance(self.rank, bool) or self.rank < 1):
            raise ValueError(f"the target rank must be a positive integer, got {self.rank}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ValueError(f"the energy fraction must be in (0, 1], got {self.energy}")
        if self.per_module and self.energy is None:
            raise ValueError("--per-module only applies to an energy target")

    @property
    def needs_spectra(self) -> bool:
        """An energy target needs every module's singular values before any rank is known."""
        return self.energy is not None


@dataclass(frozen=True)
class ModuleSpec:
    """What planning needs to know about one module; nothing here reads a tensor."""

    name: str
    old_rank: int
    alpha: float  # the alpha loaders apply (alpha = rank when nothing declares one)
    alpha_dtype: str | None = (
        None  # safetensors dtype of a stored `.alpha` tensor; None for JSON or undeclared
    )


@dataclass(frozen=True)
class ModulePlan:
    name: str
    old_rank: int
    new_rank: int
    alpha: float
    new_alpha: float  # exact: alpha·k/r (or ·√(k/r))
    stored_alpha: float  # new_alpha as the file can hold it (a bf16/fp16 `.alpha` tensor rounds)
    method: str  # "svd", "pad" or "copy"

    @property
    def factor_gain(self) -> float:
        """What both factors are multiplied by so that the rounding of a stored alpha does not change ΔW."""
        return math.sqrt(self.new_alpha / self.stored_alpha) if self.stored_alpha else 1.0


@dataclass(frozen=True)
class ResizePlan:
    options: ResizeOptions
    rslora: bool
    modules: tuple[ModulePlan, ...]

    def __getitem__(self, name: str) -> ModulePlan:
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> Mapping[str, ModulePlan]:
        return {m.name: m for m in self.modules}

    @property
    def new_ranks(self) -> Counter:
        return Counter(m.new_rank for m in self.modules)

    @property
    def old_ranks(self) -> Counter:
        return Counter(m.old_rank for m in self.modules)


@dataclass(frozen=True)
class ModuleResize:
    """The outcome for one module. Energies are of ΔW itself, scale included, so they add across modules."""

    name: str
    old_rank: int
    new_rank: int
    method: str
    energy_total: float  # ‖ΔW‖²_F
    energy_kept: float  # ‖ΔW_k‖²_F
    kept_singular_values: tuple[float, ...]  # the leading singular values of ΔW the output keeps

    @property
    def energy_retained(self) -> float:
        return self.energy_kept / self.energy_total if self.energy_total > 0 else 1.0

    @property
    def relative_error(self) -> float:
        """‖ΔW − ΔW_k‖_F / ‖ΔW‖_F; by Eckart–Young ‖ΔW − ΔW_k‖²_F is the sum of the dropped σ²."""
        if self.energy_total <= 0:
            return 0.0
        return math.sqrt(max(self.energy_total - self.energy_kept, 0.0) / self.energy_total)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "old_rank": self.old_rank,
            "new_rank": self.new_rank,
            "method": self.method,
            "energy_retained": self.energy_retained,
            "relative_error": self.relative_error,
        }


@dataclass(frozen=True)
class ReducedFactors:
    down: torch.Tensor
    up: torch.Tensor
    singular_values: torch.Tensor  # all singular values of scale·B·A, descending (float64)


# --- factors -------------------------------------------------------------------------------------------------


def flatten_factors(down: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """down [r, in, …] → [r, in·…]; up [out, r, 1, …] → [out, r]. Anything else is not a rank-r product."""
    if down.dim() < 2 or up.dim() < 2:
        raise ResizeError(
            f"factors must be at least 2-D, got down {list(down.shape)} and up {list(up.shape)}"
        )
    if any(size != 1 for size in up.shape[2:]):
        raise ResizeError(
            f"up factor {list(up.shape)} has a spatial kernel; only [out, r, 1, 1] is a rank-r product"
        )
    if down.shape[0] != up.shape[1]:
        raise ResizeError(f"down {list(down.shape)} and up {list(up.shape)} disagree on the rank")
    return down.reshape(down.shape[0], math.prod(down.shape[1:])), up.reshape(up.shape[0], up.shape[1])


def _restore(down2: torch.Tensor, up2: torch.Tensor, down: torch.Tensor, up: torch.Tensor, k: int):
    return down2.reshape(k, *down.shape[1:]), up2.reshape(up.shape[0], k, *up.shape[2:])


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _core_svd(down2: torch.Tensor, up2: torch.Tensor, overwrite_down: bool = False):
    """SVD of B·A from its factors: B·A = (Q_b·U)·diag(σ)·(Q_a·V)ᵀ. Costs O((out+in)·r² + r³).

    With `overwrite_down`, Q_a is computed in down2's own memory, so a huge factor is not held twice.
    """
    q_up, r_up = torch.linalg.qr(up2)  # [out, p], [p, r]
    in_place = _qr_in_place(down2) if overwrite_down else None
    if in_place is not None:
        q_down, tau, r_down = in_place
        torch.linalg.householder_product(q_down, tau, out=q_down)  # [in, r]: Q_a, in down2's memory
    else:
        q_down, r_down = torch.linalg.qr(down2.T)  # [in, q], [q, r]
    u, sigma, vh = torch.linalg.svd(r_up @ r_down.T, full_matrices=False)
    return q_up, u, sigma, vh, q_down


def _qr_in_place(down2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """QR of down2ᵀ in down2's own memory (down2ᵀ of a row-major down2 is the column-major matrix LAPACK works
    on in place): (Householder-packed Q_a, its tau, R as a copy). None where that cannot be done in place."""
    if not (down2.is_contiguous() and down2.shape[1] >= down2.shape[0]):
        return None
    packed = down2.T  # [in, r]
    tau = packed.new_empty(packed.shape[1])
    torch.geqrf(packed, out=(packed, tau))
    return packed, tau, packed[: packed.shape[1]].triu()  # R copied before anything overwrites it


def singular_values(
    down: torch.Tensor, up: torch.Tensor, scale: float, overwrite_down: bool = False
) -> torch.Tensor:
    """The singular values of scale·B·A, descending, in float64 (energy sums need the headroom). With
    `overwrite_down`, a down factor the caller will not use again is factorised in its own memory."""
    dtype = _compute_dtype(down)
    down2, up2 = flatten_factors(down.to(dtype), up.to(dtype))
    if down2.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    r_up = torch.linalg.qr(up2, mode="r").R
    in_place = _qr_in_place(down2) if overwrite_down else None
    r_down = in_place[2] if in_place is not None else torch.linalg.qr(down2.T, mode="r").R
    return torch.linalg.svdvals(r_up @ r_down.T).to(torch.float64) * abs(scale)


def reduce_factors(
    down: torch.Tensor, up: torch.Tensor, scale: float, k: int, *, consume_down: bool = False
) -> ReducedFactors:
    """The best rank-k factors of B·A, with √σ on both sides so neither factor carries all the magnitude.

    The new factors hold B·A's own truncation; the caller keeps s by writing alpha·k/r. When B·A has fewer than
    k non-zero directions (a zero module, or out or in < k) the missing ones are zero rows/columns.
    `consume_down` lets the decomposition overwrite `down` (the caller no longer needs its values).
    """
    dtype = _compute_dtype(down)
    down2, up2 = flatten_factors(down.to(dtype), up.to(dtype))
    # A widened copy is ours to overwrite; the caller's own tensor only when it says so.
    overwrite_down = consume_down or down.dtype != dtype
    if down2.shape[0] == 0:
        sigma = torch.zeros(0, dtype=torch.float64)
        new_down2, new_up2 = down2.new_zeros(k, down2.shape[1]), up2.new_zeros(up2.shape[0], k)
        return ReducedFactors(*_restore(new_down2, new_up2, down, up, k), singular_values=sigma)
    q_up, u, sigma, vh, q_down = _core_svd(down2, up2, overwrite_down)
    kept = min(k, sigma.shape[0])
    root = sigma[:kept].sqrt()
    new_up2 = up2.new_zeros(up2.shape[0], k)
    new_up2[:, :kept] = (q_up @ u[:, :kept]) * root
    del q_up
    # A factor can be most of the file: the product goes straight into the output's rows and is scaled there,
    # so no k×in temporary sits beside the output and the input's Q (the 1 GiB factor peaked at 3.9 GB).
    new_down2 = down2.new_zeros(k, down2.shape[1])
    torch.mm(vh[:kept], q_down.T, out=new_down2[:kept])
    del q_down
    new_down2[:kept].mul_(root[:, None])
    new_down, new_up = _restore(new_down2, new_up2, down, up, k)
    return ReducedFactors(down=new_down, up=new_up, singular_values=sigma.to(torch.float64) * abs(scale))


_FINITE_CHUNK = 1 << 22  # elements checked at once: a widened copy of a whole 1 GiB factor would be 2 GiB


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or ±inf (float8 has no isfinite of its own, so it is checked widened, a chunk at a time)."""
    flat, dtype = tensor.reshape(-1), _compute_dtype(tensor)
    return all(
        bool(torch.isfinite(flat[start : start + _FINITE_CHUNK].to(dtype)).all())
        for start in range(0, flat.numel(), _FINITE_CHUNK)
    )


def pad_factors(down: torch.Tensor, up: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero rows in A and zero columns in B: B·A is unchanged, bit for bit, in the input dtype."""
    r = down.shape[0]
    new_down = down.new_zeros(k, *down.shape[1:])
    new_up = up.new_zeros(up.shape[0], k, *up.shape[2:])
    new_down[:r] = down
    new_up[:, :r] = up
    return new_down, new_up


# --- alpha and energy ----------------------------------------------------------------------------------------


def scaled_alpha(alpha: float, old_rank: int, new_rank: int, rslora: bool) -> float:
    """alpha' with alpha'/k = alpha/r (or alpha'/√k = alpha/√r), so the scale is unchanged."""
    if old_rank == 0:
        return alpha  # a rank-0 module applies nothing; there is no scale to keep
    ratio = new_rank / old_rank
    return alpha * (math.sqrt(ratio) if rslora else ratio)


def storable_alpha(value: float, dtype: str | None) -> float:
    """The value a `.alpha` tensor of this dtype actually holds (bf16 keeps 8 significant bits)."""
    if dtype is None:
        return value
    torch_dtype = {
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "F32": torch.float32,
        "F64": torch.float64,
    }.get(dtype)
    if torch_dtype is None:
        raise ResizeError(f"cannot store alpha {value:g} in a {dtype} tensor")
    return torch.tensor(value, dtype=torch.float64).to(torch_dtype).item()


def energy_kept(sigma: torch.Tensor, k: int) -> float:
    return float((sigma[:k] ** 2).sum())


def rank_for_energy(sigma: torch.Tensor, fraction: float) -> int:
    """The smallest k whose σ₁²+…+σ_k² reaches `fraction` of Σσ². A zero module keeps rank 1, like kohya."""
    return file_rank_for_energy([sigma], fraction)


def file_rank_for_energy(spectra: Sequence[torch.Tensor], fraction: float) -> int:
    """The smallest single k (capped per module at its own rank) keeping `fraction` of the file's energy."""
    longest = max((s.numel() for s in spectra), default=0)
    if longest == 0:
        return 1
    kept = torch.zeros(longest, dtype=torch.float64)
    for sigma in spectra:
        cumulative = torch.cumsum(sigma.to(torch.float64) ** 2, 0)
        if cumulative.numel():
            kept[: cumulative.numel()] += cumulative
            kept[cumulative.numel() :] += cumulative[-1]
    if kept[-1] <= 0:
        return 1
    return int(torch.searchsorted(kept, fraction * kept[-1]).item()) + 1


# --- the plan ------------------------------------------------------------------------------------------------


def _method(old_rank: int, new_rank: int) -> str:
    return SVD if new_rank < old_rank else PAD if new_rank > old_rank else COPY


def _target_ranks(
    specs: Sequence[ModuleSpec], options: ResizeOptions, spectra: Mapping[str, torch.Tensor] | None
) -> dict[str, int]:
    if options.rank is not None:
        # A fixed target is a promise about shapes: every module gets exactly that rank, padded if need be.
        return {spec.name: options.rank for spec in specs}
    if spectra is None:
        raise ValueError("an energy target needs the singular values of every module")
    if options.per_module:
        return {spec.name: rank_for_energy(spectra[spec.name], options.energy) for spec in specs}
    shared = file_rank_for_energy([spectra[spec.name] for spec in specs], options.energy)
    # Energy never asks for more than a module has: a lower-rank module is kept, not padded.
    return {spec.name: max(1, min(shared, spec.old_rank)) for spec in specs}


def plan_resize(
    specs: Sequence[ModuleSpec],
    options: ResizeOptions,
    rslora: bool,
    spectra: Mapping[str, torch.Tensor] | None = None,
) -> ResizePlan:
    """New rank, alpha and method per module. `spectra` (σ of each ΔW) is needed only for an energy target."""
    targets = _target_ranks(specs, options, spectra)
    modules = []
    for spec in specs:
        k = targets[spec.name]
        new_alpha = scaled_alpha(spec.alpha, spec.old_rank, k, rslora)
        stored = storable_alpha(new_alpha, spec.alpha_dtype)
        if new_alpha != 0 and stored == 0:
            raise ResizeError(
                f"{spec.name}: alpha {new_alpha:g} underflows the {spec.alpha_dtype} .alpha tensor"
            )
        if not math.isfinite(stored):
            raise ResizeError(
                f"{spec.name}: alpha {new_alpha:g} overflows the {spec.alpha_dtype} .alpha tensor"
            )
        modules.append(
            ModulePlan(
                name=spec.name,
                old_rank=spec.old_rank,
                new_rank=k,
                alpha=spec.alpha,
                new_alpha=new_alpha,
                stored_alpha=stored,
                method=_method(spec.old_rank, k),
            )
        )
    return ResizePlan(options=options, rslora=rslora, modules=tuple(modules))


# --- one module ----------------------------------------------------------------------------------------------


def _with_gain(tensor: torch.Tensor, gain: float, dtype: torch.dtype) -> torch.Tensor:
    if gain == 1.0:
        return tensor.to(dtype)
    return (tensor.to(_compute_dtype(tensor)) * gain).to(dtype)


def resize_module(
    down: torch.Tensor,
    up: torch.Tensor,
    scale: float,
    plan: ModulePlan,
    sigma: torch.Tensor | None = None,
    *,
    consume_down: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, ModuleResize]:
    """New factors for one module, in the input dtypes, and what the change cost.

    `sigma`, the module's singular values when an energy target already computed them, spares padding and
    copying a second decomposition; truncation needs the singular vectors and decomposes again.
    `consume_down`: truncation may overwrite `down` (see reduce_factors).
    """
    k = plan.new_rank
    if plan.method == SVD:
        reduced = reduce_factors(down, up, scale, k, consume_down=consume_down)
        new_down, new_up, sigma = reduced.down, reduced.up, reduced.singular_values
    else:
        sigma = singular_values(down, up, scale) if sigma is None else sigma
        new_down, new_up = pad_factors(down, up, k) if plan.method == PAD else (down, up)
    gain = plan.factor_gain
    new_down, new_up = _with_gain(new_down, gain, down.dtype), _with_gain(new_up, gain, up.dtype)
    result = ModuleResize(
        name=plan.name,
        old_rank=plan.old_rank,
        new_rank=k,
        method=plan.method,
        energy_total=energy_kept(sigma, sigma.numel()),
        energy_kept=energy_kept(sigma, k),
        kept_singular_values=tuple(float(s) for s in sigma[:k]),
    )
    return new_down, new_up, result
