"""The package's shape: no import cycle among mlxspec's modules (the converter included), no
file over 300 lines and no function over 50 anywhere in the repo, and a start that never
imports transformers or torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import smollm2_or_skip

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mlxspec": ROOT / "mlxspec", "mlxspec.convert": ROOT / "convert"}  # convert/ installs as mlxspec.convert
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 50


def modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if package == "mlxspec" and parts[0] == "convert":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (`from a import b` counts a.b when b is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    known = modules()
    graph = {name: imported(name, path, set(known)) for name, path in known.items()}
    assert len(graph) > 30 and "mlxspec.engine.speculative" in graph["mlxspec.engine.calibrate"]
    assert find_cycle(graph) is None, find_cycle(graph)


def test_files_and_functions_stay_small():
    too_long = []
    for folder in ("mlxspec", "convert", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > MAX_FILE_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        too_long.append(f"{path.relative_to(ROOT)}:{node.name}: {length} lines")
    assert not too_long, too_long


def test_loading_and_generating_never_import_transformers_or_torch(tmp_path):
    """The tokenizer comes from the `tokenizers` library and Jinja: a generation never pays
    for importing transformers (or torch through it)."""
    smollm2_or_skip()
    script = (
        "import sys, mlxspec\n"
        "from mlxspec.demo import demo_draft, demo_target\n"
        "target, tokenizer = mlxspec.load(demo_target())\n"
        "draft = mlxspec.load_draft(demo_draft(), target, tokenizer)\n"
        "session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=2, draft_policy='fixed')\n"
        "text = session.generate('Hi there', chat=True, max_tokens=4)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'torch'}))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MLXSPEC_CACHE": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
