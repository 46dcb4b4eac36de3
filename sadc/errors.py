"""The one exception type the CLI turns into a one-line message and exit code 2."""


class SadcError(Exception):
    """A user-facing error: bad input, missing file, unavailable feature.

    The message is one line that names the file, key or value and says what would fix it.
    """
