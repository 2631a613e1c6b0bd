"""Base model and adapter type through the whole engine, as `inspect` and the card PR see them.

The LoRAs' names and widths come from the real model classes (the signature generator's tables, built on the
meta device) as PEFT and diffusers name them; declarations come from cards, adapter_config.json and trainer
metadata. What a user sees is checked: the family, the candidates, the repo id or its absence, the flags, and
what a card PR would write.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from test_signatures import IN_BLOCK, cut_llm_widths, in_blocks, model_widths

from bot.core.header import (
    SafetensorsHeader,
    TensorInfo,
)
from bot.core.inspect import FileEvidence, inspect_evidence
from bot.proposals.build import RepoFacts, card_proposal
from tests.signatures import generate

RANK = 4
FAR_FAMILY_REPO = {  # a declaration certainly outside the family: the mismatch case
    "sd1": "black-forest-labs/FLUX.1-dev",
}
DEFAULT_FAR_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def header_of(
    widths: dict[str, tuple[int, int]], prefix: str, extra: dict | None = None
) -> SafetensorsHeader:
    """A PEFT/diffusers LoRA header over these layers (offsets laid out back to back, as a writer would)."""
    tensors, offset = {}, 0
    for name, (fan_in, fan_out) in widths.items():
        for key, shape in (
            (f"{prefix}{name}.lora_A.weight", (RANK, fan_in)),
            (f"{prefix}{name}.lora_B.weight", (fan_out, RANK)),
        ):
            size = shape[0] * shape[1] * 2
            tensors[key] = TensorInfo(key, "BF16", shape, (offset, offset + size))
            offset += size
    for key, shape in (extra or {}).items():
        size = shape[0] * shape[1] * 2
        tensors[key] = TensorInfo(key, "BF16", shape, (offset, offset + size))
        offset += size
    return SafetensorsHeader(tensors=tensors, metadata={}, header_length=1000, file_size=None)


def inspect(header, card: dict | None = None, config: dict | None = None):
    card_text = None
    if card is not None:
        card_text = "---\n" + "".join(f"{k}: {v}\n" for k, v in card.items()) + "---\n# LoRA\n"
    return inspect_evidence(
        FileEvidence(
            path="lora.safetensors",
            header=header,
            card_text=card_text,
            adapter_config_text=json.dumps(config) if config is not None else None,
        )
    )


def card_pr_base(inspection, card_text: str | None = None) -> str | None:
    """What a card PR built from this inspection would write as base_model (None: writes none)."""
    facts = RepoFacts(
        "owner/lora",
        "a" * 40,
        (inspection,),
        {"README.md": card_text} if card_text else {},
        {},
        ("lora.safetensors",),
    )
    proposal = card_proposal(facts)
    if proposal is None:
        return None
    text = proposal.files[0].new_text
    return next(
        (line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("base_model: ")), None
    )


DIFFUSION = [e for e in generate.DIFFUSION_ENTRIES if not e.variant_of]
PREFIX = {"sd1": "unet.", "sd2": "unet.", "sdxl": "unet."}


@pytest.mark.parametrize("entry", DIFFUSION, ids=lambda e: e.label)
def test_every_diffusion_family_is_named_and_its_repo_only_when_certain(entry):
    header = header_of(in_blocks(entry.components["denoiser"]), PREFIX.get(entry.family, "transformer."))
    found = inspect(header)
    base = found.base_model
    twin = entry.label == "LTX-Video 13B"  # shares every block shape with LTX-2's video stream
    assert base.family == (None if twin else entry.family), base.evidence
    assert set(entry.repo_ids) <= set(base.candidates)
    # A repo id from the shapes alone only when they leave one checkpoint.
    assert base.repo_id == (base.candidates[0] if len(base.candidates) == 1 and not twin else None)
    assert card_pr_base(found) == base.repo_id


@pytest.mark.parametrize("entry", DIFFUSION, ids=lambda e: e.label)
def test_a_declaration_inside_the_class_names_the_repo_and_one_outside_is_a_mismatch(entry):
    header = header_of(in_blocks(entry.components["denoiser"]), PREFIX.get(entry.family, "transformer."))
    own = entry.repo_ids[-1]
    inside = inspect(header, card={"base_model": own}).base_model
    if entry.label != "LTX-Video 13B":
        assert (inside.family, inside.repo_id, inside.source) == (
            entry.family,
            own,
            "card base_model + shapes",
        )
    far = FAR_FAMILY_REPO.get(entry.family, DEFAULT_FAR_REPO)
    outside = inspect(header, card={"base_model": far})
    assert "base-model-mismatch" in outside.codes(), outside.base_model.evidence
    assert outside.base_model.repo_id != far
    assert card_pr_base(outside) is None  # a contradiction goes to the owner, never into a PR


@pytest.mark.parametrize("entry", generate.LLM_ENTRIES, ids=lambda e: e.label)
def test_every_llm_size_is_named_with_its_class(entry):
    widths = {n: w for n, w in cut_llm_widths(entry.components["model"]).items() if IN_BLOCK.search(n)}
    base = inspect(header_of(widths, "base_model.model.")).base_model
    assert base.family == "llm", base.evidence
    assert set(entry.repo_ids) <= set(base.candidates)


def test_flux_class_members_are_no_mismatch_and_chroma_declared_on_attention_is_allowed():
    attention = {n: w for n, w in in_blocks("flux1-dev").items() if ".attn." in n}
    for declared in (
        "black-forest-labs/FLUX.1-schnell",
        "black-forest-labs/FLUX.1-Kontext-dev",
        "black-forest-labs/FLUX.1-Krea-dev",
        "lodestones/Chroma",
    ):
        found = inspect(header_of(attention, "transformer."), card={"base_model": declared})
        assert "base-model-mismatch" not in found.codes(), (declared, found.flags)
        assert found.base_model.repo_id == declared


def test_sd15_declared_sdxl_names_the_module_and_both_widths():
    found = inspect(
        header_of(in_blocks("unet-sd1"), "unet."),
        card={"base_model": "stabilityai/stable-diffusion-xl-base-1.0"},
    )
    message = next(f.message for f in found.flags if f.code == "base-model-mismatch")
    assert "attn2.to_k is 768→" in message and "but 2048→" in message


# ------------------------------------------------------------------------------ outside the vocabulary


def test_an_architecture_outside_the_vocabulary_is_unknown_whatever_is_declared():
    toy = {f"model.layers.{i}.self_attn.q_proj": (1000, 1000) for i in range(4)}
    for declared in ("meta-llama/Llama-2-7b-hf", "black-forest-labs/FLUX.1-dev"):
        found = inspect(
            header_of(toy, "base_model.model."),
            config={"peft_type": "LORA", "r": 4, "lora_alpha": 4, "base_model_name_or_path": declared},
        )
        base = found.base_model
        assert (base.family, base.repo_id, base.source) == (None, None, "unknown")
        assert "base-model-mismatch" not in found.codes()  # unknown contradicts nothing
        assert card_pr_base(found) is None


def test_a_near_miss_is_not_a_match():
    # FLUX.1's block names with one width off: no family, not "probably FLUX".
    widths = dict(in_blocks("flux1-dev"))
    name = next(iter(widths))
    widths[name] = (widths[name][0] + 8, widths[name][1])
    base = inspect(header_of(widths, "transformer.")).base_model
    assert (base.family, base.repo_id) == (None, None)
    assert name in base.evidence


# ------------------------------------------------------------------------------ declarations checked


@pytest.mark.parametrize(
    "declared",
    [
        "models/Qwen2_5-1_5b-Instruct",
        "/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-7B",
        "D:\\models\\qwen",
        "None",
        "https://huggingface.co/Qwen/Qwen2.5-7B",
        "./output/checkpoint-500",
        "qwen2.5-7b.safetensors",
    ],
)
def test_a_declared_base_that_is_no_repo_id_is_flagged_and_never_written(declared):
    widths = {n: w for n, w in cut_llm_widths("qwen2-7b").items() if IN_BLOCK.search(n)}
    found = inspect(
        header_of(widths, "base_model.model."),
        config={"peft_type": "LORA", "r": 4, "lora_alpha": 4, "base_model_name_or_path": declared},
    )
    assert found.base_model.repo_id != declared
    assert "base-model-not-a-repo" in found.codes()
    card = "---\nbase_model: " + json.dumps(declared) + "\n---\n# x\n"
    facts = RepoFacts("owner/lora", "a" * 40, (found,), {"README.md": card}, {}, ("lora.safetensors",))
    proposal = card_proposal(facts)
    written = proposal.files[0].new_text if proposal else ""
    assert f"base_model:adapter:{declared}" not in written


def test_canonical_ids_without_an_owner_are_repo_ids():
    widths = {n: w for n, w in model_widths("gpt2").items() if ".h." in n}
    found = inspect(
        header_of(widths, "base_model.model."),
        config={"peft_type": "LORA", "r": 4, "lora_alpha": 4, "base_model_name_or_path": "gpt2"},
    )
    assert found.base_model.repo_id == "gpt2"
    assert "base-model-not-a-repo" not in found.codes()


# ------------------------------------------------------------------------------ adapter types


@pytest.mark.parametrize(
    "method, keys",
    [
        ("IA3", {"base_model.model.model.layers.0.self_attn.k_proj.ia3_l": (1, 64)}),
        ("VERA", {"base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_b": (1, 64)}),
        ("OFT", {"base_model.model.model.layers.0.self_attn.q_proj.oft_r": (8, 64)}),
    ],
)
def test_non_lora_peft_methods_are_named(method, keys):
    found = inspect(header_of({}, "", extra=keys), config={"peft_type": method, "r": 8})
    assert found.codes() == {"non-lora-adapter"}
    assert method in found.flags[0].message


def test_lora_shaped_data_under_unknown_names_is_unknown_keys_not_a_non_adapter():
    keys = {"model.layers.0.q_proj.lora_a": (4, 64), "model.layers.0.q_proj.lora_b": (64, 4)}
    found = inspect(header_of({}, "", extra=keys))
    assert "unknown-keys" in found.codes() and "not-an-adapter" not in found.codes()
    assert found.has_error  # nothing would load


def test_a_full_checkpoint_is_not_an_adapter():
    found = inspect(header_of({}, "", extra={"model.layers.0.q_proj.weight": (64, 64)}))
    assert found.codes() == {"not-an-adapter"}


def test_modules_to_save_heads_are_part_of_the_adapter():
    widths = {n: w for n, w in cut_llm_widths("qwen2-7b").items() if IN_BLOCK.search(n)}
    found = inspect(
        header_of(
            widths,
            "base_model.model.",
            extra={
                "base_model.model.score.weight": (2, 3584),
                "base_model.model.pre_classifier.weight": (3584, 3584),
            },
        )
    )
    assert "unknown-keys" not in found.codes()


def test_peft_loha_and_lokr_configs_declare_alpha_in_alpha():
    keys = {
        "base_model.model.model.layers.0.self_attn.q_proj.hada_w1_a": (64, 4),
        "base_model.model.model.layers.0.self_attn.q_proj.hada_w1_b": (4, 64),
        "base_model.model.model.layers.0.self_attn.q_proj.hada_w2_a": (64, 4),
        "base_model.model.model.layers.0.self_attn.q_proj.hada_w2_b": (4, 64),
    }
    found = inspect(header_of({}, "", extra=keys), config={"peft_type": "LOHA", "r": 4, "alpha": 16})
    assert (found.alpha, found.alpha_declared) == (16.0, True)
    assert "non-lora-adapter" in found.codes()


def test_lokr_factors_give_the_family():
    # SDXL attention as LyCORIS LoKr writes it: kron(w1 [a, b], w2 [c, d]) is [a·c, b·d].
    keys = {}
    for name, (fan_in, fan_out) in list(in_blocks("unet-sdxl").items())[:40]:
        key = "lora_unet_" + name.replace(".", "_")
        keys[f"{key}.lokr_w1"] = (8, 8)
        keys[f"{key}.lokr_w2"] = (fan_out // 8, fan_in // 8)
    found = inspect(header_of({}, "", extra=keys))
    assert found.base_model.family == "sdxl", found.base_model.evidence


def test_phi3_fused_projections_are_listed_by_their_names():
    widths = {n: w for n, w in cut_llm_widths("phi3-mini").items() if IN_BLOCK.search(n)}
    found = inspect(header_of(widths, "base_model.model."))
    assert {"qkv_proj", "gate_up_proj"} <= set(found.target_modules)
    assert "proj" not in found.target_modules
