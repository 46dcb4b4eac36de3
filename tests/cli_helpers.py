"""CLI helpers shared by the bad-input and survival tests: run a command, check its one-line error."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from sadc.cli.main import app
from tests.conftest import tiny_recipe_dict

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def fails_cleanly(result, *fragments: str, code: int = 2) -> str:
    """The result is exit ``code`` with one line of output containing every fragment, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def write_recipe(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def tiny(world: Path, root: Path, **train) -> dict:
    return tiny_recipe_dict(world, root, **{"steps": 3, "eval_every": 0, **train})


def distill_recipe(world: Path, root: Path, teacher: Path, **train) -> dict:
    data = tiny(world, root, **train)
    data["name"] = "student"
    data["model"]["teacher"] = {"source": str(teacher)}
    data["data"].update(unlabeled=str(world / "unlabeled"), batch_size=4, val=None)
    return data
