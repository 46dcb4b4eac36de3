"""The `sadc` command: one Typer app, one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from sadc import __version__
from sadc.cli import bench, data, distill, doctor, export, predict, recipe, train
from sadc.cli.common import SadcGroup, setup_logging

app = typer.Typer(
    name="sadc",
    help="Distil a big detector into a small fast one (SAD), export it to ONNX/TensorRT, benchmark every artefact.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,
    cls=SadcGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sadc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug-level logs.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    ctx.obj = {"debug": debug}
    setup_logging(verbose)


app.command("train")(train.train)
app.command("distill")(distill.distill)
app.command("pseudo-label")(distill.pseudo_label)
app.command("export")(export.export)
app.command("bench")(bench.bench)
app.command("val")(bench.val)
app.command("predict")(predict.predict)
app.command("doctor")(doctor.doctor)
app.add_typer(data.app, name="data")
app.add_typer(recipe.app, name="recipe")


def main() -> None:
    app()
