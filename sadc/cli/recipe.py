"""`sadc recipe`: look at recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.syntax import Syntax

from sadc.cli.common import OverridesArg, console, handle_errors, overrides_list
from sadc.recipe import check_paths, load_recipe

app = typer.Typer(help="Show and check recipes.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe.")],
    overrides: OverridesArg = None,
) -> None:
    """Print the resolved recipe (defaults filled in, overrides applied)."""
    resolved = load_recipe(recipe, overrides_list(overrides))
    console.print(Syntax(resolved.to_yaml(), "yaml", background_color="default"))


@app.command("check")
@handle_errors
def check(
    recipes: Annotated[list[Path], typer.Argument(help="YAML recipes to validate.")],
    paths: Annotated[
        bool, typer.Option("--paths", help="Also check that every data folder, annotation file and model source exists here.")
    ] = False,
) -> None:
    """Validate recipes (keys, types, ranges, contradictions); exit 2 on the first invalid one."""
    for path in recipes:
        resolved = load_recipe(path)
        if paths:
            check_paths(resolved, where=str(path))
        console.print(f"[green]ok[/] {path}")
