"""What every command shares: the console, one-line errors, recipe options."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.logging import RichHandler

from sadc.engine.trainer import Interrupted
from sadc.errors import SadcError

console = Console(soft_wrap=True)  # long paths stay on one line (and greppable)
err_console = Console(stderr=True, soft_wrap=True)

OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted overrides applied after the recipe, e.g. train.steps=200 data.batch_size=8.", show_default=False),
]


def _current_context():
    try:  # typer >= 0.20 vendors click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer on real click
        from click import get_current_context
    return get_current_context(silent=True)


def debug_enabled() -> bool:
    ctx = _current_context()
    root = ctx.find_root() if ctx else None
    return bool(root and isinstance(root.obj, dict) and root.obj.get("debug"))


def handle_errors(fn):
    """Turn SadcError into one red line and exit code 2 (130 for an interrupt); --debug re-raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Interrupted as err:
            err_console.print(f"[yellow]interrupted:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except SadcError as err:
            if debug_enabled():
                raise
            err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def setup_logging(verbose: bool) -> None:
    # Other libraries speak at WARNING and above (ONNX Runtime's quantizer is chatty at
    # INFO); sadc's own loggers at INFO, or DEBUG with --verbose.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    logging.getLogger("sadc").setLevel(logging.DEBUG if verbose else logging.INFO)


def overrides_list(overrides: list[str] | None) -> list[str]:
    return list(overrides or [])


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
