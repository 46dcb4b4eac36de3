"""The JSON sidecar every export carries: ``best.onnx`` -> ``best.onnx.json``.

It holds the spec, thresholds, I/O contract and provenance of an artefact, so that any
artefact can be rebuilt and evaluated from itself alone. Written by :mod:`sadc.export`,
read by :mod:`sadc.runtime` and :mod:`sadc.bench`.

ONNX files also carry the same content inside them (``metadata_props["sadc"]``, all of
it but the file's own sha256), so a ``best.onnx`` copied without its ``.json`` still
works: :func:`read_sidecar` falls back to it. Engines are opaque to ONNX tooling and
keep theirs in the sidecar only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sadc.artefacts.files import atomic_write, file_sha256
from sadc.errors import ExportError

SIDECAR_VERSION = 1
METADATA_KEY = "sadc"
"""The ONNX ``metadata_props`` key holding the sidecar's content (JSON)."""
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


def embed_metadata(model: Any, payload: dict[str, Any]) -> None:
    """Put ``payload`` (less ``sha256``: a file cannot hold its own digest) into an ONNX ModelProto's
    ``metadata_props`` under :data:`METADATA_KEY`, replacing an earlier entry."""
    text = json.dumps({k: v for k, v in payload.items() if k != "sha256"})
    for prop in [p for p in model.metadata_props if p.key == METADATA_KEY]:
        model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text


def onnx_metadata(artefact: Path) -> dict[str, Any] | None:
    """The sidecar content embedded in an ONNX file's ``metadata_props``, or None when it has none."""
    try:
        import onnx

        model = onnx.load(str(artefact), load_external_data=False)
    except Exception:  # not ONNX, damaged, or onnx missing: there is no metadata to read
        return None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                payload = json.loads(prop.value)
            except json.JSONDecodeError:
                return None
            return payload if isinstance(payload, dict) else None
    return None


REQUIRED_KEYS = ("format", "spec", "class_names", "input_size", "mean", "std", "output_names", "thresholds")


def read_sidecar(artefact: Path) -> dict[str, Any]:
    """The sidecar of ``artefact`` (``best.onnx`` or ``best.onnx.json`` itself), validated.

    An ONNX file without its ``.json`` is read from its own ``metadata_props`` (no
    ``sha256`` then: the file is its own content). Raises :class:`ExportError` with one line naming the file when it is missing,
    unreadable, from a newer sadc, or lacks a required key.
    """
    artefact = Path(artefact)
    path = artefact if artefact.name.endswith(".json") else sidecar_path(artefact)
    if not path.is_file():
        embedded = onnx_metadata(artefact) if artefact.suffix == ".onnx" and artefact.is_file() else None
        if embedded is None:
            inside = " and the file holds no sadc metadata" if artefact.suffix == ".onnx" else ""
            raise ExportError(f"{path} not found{inside}: not a sadc export? re-export with sadc export")
        payload = embedded
        path = artefact  # errors below name the ONNX file the metadata came from
    else:
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


def write_onnx_artefact(path: Path, model: Any, payload: dict[str, Any]) -> Path:
    """Write an ONNX ModelProto with ``payload`` embedded (:func:`embed_metadata`), then its sidecar.

    The sidecar gets the written file's sha256; the file gets everything else. Returns ``path``.
    """
    path = Path(path)
    # A new file is unverified until its gate runs, whatever the graph it came from passed.
    payload = {**{k: v for k, v in payload.items() if k != "verification"}, "file": path.name}
    embed_metadata(model, payload)
    data = model.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    write_sidecar(path, {**payload, "sha256": file_sha256(path)})
    return path


def update_sidecar(artefact: Path, updates: dict[str, Any]) -> Path:
    """Merge ``updates`` into ``artefact``'s sidecar (e.g. the gate's ``verification``); the artefact is untouched."""
    path = sidecar_path(artefact)
    payload = json.loads(path.read_text()) if path.is_file() else read_sidecar(artefact)
    return write_sidecar(artefact, {**payload, **updates})
