"""Proposals as values: the card edit is minimal, the config fix is exact, repo text cannot inject markup."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from bot.core.card import parse_card
from bot.core.fingerprints import BaseModel
from bot.core.flags import Flag
from bot.core.inspect import FileInspection, ModuleReport
from bot.proposals.build import RepoFacts, build_proposals, card_proposal, fixed_config_text, flags_proposal
from bot.proposals.card import CardAdditions, apply_additions
from bot.proposals.model import FileChange, UnsafePath, parse_markers, render_marker
from bot.proposals.plan import BotThread, plan_repo
from bot.report.text import code_span, escape_markdown

ADDITIONS = CardAdditions(
    keys={"base_model": "org/base", "base_model_relation": "adapter"},
    tags=("lora", "base_model:adapter:org/base"),
    details="## LoRA details\n\n| file |\n|---|\n",
)


def inspection(
    path="adapter_model.safetensors",
    fmt="peft",
    ranks=(4,),
    names=None,
    flags=(),
    base_repo="org/base",
    family="sd1",
) -> FileInspection:
    names = names or [f"base_model.model.layer{i}.to_q" for i in range(len(ranks))]
    modules = tuple(
        ModuleReport(n, "lora", r, float(r), False, 320, 320, False)
        for n, r in zip(names, ranks, strict=True)
    )
    counts: dict[int, int] = {}
    for r in ranks:
        counts[r] = counts.get(r, 0) + 1
    rank = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return FileInspection(
        path=path,
        format=fmt,
        variant=None,
        rank=rank,
        ranks=counts,
        alpha=float(rank),
        alpha_declared=False,
        scale=1.0,
        use_rslora=False,
        modules=modules,
        target_modules=("to_q",),
        components=("model",),
        base_model=BaseModel(family, base_repo, (base_repo,) if base_repo else (), "shapes", "test", ()),
        flags=tuple(flags),
        size=1000,
        header_bytes=100,
        tensors=2 * len(modules),
        unknown_keys=(),
        metadata={},
    )


CARDS = {
    "block tags with comments": (
        "---\n# owner's comment\nlicense: mit   # keep me\ntags:\n  - style\n  - 'art'\nwidget:\n- text: \"a cat\"\n"
        "---\n\n# My LoRA\n\nTrained on *cats*.\n"
    ),
    "flow tags": "---\ntags: [style, art]\nlicense: other\nlicense_name: x\n---\nBody\n",
    "no tags": "---\nlicense: mit\n---\n# T\n",
    "no front matter": "# Only a body\n\nwith text\n",
    "CRLF line endings": "---\r\nlicense: mit\r\ntags:\r\n- style\r\n---\r\n\r\nBody\r\n",
    "empty front matter": "---\n---\nBody\n",
}


@pytest.mark.parametrize("name", list(CARDS))
def test_card_edit_adds_exactly_the_additions_and_keeps_the_rest_byte_for_byte(name):
    old = CARDS[name]
    new = apply_additions(old, ADDITIONS, "org/repo")
    assert new is not None
    old_card, new_card = parse_card(old), parse_card(new)
    expected = dict(old_card.data, base_model="org/base", base_model_relation="adapter")
    expected["tags"] = [*list(old_card.data.get("tags") or []), "lora", "base_model:adapter:org/base"]
    assert new_card.data == expected
    # Every original line survives, in order: the diff only adds lines (or, for flow tags, edits one).
    old_lines, new_lines = old.splitlines(), new.splitlines()
    if name != "flow tags":
        iterator = iter(new_lines)
        assert all(any(line == candidate for candidate in iterator) for line in old_lines)
    assert old[old_card.body_start :] in new, "the card body is kept byte for byte"
    assert new.count("## LoRA details") == 1


def test_card_with_invalid_yaml_is_never_rewritten():
    broken = "---\ntags: [unclosed\nlicense: mit\n---\nBody\n"
    assert parse_card(broken).error
    assert apply_additions(broken, ADDITIONS, "org/repo") is None
    facts = RepoFacts("org/repo", "a" * 40, (inspection(),), {"README.md": broken}, {}, ("README.md",))
    assert card_proposal(facts) is None


def test_repo_without_card_gets_one_and_existing_details_are_not_duplicated():
    facts = RepoFacts("org/repo", "a" * 40, (inspection(),), {}, {}, ("adapter_model.safetensors",))
    proposal = card_proposal(facts)
    created = proposal.files[0]
    assert created.old_text is None and created.path == "README.md"
    data = parse_card(created.new_text).data
    assert data["base_model"] == "org/base" and data["library_name"] == "peft"
    assert "base_model:adapter:org/base" in data["tags"]
    complete = (
        "---\nbase_model: org/base\nbase_model_relation: adapter\nlibrary_name: peft\n"
        "tags: [lora, 'base_model:adapter:org/base']\n---\n## LoRA details\nx\n"
    )
    facts = RepoFacts("org/repo", "a" * 40, (inspection(),), {"README.md": complete}, {}, ("README.md",))
    assert card_proposal(facts) is None, "a complete card gets no PR"


def test_ambiguous_base_model_is_not_written():
    ambiguous = inspection(base_repo=None)
    facts = RepoFacts("org/repo", "a" * 40, (ambiguous,), {}, {}, ())
    data = parse_card(card_proposal(facts).files[0].new_text).data
    assert "base_model" not in data and "base_model_relation" not in data


def test_config_fix_changes_only_r_and_keeps_formatting():
    old = (
        json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["to_q"]}, indent=2)
        + "\n"
    )
    new, change = fixed_config_text(old, inspection(ranks=(4, 4)))
    assert change == {"r": 4, "rank_pattern": {}}
    diff = [(a, b) for a, b in zip(old.splitlines(), new.splitlines(), strict=True) if a != b]
    assert diff == [('  "r": 8,', '  "r": 4,')]


def test_config_fix_declares_mixed_ranks_with_rank_pattern():
    old = json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 8})
    mixed = inspection(
        ranks=(4, 4, 2), names=["base_model.model.a.q", "base_model.model.b.q", "base_model.model.c.q"]
    )
    new, _ = fixed_config_text(old, mixed)
    assert json.loads(new)["r"] == 4 and json.loads(new)["rank_pattern"] == {"c.q": 2}
    assert json.loads(new)["lora_alpha"] == 8, "alpha is kept; the body states the resulting scale"


def test_repo_text_cannot_inject_markup_or_mentions():
    hostile = "@everyone <img src=x onerror=alert(1)> [click](http://evil) | `code` **bold**"
    escaped = escape_markdown(hostile)
    assert "<img" not in escaped and "[click](" not in escaped and "@everyone" not in escaped
    assert "|" not in escaped.replace("\\|", "")
    span = code_span("name`with`ticks\nand | pipes")
    assert span.count("`") == 2 and "\n" not in span
    bad = inspection(
        path="evil_@admin_<b>x</b>.safetensors",
        flags=[Flag("corrupt-header", "error", "@admin <script>x</script>")],
    )
    body = flags_proposal(RepoFacts("org/repo", "a" * 40, (bad,), {}, {}, ())).summary
    assert "<script>" not in body and "@admin " not in body.replace("`evil_@admin_<b>x</b>.safetensors`", "")


def test_repo_text_cannot_end_a_table_row():
    """Tensor names reach flag messages verbatim; a lone CR ends a markdown line just as LF does."""
    for text in ("a\rb", "a\nb", "a\r\nb"):
        assert not {"\r", "\n"} & set(escape_markdown(text))


@pytest.mark.parametrize(
    "path", ["../x", "/abs", "a/../../b", "a\\b", "a//b", "dir/", "a\x00b", ".", "a/./b"]
)
def test_path_traversal_is_refused(path):
    with pytest.raises(UnsafePath):
        FileChange(path, new_text="x")


def test_markers_round_trip_and_hostile_markers_are_ignored():
    class P:
        def __init__(self, key):
            self.key, self.base = key, "b"

        def marker(self):
            return {"key": self.key, "base": self.base}

    text = "body\n" + render_marker([P("card:README.md:1"), P("variant:x:2")])
    assert [m["key"] for m in parse_markers(text)] == ["card:README.md:1", "variant:x:2"]
    assert parse_markers("<!-- lora-bot-proposals: [not json] -->") == []


def _thread(number, status, keys, base="b", owner_closed=False, pr=True):
    return BotThread(
        number, pr, status, owner_closed, tuple({"key": k, "base": base} for k in keys), f"u/{number}"
    )


def test_plan_skips_what_the_owner_closed_and_supersedes_what_went_stale():
    facts = RepoFacts("org/repo", "a" * 40, (inspection(),), {}, {}, ())
    card = card_proposal(facts)
    closed = _thread(1, "closed", [card.key], base=card.base, owner_closed=True)
    assert plan_repo([card], [closed], "[bot]").pull_request is None
    stale = _thread(2, "open", [card.key], base="old-base")
    plan = plan_repo([card], [stale], "[bot]")
    assert plan.pull_request is not None and plan.pull_request.supersedes == (2,)
    current = _thread(3, "open", [card.key], base=card.base)
    plan = plan_repo([card], [current], "[bot]")
    assert plan.pull_request is None and [o.status for o in plan.outcomes] == ["exists"]
    # Closed by the bot itself (superseded earlier) does not block.
    bot_closed = _thread(4, "closed", [card.key], base=card.base, owner_closed=False)
    assert plan_repo([card], [bot_closed], "[bot]").pull_request is not None
    # Nothing to propose any more: the open PR is closed as stale.
    assert plan_repo([], [current], "[bot]").close_stale == (3,)


def test_yaml_of_new_card_passes_a_strict_loader():
    facts = RepoFacts("org/repo", "a" * 40, (inspection(),), {}, {}, ())
    text = card_proposal(facts).files[0].new_text
    front = text.split("---\n")[1]
    assert isinstance(yaml.safe_load(front), dict)


def test_config_yaml_states_exactly_the_schema_defaults():
    """An installed package has no config.yaml and runs on the schema's defaults: the two must agree."""
    from bot.config import DEFAULT_CONFIG, Config, load_config

    assert load_config(DEFAULT_CONFIG) == Config()


def test_an_unneeded_pr_is_closed_even_when_another_opens_but_not_if_its_kind_is_switched_off():
    facts = RepoFacts("org/repo", "a" * 40, (inspection(),), {}, {}, ())
    config_fix = dataclasses.replace(
        card_proposal(facts), kind="config-fix"
    )  # another slot than the card PR's
    old_card = _thread(7, "open", ["card:README.md:0123456789abcdef"])
    plan = plan_repo([config_fix], [old_card], "[bot]")
    assert plan.pull_request is not None and plan.pull_request.supersedes == ()
    assert plan.close_stale == (7,)
    assert plan_repo([config_fix], [old_card], "[bot]", kinds=frozenset({"config-fix"})).close_stale == ()


def test_a_finding_goes_to_the_discussion_unless_a_proposal_of_this_run_fixes_it():
    mismatch = Flag(
        "rank-mismatch-config", "error", "adapter_config.json r says 8 but the weights have rank 4"
    )
    item = inspection(flags=[mismatch])
    config = json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 8})
    from bot.config import ProposalsConfig

    with_config = RepoFacts(
        "org/repo",
        "a" * 40,
        (item,),
        {"adapter_config.json": config},
        {},
        ("adapter_model.safetensors", "adapter_config.json"),
    )
    kinds = [p.kind for p in build_proposals(with_config, ProposalsConfig())]
    assert "config-fix" in kinds and "flags" not in kinds
    # Config fixes switched off: nothing resolves the finding, so the owner hears of it in the discussion.
    off = build_proposals(with_config, ProposalsConfig(config_fix=False))
    (discussion,) = [p for p in off if p.kind == "flags"]
    assert "rank-mismatch-config" in discussion.summary
