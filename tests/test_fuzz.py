"""Fuzzing the parsers that read strangers' bytes: the safetensors header parser, the card editor, the config
readers (adapter_config.json, config.yaml) and the rank_pattern matcher (against Python's `re`).

Hypothesis mutates the seed corpus kept in tests/fuzz/corpus/ (the hostile cases of test_hostile_files.py and
a few cards) and generates fresh inputs. Runs are derandomized (a fixed seed), so CI is stable, and bounded by
`max_examples`. `FUZZ_EXAMPLES=N` raises the bound for a longer local run. The property everywhere: the
documented outcome or the documented one-line error, never another exception."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import ConfigError, load_config_text
from bot.core.card import parse_card
from bot.core.header import HeaderError, HeaderTooLarge, parse_header
from bot.core.patterns import PatternRefused, compile_key, key_matches
from bot.core.peft_config import ConfigError as PeftConfigError
from bot.core.peft_config import parse_peft_config
from bot.proposals.card import CardAdditions, apply_additions

CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def seeds(folder: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((CORPUS / folder).iterdir())]


@st.composite
def mutated(draw, corpus: list[bytes]) -> bytes:
    """A seed with a few byte-level mutations: flips, cuts, insertions, duplicated spans."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "duplicate", "length"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 64))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "duplicate":
            data[position:position] = data[position : position + draw(st.integers(1, 64))]
        elif action == "length" and len(data) >= 8:
            data[:8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    return bytes(data)


def texts(folder: str):
    return st.one_of(
        mutated(seeds(folder)).map(lambda b: b.decode("utf-8", errors="replace")),
        st.text(max_size=300),
    )


@FUZZ
@given(
    raw=st.one_of(mutated(seeds("headers")), st.binary(max_size=300)),
    declared_size=st.none() | st.integers(0, 2**40),
)
def test_fuzz_header_parser_returns_a_header_or_a_header_error(raw, declared_size):
    try:
        header = parse_header(raw, declared_size)
    except (HeaderError, HeaderTooLarge) as error:  # a defect of the file, or over the bot's cap
        assert str(error) and "\n" not in str(error)
        return
    assert all(isinstance(name, str) for name in header.tensors)


@FUZZ
@given(text=texts("configs"))
def test_fuzz_adapter_config_reader_returns_a_config_or_a_config_error(text):
    try:
        config = parse_peft_config(text)
    except PeftConfigError as error:
        assert str(error)
        return
    for name in ("model.layers.0.self_attn.q_proj", "base_model.model.x.y"):
        rank = config.declared_rank(name)
        assert rank is None or isinstance(rank, int)


@FUZZ
@given(text=texts("configs") | texts("cards"))
def test_fuzz_config_yaml_reader_returns_a_config_or_a_config_error(text):
    try:
        load_config_text(text)
    except ConfigError as error:
        assert str(error) and "\n" not in str(error)


TAG = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@FUZZ
@given(
    text=texts("cards"),
    keys=st.dictionaries(
        st.sampled_from(["base_model", "library_name", "base_model_relation"]), TAG, max_size=3
    ),
    tags=st.lists(TAG, max_size=3, unique=True),
    details=st.none() | st.just("## LoRA details\n\n| a |\n"),
)
def test_fuzz_card_editor_adds_exactly_the_additions_or_nothing(text, keys, tags, details):
    card = parse_card(text)  # never raises
    additions = CardAdditions(keys, tuple(t for t in tags if t not in (card.data.get("tags") or [])), details)
    edited = apply_additions(text, additions, "owner/name")
    if edited is None:
        return
    new = parse_card(edited)
    assert new.error is None
    for key, value in keys.items():
        assert new.data.get(key) == value
    assert text[card.body_start :] in edited, "the old body is kept byte for byte"


PATTERN_ATOMS = [
    "a",
    "b",
    ".",
    "\\.",
    "q_proj",
    "[ab]",
    "[^a]",
    "\\d",
    "\\w",
    "(",
    ")",
    "|",
    "*",
    "+",
    "?",
    "{1,2}",
    "^",
    "$",
    "\\b",
]


@FUZZ
@given(
    atoms=st.lists(st.sampled_from(PATTERN_ATOMS), min_size=1, max_size=8),
    name=st.text(alphabet="ab.q_proj0\n", max_size=12),
)
def test_fuzz_pattern_matcher_agrees_with_python_re_where_it_answers(atoms, name):
    key = "".join(atoms)
    try:
        compiled = compile_key(key)
    except PatternRefused:
        return
    try:
        expected = re.match(rf"(.*\.)?({key})$", name) is not None
    except re.error:
        expected = name == key
    assert key_matches(compiled, name) == expected, (key, name)


@FUZZ
@given(
    keys=st.lists(st.text(alphabet="ab.q_1", min_size=1, max_size=6), min_size=1, max_size=6, unique=True),
    name=st.text(alphabet="ab.q_1\n", max_size=10),
)
def test_fuzz_pattern_table_is_peft_first_match(keys, name):
    from bot.core.patterns import PatternTable

    expected = next((i for i, key in enumerate(keys) if re.match(rf"(.*\.)?({key})$", name)), None)
    assert PatternTable(keys).first_match(name) == expected, (keys, name)


# Key names are matched by plain string tests for the suffixes nearly every file uses, and by the pattern list
# for the rest. The two must agree on every name, including the ones built to fool the shortcut: a suffix
# that an earlier pattern claims (`x.lora_A.lora_down.weight` is PEFT with an adapter named `lora_down`), an
# empty module, a newline.
_KEY_SEGMENTS = [
    "lora_A", "lora_B", "lora_down", "lora_up", "alpha", "weight", "bias", "lora_magnitude_vector",
    "lora_embedding_A", "lora_embedding_B", "processor", "to_q_lora", "down", "up", "lora", "lora_linear_layer",
    "hada_w1_a", "0", "x", "", "\n", "x\n",
]  # fmt: skip


def test_common_suffix_shortcut_agrees_with_the_patterns_on_every_short_name():
    from itertools import product

    from bot.core.formats import _match_suffix, _match_suffix_by_patterns

    names = [".".join(parts) for size in (1, 2, 3, 4) for parts in product(_KEY_SEGMENTS, repeat=size)]
    assert len(names) > 200_000
    differ = [n for n in names if _match_suffix(n) != _match_suffix_by_patterns(n)]
    assert differ == []
    assert _match_suffix("x.lora_A.lora_down.weight") == ("x", "ab", "down")  # the pattern list's answer


@FUZZ
@given(
    st.lists(st.sampled_from(_KEY_SEGMENTS) | st.text(max_size=12), min_size=1, max_size=7),
    st.sampled_from(".\n_"),
)
def test_common_suffix_shortcut_agrees_with_the_patterns(parts, joiner):
    from bot.core.formats import _match_suffix, _match_suffix_by_patterns

    name = joiner.join(parts)
    assert _match_suffix(name) == _match_suffix_by_patterns(name)
