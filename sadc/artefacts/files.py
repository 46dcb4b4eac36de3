"""Files written so that a crash never leaves half of one: atomic writes, digests.

No torch here: sidecars and reports use it as well as checkpoints.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from sadc.errors import CheckpointError

TEMP_SUFFIX = ".tmp"


def _write_error(path: Path, err: OSError) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot write ({err.strerror or err}); the previous file, if any, is intact. "
        "Free disk space or choose a writable output folder"
    )


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, rename over ``path``.

    Whatever fails (no space, a read-only folder, an exception in ``write``, a signal),
    ``path`` is either the old file or the new one, never a mix. The temp file is named
    ``.NAME.XXXX.tmp`` (hidden, never a ``*.pt``), so if the process is killed with -9
    mid-write nothing takes the leftover for an artefact; :func:`remove_stale_temp_files`
    clears such leftovers. Every OSError becomes one :class:`CheckpointError` line.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make artefacts private to the writer
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(path, err) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.NAME.XXXX.tmp`` files :func:`atomic_write` leaves when killed mid-write.

    Call it only when no other process writes into ``folder`` (e.g. when resuming a run).
    Returns what was removed.
    """
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
