"""Tensor names → adapted modules, for every LoRA format on the Hub (lora-formats.md §1).

A key is `<module path>.<role suffix>`. The suffix says which factor the tensor is (down/A, up/B, mid, alpha,
LoHa/LoKr factors, DoRA magnitude) and which family of writers uses it; the module path is everything
before it. Keys that match no suffix are kept as `unknown_keys`, never dropped: a loader would ignore them
too, and the user should know.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bot.core.header import TensorInfo
from bot.vocab import Format, ModuleKind

FORMATS = tuple(Format)

# Writer families a suffix belongs to. "ab" is lora_A/lora_B, shared by PEFT and diffusers; the prefix decides.
AB, DIFFUSERS, LEGACY, KOHYA, LYCORIS, CONTROL = "ab", "diffusers", "legacy", "kohya", "lycoris", "control"

_LYCORIS_ROLES = (
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_t2",
    "dora_scale",
    "diff",
    "diff_b",
    "on_input",
    "oft_blocks",
    "oft_diag",
    "w_norm",
    "b_norm",
)

# (pattern, family, role, literals) — first match wins, so the specific suffixes come before the generic ones.
# The named group `module` is the module path; `role` (when present) overrides the fixed role. A pattern can
# only match a name holding one of its literals: that substring test skips most patterns without running
# them, which is most of the work when a header holds 200,000 tensors.
_SUFFIXES: tuple[tuple[re.Pattern[str], str, str | None, re.Pattern[str]], ...] = tuple(
    (re.compile(pattern), family, role, re.compile("|".join(map(re.escape, literals))))
    for pattern, family, role, literals in (
        # PEFT / diffusers A-B (the adapter name is normally stripped on save; tolerate one left in).
        (r"^(?P<module>.+)\.lora_(?P<role>A|B)(?:\.[^.]+)?\.weight$", AB, None, (".lora_A", ".lora_B")),
        (r"^(?P<module>.+)\.lora_B(?:\.[^.]+)?\.bias$", AB, "bias", (".lora_B",)),
        (r"^(?P<module>.+)\.lora_embedding_(?P<role>A|B)(?:\.[^.]+)?$", AB, None, (".lora_embedding_",)),
        (
            r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$",
            AB,
            "magnitude",
            (".lora_magnitude_vector",),
        ),
        # Legacy attention processors (FaceChain, old diffusers scripts; XLabs Flux uses the same shape).
        (
            r"^(?P<module>.+)\.processor\.(?P<proj>\w+?)_lora(?P<idx>\d*)\.(?P<role>down|up)\.weight$",
            LEGACY,
            None,
            (".processor.",),
        ),
        # diffusers "lora.down/up" (SD/SDXL training scripts) and the old text-encoder lora_linear_layer.
        (
            r"^(?P<module>.+)\.lora(?:_linear_layer)?\.(?P<role>down|up)\.weight$",
            DIFFUSERS,
            None,
            (".lora.", ".lora_linear_layer."),
        ),
        # kohya sd-scripts and LyCORIS LoCon.
        (r"^(?P<module>.+)\.lora_(?P<role>down|up|mid)\.weight$", KOHYA, None, (".lora_",)),
        (r"^(?P<module>.+)\.lora_(?P<role>down|up)\.(?P<idx>\d+)\.weight$", KOHYA, None, (".lora_",)),
        (r"^(?P<module>.+)\.alpha$", KOHYA, "alpha", (".alpha",)),
        (
            rf"^(?P<module>.+)\.(?P<role>{'|'.join(_LYCORIS_ROLES)})$",
            LYCORIS,
            None,
            tuple(f".{role}" for role in _LYCORIS_ROLES),
        ),
        # ControlLoRA: `<path>.down` / `<path>.up`, no `.weight`.
        (r"^(?P<module>.+)\.(?P<role>down|up)$", CONTROL, None, (".down", ".up")),
    )
)

_ROLE_ALIASES = {"A": "down", "B": "up"}

# Module kinds. Only "lora" (and its Tucker-mid variant) is a rank-r product B·A that can be resized.
LORA, LORA_TUCKER, LOHA, LOKR, OTHER = (
    ModuleKind.LORA,
    ModuleKind.LORA_TUCKER,
    ModuleKind.LOHA,
    ModuleKind.LOKR,
    ModuleKind.OTHER,
)


def _axis(factor: TensorInfo | None, axis: int) -> int | None:
    """One dimension of a factor matrix. A factor under 2-D (an ungathered ZeRO-3 shard saved as shape [0], a
    stray scalar) has no rank or width to speak of, and reading one must not crash the inspection."""
    return factor.shape[axis] if factor is not None and len(factor.shape) >= 2 else None


_PLAIN_LORA_ROLES = frozenset({"down", "up", "alpha", "bias", "magnitude"})


def _kind_of(roles: Iterable[str]) -> ModuleKind:
    roles = set(roles)
    if roles <= _PLAIN_LORA_ROLES:  # nearly every module: the rules below give LORA for these
        return LORA
    if any(r.startswith("hada_") for r in roles):
        return LOHA
    if any(r.startswith("lokr_") for r in roles):
        return LOKR
    # A module left with only its alpha, bias or magnitude is a LoRA module that lost its factors.
    if "down" in roles or "up" in roles or roles <= {"alpha", "bias", "magnitude", "mid"}:
        return LORA_TUCKER if "mid" in roles else LORA
    return OTHER


@dataclass(frozen=True, slots=True)
class Module:
    """One adapted layer and its tensors by role (down, up, mid, alpha, bias, magnitude, hada_w1_a, …)."""

    name: str
    family: str
    tensors: Mapping[str, TensorInfo]
    # Settled once from `tensors`: every check and report asks for them, and a 200,000-module header asks
    # millions of times.
    kind: ModuleKind = field(init=False, compare=False, repr=False)
    down: TensorInfo | None = field(init=False, compare=False, repr=False)
    up: TensorInfo | None = field(init=False, compare=False, repr=False)
    alpha_tensor: TensorInfo | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _kind_of(self.tensors))
        object.__setattr__(self, "down", self.tensors.get("down"))
        object.__setattr__(self, "up", self.tensors.get("up"))
        object.__setattr__(self, "alpha_tensor", self.tensors.get("alpha"))

    @property
    def is_paired(self) -> bool:
        """A LoRA module needs both factors; LoHa/LoKr need their own sets."""
        if self.kind in (LORA, LORA_TUCKER):
            return self.down is not None and self.up is not None
        if self.kind == LOHA:
            return {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= self.tensors.keys()
        if self.kind == LOKR:
            roles = self.tensors.keys()
            has_w1 = "lokr_w1" in roles or {"lokr_w1_a", "lokr_w1_b"} <= roles
            has_w2 = "lokr_w2" in roles or {"lokr_w2_a", "lokr_w2_b"} <= roles
            return has_w1 and has_w2
        return True

    @property
    def rank(self) -> int | None:
        """The rank the shapes say: rows of down/A (or the LoHa/LoKr inner dimension)."""
        if self.kind in (LORA, LORA_TUCKER):
            rank = _axis(self.down, 0)
            return rank if rank is not None else _axis(self.up, 1)
        if self.kind == LOHA:
            return _axis(self.tensors.get("hada_w1_b"), 0)
        if self.kind == LOKR:
            for role in ("lokr_w2_b", "lokr_w1_b"):
                if role in self.tensors:
                    return _axis(self.tensors[role], 0)
        return None

    @property
    def pair_shape_problem(self) -> str | None:
        """Why down and up cannot multiply, if they cannot (down is [r, in, ...], up is [out, r, ...])."""
        if self.kind not in (LORA, LORA_TUCKER) or not self.is_paired:
            return None
        down, up = self.down.shape, self.up.shape
        if len(down) < 2 or len(up) < 2:
            return f"factors must be at least 2-D, got down {list(down)} and up {list(up)}"
        if "mid" in self.tensors:
            mid = self.tensors["mid"].shape
            if len(mid) < 2 or mid[0] != up[1] or mid[1] != down[0]:
                return f"mid {list(mid)} does not fit down {list(down)} and up {list(up)}"
            return None
        if down[0] != up[1]:
            return f"down has rank {down[0]} ({list(down)}) but up has rank {up[1]} ({list(up)})"
        return None

    @property
    def in_features(self) -> int | None:
        if self.kind in (LORA, LORA_TUCKER):
            return _axis(self.down, 1)
        if self.kind == LOHA:
            return _axis(self.tensors.get("hada_w1_b"), 1)
        if self.kind == LOKR:
            return self._kronecker(1)
        return None

    @property
    def out_features(self) -> int | None:
        if self.kind in (LORA, LORA_TUCKER) and self.up is not None and self.up.shape:
            return self.up.shape[0]
        if self.kind == LOHA:
            return _axis(self.tensors.get("hada_w1_a"), 0)
        if self.kind == LOKR:
            return self._kronecker(0)
        return None

    def _kronecker(self, axis: int) -> int | None:
        """LoKr's update is kron(w1, w2): each width is the product of the two factors' widths on that axis.
        A factor stored as a low-rank pair (w1_a [rows, r] · w1_b [r, cols]) gives rows from a, cols from b."""
        sizes = []
        for factor in ("lokr_w1", "lokr_w2"):
            whole = self.tensors.get(factor)
            part = self.tensors.get(f"{factor}_{'a' if axis == 0 else 'b'}")
            size = _axis(whole, axis) if whole is not None else _axis(part, axis)
            if size is None:
                return None
            sizes.append(size)
        return sizes[0] * sizes[1]

    @property
    def is_conv(self) -> bool:
        return self.down is not None and len(self.down.shape) == 4

    @property
    def uses_conv_dim(self) -> bool:
        """kohya counts Linear and 1x1 Conv2d layers (SD1's proj_in/proj_out) under network_dim and only
        larger kernels under conv_dim."""
        return self.is_conv and tuple(self.down.shape[2:]) != (1, 1)

    @property
    def canonical(self) -> str:
        """The path with `.` and `_` folded to `_`, so kohya and diffusers names of one layer compare equal."""
        return self.name.replace(".", "_")


@dataclass(frozen=True)
class ParsedKeys:
    format: str
    variant: str | None  # e.g. "control-lora", "xlabs", "loha", "lokr", "locon", "dora", "mixed"
    modules: tuple[Module, ...]
    unknown_keys: tuple[str, ...]
    full_weights: tuple[str, ...]  # whole tensors saved on purpose (PEFT modules_to_save, ControlLoRA layers)
    families: Mapping[str, int] = field(default_factory=dict)  # modules per writer family


def parse_keys(
    tensors: Mapping[str, TensorInfo],
    metadata: Mapping[str, str] | None = None,
    modules_to_save: Iterable[str] = (),
) -> ParsedKeys:
    """Group tensors into modules and name the format. Pure: names and shapes only."""
    metadata = metadata or {}
    grouped: dict[str, dict[str, TensorInfo]] = {}
    family_of: dict[str, str] = {}
    leftovers: list[str] = []
    for name, info in tensors.items():
        match = _match_suffix(name)
        if match is None:
            leftovers.append(name)
            continue
        module, family, role = match
        # `.alpha` alone does not make a kohya file: LyCORIS writes it too. Let the factors name the family.
        if role == "alpha":
            family_of.setdefault(module, family)
        else:
            family_of[module] = family
        grouped.setdefault(module, {})[role] = info

    modules = tuple(Module(name=m, family=family_of[m], tensors=roles) for m, roles in grouped.items())
    families = Counter(m.family for m in modules)
    full_weights, unknown = _split_leftovers(leftovers, modules_to_save, families)
    fmt, variant = _name_format(modules, families, metadata)
    return ParsedKeys(
        format=fmt,
        variant=variant,
        modules=modules,
        unknown_keys=tuple(unknown),
        full_weights=tuple(full_weights),
        families=dict(families),
    )


# The suffixes nearly every key ends with, answered by string tests alone: (suffix, family, role, module
# endings under which an earlier pattern in _SUFFIXES would match instead). A name outside these goes through
# the patterns; tests/test_fuzz.py checks both ways give the same answer for any name.
_COMMON_SUFFIXES = (
    (".lora_A.weight", AB, "down", ()),
    (".lora_B.weight", AB, "up", ()),
    (".lora_down.weight", KOHYA, "down", (".lora_A", ".lora_B", ".lora_magnitude_vector")),
    (".lora_up.weight", KOHYA, "up", (".lora_A", ".lora_B", ".lora_magnitude_vector")),
    (".alpha", KOHYA, "alpha", (".lora_embedding_A", ".lora_embedding_B", ".lora_magnitude_vector")),
)
_COMMON_ENDINGS = tuple(suffix for suffix, *_ in _COMMON_SUFFIXES)


def _match_suffix(name: str) -> tuple[str, str, str] | None:
    # A name with a newline never matches (`.` in the patterns stops at one); let the patterns say so.
    if name.endswith(_COMMON_ENDINGS) and "\n" not in name:
        for suffix, family, role, shadowed_by in _COMMON_SUFFIXES:
            if name.endswith(suffix):
                module = name[: -len(suffix)]
                if module and not module.endswith(shadowed_by):
                    return module, family, role
                break
    return _match_suffix_by_patterns(name)


def _match_suffix_by_patterns(name: str) -> tuple[str, str, str] | None:
    for pattern, family, fixed_role, literals in _SUFFIXES:
        if literals.search(name) is None:
            continue
        found = pattern.match(name)
        if not found:
            continue
        module = found["module"]
        role = fixed_role or _ROLE_ALIASES.get(found["role"], found["role"])
        if family == LEGACY:
            module = f"{module}.{found['proj']}{found['idx']}"
        elif "idx" in pattern.groupindex and found["idx"]:
            module = f"{module}.{found['idx']}"
        return module, family, role
    return None


# Misnamed LoRA factors (`lora_a`, `lora.A`, `lora_down` without `.weight`, ...): adapter data no loader reads.
LORA_LIKE = re.compile(r"lora|lokr|loha|hada_|dora|adapter", re.IGNORECASE)
# The official FLUX Control LoRA saves the norms it trains (`...norm_q.weight`, `...query_norm.scale`) beside
# the LoRA factors; diffusers' Flux loader applies them.
_SAVED_NORM = re.compile(
    r"(^|\.)(norm|norm_q|norm_k|norm_added_q|norm_added_k|query_norm|key_norm)\.(scale|weight)$"
)


def _split_leftovers(
    leftovers: list[str], modules_to_save: Iterable[str], families: Counter
) -> tuple[list[str], list[str]]:
    """Whole tensors a format saves on purpose are not unknown: PEFT modules_to_save, ControlLoRA's layers."""
    saved = [m for m in modules_to_save if m]
    full, unknown = [], []
    for name in leftovers:
        segments = name.split(".")
        # PEFT writes `<embedding>.base_layer.weight` when embeddings are trained (save_embedding_layers), and
        # `<embedding>.token_adapter.trainable_tokens_delta` for `trainable_token_indices`. Any other whole
        # tensor under its prefix is a modules_to_save layer (a classifier head, `score.weight`): PEFT loads
        # every one of them, listed in the config or added for the task type.
        peft_saved = name.startswith("base_model.model.") and families.get(AB) and not LORA_LIKE.search(name)
        on_purpose = (
            ".modules_to_save." in name
            or ".base_layer." in name
            or ".token_adapter." in name
            or any(s in segments for s in saved)
            or families.get(CONTROL)
            or peft_saved
            or (_SAVED_NORM.search(name) and (families.get(AB) or families.get(DIFFUSERS)))
        )
        (full if on_purpose else unknown).append(name)
    return full, unknown


def _name_format(
    modules: tuple[Module, ...], families: Counter, metadata: Mapping[str, str]
) -> tuple[str, str | None]:
    if not modules:
        return Format.UNKNOWN, None
    kinds = {m.kind for m in modules}
    network_module = metadata.get("ss_network_module", "")
    lycoris_kind = kinds & {LOHA, LOKR, LORA_TUCKER} or families.get(LYCORIS)
    if lycoris_kind or "lycoris" in network_module:
        variant = "loha" if LOHA in kinds else "lokr" if LOKR in kinds else "locon"
        return Format.LYCORIS, variant
    top = families.most_common(1)[0][0]
    variant = "mixed" if len(families) > 1 else None
    if top == AB:
        peft = all(m.name.startswith("base_model.model.") for m in modules if m.family == AB)
        fmt = Format.PEFT if peft else Format.DIFFUSERS
    elif top == CONTROL:
        fmt, variant = Format.DIFFUSERS, "control-lora"
    elif top == LEGACY:
        fmt = Format.DIFFUSERS_LEGACY
        if any(m.name.startswith(("double_blocks", "single_blocks")) for m in modules):
            variant = "xlabs"
    else:
        fmt = {DIFFUSERS: Format.DIFFUSERS, KOHYA: Format.KOHYA}[top]
    if any("magnitude" in m.tensors or "dora_scale" in m.tensors for m in modules):
        variant = variant or "dora"
    return fmt, variant


def component_of(module_name: str) -> str:
    """Which model a module adapts: the denoiser (UNet/transformer), a text encoder, or a plain model (LLM)."""
    name = module_name
    peft = name.startswith("base_model.model.")
    if peft:
        name = name[len("base_model.model.") :]
        # Under PEFT's prefix `transformer.` is an LLM trunk (GPT-2, Falcon, Bloom, GPT-J: `transformer.h.N`);
        # a diffusion transformer wrapped by PEFT has its blocks at the top level.
        if name.startswith("transformer.") and not name.startswith(
            ("transformer.transformer_blocks.", "transformer.single_transformer_blocks.")
        ):
            return "model"
    rules = (
        (("text_encoder_2.", "lora_te2_"), "text_encoder_2"),
        (("text_encoder_3.", "lora_te3_"), "text_encoder_3"),
        (("text_encoder.", "lora_te_", "lora_te1_"), "text_encoder"),
        (
            (
                "unet.",
                "transformer.",
                "diffusion_model.",
                "lora_unet_",
                "lora_transformer_",
                "prior.",
                "down_blocks.",
                "up_blocks.",
                "mid_block.",
                "transformer_blocks.",
                "single_transformer_blocks.",
                "double_blocks.",
                "single_blocks.",
                "input_blocks.",
                "output_blocks.",
                "middle_block.",
                "lycoris_",
            ),
            "denoiser",
        ),
    )
    for prefixes, component in rules:
        if name.startswith(prefixes):
            return component
    return "model"


# Common leaf layer names, longest first, so `lora_unet_…_attn1_to_out_0` gives `to_out.0` and not `0`.
_LEAVES = sorted(
    (
        "to_q",
        "to_k",
        "to_v",
        "to_out_0",
        "to_out",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_add_out",
        "proj_in",
        "proj_out",
        "proj_mlp",
        "ff_net_0_proj",
        "ff_net_2",
        "ff_context_net_0_proj",
        "ff_context_net_2",
        "ff_proj",
        "conv1",
        "conv2",
        "conv_shortcut",
        "conv",
        "time_emb_proj",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "out_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "fc1",
        "fc2",
        "dense",
        "query",
        "key",
        "value",
        "c_attn",
        "c_proj",
        "c_fc",
        "qkv",
        "proj",
        "linear1",
        "linear2",
        "img_attn_qkv",
        "img_attn_proj",
        "txt_attn_qkv",
        "txt_attn_proj",
        "img_mlp_0",
        "img_mlp_2",
        "txt_mlp_0",
        "txt_mlp_2",
        "img_mod_lin",
        "txt_mod_lin",
        "modulation_lin",
        "norm1_linear",
        "norm1_context_linear",
        "norm_linear",
        "attn_qkv",
        "attn_proj",
        "mlp_fc1",
        "mlp_fc2",
        "adaLN_modulation_1",
        "embed_tokens",
        "lm_head",
        "wte",
        "w1",
        "w2",
        "w3",
        # Fused projections (Phi-3/4, FLUX.2 single blocks): whole names, or `qkv_proj` would read as `proj`.
        "qkv_proj",
        "gate_up_proj",
        "to_qkv_mlp_proj",
    ),
    key=len,
    reverse=True,
)


# The leaves spelled backwards, longest first, each ending at a part boundary: matched at the start of the
# reversed name, the first that fits is the longest known leaf the name ends with, in whole `_`-parts (a
# 200,000-module header asks this for every module; one match in C instead of a lookup per leaf length).
_REVERSED_LEAF = re.compile("(?:" + "|".join(re.escape(leaf[::-1]) for leaf in _LEAVES) + ")(?=_|$)")


def leaf_name(module_name: str) -> str:
    """The layer's own name (to_q, q_proj, …), as PEFT's target_modules would say it."""
    found = _REVERSED_LEAF.match(module_name.replace(".", "_")[::-1])
    if found:
        return found[0][::-1].replace("to_out_0", "to_out.0")
    tail = module_name.split(".")[-1]
    return tail if "." in module_name else module_name.rsplit("_", 1)[-1]


def most_common(counter: Counter):
    """The value most modules have; a tie goes to the larger value, so a declared rank never under-states
    what a loader has to allocate."""
    if not counter:
        return None
    return max(counter.items(), key=lambda item: (item[1], item[0]))[0]
