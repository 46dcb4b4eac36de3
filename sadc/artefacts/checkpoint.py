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

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from sadc import __version__
from sadc.artefacts.files import atomic_write
from sadc.errors import CheckpointError, first_line

FORMAT = "sadc-checkpoint"
FORMAT_VERSION = 1
MIN_FORMAT_VERSION = 1  # oldest format this sadc still reads


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "sadc_version": __version__, **payload}
    atomic_write(Path(path), lambda f: torch.save(payload, f))


_NOT_CHECKPOINTS = {
    ".onnx": "an ONNX export, not a checkpoint; pass the .pt it was exported from",
    ".engine": "a TensorRT engine, not a checkpoint; pass the .pt it was built from",
    ".json": "a JSON file, not a checkpoint; pass a sadc .pt (e.g. runs/NAME/best.pt)",
}


def torch_load(path: Path, map_location: str | torch.device = "cpu", what: str = "PyTorch file", *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with one :class:`CheckpointError` line for every failure.

    Only tensors and plain containers are unpickled (no code runs from the file).
    ``mmap=True`` maps tensor data instead of reading it: a cheap look at the header.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    for suffix, hint in _NOT_CHECKPOINTS.items():
        if path.name.endswith(suffix):
            raise CheckpointError(f"{path}: {hint}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (an interrupted copy or download?)")
    mmap = mmap and zipfile.is_zipfile(path)  # only torch's zip format maps; anything else is read (and refused) plainly
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:
            raise CheckpointError(
                f"{path}: holds a pickled {found.group(1)}, not only tensors (a whole model saved with "
                "torch.save(model)?); sadc reads weights only: save model.state_dict() and use that file"
            ) from None
        raise CheckpointError(f"{path}: not a readable {what} (not written by torch.save, or damaged)") from None
    except Exception as err:  # zip/pickle/struct errors of many types for files that are not torch's (or are cut short)
        raise CheckpointError(
            f"{path}: not a readable {what} (not written by torch.save, or cut short: {first_line(err, 120, typed=True)})"
        ) from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """Read and validate a sadc checkpoint; every failure is one :class:`CheckpointError` line.

    ``mmap=True`` leaves tensor data on disk until used (a cheap validity check).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return check_checkpoint(torch_load(path, map_location=map_location, what="sadc checkpoint", mmap=mmap), path)


def check_checkpoint(ckpt: Any, path: Path) -> dict[str, Any]:
    """``ckpt`` (what ``path`` held) if it is a sadc checkpoint this sadc reads; one CheckpointError line if not."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise CheckpointError(
                f"{path}: a plain state dict, not a sadc checkpoint; use it as a model `source:` in a recipe "
                "with the architecture fields set"
            )
        raise CheckpointError(f"{path}: not a sadc checkpoint (no '{FORMAT}' header)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or not MIN_FORMAT_VERSION <= version <= FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(
            f"{path}: checkpoint format {version!r} is {'newer than' if newer else 'not one'} this sadc understands "
            f"({MIN_FORMAT_VERSION}..{FORMAT_VERSION}; written by sadc {ckpt.get('sadc_version', '?')}, this is "
            f"sadc {__version__}); {'upgrade sadc' if newer else 're-create it with this sadc'}"
        )
    for key in ("spec", "model"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint has no '{key}' entry; it is damaged or incomplete")
    return ckpt
