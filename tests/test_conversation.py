"""Owners talk back: `@lora-bot` commands in the bot's threads, and the manners that hold writes back.

Every Hub interaction is the real huggingface_hub client against the sandbox Hub; the owner, an org member
and a stranger are sandbox users with their own tokens.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

from bot.config import config_from_mapping
from bot.conversation.commands import parse_command, parse_records
from bot.pipeline import ScanOptions, run_scan
from bot.sandbox import SandboxHub
from bot.sandbox.samples import _card, _peft_unet
from bot.vocab import Command

BOT, OWNER, MEMBER, STRANGER = "hf_bot", "hf_alice", "hf_bob", "hf_mallory"
USERS = {BOT: "lora-bot", OWNER: "alice", MEMBER: "bob", STRANGER: "mallory"}
ORGS = {"studio": ["bob"]}
OLD = datetime(2024, 1, 1, tzinfo=timezone.utc)


def write_portrait(folder: Path, rank: int = 4, config_rank: int = 8) -> None:
    """The FaceChain case: weights at `rank`, adapter_config.json says `config_rank`: a config-fix PR."""
    folder.mkdir(parents=True, exist_ok=True)
    _peft_unet(
        folder,
        rank,
        torch.Generator().manual_seed(rank),
        config_rank,
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
    )
    (folder / "README.md").write_bytes(
        _card({"license": "apache-2.0", "tags": ["lora", "peft"]}, "# Portrait\n")
    )


def repo_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("portrait")
    write_portrait(folder)
    return repo_files(folder)


@pytest.fixture
def hub(portrait):
    with SandboxHub(user="nobody", users=USERS, orgs=ORGS) as sandbox:
        sandbox.add_repo("alice/portrait", portrait, last_modified=OLD)
        sandbox.add_repo("studio/portrait", portrait, last_modified=OLD)
        yield sandbox


def config(tmp_path: Path, **proposals) -> object:
    return config_from_mapping(
        {
            "discovery": {"incremental": False, "state_file": str(tmp_path / "state.json")},
            "hub": {"retries": 2, "max_retry_wait": 1},
            "proposals": {"variants": True, **proposals},
        }
    )


def scan(hub, tmp_path, *repos: str, dry_run: bool = False, **proposals):
    result = run_scan(
        config(tmp_path, **proposals),
        ScanOptions(endpoint=hub.endpoint, token=BOT, repos=repos or ("alice/portrait",), dry_run=dry_run),
    )
    return [o.to_json() for o in result.outcomes]


def api(token: str, hub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=token)


def threads(hub, repo_id: str = "alice/portrait") -> dict[int, object]:
    return {d.num: d for d in api(OWNER, hub).get_repo_discussions(repo_id)}


def bot_replies(hub, repo_id: str, num: int) -> list[str]:
    details = api(OWNER, hub).get_discussion_details(repo_id, num)
    return [e.content for e in details.events if e.type == "comment" and e.author == "lora-bot"][1:]


def writes(hub) -> int:
    return hub.write_request_count()


def statuses(outcomes) -> list[str]:
    return [o["status"] for o in outcomes]


# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@lora-bot ignore", (Command.IGNORE, None)),
        ("thanks!\n@lora-bot ignore repo\n", (Command.IGNORE_REPO, None)),
        ("@lora-bot recreate", (Command.RECREATE, None)),
        ("@lora-bot check.", (Command.CHECK, None)),
        ("@lora-bot explain `rank-mismatch-config`", (Command.EXPLAIN, "rank-mismatch-config")),
        ("@lora-bot variant r8", (Command.VARIANT, "8")),
        ("@lora-bot variant 16", (Command.VARIANT, "16")),
        ("@lora-bot variant r0", (Command.UNKNOWN, "variant r0")),
        ("@lora-bot make it faster", (Command.UNKNOWN, "make it faster")),
        ("> @lora-bot ignore repo\nI would not do that", None),
        ("please ping @lora-bot ignore", None),
        ("nothing to see", None),
    ],
)
def test_a_command_is_a_line_of_its_own_and_quotes_are_not_commands(text, expected):
    assert parse_command(text) == expected


# ------------------------------------------------------------------------------------------ commands


def test_owner_asks_for_a_variant_it_is_added_and_answered_once(hub, tmp_path):
    scan(hub, tmp_path)
    (first,) = threads(hub).values()
    assert first.is_pull_request and first.status == "open"
    assert not any(
        f.startswith("r8/")
        for f in api(OWNER, hub).list_repo_files("alice/portrait", revision=first.git_reference)
    )

    comment = api(OWNER, hub).comment_discussion("alice/portrait", first.num, "Nice!\n@lora-bot variant r8")
    before = writes(hub)
    outcomes = scan(hub, tmp_path)
    command_writes = writes(hub) - before

    now = threads(hub)
    newest = max(now)
    assert now[first.num].status == "closed" and now[newest].status == "open"
    files = api(OWNER, hub).list_repo_files("alice/portrait", revision=now[newest].git_reference)
    assert {"r8/adapter_model.safetensors", "r8/adapter_config.json"} <= set(files)
    (reply,) = bot_replies(hub, "alice/portrait", first.num)[-1:]
    assert f"in #{newest}" in reply and "rank-8" in reply
    assert parse_records(reply) == [{"comment": comment.id, "command": "variant", "rank": 8}]
    assert "replied" in statuses(outcomes)
    # The new PR, the superseded one closed, the reply: one preupload, LFS batch + upload + verify, commit.
    assert command_writes <= 8

    # The same comment read again (the next run, a replayed webhook): nothing is done twice.
    before = writes(hub)
    again = scan(hub, tmp_path)
    assert writes(hub) == before
    assert "replied" not in statuses(again)
    assert len(threads(hub)) == 2


def test_a_strangers_command_changes_nothing_and_gets_no_answer(hub, tmp_path):
    scan(hub, tmp_path)
    (first,) = threads(hub).values()
    api(STRANGER, hub).comment_discussion("alice/portrait", first.num, "@lora-bot ignore repo")
    api(STRANGER, hub).comment_discussion("alice/portrait", first.num, "@lora-bot variant r2")
    before = writes(hub)
    outcomes = scan(hub, tmp_path)
    assert writes(hub) == before, "silence: a stranger cannot make the bot write anything"
    assert threads(hub)[first.num].status == "open"
    assert bot_replies(hub, "alice/portrait", first.num) == []
    assert "opted-out" not in statuses(outcomes)


def test_an_org_member_ignores_a_pr_for_good_and_recreate_brings_it_back(hub, tmp_path):
    scan(hub, tmp_path, "studio/portrait")
    (first,) = threads(hub, "studio/portrait").values()
    api(MEMBER, hub).comment_discussion("studio/portrait", first.num, "@lora-bot ignore")
    scan(hub, tmp_path, "studio/portrait")
    assert threads(hub, "studio/portrait")[first.num].status == "closed"
    assert "will not propose this change again" in bot_replies(hub, "studio/portrait", first.num)[-1]

    before = writes(hub)
    outcomes = scan(hub, tmp_path, "studio/portrait")
    assert writes(hub) == before, "ignored for good: nothing reopened, nothing new"
    assert "closed-by-owner" in statuses(outcomes)

    api(MEMBER, hub).comment_discussion("studio/portrait", first.num, "@lora-bot recreate")
    scan(hub, tmp_path, "studio/portrait")
    now = threads(hub, "studio/portrait")
    assert len(now) == 2 and now[max(now)].status == "open"
    assert f"#{max(now)}" in bot_replies(hub, "studio/portrait", first.num)[-1]


def test_recreate_on_an_open_pr_rebuilds_it_from_the_current_head(hub, tmp_path):
    scan(hub, tmp_path)
    (first,) = threads(hub).values()
    api(OWNER, hub).comment_discussion("alice/portrait", first.num, "@lora-bot recreate")
    scan(hub, tmp_path)
    now = threads(hub)
    assert now[first.num].status == "closed" and now[max(now)].status == "open" and max(now) != first.num
    assert "Recreated from the current head" in bot_replies(hub, "alice/portrait", first.num)[-1]


def test_ignore_repo_closes_every_thread_and_stops_everything(hub, tmp_path, portrait):
    scan(hub, tmp_path)
    (first,) = threads(hub).values()
    api(OWNER, hub).comment_discussion("alice/portrait", first.num, "@lora-bot ignore repo")
    outcomes = scan(hub, tmp_path)
    assert threads(hub)[first.num].status == "closed"
    assert "leaves `alice/portrait` alone" in bot_replies(hub, "alice/portrait", first.num)[-1]
    assert "opted-out" in statuses(outcomes)

    # The owner pushes something else broken: the bot stays away.
    broken = dict(portrait)
    broken["adapter_config.json"] = broken["adapter_config.json"].replace(b'"r": 8', b'"r": 32')
    hub.commit_files("alice/portrait", {"adapter_config.json": broken["adapter_config.json"]})
    before = writes(hub)
    outcomes = scan(hub, tmp_path)
    assert writes(hub) == before
    assert statuses(outcomes) == ["opted-out"]


def test_explain_check_and_unknown_commands_are_answered(hub, tmp_path):
    scan(hub, tmp_path)
    (first,) = threads(hub).values()
    owner = api(OWNER, hub)
    owner.comment_discussion("alice/portrait", first.num, "@lora-bot explain rank-mismatch-config")
    owner.comment_discussion("alice/portrait", first.num, "@lora-bot explain not-a-code")
    owner.comment_discussion("alice/portrait", first.num, "@lora-bot check")
    owner.comment_discussion("alice/portrait", first.num, "@lora-bot dance")
    scan(hub, tmp_path)
    replies = bot_replies(hub, "alice/portrait", first.num)
    assert len(replies) == 4
    assert "`rank-mismatch-config`" in replies[0] and "error" in replies[0]
    assert "is not a lora-bot flag code" in replies[1]
    assert "Inspected again at the current head" in replies[2] and f"#{first.num} is up to date" in replies[2]
    assert "does not know `dance`" in replies[3]
    assert len(threads(hub)) == 1


def test_a_dry_run_says_it_would_answer_and_writes_nothing(hub, tmp_path):
    scan(hub, tmp_path)
    (first,) = threads(hub).values()
    api(OWNER, hub).comment_discussion("alice/portrait", first.num, "@lora-bot check")
    before = writes(hub)
    outcomes = scan(hub, tmp_path, dry_run=True)
    assert writes(hub) == before
    assert "would-reply" in statuses(outcomes)


# ------------------------------------------------------------------------------------------ manners


def test_a_repo_modified_within_the_cooldown_gets_no_write_until_it_has_rested(hub, tmp_path, portrait):
    hub.add_repo("alice/fresh", portrait)  # uploaded just now: maybe mid-upload
    before = writes(hub)
    outcomes = scan(hub, tmp_path, "alice/fresh", cooldown_hours=1)
    assert statuses(outcomes) == ["cooldown"] and writes(hub) == before
    outcomes = scan(hub, tmp_path, "alice/fresh", cooldown_hours=0)
    assert "opened" in statuses(outcomes)


def test_an_owners_command_is_answered_even_within_the_cooldown(hub, tmp_path, portrait):
    scan(hub, tmp_path)
    (first,) = threads(hub).values()
    hub.commit_files("alice/portrait", {"notes.txt": b"new upload"})  # modified a moment ago
    api(OWNER, hub).comment_discussion("alice/portrait", first.num, "@lora-bot check")
    outcomes = scan(hub, tmp_path, cooldown_hours=1)
    assert "replied" in statuses(outcomes)


def test_caps_per_owner_and_per_hour_hold_across_runs(hub, tmp_path, portrait):
    for name in ("a", "b", "c"):
        hub.add_repo(f"alice/{name}", portrait, last_modified=OLD)
    hub.add_repo("carol/d", portrait, last_modified=OLD)
    first = scan(hub, tmp_path, "alice/a", "alice/b", max_prs_per_owner=2, max_prs_per_hour=3)
    assert statuses(first).count("opened") == 2
    # A later run: alice's day is used up, carol is not.
    second = scan(hub, tmp_path, "alice/c", "carol/d", max_prs_per_owner=2, max_prs_per_hour=3)
    by_repo = {o["repo_id"]: o for o in second if o["kind"] != "flags"}
    assert by_repo["alice/c"]["status"] == "limit-reached" and "alice" in by_repo["alice/c"]["detail"]
    assert by_repo["carol/d"]["status"] == "opened"
    # The hour's cap (3) is now reached for everyone.
    hub.add_repo("dave/e", portrait, last_modified=OLD)
    third = scan(hub, tmp_path, "dave/e", max_prs_per_owner=2, max_prs_per_hour=3)
    assert [o["status"] for o in third if o["repo_id"] == "dave/e"] == ["limit-reached"]
    manners = json.loads((tmp_path / "manners.json").read_text())
    assert sorted(repo for _, repo in manners["prs"]) == ["alice/a", "alice/b", "carol/d"]


def test_a_repo_with_discussions_disabled_is_recorded_once_and_not_asked_again(hub, tmp_path):
    hub.disable_discussions("alice/portrait")
    outcomes = scan(hub, tmp_path)
    assert statuses(outcomes) == ["discussions-disabled"]
    asked = sum("/discussions" in r["path"] for r in hub.requests)
    outcomes = scan(hub, tmp_path)
    assert statuses(outcomes) == ["discussions-disabled"]
    assert sum("/discussions" in r["path"] for r in hub.requests) == asked, "not retried every run"


def test_opt_in_mode_writes_only_where_owners_asked(hub, tmp_path, portrait):
    tagged = dict(portrait)
    tagged["README.md"] = _card({"tags": ["lora", "peft", "lora-bot-opt-in"]}, "# Portrait\n")
    hub.add_repo("carol/tagged", tagged, last_modified=OLD)
    outcomes = scan(
        hub, tmp_path, "alice/portrait", "carol/tagged", "studio/portrait", mode="opt-in", opt_in=["studio"]
    )
    by_repo = {}
    for o in outcomes:
        by_repo.setdefault(o["repo_id"], set()).add(o["status"])
    assert by_repo["alice/portrait"] == {"not-opted-in"}
    assert "opened" in by_repo["carol/tagged"] and "opened" in by_repo["studio/portrait"]
    assert threads(hub) == {}


def test_variants_by_the_policy_only_for_listed_repos(hub, tmp_path, portrait):
    # Rank 32 > reduce_above_rank 16: the policy would offer a rank-16 copy (energy threshold lowered).
    folder = tmp_path / "big"
    write_portrait(folder, rank=32, config_rank=32)
    hub.add_repo("alice/big", repo_files(folder), last_modified=OLD)
    hub.add_repo("carol/big", repo_files(folder), last_modified=OLD)
    policy = {"variant_policy": {"min_energy": 0.01}, "card": False, "variant_repos": ["carol"]}
    outcomes = scan(hub, tmp_path, "alice/big", "carol/big", **policy)
    kinds = {o["repo_id"]: o["kind"] for o in outcomes if o["status"] == "opened"}
    assert kinds == {"carol/big": "variant"}


def _lora_file(path: Path, names: list[str], metadata: dict) -> bytes:
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for down, up in names:
        tensors[down] = torch.randn(4, 320, generator=generator)
        tensors[up] = torch.randn(320, 4, generator=generator)
    save_file(tensors, path, metadata=metadata)
    return path.read_bytes()


def test_weights_are_rewritten_only_for_load_breaking_metadata(hub, tmp_path):
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    kohya = _lora_file(
        tmp_path / "k.safetensors",
        [
            (
                f"lora_unet_{module.replace('.', '_')}.lora_down.weight",
                f"lora_unet_{module.replace('.', '_')}.lora_up.weight",
            )
        ],
        {"ss_network_dim": "16", "ss_network_alpha": "4"},
    )
    diffusers = _lora_file(
        tmp_path / "d.safetensors",
        [(f"unet.{module}.lora_A.weight", f"unet.{module}.lora_B.weight")],
        {"lora_adapter_metadata": json.dumps({"unet.r": 16, "unet.lora_alpha": 4})},
    )
    hub.add_repo("alice/kohya", {"style.safetensors": kohya}, last_modified=OLD)
    hub.add_repo("alice/diffusers", {"pytorch_lora_weights.safetensors": diffusers}, last_modified=OLD)
    outcomes = scan(hub, tmp_path, "alice/kohya", "alice/diffusers", card=False)
    opened = {o["repo_id"]: o for o in outcomes if o["status"] == "opened"}
    assert "alice/kohya" not in opened, (
        "ss_network_dim is cosmetic: no PR replaces the owner's weights for it"
    )
    assert opened["alice/diffusers"]["kind"] == "metadata-fix"
