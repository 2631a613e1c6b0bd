"""`lora-bot check` against the real loaders: each adapter/base pair is built with peft / diffusers /
transformers on tiny models, predicted by `bot.check` from the headers, then loaded for real — PEFT's
`PeftModel.from_pretrained`, diffusers' `lora_state_dict` + `load_lora_into_unet` / `load_lora_into_text_encoder`
(the pipeline's `load_lora_weights` path, kohya and SGM conversion included) — and the two must agree:
fails ↔ the loader raises; partial ↔ it loads with exactly the predicted number of modules left unused
(unexpected keys); loads ↔ no unexpected keys.

Run with `-s -p no:xdist` to see each pair as a table row (name, prediction, real outcome).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

import bot
from bot.core.compat import sgm_aliases
from bot.vocab import Verdict
from tests.helpers_adapters import tiny_llama_config, tiny_unet_config

ATTENTION = ["to_k", "to_q", "to_v", "to_out.0"]
LLM_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class Outcome:
    failed: bool
    ignored: int  # modules the loader left unused (unexpected keys, counted per module)
    detail: str

    @property
    def verdict(self) -> Verdict:
        if self.failed:
            return Verdict.FAILS
        return Verdict.PARTIAL if self.ignored else Verdict.LOADS


# ----------------------------------------------------------------------------------------- real loaders


def _llama(seed=0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(**overrides))


def peft_load(adapter: Path, base_model: torch.nn.Module) -> Outcome:
    """PeftModel.from_pretrained, then the same adapter through `load_adapter`, whose result names the
    unexpected keys (from_pretrained loads identically but does not return them)."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, str(adapter))
        result = model.load_adapter(str(adapter), adapter_name="probe")
    except Exception as error:  # noqa: BLE001 — the outcome under test
        return Outcome(True, 0, f"{type(error).__name__}: {str(error).splitlines()[0][:90]}")
    ignored = {k.rsplit(".lora_", 1)[0] for k in result.unexpected_keys if ".lora_" in k}
    return Outcome(False, len(ignored), f"{len(ignored)} modules unexpected" if ignored else "no warnings")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def diffusers_load(lora_file: Path, model: torch.nn.Module, component: str, sdxl: bool = False) -> Outcome:
    """What `pipe.load_lora_weights(file)` does for one component: the pipeline's `lora_state_dict`
    (kohya/SGM/legacy conversion) and `load_lora_into_unet` / `load_lora_into_text_encoder`."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    records = _Records()
    logger = logging.getLogger("diffusers")
    logger.addHandler(records)
    try:
        kwargs = {"unet_config": model.config} if component == "unet" else {}
        state_dict, alphas = pipeline.lora_state_dict(str(lora_file), **kwargs)[:2]
        if component == "unet":
            pipeline.load_lora_into_unet(state_dict, alphas, model, adapter_name="probe")
        else:
            pipeline.load_lora_into_text_encoder(
                state_dict, alphas, model, prefix=component, adapter_name="probe"
            )
    except Exception as error:  # noqa: BLE001 — the outcome under test
        return Outcome(True, 0, f"{type(error).__name__}: {str(error).splitlines()[0][:90]}")
    finally:
        logger.removeHandler(records)
    unexpected = [m for m in records.messages if "unexpected keys" in m]
    ignored = {
        k.rsplit(".lora_", 1)[0] for m in unexpected for k in re.findall(r"[\w.]+\.lora_[AB][\w.]*", m)
    }
    return Outcome(False, len(ignored), f"{len(ignored)} modules unexpected" if ignored else "no warnings")


# ------------------------------------------------------------------------------------------- builders


def peft_adapter(directory: Path, model, r=4, targets=LLM_ATTENTION, **lora) -> Path:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights="gaussian", **lora
    )
    get_peft_model(model, config).save_pretrained(str(directory))
    return directory


def save_base(directory: Path, model, **kwargs) -> Path:
    model.save_pretrained(str(directory), **kwargs)
    return directory


def tiny_unet(**overrides):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**{**tiny_unet_config(), **overrides})


def sdxl_like_unet(cross_attention_dim=32):
    """Two resnets per level, as SD/SDXL have, so kohya's SGM block numbers apply."""
    return tiny_unet(
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
    )


def unet_lora_state_dict(unet, r=4, targets=ATTENTION) -> dict:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet.add_adapter(
        LoraConfig(r=r, lora_alpha=r, target_modules=list(targets), init_lora_weights="gaussian")
    )
    state_dict = get_peft_model_state_dict(unet)
    unet.delete_adapters("default")
    return state_dict


def diffusers_lora_file(path: Path, state_dict: dict, component="unet") -> Path:
    """train_text_to_image_lora.py's file: `unet.`-prefixed diffusers names (`lora.down`), no metadata."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    packed = StableDiffusionPipeline.pack_weights(convert_state_dict_to_diffusers(state_dict), component)
    save_file({k: v.contiguous() for k, v in packed.items()}, str(path))
    return path


def kohya_lora_file(path: Path, state_dict: dict, component="unet", sgm=False, unet_paths=()) -> Path:
    """diffusers' `--output_kohya_format` conversion; with `sgm`, block names as kohya writes SDXL files."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    kohya = convert_state_dict_to_kohya(StableDiffusionPipeline.pack_weights(state_dict, component))
    if sgm:
        renames = {d.replace(".", "_"): s.replace(".", "_") for s, d in sgm_aliases(unet_paths).items()}
        renamed = {}
        for key, value in kohya.items():
            module, _, suffix = key.partition(".")
            inner = module.removeprefix("lora_unet_")
            renamed[f"lora_unet_{renames.get(inner, inner)}.{suffix}"] = value
        kohya = renamed
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path))
    return path


def tiny_clip(hidden=32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=100,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def clip_lora_state_dict(model, r=4) -> dict:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=r, lora_alpha=r, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    inject_adapter_in_model(config, model)
    return get_peft_model_state_dict(model)


def pipeline_base(directory: Path, unet=None, text_encoder=None) -> Path:
    """A diffusers pipeline folder with the components given (model_index.json lists them)."""
    directory.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "StableDiffusionPipeline"}
    if unet is not None:
        unet.save_pretrained(str(directory / "unet"))
        index["unet"] = ["diffusers", "UNet2DConditionModel"]
    if text_encoder is not None:
        text_encoder.save_pretrained(str(directory / "text_encoder"))
        index["text_encoder"] = ["transformers", "CLIPTextModel"]
    (directory / "model_index.json").write_text(json.dumps(index))
    return directory


# ------------------------------------------------------------------------------------------------ pairs


def _agree(name: str, adapter: Path, base: Path, real: Outcome) -> None:
    predicted = bot.check(adapter, base=base)
    ignored = sum(1 for m in predicted.modules if m.status == "missing")
    print(f"\n| {name} | {predicted.verdict} (ignores {ignored}) | {real.verdict}: {real.detail} |", end="")
    assert predicted.verdict == real.verdict, (name, predicted.reason, real.detail)
    if real.verdict == Verdict.PARTIAL:
        assert ignored == real.ignored, (name, ignored, real.ignored)


# --- PEFT on language models


def test_peft_same_model_loads(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama())
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft llama → same llama", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_all_linear_layers_on_a_sharded_base(tmp_path):
    targets = [*LLM_ATTENTION, "gate_proj", "up_proj", "down_proj"]
    adapter = peft_adapter(tmp_path / "a", _llama(), targets=targets)
    base = save_base(tmp_path / "base", _llama(seed=1), max_shard_size="100KB")
    assert list(base.glob("*.index.json")), "the base is sharded"
    _agree("peft llama all-linear → sharded llama", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_more_layers_than_the_base_is_partial(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama(num_hidden_layers=4))
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft llama 4 layers → llama 2 layers", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_wider_model_fails(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama(hidden_size=96))
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft llama hidden 96 → hidden 64", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_other_kv_heads_fails(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama(num_key_value_heads=4))
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft llama kv 4 heads → kv 2 heads", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_mlp_of_another_size_fails(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama(intermediate_size=256), targets=["gate_proj", "down_proj"])
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft llama mlp 256 → mlp 128", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_facechain_config_rank_fails(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama())
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft FaceChain r=8 config, rank-4 weights", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_other_family_without_the_targets_fails(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    def gpt2():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=64))

    adapter = peft_adapter(tmp_path / "a", _llama())
    base = save_base(tmp_path / "base", gpt2())
    _agree("peft llama → gpt2 (no q_proj)", adapter, base, peft_load(adapter, gpt2()))


def test_peft_other_family_with_the_same_names_and_widths_loads(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def qwen2():
        torch.manual_seed(0)
        config = Qwen2Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=256,
        )
        return Qwen2ForCausalLM(config)

    adapter = peft_adapter(tmp_path / "a", _llama())
    base = save_base(tmp_path / "base", qwen2())
    _agree("peft llama → qwen2 of the same widths", adapter, base, peft_load(adapter, qwen2()))


def test_peft_embedding_lora_of_another_vocabulary_fails(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama(vocab_size=300), targets=["embed_tokens", "q_proj"])
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft embed_tokens vocab 300 → vocab 256", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_embedding_lora_same_vocabulary_loads(tmp_path):
    adapter = peft_adapter(tmp_path / "a", _llama(), targets=["embed_tokens", "q_proj"])
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft embed_tokens → same llama", adapter, base, peft_load(adapter, _llama(seed=1)))


def test_peft_unet_adapter_on_a_language_model_fails(tmp_path):
    adapter = peft_adapter(tmp_path / "a", tiny_unet(), targets=ATTENTION)
    base = save_base(tmp_path / "base", _llama(seed=1))
    _agree("peft unet adapter → llama", adapter, base, peft_load(adapter, _llama(seed=1)))


# --- diffusers on UNets and text encoders


def test_diffusers_unet_lora_on_its_unet_loads(tmp_path):
    lora = diffusers_lora_file(tmp_path / "lora.safetensors", unet_lora_state_dict(tiny_unet()))
    base = pipeline_base(tmp_path / "base", unet=tiny_unet())
    _agree("diffusers unet lora → same unet", lora, base, diffusers_load(lora, tiny_unet(), "unet"))


def test_diffusers_unet_lora_on_a_sharded_unet_loads(tmp_path):
    lora = diffusers_lora_file(tmp_path / "lora.safetensors", unet_lora_state_dict(tiny_unet()))
    base = tmp_path / "base"
    pipeline_base(base)
    tiny_unet().save_pretrained(str(base / "unet"), max_shard_size="50KB")
    assert list((base / "unet").glob("*.index.json")), "the unet is sharded"
    _agree("diffusers unet lora → sharded unet", lora, base, diffusers_load(lora, tiny_unet(), "unet"))


def test_sd15_like_lora_on_sdxl_like_cross_attention_fails(tmp_path):
    """The SD 1.5 LoRA in an SDXL pipeline: attn2.to_k reads 768 wide there and 2048 here."""
    lora = diffusers_lora_file(
        tmp_path / "lora.safetensors", unet_lora_state_dict(tiny_unet(cross_attention_dim=32))
    )
    base = pipeline_base(tmp_path / "base", unet=tiny_unet(cross_attention_dim=48))
    real = diffusers_load(lora, tiny_unet(cross_attention_dim=48), "unet")
    _agree("diffusers unet cross 32 → unet cross 48", lora, base, real)


def test_unet_lora_with_more_blocks_than_the_base_is_partial(tmp_path):
    lora = diffusers_lora_file(tmp_path / "lora.safetensors", unet_lora_state_dict(sdxl_like_unet()))
    base = pipeline_base(tmp_path / "base", unet=tiny_unet())
    _agree(
        "diffusers unet 2 layers/block → 1 layer/block", lora, base, diffusers_load(lora, tiny_unet(), "unet")
    )


def test_kohya_names_on_a_diffusers_unet_load(tmp_path):
    lora = kohya_lora_file(tmp_path / "lora.safetensors", unet_lora_state_dict(tiny_unet()))
    base = pipeline_base(tmp_path / "base", unet=tiny_unet())
    _agree(
        "kohya (down_blocks names) → diffusers unet", lora, base, diffusers_load(lora, tiny_unet(), "unet")
    )


def test_kohya_sgm_names_on_a_diffusers_unet_load(tmp_path):
    unet = sdxl_like_unet()
    paths = [n for n, _ in unet.named_modules()]
    lora = kohya_lora_file(
        tmp_path / "lora.safetensors", unet_lora_state_dict(unet), sgm=True, unet_paths=paths
    )
    assert "input_blocks" in str(
        json.loads((tmp_path / "lora.safetensors").read_bytes()[8:].split(b"}}", 1)[0] + b"}}")
    )
    base = pipeline_base(tmp_path / "base", unet=sdxl_like_unet())
    real = diffusers_load(lora, sdxl_like_unet(), "unet", sdxl=True)
    _agree("kohya SGM input_blocks names → diffusers unet", lora, base, real)


def test_kohya_sgm_names_on_a_narrower_unet_fail(tmp_path):
    unet = sdxl_like_unet(cross_attention_dim=48)
    paths = [n for n, _ in unet.named_modules()]
    lora = kohya_lora_file(
        tmp_path / "lora.safetensors", unet_lora_state_dict(unet), sgm=True, unet_paths=paths
    )
    base = pipeline_base(tmp_path / "base", unet=sdxl_like_unet())
    real = diffusers_load(lora, sdxl_like_unet(), "unet", sdxl=True)
    _agree("kohya SGM cross 48 → unet cross 32", lora, base, real)


def test_text_encoder_lora_on_its_text_encoder_loads(tmp_path):
    lora = diffusers_lora_file(
        tmp_path / "lora.safetensors", clip_lora_state_dict(tiny_clip()), "text_encoder"
    )
    base = pipeline_base(tmp_path / "base", unet=tiny_unet(), text_encoder=tiny_clip())
    _agree("text encoder lora → same CLIP", lora, base, diffusers_load(lora, tiny_clip(), "text_encoder"))


def test_text_encoder_lora_on_a_wider_text_encoder_fails(tmp_path):
    lora = diffusers_lora_file(
        tmp_path / "lora.safetensors", clip_lora_state_dict(tiny_clip(32)), "text_encoder"
    )
    base = pipeline_base(tmp_path / "base", unet=tiny_unet(), text_encoder=tiny_clip(48))
    real = diffusers_load(lora, tiny_clip(48), "text_encoder")
    _agree("text encoder lora hidden 32 → CLIP hidden 48", lora, base, real)


def test_kohya_text_encoder_names_on_a_text_encoder_load(tmp_path):
    lora = kohya_lora_file(tmp_path / "lora.safetensors", clip_lora_state_dict(tiny_clip()), "text_encoder")
    base = pipeline_base(tmp_path / "base", unet=tiny_unet(), text_encoder=tiny_clip())
    _agree("kohya lora_te_ names → CLIP", lora, base, diffusers_load(lora, tiny_clip(), "text_encoder"))


def test_unet_lora_on_an_sd3_transformer_fails(tmp_path):
    from diffusers import SD3Transformer2DModel

    from tests.helpers_adapters import tiny_sd3_config

    lora = diffusers_lora_file(tmp_path / "lora.safetensors", unet_lora_state_dict(tiny_unet()))
    base = tmp_path / "base"
    pipeline_base(base)
    SD3Transformer2DModel(**tiny_sd3_config()).save_pretrained(str(base / "transformer"))
    # A UNet LoRA in an SD3 pipeline: diffusers' UNet loader on the SD3 transformer, as a user's script would.
    real = diffusers_load(lora, SD3Transformer2DModel(**tiny_sd3_config()), "unet")
    _agree("unet lora → SD3 transformer", lora, base, real)
