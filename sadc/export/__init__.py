"""Export: a checkpoint becomes deployable artefacts, each with a JSON sidecar.

- :mod:`sadc.export.deploy`: ``DeployModule`` (uint8 images -> normalise -> net -> decode -> NMS)
- :mod:`sadc.export.onnx`: ``export_onnx``, sidecars (``read_sidecar``)
- :mod:`sadc.export.parity`: torch vs ONNX Runtime after every export
- :mod:`sadc.export.quantize`: ``quantize_int8`` (QDQ, calibrated on unlabeled images)
- :mod:`sadc.export.tensorrt`: ``build_engine`` (TensorRT 10, CUDA machines)
- :mod:`sadc.export.formats`: the table of formats behind ``sadc export``
- :mod:`sadc.export.pipeline`: ``export_checkpoint(checkpoint, format, ExportOptions)``, what ``sadc export`` runs

Names are re-exported lazily, so importing this package imports neither torch nor onnx.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DeployModule": "sadc.export.deploy",
    "export_onnx": "sadc.export.onnx",
    "read_sidecar": "sadc.artefacts.sidecar",
    "check_parity": "sadc.export.parity",
    "run_parity": "sadc.export.parity",
    "ParityReport": "sadc.export.parity",
    "quantize_int8": "sadc.export.quantize",
    "build_engine": "sadc.export.tensorrt",
    "FORMATS": "sadc.export.formats",
    "ExportOptions": "sadc.export.pipeline",
    "export_checkpoint": "sadc.export.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sadc.export' has no attribute {name!r}")
