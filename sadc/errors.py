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


class CheckpointError(SadcError):
    """A checkpoint (or any atomically written file) could not be read, validated or written."""


class ExportError(SadcError):
    """An export, its check or its sidecar failed; the message says which file and why."""


class Interrupted(SadcError):
    """SIGINT/SIGTERM arrived; last.pt was saved. Exit code 130."""
