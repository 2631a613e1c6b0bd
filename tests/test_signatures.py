"""Base-model signatures (bot/core/signatures.py) against LoRAs named the way the real libraries name them.

Every family and size: the real diffusers / transformers class is built on the meta device with the
checkpoint's config (the generator's tables), a LoRA's keys and factor shapes are derived from its
named_modules as PEFT names them (`lora_A` [r, in], `lora_B` [out, r]) and go through the package's own
key parser. PEFT itself runs on a few small models to prove that naming; kohya SGM (SDXL), BFL/kohya Flux and
Wan original names are checked against diffusers' own converters, which must map them onto real modules.
"""

from __future__ import annotations

import re
from functools import cache
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from bot.core import signature_data, signatures  # noqa: E402
from bot.core.formats import parse_keys  # noqa: E402
from bot.core.header import TensorInfo  # noqa: E402
from bot.core.signatures import ENTRIES, ObservedModule, match, normalise  # noqa: E402
from tests.signatures import generate  # noqa: E402

RANK = 4
ENTRY = {entry.label: entry for entry in ENTRIES}
# A layer inside a numbered block: what trainers adapt ("all-linear" over the blocks).
IN_BLOCK = re.compile(
    r"(^|\.)(blocks|layers|layer|h|transformer_blocks|single_transformer_blocks|resnets|attentions"
    r"|double_stream_blocks|single_stream_blocks|joint_blocks|double_layers|single_layers)"
    r"\.\d+\."
)


@cache
def model_widths(table: str) -> dict[str, tuple[int, int]]:
    """The real model's own layers (no alternate names): module path → (in, out)."""
    return generate.ALL_TABLES[table].build()


def _info(name: str, shape: tuple[int, ...]) -> TensorInfo:
    return TensorInfo(name=name, dtype="F32", shape=shape, data_offsets=(0, 4))


def peft_keys(widths, prefix: str, keep=lambda name: True) -> dict[str, TensorInfo]:
    """The tensors a PEFT / diffusers LoRA on these layers saves."""
    tensors = {}
    for name, (fan_in, fan_out) in widths.items():
        if keep(name):
            tensors[f"{prefix}{name}.lora_A.weight"] = _info(f"{prefix}{name}.lora_A.weight", (RANK, fan_in))
            tensors[f"{prefix}{name}.lora_B.weight"] = _info(f"{prefix}{name}.lora_B.weight", (fan_out, RANK))
    return tensors


def kohya_keys(widths, prefix: str) -> dict[str, TensorInfo]:
    """kohya sd-scripts tensors: `<prefix><path with '_'>.lora_down.weight`, `.lora_up.weight`, `.alpha`."""
    tensors = {}
    for name, (fan_in, fan_out) in widths.items():
        module = prefix + name.replace(".", "_")
        tensors[f"{module}.lora_down.weight"] = _info(f"{module}.lora_down.weight", (RANK, fan_in))
        tensors[f"{module}.lora_up.weight"] = _info(f"{module}.lora_up.weight", (fan_out, RANK))
        tensors[f"{module}.alpha"] = _info(f"{module}.alpha", ())
    return tensors


def observed(tensors) -> list[ObservedModule]:
    """What the engine hands the matcher: the package's parsed modules and the widths their factors show."""
    return [ObservedModule(m.name, m.in_features, m.out_features) for m in parse_keys(tensors).modules]


def in_blocks(table: str) -> dict[str, tuple[int, int]]:
    return {n: w for n, w in model_widths(table).items() if IN_BLOCK.search(n)}


def alternates(table: str) -> dict[str, tuple[int, int]]:
    own = model_widths(table)
    return {n: w for n, w in generate.ALL_TABLES[table].widths().items() if n not in own}


# -------------------------------------------------------------------------------------- every family, size

DIFFUSION_PREFIX = {"sd1": "unet.", "sd2": "unet.", "sdxl": "unet."}
DIFFUSION_CASES = list(generate.DIFFUSION_ENTRIES)
# Block-only LoRAs of these fit another family's blocks exactly, so the family stays unnamed.
CROSS_FAMILY_TWINS = {"LTX-Video 13B": "LTX-2"}


@pytest.mark.parametrize("entry", DIFFUSION_CASES, ids=lambda e: e.label)
def test_every_diffusion_base_is_recognised_from_all_its_layers(entry):
    """A LoRA on every layer of the denoiser names the entry (and only entries the shapes cannot split)."""
    table = entry.components["denoiser"]
    prefix = DIFFUSION_PREFIX.get(entry.family, "transformer.")
    found = match(observed(peft_keys(model_widths(table), prefix)))
    assert found.family == entry.family, found.evidence
    assert entry.label in found.entries, found.evidence
    assert set(entry.repo_ids) <= set(found.candidates)
    assert found.fitted == found.total


@pytest.mark.parametrize("entry", [e for e in DIFFUSION_CASES if not e.variant_of], ids=lambda e: e.label)
def test_block_only_loras_name_the_family(entry):
    """The usual LoRA adapts only the blocks, and still names the family."""
    table = entry.components["denoiser"]
    prefix = DIFFUSION_PREFIX.get(entry.family, "diffusion_model.")
    found = match(observed(peft_keys(in_blocks(table), prefix)))
    assert entry.label in found.entries, found.evidence
    if entry.label in CROSS_FAMILY_TWINS:  # model-families.md: LTX-Video 13B has LTX-2's video-stream shapes
        assert (found.family, set(found.entries)) == (None, {entry.label, CROSS_FAMILY_TWINS[entry.label]})
    else:
        assert found.family == entry.family, found.evidence


@cache
def cut_llm_widths(table: str) -> dict[str, tuple[int, int]]:
    """An LLM with its real widths but 3 layers: building 80-layer towers for every size costs seconds."""
    return generate.ALL_TABLES[table].build(layers=3)


@pytest.mark.parametrize("entry", generate.LLM_ENTRIES, ids=lambda e: e.label)
def test_every_llm_size_is_recognised(entry):
    widths = {n: w for n, w in cut_llm_widths(entry.components["model"]).items() if IN_BLOCK.search(n)}
    found = match(observed(peft_keys(widths, "base_model.model.")))
    assert found.family == "llm", found.evidence
    assert entry.label in found.entries, found.evidence
    assert set(entry.repo_ids) <= set(found.candidates)


# ---------------------------------------------------------------------------------------- ambiguity classes


def _labels(found) -> set[str]:
    return set(found.entries)


def _attention_only(table):
    return {n: w for n, w in in_blocks(table).items() if re.search(r"self_attn\.[qkvo]_proj$", n)}


def test_ambiguity_classes_return_every_member():
    flux = match(observed(peft_keys(in_blocks("flux1-dev"), "transformer.")))
    assert flux.family == "flux1"
    assert _labels(flux) == {"FLUX.1 dev / Kontext / Krea", "FLUX.1 schnell"}
    assert {
        "black-forest-labs/FLUX.1-dev",
        "black-forest-labs/FLUX.1-schnell",
        "black-forest-labs/FLUX.1-Kontext-dev",
        "black-forest-labs/FLUX.1-Krea-dev",
    } <= set(flux.candidates)
    assert "HunyuanVideo" in flux.evidence  # ruled out by its 20 + 40 blocks, and the evidence says so

    wan = match(observed(peft_keys(in_blocks("wan-14b-t2v"), "transformer.")))
    assert _labels(wan) == {"Wan 14B T2V (2.1, 2.2 A14B high / low)", "Wan2.2 I2V-A14B (high / low)"}
    wan_i2v = match(observed(peft_keys(in_blocks("wan-14b-i2v-2.1"), "transformer.")))  # has add_k_proj
    assert _labels(wan_i2v) == {"Wan2.1 I2V / FLF2V 14B"}

    sdxl = match(observed(peft_keys(in_blocks("unet-sdxl"), "unet.")))
    assert _labels(sdxl) == {"SDXL base (and fine-tunes: Pony, Illustrious, NoobAI, Playground v2.5)"}
    assert "Laxhar/noobai-XL-1.1" in sdxl.candidates

    llama8 = match(observed(peft_keys(in_blocks("llama3-8b"), "base_model.model.")))
    assert _labels(llama8) >= {"Llama-3 8B", "Mistral 7B v0.1 / v0.2"}
    assert "meta-llama/Llama-3.1-8B-Instruct" in llama8.candidates  # instruct and base together

    big = match(observed(peft_keys(_attention_only("llama3-70b"), "base_model.model.")))
    assert _labels(big) == {"Llama-2 70B", "Llama-3 70B", "Qwen2 / 2.5 72B"}
    big_mlp = match(observed(peft_keys(in_blocks("llama3-70b"), "base_model.model.")))
    assert "Qwen2 / 2.5 72B" not in _labels(big_mlp)  # the MLP (29568) separates Qwen

    nemo = match(observed(peft_keys(_attention_only("mistral-nemo"), "base_model.model.")))
    assert _labels(nemo) == {"Mistral NeMo 12B", "Mistral Small 24B"}
    nemo_mlp = match(observed(peft_keys(in_blocks("mistral-nemo"), "base_model.model.")))
    assert _labels(nemo_mlp) == {"Mistral NeMo 12B"}


def test_chroma_is_named_by_its_own_layers_and_otherwise_falls_in_the_flux_class():
    shared = {n: w for n, w in in_blocks("chroma").items() if "transformer_blocks" in n}
    blocks = match(observed(peft_keys(shared, "transformer.")))
    assert blocks.family == "flux1"
    whole = match(observed(peft_keys(model_widths("chroma"), "transformer.")))
    assert (whole.family, whole.entries) == ("chroma", ("Chroma",))


def test_sizes_are_told_apart():
    klein4 = match(observed(peft_keys(in_blocks("flux2-klein-4b"), "transformer.")))
    assert klein4.entries == ("FLUX.2 klein 4B",) and klein4.family == "flux2"
    medium = match(observed(peft_keys(in_blocks("sd35-large"), "transformer.")))
    assert medium.entries == ("SD3.5 large",)
    qwen3 = match(observed(peft_keys(in_blocks("qwen3-4b"), "base_model.model.")))
    assert qwen3.entries == ("Qwen3 4B",)


# ----------------------------------------------------------------------------------------- subsets, misfits


def test_a_lora_on_a_subset_of_blocks_still_matches():
    down2 = {n: w for n, w in in_blocks("unet-sdxl").items() if n.startswith("down_blocks.2.")}
    found = match(observed(peft_keys(down2, "unet.")))
    assert found.family == "sdxl", found.evidence
    layers = {
        n: w for n, w in _attention_only("qwen2.5-14b").items() if re.match(r"model\.layers\.[0-3]\.", n)
    }
    found = match(observed(peft_keys(layers, "base_model.model.")))
    assert found.family == "llm" and {"Qwen2.5 14B", "Qwen2.5 32B"} <= set(found.entries), found.evidence
    layers = {n: w for n, w in in_blocks("qwen2.5-14b").items() if re.match(r"model\.layers\.[0-3]\.", n)}
    assert match(observed(peft_keys(layers, "base_model.model."))).entries == ("Qwen2.5 14B",)  # MLP 13824


def test_one_wrong_width_is_not_that_family():
    widths = dict(in_blocks("flux1-dev"))
    widths["transformer_blocks.7.attn.to_k"] = (3072, 3000)
    found = match(observed(peft_keys(widths, "transformer.")))
    assert found.family is None and not found.candidates
    assert found.fitted == found.total - 1
    assert "transformer.transformer_blocks.7.attn.to_k" in found.evidence


def test_architectures_outside_the_vocabulary_get_none():
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPVisionConfig, CLIPVisionModel

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.v_proj, self.fc = (
                torch.nn.Linear(1000, 1000),
                torch.nn.Linear(1000, 1000),
                torch.nn.Linear(1000, 4000),
            )

    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(Block() for _ in range(4))

    with torch.device("meta"):
        custom = Custom()
        vision = CLIPVisionModel(CLIPVisionConfig())
        made_up_dit = FluxTransformer2DModel(
            num_layers=2,
            num_single_layers=4,
            num_attention_heads=8,
            attention_head_dim=125,
            joint_attention_dim=1000,
        )
    for model, targets in ((custom, ["q_proj", "v_proj", "fc"]), (vision, ["q_proj", "v_proj"])):
        lora = get_peft_model(model, LoraConfig(r=RANK, target_modules=targets))
        state = {k: _info(k, tuple(v.shape)) for k, v in get_peft_model_state_dict(lora).items()}
        found = match(observed(state))
        assert found.family is None and not found.candidates, found.evidence
    dit = {
        n: (m.in_features, m.out_features)
        for n, m in made_up_dit.named_modules()
        if isinstance(m, torch.nn.Linear) and IN_BLOCK.search(n)
    }
    found = match(observed(peft_keys(dit, "transformer.")))
    assert found.family is None and not found.candidates, found.evidence
    assert match([]).family is None


# ---------------------------------------------------------------------------------- the libraries' naming


def test_peft_names_on_real_models():
    """PEFT itself on small real-width models: an LLM with Llama-3-8B widths, SD1.5's UNet, Gemma 3 4B."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, LlamaConfig, LlamaForCausalLM

    def saved(model, targets, prefix=""):
        lora = get_peft_model(model, LoraConfig(r=RANK, target_modules=targets))
        return {
            prefix + k: _info(prefix + k, tuple(v.shape)) for k, v in get_peft_model_state_dict(lora).items()
        }

    with torch.device("meta"):
        llama = LlamaForCausalLM(
            LlamaConfig(
                hidden_size=4096,
                intermediate_size=14336,
                num_hidden_layers=2,
                num_attention_heads=32,
                num_key_value_heads=8,
                vocab_size=128256,
            )
        )
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
        gemma = Gemma3ForConditionalGeneration(
            Gemma3Config(
                text_config=dict(
                    hidden_size=2560,
                    num_hidden_layers=2,
                    num_attention_heads=8,
                    num_key_value_heads=4,
                    head_dim=256,
                    intermediate_size=10240,
                    vocab_size=262208,
                ),
                vision_config=dict(
                    hidden_size=1152,
                    intermediate_size=4304,
                    num_hidden_layers=2,
                    num_attention_heads=16,
                    image_size=896,
                    patch_size=14,
                    vision_use_head=False,
                ),
            )
        )
    state = saved(llama, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight" in state
    found = match(observed(state))
    assert found.family == "llm" and "meta-llama/Meta-Llama-3-8B" in found.candidates, found.evidence

    # diffusers saves the PEFT state of a UNet under `unet.` (loaders/lora_base.py)
    found = match(observed(saved(unet, ["to_q", "to_k", "to_v", "to_out.0"], prefix="unet.")))
    assert found.family == "sd1", found.evidence

    found = match(observed(saved(gemma, ["q_proj", "k_proj", "v_proj", "o_proj"])))
    assert found.family == "llm" and found.entries == ("Gemma-3 4B",), found.evidence
    # transformers 4.x (before 4.52) spelled the same tower `language_model.model.layers`
    old = {
        k.replace("model.language_model.", "language_model.model."): v
        for k, v in peft_keys(_attention_only("gemma3-4b"), "base_model.model.").items()
    }
    assert match(observed(old)).entries == ("Gemma-3 4B",)


def test_kohya_sd1_names_from_diffusers_converter_and_text_encoders():
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    unet = {
        k: torch.empty(v.shape, device="meta")
        for k, v in peft_keys(
            {n: w for n, w in in_blocks("unet-sd1").items() if "attn" in n}, "unet."
        ).items()
    }
    te = {
        k: torch.empty(v.shape, device="meta")
        for k, v in peft_keys(in_blocks("clip-vit-l"), "text_encoder.").items()
    }
    kohya = convert_state_dict_to_kohya({**unet, **te})
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0") for k in kohya)
    found = match(observed({k: _info(k, tuple(v.shape)) for k, v in kohya.items()}))
    assert found.family == "sd1", found.evidence
    sd2_te = match(observed(kohya_keys(in_blocks("openclip-vit-h"), "lora_te_")))
    assert sd2_te.family == "sd2", sd2_te.evidence
    sdxl_te = match(
        observed(
            {
                **kohya_keys(in_blocks("clip-vit-l"), "lora_te1_"),
                **kohya_keys(in_blocks("openclip-vit-bigg"), "lora_te2_"),
                **kohya_keys(in_blocks("unet-sdxl"), "lora_unet_"),
            }
        )
    )
    assert sdxl_te.family == "sdxl", sdxl_te.evidence


def test_kohya_sdxl_sgm_names_match_and_diffusers_maps_them_onto_the_unet():
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    sgm = {
        n: w
        for n, w in alternates("unet-sdxl").items()
        if n.startswith(("input_blocks", "middle_block", "output_blocks")) and "transformer_blocks" in n
    }
    tensors = kohya_keys(sgm, "lora_unet_")
    found = match(observed(tensors))
    assert found.family == "sdxl" and found.fitted == found.total == len(sgm), found.evidence
    assert "input_blocks.4-8" in found.evidence

    mapped = _maybe_map_sgm_blocks_to_diffusers(dict.fromkeys(tensors), SimpleNamespace(layers_per_block=2))
    # then `_convert_unet_lora_key` renames the block lists (lora_conversion_utils.py, "input.blocks" etc.)
    renames = (("input_blocks", "down_blocks"), ("middle_block", "mid_block"), ("output_blocks", "up_blocks"))
    modules = set()
    for key in mapped:
        module = key.split(".")[0].removeprefix("lora_unet_")
        for old, new in renames:
            module = module.replace(old, new)
        modules.add(module)
    folded = {n.replace(".", "_") for n in model_widths("unet-sdxl")}
    assert modules <= folded, sorted(modules - folded)[:3]
    assert normalise("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") == (
        "denoiser",
        "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
    )


def test_flux_bfl_and_kohya_names_match_and_diffusers_converts_them():
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    bfl = {
        n: w
        for n, w in alternates("flux1-dev").items()
        if re.match(
            r"(double_blocks\.\d+\.(img|txt)_(attn\.(qkv|proj)|mlp\.[02]|mod\.lin)"
            r"|single_blocks\.\d+\.(linear[12]|modulation\.lin))$",
            n,
        )
    }
    assert len(bfl) == 19 * 10 + 38 * 3
    kohya = kohya_keys(bfl, "lora_unet_")
    found = match(observed(kohya))
    assert found.family == "flux1" and found.fitted == len(bfl), found.evidence
    assert "double_blocks.0-18, single_blocks.0-37" in found.evidence
    comfy = match(observed(peft_keys(bfl, "diffusion_model.")))
    assert comfy.family == "flux1", comfy.evidence

    real = {k: torch.zeros(v.shape) for k, v in kohya.items()}
    converted = _convert_kohya_flux_lora_to_diffusers(real)
    modules = {k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in converted}
    assert modules <= set(model_widths("flux1-dev")), sorted(modules - set(model_widths("flux1-dev")))[:3]
    assert normalise("lora_unet_double_blocks_0_img_attn_qkv") == ("denoiser", "double_blocks.0.img_attn.qkv")


def test_wan_original_and_musubi_names_match_and_diffusers_converts_them():
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    original = {
        n: w
        for n, w in alternates("wan-1.3b").items()
        if re.match(r"blocks\.\d+\.((self|cross)_attn\.[qkvo]|ffn\.[02])$", n)
    }
    musubi = match(observed(kohya_keys(original, "lora_unet_")))
    assert musubi.family == "wan" and musubi.entries == ("Wan2.1 1.3B",), musubi.evidence
    comfy = {k: torch.zeros(v.shape) for k, v in peft_keys(original, "diffusion_model.").items()}
    found = match(observed({k: _info(k, tuple(v.shape)) for k, v in comfy.items()}))
    assert found.entries == ("Wan2.1 1.3B",)
    converted = _convert_non_diffusers_wan_lora_to_diffusers(comfy)
    modules = {k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in converted}
    assert modules <= set(model_widths("wan-1.3b")), sorted(modules - set(model_widths("wan-1.3b")))[:3]
    assert normalise("diffusion_model.blocks.0.self_attn.q") == ("denoiser", "blocks.0.self_attn.q")


def test_normalise_reads_every_prefix():
    assert normalise("base_model.model.model.layers.3.self_attn.q_proj") == (
        "model",
        "model.layers.3.self_attn.q_proj",
    )
    assert normalise("transformer.single_transformer_blocks.5.proj_mlp") == (
        "denoiser",
        "single_transformer_blocks.5.proj_mlp",
    )
    assert normalise("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") == (
        "text_encoder",
        "text_model.encoder.layers.0.self_attn.q_proj",
    )
    assert normalise("base_model.model.transformer.h.0.attn.c_attn") == (
        "model",
        "transformer.h.0.attn.c_attn",
    )
    assert normalise("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0") == (
        "denoiser",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
    )


def test_loha_modules_with_one_known_width_match_on_name():
    widths = in_blocks("flux1-dev")
    modules = [ObservedModule("transformer." + n, None, fan_out) for n, (_, fan_out) in widths.items()]
    assert match(modules).family == "flux1"


# ------------------------------------------------------------------------------------- data, README, speed


def test_committed_tables_are_current():
    """Regenerate a few cheap tables from the real classes and compare with the committed data."""
    for key in ("clip-vit-l", "unet-sd1", "flux1-dev", "wan-1.3b", "qwen3-0.6b", "gemma3-1b"):
        rows = generate.compact(generate.ALL_TABLES[key].widths())
        assert signature_data.TABLES[key][3] == rows, f"{key}: run python -m tests.signatures.generate"
    committed = {
        (f, label, repos, components, variant)
        for f, label, repos, components, variant in signature_data.ENTRIES
    }
    assert committed == {
        (e.family, e.label, e.repo_ids, tuple(e.components.items()), e.variant_of) for e in generate.ENTRIES
    }
    assert dict(signatures.FAMILIES) == generate.FAMILIES


def test_readme_rows_cover_the_vocabulary():
    rows = signatures.recognised_families()
    assert [r.family for r in rows] == list(signatures.FAMILIES)
    assert "black-forest-labs/FLUX.1-dev" in next(r for r in rows if r.family == "flux1").repo_ids
    assert signatures.recognised_markdown().count("\n") == len(rows) + 1
