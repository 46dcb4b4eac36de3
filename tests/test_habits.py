"""Habits that keep the test suite and the benchmarks tidy, checked by reading their source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports (function-local imports included), as dotted names."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_test_module_imports_another_or_the_conftest():
    """Shared helpers live in tests/helpers.py; a test module imports only that of the tests."""
    offenders = [
        f"{path.name} imports {name}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for name in _imported_modules(path)
        if name.split(".")[-1].startswith("test_") or name in ("conftest", "tests.conftest")
    ]
    assert offenders == []


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_import_the_installed_package(path):
    """Benchmarks run as ``python -m benchmarks.X`` against the installed sadc, with no sys.path edits."""
    assert "sys.path" not in path.read_text()


def test_architecture_page_names_every_module_and_no_missing_one():
    """docs/architecture.md's package table cannot drift: each module of sadc/ is named in its package's row
    (``name.py`` or the package's folder for subpackages), and every ``sadc/...`` path the page names exists."""
    import re

    page = (ROOT / "docs/architecture.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(sadc/[a-z_]+/)` \|.*$", page, re.M)}
    missing = []
    for path in sorted((ROOT / "sadc").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.name in ("__init__.py", "__main__.py"):
            continue
        if len(rel.parts) == 2:  # sadc/errors.py and the like: named by path anywhere on the page
            named, where = f"`{rel}`", page
        else:  # a package's module, or its subpackage's folder, in the package's row
            named = f"`{path.name}`" if len(rel.parts) == 3 else f"`{rel.parts[2]}/`"
            where = rows.get(f"{rel.parts[0]}/{rel.parts[1]}/", "")
        if named not in where:
            missing.append(str(rel))
    assert missing == []
    named_paths = set(re.findall(r"`(sadc/[\w/]+(?:\.py|/))`", page))
    assert named_paths and [p for p in sorted(named_paths) if not (ROOT / p).exists()] == []
