"""Self-describing checkpoints, written atomically.

A checkpoint is a dict::

    format: "sadc-checkpoint", format_version: 1, sadc_version
    spec:    DetectorSpec as a dict       (rebuild the model from the file alone)
    model:   state dict
    recipe:  the resolved recipe as a dict
    metrics: latest evaluation, step, finished
    train:   optimizer / scheduler / scaler / RNG state (last.pt only; stripped in best.pt)
    teacher: {source, sha256} for distilled students

Writes go to a temporary file in the same directory, are fsync'ed, then renamed over
the target: a crash or ``kill -9`` mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from sadc import __version__
from sadc.errors import SadcError

FORMAT = "sadc-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(SadcError):
    pass


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make artefacts private to the writer
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(
                f"{path}: cannot write ({err.strerror or err}); the previous file, if any, is intact. "
                "Free disk space or choose a writable output folder"
            ) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "sadc_version": __version__, **payload}
    atomic_write(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a sadc checkpoint; every failure is one :class:`CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a readable sadc checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise CheckpointError(
                f"{path}: a plain state dict, not a sadc checkpoint; use it as a model `source:` in a recipe "
                "with the architecture fields set"
            )
        raise CheckpointError(f"{path}: not a sadc checkpoint (no '{FORMAT}' header)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this sadc understands ({FORMAT_VERSION}); "
            "upgrade sadc"
        )
    for key in ("spec", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint has no '{key}' entry; it is damaged or incomplete")
    return ckpt


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
