"""The package's import direction: each layer imports only the layers below it.

Every ``import`` and ``from ... import`` in sadc (function-local ones included) is read
with :mod:`ast`; an import from a higher layer fails with the file and line. ``sadc --help`` must not import torch (startup time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sadc

ROOT = Path(sadc.__file__).parent

# Lowest first. A module may import its own package and anything in a lower layer.
LAYERS: list[set[str]] = [
    {"errors", "progress", "devices", "__init__"},
    {"artefacts"},
    {"models"},
    {"recipe"},
    {"data"},
    {"engine"},
    {"runtime"},
    {"distill"},
    {"export"},
    {"bench"},
    {"cli", "__main__"},
]


def _unit(path: Path, root: Path) -> str:
    """``sadc/export/onnx.py`` -> ``export``; ``sadc/recipe/load.py`` -> ``recipe``."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _rank(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"sadc/{unit} is in no layer: add it to LAYERS in {__file__}")


def _imported_units(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "sadc":
                if len(parts) > 1:
                    yield node.lineno, parts[1]
                else:  # from sadc import x
                    for alias in node.names:
                        yield node.lineno, alias.name if alias.name != "__version__" else "__init__"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "sadc" and len(parts) > 1:
                    yield node.lineno, parts[1]


def upward_imports(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        unit = _unit(path, root)
        rank = _rank(unit)
        for lineno, other in _imported_units(ast.parse(path.read_text(), str(path))):
            if other == unit:
                continue
            if _rank(other) > rank:
                bad.append(f"{path.relative_to(root.parent)}:{lineno}: {unit} imports {other}")
    return bad


def test_no_upward_imports():
    assert upward_imports() == []


def test_the_check_catches_an_upward_import(tmp_path):
    pkg = tmp_path / "sadc"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "x.py").write_text("def f():\n    from sadc.export.onnx import export_onnx\n")
    (pkg / "errors.py").write_text("")
    assert upward_imports(pkg) == ["sadc/models/x.py:2: models imports export"]


@pytest.mark.parametrize("argv", [["--help"], ["export", "--help"], ["distill", "--help"], ["bench", "--help"]])
def test_help_does_not_import_torch(argv):
    code = (
        "import sys\n"
        "from sadc.cli.main import app\n"
        "from typer.main import get_command\n"
        f"try:\n    get_command(app)({argv!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'onnx', 'onnxruntime') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-500:]
