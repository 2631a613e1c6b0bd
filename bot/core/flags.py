"""Flag codes: stable names for what can be wrong with a LoRA file, each with a severity and an explanation.

Codes never change meaning once released: reports, PR bodies and other tools key on them.
`lora-bot explain CODE` prints the explanation; the README's table is generated from the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.vocab import FlagCode, Severity

# Short names for the three severities, as the engine's rules use them.
ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO


@dataclass(frozen=True)
class FlagDoc:
    """A code's entry in the registry: what `lora-bot explain CODE` and the README's table say."""

    code: FlagCode
    severity: Severity  # the default; a finding may be milder when the context makes it harmless
    summary: str
    explanation: str


@dataclass(frozen=True)
class Flag:
    """One finding about one file."""

    code: FlagCode
    severity: Severity
    message: str

    def to_json(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message}


_CODES = (
    FlagDoc(
        FlagCode.RANK_MISMATCH_CONFIG,
        ERROR,
        "adapter_config.json declares a rank the weights do not have",
        "The rank in adapter_config.json (`r`, or the `rank_pattern` entry for a module) differs from the rank "
        "the tensor shapes have. PEFT builds the layers from the config and then copies the weights in, so "
        "loading fails with `size mismatch for ...lora_A.weight: copying a param with shape [4, 320] ... the "
        "shape in current model is [8, 320]`. The shapes are the truth: the fix is to make the config say the "
        "rank the weights were trained at (lora-bot proposes exactly that), or to pad the weights up to the "
        "declared rank.",
    ),
    FlagDoc(
        FlagCode.RANK_MISMATCH_METADATA,
        WARNING,
        "trainer metadata declares a rank the weights do not have",
        "The safetensors metadata (`ss_network_dim`, `ss_network_args` conv_dim, or the diffusers "
        "`lora_adapter_metadata` rank) says one rank and the tensor shapes say another. Loaders that trust the "
        "metadata mis-scale the LoRA or refuse it; tools that display it (A1111, lora-inspector) mislead users. "
        "Usually the file was resized or edited and the metadata was not updated.",
    ),
    FlagDoc(
        FlagCode.BASE_MODEL_MISMATCH,
        ERROR,
        "the declared base model is not the one the shapes fit",
        "The base model a source declares (model card `base_model`, `base_model_name_or_path`, "
        "`ss_base_model_version`, `modelspec.architecture`) belongs to a different family than the one the "
        "tensor shapes fit (for example cross-attention width 768 is SD 1.x, 2048 is SDXL). Loading the LoRA "
        "onto the declared base fails with size mismatches, or silently does nothing in UIs that skip "
        "unmatched keys. The shapes are the truth; the declaration should be corrected.",
    ),
    FlagDoc(
        FlagCode.BASE_MODEL_NOT_A_REPO,
        WARNING,
        "the declared base model is not a Hub repo id",
        "`base_model_name_or_path` in adapter_config.json, or the card's `base_model`, names the base by a "
        "local path (`models/Qwen2_5-1_5b-Instruct`, `/root/.cache/...`, `D:\\...`), a URL or a placeholder "
        "such as `None`. The Hub cannot link the adapter to its base model, so it is missing from the base's "
        "model tree and from filters, and `AutoPeftModelForCausalLM.from_pretrained` fails because it loads "
        "the base from that value. lora-bot never copies such a value into a card; the fix is to write the "
        "Hub id of the base (`owner/name`, or a canonical id such as `gpt2`).",
    ),
    FlagDoc(
        FlagCode.ALPHA_MISSING,
        INFO,
        "no alpha is declared; loaders apply alpha = rank (scale 1)",
        "Nothing in the file or its config declares alpha (no `.alpha` tensors, no `lora_alpha`, no "
        "`ss_network_alpha`, no `lora_adapter_metadata`). diffusers, PEFT conversions, kohya and ComfyUI then "
        "use alpha = rank, a scale of 1. That is right for files trained that way; if the LoRA was trained "
        "with another alpha it will look too weak or too strong. With mixed ranks the loaders disagree, so "
        "the severity rises to warning.",
    ),
    FlagDoc(
        FlagCode.UNPAIRED_MODULE,
        ERROR,
        "a module has only one of its two LoRA factors",
        "A LoRA module needs both factors (down/A and up/B, or the full LoHa/LoKr set). This file has a "
        "module where one is missing, so loaders either raise a missing-key error or skip the module and the "
        "LoRA is silently incomplete. Usually the file was truncated by a conversion script or hand-edited.",
    ),
    FlagDoc(
        FlagCode.PAIR_SHAPE_MISMATCH,
        ERROR,
        "a module's factors have different ranks",
        "down/A has shape [r, in] and up/B has shape [out, r]; here the two r's differ (or a Tucker mid "
        "tensor does not fit). The product B·A cannot be computed, so every loader fails on this module.",
    ),
    FlagDoc(
        FlagCode.MIXED_RANK_UNDECLARED,
        WARNING,
        "modules have different ranks and nothing declares which",
        "The modules were saved at different ranks, but no `rank_pattern`, `alpha_pattern`, per-module `.alpha` "
        "or `ss_network_args` tells a loader so. Loaders that assume one rank for the whole file (older "
        "diffusers, vLLM's max_lora_rank, servers that pre-allocate) mis-scale some modules or refuse the file. "
        "Declaring the per-module ranks fixes it.",
    ),
    FlagDoc(
        FlagCode.UNKNOWN_KEYS,
        WARNING,
        "tensors whose names no LoRA format uses",
        "Some tensor names match no LoRA key pattern lora-bot knows (PEFT, diffusers, legacy attention "
        "processors, kohya, LyCORIS, ControlLoRA). Loaders skip such keys (ComfyUI logs `lora key not loaded`) "
        "or fail on them (diffusers: `keys have not been correctly renamed`), so that part of the adapter has "
        "no effect. Typical causes: a stray prefix such as `transformer.base_model.model.`, lowercase "
        "`lora_a`, or weights from another tool mixed in.",
    ),
    FlagDoc(
        FlagCode.DORA_PRESENT,
        INFO,
        "the adapter is DoRA, not plain LoRA",
        "The file holds DoRA magnitude vectors (`lora_magnitude_vector` in PEFT, `dora_scale` in "
        "LyCORIS/kohya). Loaders without DoRA support drop them with a warning and the result differs from "
        "training; diffusers drops LyCORIS `dora_scale` because the two implementations normalise along "
        "different axes. Rank conversion changes the norm DoRA normalises by, so lora-bot does not resize "
        "DoRA adapters.",
    ),
    FlagDoc(
        FlagCode.NON_LORA_ADAPTER,
        WARNING,
        "LoHa, LoKr or another adapter that is not a rank-r product",
        "LyCORIS LoHa (Hadamard product of two low-rank pairs), LoKr (Kronecker product) and similar adapters "
        "are not of the form B·A. Only LyCORIS-aware loaders (ComfyUI, A1111 with the extension) apply them; "
        "diffusers and PEFT fail. Their 'rank' is an inner dimension, not the rank of the update, and they "
        "cannot be resized in factor space.",
    ),
    FlagDoc(
        FlagCode.CORRUPT_HEADER,
        ERROR,
        "the file is not a valid safetensors file",
        "The safetensors header could not be read: the file is truncated or empty, the declared header length "
        "runs past the end, the JSON is malformed or not UTF-8, a tensor's dtype is unknown, or its offsets "
        "overlap, leave gaps or disagree with its shape. safetensors refuses to load most such files, and the "
        "rest (duplicate names, extra fields) load differently in different readers. The message names the "
        "first problem found; re-uploading the original file usually fixes it.",
    ),
    FlagDoc(
        FlagCode.NOT_INSPECTED,
        INFO,
        "lora-bot did not read this file: it is over one of lora-bot's own limits",
        "The file's safetensors header is larger than lora-bot reads for a LoRA adapter "
        "(MAX_ADAPTER_HEADER_BYTES in the README's Limits table), so it was not inspected. This is a limit "
        "of lora-bot, not a defect of the file: the format allows headers up to 100 MB, and nothing is said "
        "or proposed about the file. Only LoRAs on every expert of the largest MoE models come near it.",
    ),
    FlagDoc(
        FlagCode.PICKLE_ONLY,
        ERROR,
        "the weights exist only as a pickle file (.bin/.pt/.ckpt/.pth)",
        "This LoRA is stored only in a pickle-based format. Loading a pickle runs whatever code it contains, "
        "so it is unsafe to load from an untrusted repo, and newer libraries refuse it by default "
        "(`weights_only=True`). lora-bot never unpickles it and cannot inspect it. Converting it to "
        ".safetensors on a trusted machine makes it safe and inspectable.",
    ),
    FlagDoc(
        FlagCode.NOT_AN_ADAPTER,
        ERROR,
        "the file holds no LoRA tensors",
        "No tensor in the file matches a LoRA key pattern: it is a full model checkpoint, an embedding, or an "
        "empty file uploaded where a LoRA was expected. LoRA loaders fail with missing keys or load nothing.",
    ),
    FlagDoc(
        FlagCode.CONFIG_INVALID,
        ERROR,
        "adapter_config.json cannot be read",
        "adapter_config.json is not valid JSON, or `r`, `lora_alpha`, `rank_pattern` or `alpha_pattern` have "
        "the wrong type. PEFT's `PeftConfig.from_pretrained` fails before any weight is loaded.",
    ),
    FlagDoc(
        FlagCode.CARD_INVALID,
        WARNING,
        "the model card's YAML front matter cannot be parsed",
        "README.md starts a YAML metadata block that does not parse. The Hub ignores all of the card's metadata "
        "(base_model, tags, license), so the adapter is not linked to its base model and filters miss it. "
        "lora-bot never rewrites such a card; the owner has to fix the YAML.",
    ),
    FlagDoc(
        FlagCode.TARGET_MISSING_IN_BASE,
        WARNING,
        "adapter modules adapt layers the base does not have (`check`)",
        "`lora-bot check` mapped the adapter's modules onto the base's weights and some have no layer there "
        "(another model's names, more blocks than the base has, a vision tower the base lacks). PEFT and "
        "diffusers create LoRA layers only where the base has them and leave the rest of the file unused: "
        "the load succeeds, and that part of the adapter silently does nothing. When no module fits, loading "
        "fails instead (`Target modules ... not found in the base model`) and the severity is error.",
    ),
    FlagDoc(
        FlagCode.SHAPE_MISMATCH_BASE,
        ERROR,
        "an adapter module's widths differ from the base layer's (`check`)",
        "The base has the layer the module adapts, but with other in/out features: the adapter was trained on "
        "another size or family (an SD 1.5 LoRA, cross-attention in 768, on SDXL's 2048; a Wan 1.3B LoRA on "
        "Wan 14B). The loader builds the LoRA layer from the base layer's widths and fails copying the factors "
        "in: `size mismatch for ...lora_A.weight`. Use the adapter with the base it was trained on.",
    ),
    FlagDoc(
        FlagCode.UNMAPPED_NAMING,
        WARNING,
        "module names in an original-checkpoint naming the base does not use (`check`)",
        "The adapter names layers as the original checkpoint does (BFL/ComfyUI `double_blocks`, Wan "
        "`blocks.N.self_attn`, SD3 `joint_blocks`) and the base uses diffusers names. Loaders convert such names "
        "with per-family rules that lora-bot does not model, so `check` cannot say whether these modules "
        "apply: its verdict is `unknown` rather than a guess.",
    ),
    FlagDoc(
        FlagCode.PATTERN_UNCHECKED,
        WARNING,
        "a rank_pattern / alpha_pattern key was not evaluated",
        "A key of `rank_pattern` or `alpha_pattern` is a regex lora-bot does not run: a backreference, a "
        "lookaround, an inline flag, or a key too long or too large once its repeats are expanded. Such "
        "regexes can take exponential time in a backtracking matcher (PEFT's own loader included). The "
        "declared rank and alpha of the modules it could match are unknown, so lora-bot claims nothing "
        "about them and proposes no config change, card or variant for the file.",
    ),
)

CODES: dict[FlagCode, FlagDoc] = {c.code: c for c in _CODES}
assert set(CODES) == set(FlagCode), "every flag code has its entry, and only those"


def flag(code: FlagCode, message: str, severity: Severity | None = None) -> Flag:
    return Flag(code=code, severity=severity or CODES[code].severity, message=message)


def explain(code: str) -> str | None:
    entry = CODES.get(code)
    if entry is None:
        return None
    return f"{entry.code} ({entry.severity}): {entry.summary}\n\n{entry.explanation}"


def flag_table_markdown() -> str:
    """The README's table of flag codes, generated so the two never disagree."""
    rows = ["| code | severity | meaning |", "|---|---|---|"]
    rows += [f"| `{c.code}` | {c.severity} | {c.summary} |" for c in CODES.values()]
    return "\n".join(rows)
