"""Hostile corpus, part 2: hostile repos through the sandbox Hub (real huggingface_hub client), and faults.

One sandbox holds every hostile repo; one dry-run scan and one live scan read them all. Each case asserts
what the owner and the operator see: the repo's other files still inspected, a clear reason for what was
left out, no card rewritten that was not read exactly, no false claim, no token anywhere."""

from __future__ import annotations

import json

import pytest
from clock import RecordingClock
from test_hostile_files import GOOD, pair, tensor_file

from bot.cli import main
from bot.config import load_config_text
from bot.core.limits import MAX_ADAPTER_HEADER_BYTES
from bot.pipeline import ScanOptions, run_scan
from bot.report.scan import scan_report
from bot.sandbox import SandboxHub
from bot.vocab import Status

TOKEN = "hf_hostile_bot_token_0123456789"
GOOD_FILE = tensor_file(GOOD)
CONFIG_R8 = json.dumps({"r": 8, "lora_alpha": 8, "peft_type": "LORA"}, indent=2)
CARD = "---\nlicense: mit\n---\n\n# A card\n"


def padded_header_file(header_bytes: int) -> bytes:
    """GOOD_FILE with its (valid) header JSON padded by spaces to `header_bytes`: legal for safetensors."""
    length = int.from_bytes(GOOD_FILE[:8], "little")
    blob = GOOD_FILE[8 : 8 + length] + b" " * (header_bytes - length)
    return header_bytes.to_bytes(8, "little") + blob + GOOD_FILE[8 + length :]


# repo name -> files. Each repo also holds one good adapter whose inspection must survive its neighbours.
REPOS: dict[str, dict[str, bytes]] = {
    "spaces-and-parens": {"pixel style (v2).safetensors": GOOD_FILE},
    "double-slash": {"a//b.safetensors": GOOD_FILE, "good.safetensors": GOOD_FILE},
    "dot-dot": {"x/../../y.safetensors": GOOD_FILE, "good.safetensors": GOOD_FILE},
    "newline-name": {"x\n/../../etc.safetensors": GOOD_FILE, "good.safetensors": GOOD_FILE},
    "backslash-name": {"a\\b.safetensors": GOOD_FILE, "good.safetensors": GOOD_FILE},
    "esc-name": {"\x1b[2Jx.safetensors": GOOD_FILE, "good.safetensors": GOOD_FILE},
    "unicode-name": {"ünïcødé 文件.safetensors": GOOD_FILE},
    "leading-dash": {"-rf.safetensors": GOOD_FILE},
    "percent-name": {"a%2F..%2Fb.safetensors": GOOD_FILE},
    "hash-query-name": {"a#b?c.safetensors": GOOD_FILE},
    "big-card": {
        "adapter_model.safetensors": GOOD_FILE,
        "README.md": ("# big\n" + "x" * 79 + "\n").encode() * 200_001,
    },
    "card-invalid-utf8": {
        "adapter_model.safetensors": GOOD_FILE,
        "README.md": b"---\nlicense: mit\n---\n\n# caf\xe9\n",
    },
    "card-alias-bomb": {
        "adapter_model.safetensors": GOOD_FILE,
        "README.md": (
            "---\na: &a [x,x,x,x,x,x,x,x,x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]\n"
                for i in range(8)
            )
            + "---\n\n# bomb\n"
        ).encode(),
    },
    "card-recursive-alias": {
        "adapter_model.safetensors": GOOD_FILE,
        "README.md": b"---\na: &a [*a]\n---\n# x\n",
    },
    "card-python-tag": {
        "adapter_model.safetensors": GOOD_FILE,
        "README.md": b"---\nx: !!python/object/apply:os.system ['echo pwned']\n---\n# x\n",
    },
    "card-bom-crlf": {
        "adapter_model.safetensors": GOOD_FILE,
        "README.md": "\ufeff---\r\nlicense: mit\r\n---\r\n\r\n# crlf\r\n".encode(),
    },
    "card-html-mention": {
        "adapter_model.safetensors": tensor_file(
            pair("base_model.model.<img src=x onerror=alert(1)>@everyone")
        ),
        "adapter_config.json": CONFIG_R8.encode(),
    },
    "config-3mb": {
        "adapter_model.safetensors": GOOD_FILE,
        "adapter_config.json": json.dumps(
            {"r": 4, "lora_alpha": 4, "rank_pattern": {f"layers.{i}.mlp.down_proj": 4 for i in range(90_000)}}
        ).encode(),
    },
    "config-r-float": {
        "adapter_model.safetensors": GOOD_FILE,
        "adapter_config.json": b'{\n  "r": 8.0,\n  "lora_alpha": 8\n}\n',
    },
    "config-r-30-digits": {
        "adapter_model.safetensors": GOOD_FILE,
        "adapter_config.json": b'{"r": 123456789012345678901234567890, "lora_alpha": 8}',
    },
    "config-r-4096": {
        "adapter_model.safetensors": GOOD_FILE,
        "adapter_config.json": b'{"r": 4096, "lora_alpha": 8}',
    },
    "config-redos": {
        "adapter_model.safetensors": GOOD_FILE,
        "adapter_config.json": json.dumps({"r": 8, "rank_pattern": {"(.*.*)*y": 8}}).encode(),
    },
    "config-invalid-utf8": {
        "adapter_model.safetensors": GOOD_FILE,
        "adapter_config.json": b'{"r": 4, "x": "\xff"}',
    },
    "config-over-cap": {
        "adapter_model.safetensors": GOOD_FILE,
        "adapter_config.json": b" " * 16_000_001 + b"{}",
    },
    "corrupt-and-good": {"bad.safetensors": b"\x00" * 7, "good.safetensors": GOOD_FILE},
    "header-over-adapter-cap": {
        "huge-header.safetensors": padded_header_file(MAX_ADAPTER_HEADER_BYTES + 8),
        "good.safetensors": GOOD_FILE,
    },
    "many-files": {f"f{i}.safetensors": GOOD_FILE for i in range(60)},
}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-repos")
    config = load_config_text(
        "discovery:\n  queries: [{filter: [], author: evil}]\n  incremental: false\n"
        f"  state_file: {root / 'state.json'}\n"
        # The repos were uploaded a moment ago and share one owner: no cooldown, no per-owner cap.
        "proposals: {cooldown_hours: 0, max_prs_per_owner: 100}\n"
    )
    with SandboxHub(user="lora-bot") as hub:
        for name, files in REPOS.items():
            paths = {}
            for path, content in files.items():
                local = root / f"{len(paths)}-{abs(hash((name, path)))}"
                local.write_bytes(content)
                paths[path] = local
            hub.add_repo(f"evil/{name}", paths)
        clock = RecordingClock()
        result = run_scan(
            config, ScanOptions(endpoint=hub.endpoint, token=TOKEN, dry_run=True, sleep=clock.sleep)
        )
        requested = [e.get("path", "") + " " + e.get("url", "") for e in hub.requests]
    report = scan_report(result)
    return result, report, requested


def repo(scanned, name: str):
    result, _, _ = scanned
    return next(r for r in result.repos if r.repo_id == f"evil/{name}")


def outcomes(scanned, name: str):
    result, _, _ = scanned
    return [o for o in result.outcomes if o.repo_id == f"evil/{name}"]


@pytest.mark.parametrize("name", list(REPOS))
def test_every_hostile_repo_is_read_and_reported_without_error(scanned, name):
    found = repo(scanned, name)
    assert found.error is None, found.error
    good = [f for f in found.files if f.path.endswith(("good.safetensors", "adapter_model.safetensors"))]
    has_good = any(p.endswith(("good.safetensors", "adapter_model.safetensors")) for p in REPOS[name])
    if has_good and name not in ("config-over-cap", "config-invalid-utf8"):
        assert good, f"the repo's good file is still inspected: {found.skipped_files}"
    assert not any(o.status == Status.FAILED for o in outcomes(scanned, name))


@pytest.mark.parametrize("name", ["double-slash", "dot-dot", "newline-name", "backslash-name", "esc-name"])
def test_an_unsafe_name_costs_only_itself_and_is_never_requested(scanned, name):
    found = repo(scanned, name)
    assert [f.path for f in found.files] == ["good.safetensors"]
    (skipped,) = found.skipped_files
    assert "not a plain relative path" in skipped[1]
    _, _, requested = scanned
    assert not any("etc.safetensors" in r or "/../" in r for r in requested)


@pytest.mark.parametrize(
    "name", ["spaces-and-parens", "unicode-name", "leading-dash", "percent-name", "hash-query-name"]
)
def test_an_odd_but_safe_name_is_inspected(scanned, name):
    (item,) = repo(scanned, name).files
    assert item.format == "peft" and item.rank == 4


@pytest.mark.parametrize("name", ["big-card", "card-invalid-utf8"])
def test_a_card_not_read_exactly_is_never_rewritten(scanned, name):
    found = repo(scanned, name)
    # Refused where it was read: by inspection (listed in skipped_files) or, when the listing carried the
    # card's metadata, by the card proposal (its `unbuildable` outcome names the reason).
    skipped = [r for p, r in found.skipped_files if p == "README.md"]
    unbuilt = [
        o.detail for o in outcomes(scanned, name) if o.status == Status.UNBUILDABLE and o.kind == "card"
    ]
    assert (skipped + unbuilt) and all(
        "refused" in r or "not valid UTF-8" in r or "limit" in r for r in skipped + unbuilt
    )
    assert not [
        o
        for o in outcomes(scanned, name)
        if o.submission and any(f.path == "README.md" for f in o.submission.files)
    ]


@pytest.mark.parametrize("name", ["card-alias-bomb", "card-recursive-alias", "card-python-tag"])
def test_a_hostile_card_is_flagged_and_never_rewritten(scanned, name):
    (item,) = repo(scanned, name).files
    assert "card-invalid" in item.codes()
    assert not [
        o
        for o in outcomes(scanned, name)
        if o.submission and any(f.path == "README.md" for f in o.submission.files)
    ]


def test_a_bom_crlf_card_is_edited_byte_exactly(scanned):
    (pr,) = [o for o in outcomes(scanned, "card-bom-crlf") if o.submission and o.submission.is_pull_request]
    (card,) = [f for f in pr.submission.files if f.path == "README.md"]
    old = REPOS["card-bom-crlf"]["README.md"].decode()
    assert (
        card.new_text.startswith("\ufeff---\r\nlicense: mit\r\n") and old.split("---", 2)[2] in card.new_text
    )


def test_markup_and_mentions_from_names_are_inert_in_bodies(scanned):
    import re

    bodies = [o.submission.body for o in outcomes(scanned, "card-html-mention") if o.submission]
    assert bodies
    # Code (fenced blocks and spans) is shown, never interpreted; everywhere else the text must be inert.
    prose = [re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", b, flags=re.DOTALL)) for b in bodies]
    assert all("<img" not in p and "@everyone" not in p for p in prose)


def test_a_3mb_config_is_read_whole_not_called_invalid(scanned):
    (item,) = repo(scanned, "config-3mb").files
    assert "config-invalid" not in item.codes() and item.rank == 4


def test_a_float_r_is_fixed_to_an_int_r(scanned):
    (pr,) = [o for o in outcomes(scanned, "config-r-float") if o.submission and o.submission.is_pull_request]
    (config,) = [f for f in pr.submission.files if f.path == "adapter_config.json"]
    assert json.loads(config.new_text)["r"] == 4 and type(json.loads(config.new_text)["r"]) is int
    assert '"r": 4,' in config.new_text


def test_a_30_digit_r_is_one_flag_and_the_repo_goes_on(scanned):
    (item,) = repo(scanned, "config-r-30-digits").files
    assert "config-invalid" in item.codes()
    assert outcomes(scanned, "config-r-30-digits"), "the flags discussion is still proposed"


def test_a_declared_rank_4096_builds_no_variant(scanned):
    assert not [o for o in outcomes(scanned, "config-r-4096") if o.kind == "variant"]


def test_a_redos_config_is_flagged_and_claims_nothing(scanned):
    (item,) = repo(scanned, "config-redos").files
    assert "pattern-unchecked" in item.codes() and "rank-mismatch-config" not in item.codes()
    assert not [o for o in outcomes(scanned, "config-redos") if o.submission and o.submission.is_pull_request]


@pytest.mark.parametrize("name", ["config-invalid-utf8", "config-over-cap"])
def test_a_config_not_read_exactly_leaves_its_file_out_with_the_reason(scanned, name):
    found = repo(scanned, name)
    assert not found.files
    reasons = dict(found.skipped_files)
    assert "adapter_config.json" in reasons and "adapter_model.safetensors" in reasons


def test_a_legal_header_over_the_adapter_cap_is_left_out_never_called_corrupt(scanned):
    found = repo(scanned, "header-over-adapter-cap")
    assert [f.path for f in found.files] == ["good.safetensors"]
    reason = dict(found.skipped_files)["huge-header.safetensors"]
    assert f"{MAX_ADAPTER_HEADER_BYTES:,}-byte cap" in reason and "not a defect of the file" in reason
    assert not any("corrupt-header" in repr(o) for o in outcomes(scanned, "header-over-adapter-cap"))


def test_a_corrupt_file_costs_only_itself(scanned):
    files = {f.path: f for f in repo(scanned, "corrupt-and-good").files}
    assert "corrupt-header" in files["bad.safetensors"].codes()
    assert files["good.safetensors"].rank == 4 and "corrupt-header" not in files["good.safetensors"].codes()


def test_the_report_lists_left_out_files_and_no_token(scanned):
    _result, report, _ = scanned
    text = json.dumps(report)
    assert TOKEN not in text
    entry = next(r for r in report["repos"] if r["repo_id"] == "evil/newline-name")
    assert entry["skipped_files"][0]["reason"].startswith("refused")


# ------------------------------------------------------------------------------------------ tokens and faults


@pytest.fixture(scope="module")
def small_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    weights = root / "w.safetensors"
    weights.write_bytes(GOOD_FILE)
    with SandboxHub(user="lora-bot") as hub:
        hub.add_repo("evil/one", {"adapter_model.safetensors": weights})
        yield hub


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t"])
def test_a_token_with_trailing_whitespace_is_cleaned_and_never_shown(small_hub, tmp_path, capsys, suffix):
    report = tmp_path / "r.json"
    code = main(
        [
            "scan",
            "--endpoint",
            small_hub.endpoint,
            "--token",
            TOKEN + suffix,
            "--repo",
            "evil/one",
            "--dry-run",
            "--report-json",
            str(report),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert TOKEN not in out + err + report.read_text()
    assert json.loads(report.read_text())["repos"][0]["error"] is None


@pytest.mark.parametrize("token", ["hf_a b", "hf_a\nb", "hf_\x00x", "hf_ünï"])
def test_a_token_that_cannot_be_sent_is_one_usage_line_before_any_request(small_hub, capsys, token):
    before = len(small_hub.requests)
    code = main(
        ["scan", "--endpoint", small_hub.endpoint, "--token", token, "--repo", "evil/one", "--dry-run"]
    )
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "token" in err
    assert token not in out + err
    assert len(small_hub.requests) == before


@pytest.mark.parametrize(
    "message", ["Bearer hf_secretsecret123", "Authorization: Bearer abc.def", "token hf_xyzxyzxyz"]
)
def test_error_texts_are_scrubbed_of_credentials(message):
    from bot.hub.client import describe_error

    shown = describe_error(RuntimeError(message + "\nsecond line"))
    assert "hf_secret" not in shown and "abc.def" not in shown and "hf_xyz" not in shown
    assert "\n" not in shown


@pytest.mark.parametrize("fault", ["429:1.0", "503:1.0", "drop:1.0"])
def test_persistent_faults_end_in_a_reason_not_a_hang_or_leak(tmp_path, fault, capsys):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(GOOD_FILE)
    with SandboxHub(user="lora-bot", faults=f"{fault}@model_info") as hub:
        hub.add_repo("evil/one", {"adapter_model.safetensors": weights})
        clock = RecordingClock()
        config = load_config_text("hub: {retries: 3, max_retry_wait: 5}\n")
        result = run_scan(
            config,
            ScanOptions(
                endpoint=hub.endpoint, token=TOKEN, repos=("evil/one",), dry_run=True, sleep=clock.sleep
            ),
        )
    (found,) = result.repos
    assert found.error and TOKEN not in found.error and "\n" not in found.error
    assert len(clock.waits) == 2, "bounded retries, then the reason"
