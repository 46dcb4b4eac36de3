"""The one exception type the CLI turns into a one-line message and exit code 2."""

import re


class SadcError(Exception):
    """A user-facing error: bad input, missing file, unavailable feature.

    The message is one line that names the file, key or value and says what would fix it.
    """


def one_line(err: BaseException) -> str:
    """The user-facing line of an error.

    A DataLoader worker re-raises its exception in the main process with the worker's
    traceback folded into the message ("Caught DataError in DataLoader worker process
    0.\nOriginal Traceback ..."); the line the user needs is the last one, without the
    ``module.Class: `` prefix. Any other line breaks become spaces.
    """
    text = str(err).strip()
    if "\nOriginal Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        text = last.split(": ", 1)[1] if re.match(r"^[A-Za-z_][\w.]*: ", last) else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__


def brief(text: str, width: int = 200) -> str:
    """``text`` (a library's message, whose length sadc does not control) on one line and about
    ``width`` characters, cut only between words, the cut marked with " ...".

    Never mid-word: a half word or half shape reads as the value itself. A first word longer
    than ``width`` (a path) is kept whole. Where sadc can say less (name the key, give both
    shapes), it should do that instead of calling this.
    """
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width + 1)
    if cut <= 0:
        cut = text.find(" ", width)
        if cut < 0:
            return text
    return text[:cut].rstrip(" ,;:") + " ..."


def first_line(err: BaseException, width: int = 200, *, typed: bool = False) -> str:
    """The first line of ``err``'s message, :func:`brief`-ed; ``typed`` puts ``Type: `` before it.

    The exception's type alone when its message is empty.
    """
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    return f"{type(err).__name__}: {brief(lines[0], width)}" if typed else brief(lines[0], width)


class CheckpointError(SadcError):
    """A checkpoint (or any atomically written file) could not be read, validated or written."""


class ExportError(SadcError):
    """An export, its check or its sidecar failed; the message says which file and why."""


class Interrupted(SadcError):
    """SIGINT/SIGTERM/SIGUSR1 arrived; last.pt was saved. Exit code 130."""
