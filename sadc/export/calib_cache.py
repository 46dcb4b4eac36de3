"""Calibration ranges kept next to the artefact, so a second INT8 export does not recalibrate.

``best.int8.onnx`` -> ``best.calib.json``::

    {"sadc_calibration_cache": 1,
     "key": {"network": sha256 of the calibrated layers (op, tensor names, weights),
             "method": "entropy", "images": [[path, bytes, mtime_ns], ...], "batch": 8},
     "ranges": ONNX Runtime's TensorsData as a dict (its calibration_cache_path format)}

The ranges depend only on the network layers, the images and the method: not on the
thresholds, the NMS choice or the INT8 target (symmetric or not is decided when the
ranges are turned into scales). So an export with other ``--conf``/``--max-det``, or
``--int8-target cpu`` after ``tensorrt``, reuses them; a retrained checkpoint, other
images or another ``--method`` recalibrate (and rewrite the file).

ONNX Runtime reads and writes the ranges itself (``quantize_static(...,
calibration_cache_path=...)``); an older onnxruntime without that argument calibrates
every time, which :func:`ort_supports_cache` tells.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from sadc.artefacts.files import atomic_write

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_path(int8_path: Path) -> Path:
    """``runs/x/best.int8.onnx`` -> ``runs/x/best.calib.json``."""
    from sadc.export.formats import artefact_stem

    stem = artefact_stem(Path(int8_path))
    return stem.with_name(stem.name + ".calib.json")


def ort_supports_cache() -> bool:
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def network_fingerprint(model: Any, op_types: tuple[str, ...]) -> str:
    """sha256 of the layers calibration looks at: their op types, tensor names and weights.

    Post-processing constants (thresholds, K) are not part of it, so graphs that differ
    only there share a fingerprint.
    """
    weights = {init.name: init.raw_data or init.SerializeToString() for init in model.graph.initializer}
    h = hashlib.sha256()
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        h.update(f"{node.op_type}|{','.join(node.input)}|{','.join(node.output)}\n".encode())
        for name in node.input:
            if name in weights:
                h.update(weights[name])
    return h.hexdigest()


def cache_key(fingerprint: str, method: str, paths: list[Path], batch: int) -> dict[str, Any]:
    images = []
    for p in paths:
        stat = Path(p).stat()
        images.append([str(Path(p).resolve()), stat.st_size, stat.st_mtime_ns])
    return {"network": fingerprint, "method": method, "images": images, "batch": int(batch)}


def read_ranges(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """ONNX Runtime's ranges from ``path`` when it exists and was made with ``key``; else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("%s: unreadable calibration cache; calibrating again", path)
        return None
    if not isinstance(data, dict) or data.get("sadc_calibration_cache") != CACHE_VERSION:
        return None
    if data.get("key") != key:
        log.info("%s: made for another network, image set or method; calibrating again", path)
        return None
    return data.get("ranges")


def write_ranges(path: Path, key: dict[str, Any], ranges: dict[str, Any]) -> Path:
    payload = {"sadc_calibration_cache": CACHE_VERSION, "key": key, "ranges": ranges}
    text = json.dumps(payload) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))
    return Path(path)
