"""The JSON sidecar every export carries: ``best.onnx`` -> ``best.onnx.json``.

It holds the spec, thresholds, I/O contract and provenance of an artefact, so that any
artefact can be rebuilt and evaluated from itself alone. Written by :mod:`sadc.export`,
read by :mod:`sadc.runtime` and :mod:`sadc.bench`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sadc.artefacts.files import atomic_write, file_sha256
from sadc.errors import ExportError

SIDECAR_VERSION = 1
ENGINE_NOTE = (
    "A TensorRT engine runs only on the GPU model and TensorRT version that built it; "
    "rebuild it on the target machine from the .onnx next to it."
)
"""Written into every engine's sidecar and said when an engine does not load."""


def sidecar_path(artefact: Path) -> Path:
    """``best.onnx`` -> ``best.onnx.json`` (the full name, so best.onnx and best.engine never clash)."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".json")


def write_sidecar(artefact: Path, payload: dict[str, Any]) -> Path:
    path = sidecar_path(artefact)
    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


REQUIRED_KEYS = ("format", "spec", "class_names", "input_size", "mean", "std", "output_names", "thresholds")


def read_sidecar(artefact: Path) -> dict[str, Any]:
    """The sidecar of ``artefact`` (``best.onnx`` or ``best.onnx.json`` itself), validated.

    Raises :class:`ExportError` with one line naming the file when it is missing,
    unreadable, from a newer sadc, or lacks a required key.
    """
    artefact = Path(artefact)
    path = artefact if artefact.name.endswith(".json") else sidecar_path(artefact)
    if not path.is_file():
        raise ExportError(f"{path} not found: not a sadc export? re-export with sadc export")
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: unreadable sidecar ({err}); re-export with sadc export") from None
    if not isinstance(payload, dict):
        raise ExportError(f"{path}: sidecar is not a JSON object; re-export with sadc export")
    version = payload.get("sidecar_version", SIDECAR_VERSION)
    if not isinstance(version, int) or version > SIDECAR_VERSION:
        raise ExportError(f"{path}: sidecar version {version} is newer than this sadc understands; upgrade sadc")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ExportError(f"{path}: sidecar lacks {', '.join(missing)}; re-export with sadc export")
    return payload


def check_sidecar_sha(artefact: Path, payload: dict[str, Any]) -> None:
    """ExportError unless ``artefact`` is the file its sidecar describes (sha256), when the sidecar records one."""
    recorded = payload.get("sha256")
    if recorded and file_sha256(artefact) != recorded:
        raise ExportError(
            f"{artefact}: its sidecar {Path(artefact).name}.json describes another file (sha256 differs); "
            "re-export with sadc export (or, if you changed the graph yourself, update the sidecar's sha256)"
        )
