"""Hostile corpus, part 3: hostile Action inputs and command-line values. Each is refused before any
request with one `::error` line (Action) or one `lora-bot: error:` line (CLI), exit 2, never a traceback."""

from __future__ import annotations

import pytest
from test_action import Step, make_workspace

from bot.cli import main
from bot.sandbox import SandboxHub

BAD_INPUTS = [
    ("max-prs", "²"),
    ("max-prs", "①"),
    ("max-prs", "٣"),
    ("max-prs", "-1"),
    ("max-prs", "1.5"),
    ("max-prs", ".inf"),
    ("max-prs", "nan"),
    ("max-prs", "1e309"),
    ("max-prs", "9" * 40),
    ("max-prs", "0x10"),
    ("max-annotations", "²"),
    ("max-annotations", "-5"),
    ("max-annotations", "ten"),
    ("dry-run", "yes"),
    ("dry-run", "0"),
    ("dry-run", "tru\u0435"),
    ("shard", "1/0"),
    ("shard", "0/2"),
    ("shard", "3/2"),
    ("shard", "a/b"),
    ("shard", "²/3"),
    ("shard", "1/2/3"),
    ("repos", "owner/.."),
    ("repos", "../etc"),
    ("repos", "a/b/c"),
    ("repos", "owner/na me\x00"),
    ("repos", "owner/-x"),
    ("repos", "--owner/x"),
    ("repos", "owner/x\u202e"),
    ("report-path", "."),
    ("report-path", ".."),
    ("report-path", "../outside.json"),
    ("report-path", "/etc/lora-bot.json"),
    ("report-path", "sub/../../x.json"),
    ("config", "/dev/zero"),
    ("config", "missing.yaml"),
    ("config", "."),
]
BAD_CONFIGS = {
    "not-utf8": b"hub:\n  timeout: \xff\n",
    "timeout-nan": b"hub:\n  timeout: .nan\n",
    "timeout-inf": b"hub:\n  timeout: .inf\n",
    "workers-huge": b"hub:\n  workers: 1" + b"0" * 400 + b"\n",
    "alias-bomb": b"a: &a [x,x,x,x,x,x,x,x,x]\n"
    + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [".encode() + b",".join([b"*" + chr(97 + i).encode()] * 9) + b"]\n"
        for i in range(8)
    ),
    "python-tag": b"hub: !!python/object/apply:os.system ['echo pwned']\n",
    "deep": b"[" * 5000 + b"]" * 5000,
    "not-mapping": b"- 1\n- 2\n",
    "unknown-key": b"hubb: {}\n",
}


@pytest.fixture(scope="module")
def hub():
    with SandboxHub(user="lora-bot") as sandbox:
        yield sandbox


def run_step(tmp_path, hub, capsys, inputs: dict[str, str]):
    workspace = make_workspace(tmp_path)
    before = len(hub.requests)
    result = Step(workspace, hub, {"config": "config.yaml", **inputs}).run(capsys)
    return result, len(hub.requests) - before


@pytest.mark.parametrize(("name", "value"), BAD_INPUTS, ids=[f"{n}={v!r}" for n, v in BAD_INPUTS])
def test_a_hostile_action_input_is_one_error_line_before_any_request(tmp_path, hub, capsys, name, value):
    result, requests = run_step(tmp_path, hub, capsys, {name: value})
    assert result.code == 2, result.stdout
    errors = result.named("error")
    assert len(errors) == 1 and "Traceback" not in result.stdout + result.stderr
    assert requests == 0
    assert not (tmp_path / "outside.json").exists() and not (tmp_path.parent / "outside.json").exists()


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_a_hostile_config_is_one_error_line(tmp_path, hub, capsys, name):
    path = tmp_path / "bad.yaml"
    path.write_bytes(BAD_CONFIGS[name])
    code = main(["scan", "--config", str(path), "--endpoint", hub.endpoint, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("lora-bot: error:"), err
    assert "pwned" not in out + err


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "--repo", "owner/..", "--dry-run"],
        ["scan", "--repo", "a b", "--dry-run"],
        ["scan", "--shard", "²/3", "--dry-run"],
        ["scan", "--max-prs", "-1", "--dry-run"],
        ["scan", "--config", "/dev/zero", "--dry-run"],
        ["scan", "--config", "/", "--dry-run"],
        ["inspect", "/dev/null"],
        ["explain", "\x1b[2J"],
    ],
)
def test_a_hostile_command_line_is_one_usage_line(hub, capsys, args):
    code = main([*args, *(["--endpoint", hub.endpoint] if args[0] == "scan" else [])])
    _out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1, err
    assert "\x1b" not in err
