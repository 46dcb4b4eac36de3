"""What every command shares: the console, one-line errors, recipe options."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperGroup, TyperOption
from typer.exceptions import TyperException

from sadc.errors import Interrupted, SadcError, one_line

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


def given_flags() -> list[str]:
    """The long flags of the running command that the user set (command line or environment), not defaults.

    From Click's parameter sources, so a flag given at its default value counts as given.
    """
    ctx = _current_context()
    if ctx is None:
        return []
    given = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.param_type_name == "option" and source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(max(param.opts, key=len))  # "--out", not "-o"
    return given


def debug_enabled() -> bool:
    ctx = _current_context()
    root = ctx.find_root() if ctx else None
    return bool(root and isinstance(root.obj, dict) and root.obj.get("debug"))


def _os_error_line(err: OSError) -> str:
    where = err.filename if err.filename is not None else "a file"
    reason = err.strerror or str(err) or type(err).__name__
    return f"{where}: {reason}; check the path, free disk space or choose a writable folder"


def handle_errors(fn):
    """Errors become one red line: exit 2 for user errors, 1 for the unexpected, 130 for an interrupt.

    SadcError (bad input, missing file, unavailable feature) and OSError (a path that
    cannot be read or written) are user errors. Anything else is a bug: it is named in
    one line that says how to see the traceback. ``sadc --debug CMD`` re-raises
    everything, traceback included.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Interrupted as err:
            err_console.print(f"[yellow]interrupted:[/] {escape(one_line(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (SadcError, OSError) as err:
            if debug_enabled():
                raise
            line = one_line(err) if isinstance(err, SadcError) else _os_error_line(err)
            err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as err:
            if debug_enabled():
                raise
            err_console.print(
                f"[red]error:[/] unexpected {type(err).__name__}: {escape(one_line(err))} "
                "(a bug in sadc? `sadc --debug ...` shows the traceback; please report it)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

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


def reflow(text: str | None) -> str | None:
    """Join the hard-wrapped lines of each paragraph (docstrings wrap at 80-120 columns; the terminal wraps help)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _bare_flags(params: list) -> list:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # Typer shows the metavar, else "<bool>", after the flag
    return params


def polish_help(command) -> None:
    """Help as people expect it, for ``command`` and everything under it: paragraphs of docstrings
    reflowed, and flags shown bare (Typer >= 0.20 prints ``<bool>`` after every flag)."""
    command.help = reflow(command.help)
    # --help is made on first use and then cached by the command: make it now, to polish it too.
    _bare_flags([*command.params, command.get_help_option(command.context_class(command))])
    for sub in getattr(command, "commands", {}).values():
        polish_help(sub)


class SadcGroup(TyperGroup):
    """The root group: polishes the help of every command once they are all built (see :func:`polish_help`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        polish_help(self)

    def get_params(self, ctx):
        return _bare_flags(super().get_params(ctx))  # the completion options are added after __init__
