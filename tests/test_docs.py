"""The README says what the code does: its flag table, its commands and its set-up commands stay true."""

from __future__ import annotations

import re
from pathlib import Path

from bot.cli import build_parser
from bot.core.flags import CODES, flag_table_markdown
from bot.vocab import Status, status_table_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_table(name: str) -> str:
    """The README's text between `<!-- NAME:start -->` and `<!-- NAME:end -->`, where a generated table sits."""
    return README.split(f"<!-- {name}:start -->\n", 1)[1].split(f"\n<!-- {name}:end -->", 1)[0]


def test_flag_table_is_the_registry():
    table = readme_table("flag-table")
    assert table == flag_table_markdown()
    assert all(f"`{code}`" in table for code in CODES)


def test_status_table_is_the_vocabulary():
    table = readme_table("status-table")
    assert table == status_table_markdown()
    assert all(f"`{status}`" in table for status in Status)


def test_limits_table_is_the_limits_module():
    from bot.core.limits import LIMITS, limits_table_markdown

    table = readme_table("limits-table")
    assert table == limits_table_markdown()
    assert all(f"`{limit.name}`" in table for limit in LIMITS)


def test_families_table_is_the_signature_data():
    from bot.core.signatures import recognised_markdown

    table = readme_table("families-table")
    assert table == recognised_markdown()


def test_every_command_is_documented():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"lora-bot {name}" in README, f"`lora-bot {name}` is not in the README"


def test_setup_commands_exist_and_ci_runs_them_in_the_readmes_order():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "lint", "smoke-core"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.MULTILINE)
    # The demo (core install only) first, then the core-only smoke, and only then what brings the extras.
    ci = (ROOT / ".ci" / "run").read_text()
    steps = [ci.index(f"\nmake {target}") for target in ("demo", "smoke-core", "lint", "test")]
    assert steps == sorted(steps)
    assert ci.index("rm -rf .venv") < steps[0], "the demo runs in a new venv"
    assert re.search(r"^demo: install$", makefile, re.MULTILINE), "the demo target installs the core only"
