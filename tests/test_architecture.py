"""The house rules ARCHITECTURE.md states, checked: no import cycles, a pure core, words from the vocabulary."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bot.vocab import FlagCode, Status

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bot"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every bot module this file imports, at the top or inside a function (a cycle hides there too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40, "the walk found the package"
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The core is LoRA knowledge: bytes, text and dicts in, values out. No disk, no network, no torch.
FORBIDDEN_IN_CORE = re.compile(
    r"^(huggingface_hub|httpx2|torch|safetensors|os|pathlib|shutil|tempfile|socket)\b"
)


def test_the_core_is_pure():
    for path in (PACKAGE / "core").rglob("*.py"):
        for name in imports_of(path):
            assert not FORBIDDEN_IN_CORE.match(name), f"{path.name} imports {name}"
            if name.startswith("bot."):
                assert name.startswith(("bot.core", "bot.vocab")), f"{path.name} imports {name}"
        assert not re.search(r"(?<![\w.])open\(", path.read_text(encoding="utf-8")), (
            f"{path.name} opens files"
        )


def test_flag_codes_and_statuses_are_spelled_only_in_the_vocabulary():
    words = {str(code) for code in FlagCode} | {str(status) for status in Status}
    literal = re.compile(
        r"""["'](""" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r""")["']"""
    )
    for path in PACKAGE.rglob("*.py"):
        if path.name == "vocab.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert not literal.search(line), f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
