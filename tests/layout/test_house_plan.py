"""The package layout holds: stages import only earlier stages, files and functions stay small.

These read the source (``ast``), so they check every import, lazy ones inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "difix_refiner"

STAGES = [
    "core",
    "data",
    "rendering",
    "cameras",
    "scene",
    "fixer",
    "pairs",
    "training",
    "distillation",
    "method_configs",
    "evaluation",
    "commands",
]
"""Pipeline order; ``data`` and ``rendering`` are peers (neither imports the other)."""

PEERS = {frozenset({"data", "rendering"})}

MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 120
LONG_FUNCTION_MARK = "one straight computation"
"""A longer function may stay when a comment in it says it is one straight computation (and why)."""


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _stage(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_stages(tree: ast.AST):
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "difix_refiner" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_stage_list_covers_the_package():
    found = {_stage(p) for p in _modules()} - {"__init__"}
    assert found == set(STAGES)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_pipeline_only(path):
    stage = _stage(path)
    if stage == "__init__":
        return
    rank = STAGES.index(stage)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for lineno, target in _imported_stages(tree):
        if target == stage:
            continue
        assert target in STAGES, f"{path.name}:{lineno} imports unknown difix_refiner.{target}"
        assert frozenset({stage, target}) not in PEERS, f"{path.name}:{lineno}: {stage} must not import its peer {target}"
        assert STAGES.index(target) < rank, f"{path.relative_to(PACKAGE)}:{lineno}: {stage} imports {target}, a later stage"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_small(path):
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    assert len(lines) <= MAX_FILE_LINES, f"{path.name} has {len(lines)} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            assert length <= MAX_FUNCTION_LINES or LONG_FUNCTION_MARK in body, (
                f"{path.name}:{node.lineno} {node.name} has {length} lines"
            )


def _undocumented_fields(tree: ast.AST):
    """(class, field) of dataclass fields with no docstring right below them."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        is_dataclass = any(
            (isinstance(d, ast.Name) and d.id == "dataclass")
            or (isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "dataclass")
            for d in node.decorator_list
        )
        if not is_dataclass or node.name.startswith("_"):
            continue
        body = node.body
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and not stmt.target.id.startswith("_"):
                if any(word in ast.unparse(stmt.annotation) for word in ("ClassVar", "Suppress")):
                    continue
                nxt = body[i + 1] if i + 1 < len(body) else None
                documented = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)
                if not documented:
                    yield node.name, stmt.target.id


@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if _stage(p) in ("commands", "distillation", "method_configs") or p.name.endswith(("config.py", "options.py", "settings.py"))],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_every_option_has_a_docstring(path):
    """Option dataclasses document every field, so ``--help`` documents every option."""
    missing = list(_undocumented_fields(ast.parse(path.read_text(encoding="utf-8"))))
    assert not missing, f"{path.name}: fields without a docstring: {missing}"
