"""`sadc train`: supervised training from a recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import OverridesArg, console, handle_errors, overrides_list
from sadc.recipe import load_recipe


@handle_errors
def train(
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="YAML recipe (see recipes/).")],
    overrides: OverridesArg = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in output/name from its last.pt (no-op if finished).")] = False,
) -> None:
    """Train a detector on labeled data (teachers and baseline students)."""
    loaded = load_recipe(recipe, overrides_list(overrides))  # a bad recipe is one line before torch is imported
    from sadc.engine.run import run_train

    run_train(loaded, resume=resume, console=console)
