"""ONNX export of a sadc detector, and the JSON sidecar every export carries.

``export_onnx`` traces :class:`DeployModule` with the TorchScript exporter
(``dynamo=False``), checks the graph, simplifies it with onnxslim and writes
``<out>.json`` next to it: the spec, thresholds, I/O contract and provenance, so that
any artefact can be rebuilt and evaluated from itself alone.

Why the TorchScript exporter: the dynamo exporter (``dynamo=True``, the default since
torch 2.9) needs ``onnxscript``, which is not a sadc dependency (``torch.onnx.export``
fails with ModuleNotFoundError here), and it would need the NMS re-expressed through
``torch.onnx.ops`` or a custom translation table. The TorchScript exporter is
deprecated but present in torch 2.14, emits ``NonMaxSuppression`` straight from the
autograd ``Function.symbolic`` in :mod:`sadc.export.deploy`, and its output is checked
by ``onnx.checker`` and by the parity check after every export.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sadc import __version__
from sadc.artefacts.checkpoint import load_checkpoint
from sadc.artefacts.files import file_sha256
from sadc.artefacts.io import INPUT_NAME
from sadc.artefacts.postprocess import PostProcess
from sadc.artefacts.sidecar import SIDECAR_VERSION, write_onnx_artefact
from sadc.data.images import noise_images
from sadc.errors import ExportError, SadcError, first_line
from sadc.export.deploy import DeployModule
from sadc.models.detector import Detector

MIN_OPSET = 17  # the recipe's minimum (ExportSection.opset); TensorRT 10 parses 17..20
MAX_OPSET = 20  # the highest opset the TorchScript exporter supports


# ------------------------------------------------------------------------------ export


@dataclass
class ExportSource:
    """What an export starts from: the detector, where it came from, the recipe's ``export:`` section."""

    detector: Detector
    provenance: dict[str, Any] | None = None  # {"checkpoint": path, "sha256": hex}
    recipe_export: dict[str, Any] = field(default_factory=dict)
    image_folders: list[Path] = field(default_factory=list)  # the recipe's val, then unlabeled images

    def default_parity_folder(self) -> Path | None:
        """The first of the training recipe's image folders that exists here, if any."""
        return next((p for p in self.image_folders if p.is_dir()), None)


def _mapping(d: dict, key: str) -> dict:
    """``d[key]`` when it is a dict, else {} (old checkpoints lack the recipe or its sections)."""
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def load_export_source(source: Path | str | Detector, input_size: str | tuple[int, int] | None = None) -> ExportSource:
    """A checkpoint path, ``torchvision:NAME`` (with ``input_size``) or a detector -> :class:`ExportSource` (eval mode)."""
    if isinstance(source, Detector):
        return ExportSource(source)
    from sadc.models.torchvision_zoo import PREFIX

    if str(source).startswith(PREFIX):
        from sadc.models.torchvision_zoo import (
            load_torchvision_detector,
            parse_input_size,
        )

        detector, weights = load_torchvision_detector(str(source), parse_input_size(input_size, str(source)))
        return ExportSource(detector, {"checkpoint": str(source), "sha256": None, "weights": weights})
    from sadc.models.loading import detector_from_checkpoint

    path = Path(source)
    ckpt = load_checkpoint(path)
    detector = detector_from_checkpoint(ckpt, str(path)).eval()
    recipe = _mapping(ckpt, "recipe")
    section = _mapping(recipe, "export")
    data = _mapping(recipe, "data")
    folders = [_val_images(data.get("val")), data.get("unlabeled")]
    return ExportSource(
        detector,
        {"checkpoint": str(path), "sha256": file_sha256(path)},
        dict(section),
        [Path(f) for f in folders if isinstance(f, str)],
    )


def _val_images(val) -> str | None:
    """The recipe's val image folder: its ``images``, else the folder its layout names (None if unreadable)."""
    if not isinstance(val, dict):
        return None
    if val.get("images") or not val.get("annotations"):
        return val.get("images")
    from sadc.data.formats import image_root

    try:
        return str(image_root(Path(val["annotations"]), val.get("format") or "auto"))
    except (SadcError, OSError):  # moved or unreadable since training: the unlabeled folder is next
        return None


def onnx_bytes(
    module: DeployModule,
    *,
    opset: int = MIN_OPSET,
    example_batch: int = 2,
) -> bytes:
    """Trace ``module`` into a serialized ONNX model with a dynamic batch axis.

    The example batch is 2, not 1: tracing at batch 1 lets the exporter fold the batch
    dimension into constants (Squeeze/Reshape), which breaks other batch sizes.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset}: supported opsets are {MIN_OPSET}..{MAX_OPSET}")
    h, w = module.spec.input_size
    example = noise_images(example_batch, (h, w))
    names = list(module.output_names)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings (shape-to-int conversions in torchvision's decode) and the
        # exporter's deprecation notice are expected; the graph is verified afterwards.
        warnings.simplefilter("ignore")
        try:
            _trace(module, example, buffer, opset, names)
        except SadcError:
            raise
        except Exception as err:  # exporter failures are many types; say which and how to see more
            raise ExportError(
                f"torch.onnx.export failed for backbone {module.spec.backbone!r} at opset {opset} "
                f"({first_line(err, typed=True)}); sadc --debug export ... shows the traceback"
            ) from err
    return buffer.getvalue()


def _trace(module: DeployModule, example: torch.Tensor, buffer: io.BytesIO, opset: int, names: list[str]) -> None:
    torch.onnx.export(
        module,
        (example,),
        buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
        dynamo=False,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=names,
        dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *names]},
        do_constant_folding=True,
    )


def export_onnx(
    source: Path | Detector,
    out_path: Path,
    *,
    opset: int = MIN_OPSET,
    post: PostProcess = PostProcess(),
    raw: bool = False,
    half: bool = False,
    simplify: bool = True,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Export a checkpoint (path) or a :class:`Detector` to ONNX at ``out_path``.

    Graph: input ``images`` uint8 [B, 3, H, W] (B dynamic, H, W = spec.input_size);
    outputs ``num_dets`` int32 [B, 1], ``boxes`` float32 [B, K, 4], ``scores`` float32
    [B, K], ``labels`` int32 [B, K] with K = ``post.max_detections`` (see
    :mod:`sadc.export.deploy`), or with ``raw=True`` ``scores`` [B, A, C] and ``boxes``
    [B, A, 4] before NMS. Writes ``<out_path>.json`` (see :func:`write_sidecar`);
    ``provenance`` (``{"checkpoint", "sha256"}``) is recorded as its ``source`` when
    ``source`` is a detector loaded elsewhere. The sidecar's content is also embedded in
    the file (``metadata_props``), so the file works without its ``.json``.

    ``half=True``: the fp16 graph (sidecar format ``onnx-fp16``): backbone, FPN and head
    in fp16, normalisation, decode and post-processing in fp32; what a strongly typed
    TensorRT 11 network builds fp16 engines from. ONNX Runtime runs it too (on CPUs by
    casting, slowly). Returns ``out_path``.
    """
    import onnx

    loaded = load_export_source(source)
    provenance = loaded.provenance or provenance
    module = DeployModule(loaded.detector, post, raw=raw, half=half)
    model = onnx.load_from_string(onnx_bytes(module, opset=opset))
    if simplify:
        model = simplify_model(model)
    _set_output_shapes(model, output_shapes(module))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # checker raises ValidationError / InferenceError
        raise ExportError(f"{out_path}: exported graph fails onnx.checker ({first_line(err)})") from None
    fmt = "onnx-raw" if raw else ("onnx-fp16" if half else "onnx")
    payload = sidecar_payload(
        module, fmt=fmt, opset=opset, source=provenance, artefact=Path(out_path), extra={"simplified": simplify}
    )
    return write_onnx_artefact(Path(out_path), model, payload)


def simplify_model(model):
    """onnxslim: constant folding, dead-node and Identity removal, shape inference."""
    try:
        import onnxslim
    except ImportError as err:
        raise ExportError("onnxslim is not installed: pip install 'sadc[cpu]' or pass --no-simplify") from err
    return onnxslim.slim(model)


def output_shapes(module: DeployModule) -> dict[str, tuple[list, int]]:
    """Output name -> (shape with "batch" for the dynamic axis, ONNX elem type)."""
    from onnx import TensorProto

    if module.raw:
        a = int(module.anchors.shape[0])
        return {
            "scores": (["batch", a, module.num_classes], TensorProto.FLOAT),
            "boxes": (["batch", a, 4], TensorProto.FLOAT),
        }
    k = module.post.max_detections
    return {
        "num_dets": (["batch", 1], TensorProto.INT32),
        "boxes": (["batch", k, 4], TensorProto.FLOAT),
        "scores": (["batch", k], TensorProto.FLOAT),
        "labels": (["batch", k], TensorProto.INT32),
    }


def _set_output_shapes(model, shapes: dict[str, tuple[list, int]]) -> None:
    # The tracer names K "Whereboxes_dim_1"; K is a constant of the graph, so state it,
    # which lets consumers (and TensorRT's shape checks) see static [B, K, 4].
    for out in model.graph.output:
        shape, elem_type = shapes[out.name]
        if out.type.tensor_type.elem_type != elem_type:
            raise ExportError(
                f"output {out.name}: exported with ONNX type {out.type.tensor_type.elem_type}, expected {elem_type}"
            )
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        for d in shape:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d


# ------------------------------------------------------------------------------ sidecars


def sidecar_payload(
    module: DeployModule,
    *,
    fmt: str,
    opset: int,
    source: dict[str, Any] | None,
    artefact: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON sidecar of an ONNX export of ``module``."""
    spec = module.spec
    h, w = spec.input_size
    shapes = output_shapes(module)
    dtype_names = {1: "float32", 6: "int32"}
    return {
        "sidecar_version": SIDECAR_VERSION,
        "format": fmt,
        "sadc_version": __version__,
        "file": Path(artefact).name,
        "sha256": None,  # set once the file is written (write_onnx_artefact)
        "source": source,
        "spec": spec.model_dump(mode="json"),
        "class_names": list(spec.class_names),
        "input_size": [h, w],
        "mean": list(spec.mean),
        "std": list(spec.std),
        "opset": opset,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 3, h, w]},
        "output_names": list(module.output_names),
        "outputs": {name: {"dtype": dtype_names[t], "shape": shape} for name, (shape, t) in shapes.items()},
        "thresholds": module.post.to_json(),
        "precision": "fp16 network, fp32 decode and NMS" if module.fp16 else "fp32",
        "nms": {"kind": "onnx", "op": "NonMaxSuppression"} if not module.raw else None,
        "box_format": "xyxy, input pixels, clipped to the image" if not module.raw else "xyxy, input pixels, unclipped",
        **(extra or {}),
    }
