"""The one progress-bar factory: every long loop in sadc shows the same rich bar.

Layer 0 (beside :mod:`sadc.errors`), so the data layer can use it as well as the
trainer, runtimes and commands. Library code takes the ``console`` from its caller
(``None``: rich's default console); commands pass theirs.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


def progress_bar(
    console: Console | None = None, *, transient: bool = True, disable: bool = False, info: bool = False
) -> Progress:
    """``description  n/total  ━━━━  [info]  remaining`` for each task added to it.

    ``transient``: the bar disappears when done (True for passes inside a command;
    False for the main loop of a run). ``info``: a free text column filled from each
    task's ``info`` field (``add_task(..., info="")``, ``update(task, info=...)``).
    ``disable``: no output at all (non-main DDP ranks, single images).
    """
    columns = [TextColumn("[bold]{task.description}"), MofNCompleteColumn(), BarColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=transient, disable=disable)
