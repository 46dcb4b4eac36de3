"""INT8 post-training quantization of a deploy graph with ONNX Runtime (QDQ format).

The result is an explicitly quantized graph for TensorRT (``BuilderFlag``-free INT8
from Q/DQ) that also runs in ONNX Runtime:

- only the network is quantized: QDQ goes on the inputs and weights of
  ``Conv``/``ConvTranspose``/``MatMul``/``Gemm`` (``op_types_to_quantize``) and *not*
  on their outputs (``OpTypesToExcludeOutputQuantization``), which is where TensorRT
  recommends Q/DQ (inputs of weighted layers). Preprocessing, head reshapes, decode,
  TopK and NMS stay float, and every node downstream of the first ``TopK`` is also
  listed in ``nodes_to_exclude`` so no future op type can slip in;
- activations: signed INT8, symmetric (zero point 0), calibrated on letterboxed
  images from an unlabeled folder with entropy (default), percentile or min-max;
- weights: signed INT8, per output channel, symmetric;
- biases stay float (``QuantizeBias=False``): TensorRT's parser rejects an INT32
  ``DequantizeLinear`` feeding a bias, and ONNX Runtime quantizes float biases itself
  when it fuses QDQ Conv;
- one dedicated Q/DQ pair per consumer (``DedicatedQDQPair``), the layout TensorRT's
  Q/DQ fusion expects.

``target="cpu"`` is ONNX Runtime's fast CPU form instead: uint8 asymmetric activations,
quantized Conv outputs, int32 biases, and Relus folded into the quantized tensors before
them (:data:`CPU_FOLDED_OP_TYPES`).

Calibration runs one batch at a time (``CalibStridedMinMax`` with a stride of one
batch; ORT applies it to every method), so memory holds one batch of activations,
not ``n`` images' worth.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sadc.artefacts.io import INPUT_NAME
from sadc.errors import SadcError

if TYPE_CHECKING:
    from sadc.data.reader import SkipList

log = logging.getLogger(__name__)

METHODS = ("entropy", "percentile", "minmax")
TARGETS = ("tensorrt", "cpu")
TARGET_CHOICES = ("auto", *TARGETS)
"""``--int8-target`` values: ``auto`` resolves to one of :data:`TARGETS` (:func:`resolve_target`)."""
QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CPU_FOLDED_OP_TYPES = ("Relu",)
"""Also quantized for ``--int8-target cpu``: with uint8 activations, ORT's quantizer removes
a Relu that follows a quantized tensor and gives that tensor the Relu's range, so Conv ->
Relu -> Conv is one QLinearConv into the next. Left out, the Conv's output is quantized
with its own (signed) range, dequantized for a float Relu and requantized: two more
passes per Conv -> Relu (0.89x the INT8 latency at batch 8 on the quickstart student,
benchmarks/RESULTS.md). TensorRT fuses Conv + ReLU itself; its form is left alone."""
CALIBRATED_OP_TYPES = (*QUANTIZED_OP_TYPES, *CPU_FOLDED_OP_TYPES)
"""Calibration covers both targets' tensors, so either target's ranges serve the other."""
POSTPROCESS_START = "TopK"  # the first node of post-processing; it and all downstream stay float


class CalibrationImages:
    """ONNX Runtime ``CalibrationDataReader``: ``{"images": uint8 [b, 3, H, W]}`` batches.

    Images are letterboxed to ``size`` (H, W) exactly as at inference time and decoded
    lazily, one batch per ``get_next``. ``set_range`` / ``__len__`` (in batches) let
    ORT calibrate a slice at a time. Duck-typed rather than subclassed so that
    importing this module does not import onnxruntime.
    """

    def __init__(self, paths: Sequence[Path], size: tuple[int, int], batch: int):
        self.skipped: list[tuple[Path, str]] = []
        self.yielded = False
        if batch < 1:
            raise SadcError(f"calibration batch {batch}: must be at least 1")
        self.paths = list(paths)
        self.size = (int(size[0]), int(size[1]))
        self.batch = int(batch)
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = int(start_index), min(int(end_index), len(self))

    def rewind(self) -> None:
        self.set_range(0, len(self))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        import torch

        from sadc.data.images import ImageReadError, load_image
        from sadc.data.transforms import letterbox

        while self._next < self._end:
            chunk = self.paths[self._next * self.batch : (self._next + 1) * self.batch]
            self._next += 1
            images = []
            for path in chunk:  # unreadable files are skipped and counted, as in every image folder
                try:
                    images.append(letterbox(load_image(path), self.size)[0])
                except ImageReadError as err:
                    self.skipped.append((path, str(err)))
                    log.warning("calibration: skipping %s", err)
            if images:
                self.yielded = True
                return {INPUT_NAME: torch.stack(images).numpy()}
        if self.yielded or not self.skipped:
            return None
        raise SadcError(f"calibration: none of the {len(self.paths)} images could be read (first: {self.skipped[0][1]})")

    def __iter__(self):
        while (item := self.get_next()) is not None:
            yield item


def resolve_target(choice: str, *, to_engine: bool) -> tuple[str, str]:
    """``--int8-target`` -> (tensorrt or cpu, why): ``auto`` is tensorrt when the export goes on
    to an engine or CUDA + TensorRT are usable here, cpu otherwise (ONNX Runtime's fast CPU form)."""
    if choice not in TARGET_CHOICES:
        raise SadcError(f"--int8-target {choice}: choose one of {', '.join(TARGET_CHOICES)}")
    if choice != "auto":
        return choice, f"--int8-target {choice}"
    if to_engine:
        return "tensorrt", "auto: the graph goes on to a TensorRT engine"
    from sadc.runtime.trt_host import tensorrt_available

    ready, why = tensorrt_available()
    if ready:
        return "tensorrt", f"auto: {why} is here"
    return "cpu", f"auto: no CUDA + TensorRT here ({why.split(' (')[0]}); --int8-target tensorrt for engines"


def select_calibration_images(source: Path | Sequence[Path], n: int, skips: SkipList | None = None) -> list[Path]:
    """``n`` images that decode, spread evenly over a folder (sorted) or a list of paths.

    The folder is read by :mod:`sadc.data.reader` as every command reads one. Each
    chosen image is decoded once here; one that does not decode is replaced by the next
    candidate, so every calibration batch holds real images (ONNX Runtime fails a
    calibration pass that collects nothing). Unreadable files go to ``skips``.
    """
    from itertools import islice

    from sadc.data.reader import SkipList, check_header, decoded, scan_images, text_name

    if n < 1:
        raise SadcError(f"--calib-images {n}: must be at least 1")
    skips = SkipList() if skips is None else skips
    if isinstance(source, (str, Path)):
        where = f"--calib {text_name(source)}"
        scan = scan_images(Path(source), what=where)
        paths = scan.paths
        for path, reason in scan.skipped:
            skips.add(path, reason)
    else:
        where = "calibration image list"
        paths = []
        for path in map(Path, source):
            problem = check_header(path)
            if problem is None:
                paths.append(path)
            else:
                skips.add(path, problem)
    if not paths:
        first = f" (first: {text_name(skips.entries[0][1])})" if skips else ""
        raise SadcError(f"{where}: no readable images found{first}; pass a folder of unlabeled images like the deployment data")
    if len(paths) < n:
        log.warning("%s: %d images, fewer than the %d asked for; calibrating on all of them", where, len(paths), n)
    spread = sorted({int(i * len(paths) / n) for i in range(min(n, len(paths)))})
    rest = sorted(set(range(len(paths))) - set(spread))
    chosen = sorted(i for i, _ in islice(decoded(spread + rest, skips, path=lambda i: paths[i]), n))
    if not chosen:
        raise SadcError(f"{where}: none of the {len(paths)} images can be decoded (first: {text_name(skips.entries[0][1])})")
    return [paths[i] for i in chosen]


def postprocess_nodes(model) -> list[str]:
    """Names of the nodes from the first ``TopK`` on (decode's candidate selection, NMS, padding)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    start = [n for n in model.graph.node if n.op_type == POSTPROCESS_START]
    seen: dict[str, Any] = {}
    stack = list(start)
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen[node.name] = node
        for out in node.output:
            stack.extend(consumers.get(out, []))
    return list(seen)


def quantize_int8(
    onnx_in: Path,
    onnx_out: Path,
    calib_images: Path | Sequence[Path],
    *,
    n: int = 64,
    method: str = "entropy",
    batch: int = 8,
    target: str = "tensorrt",
    cache: Path | None = None,
) -> Path:
    """Quantize the fp32 deploy (or raw) graph ``onnx_in`` (with its sidecar) to ``onnx_out``.

    ``target`` picks the QDQ flavour (both keep decode and NMS in float):

    - ``tensorrt`` (default): int8 symmetric activations, Q/DQ on layer inputs only,
      float biases: TensorRT >= 10's explicit-quantization form. ONNX Runtime runs it,
      but on x86 CPUs slower than fp32 (its S8S8 kernels are not the fast path).
    - ``cpu``: uint8 asymmetric activations (U8S8) with quantized outputs and int32
      biases, so that ONNX Runtime fuses each Conv into QLinearConv (x86 VPMADDUBSW /
      VNNI): the fast INT8 path of ONNX Runtime on CPUs. TensorRT rejects it.

    ``calib_images``: a folder of unlabeled images, or a list of image files; ``n`` of
    them (evenly spaced) are letterboxed to the sidecar's input size and fed in
    batches of ``batch`` (the calibration batch; the graph's batch stays dynamic).
    Writes ``<onnx_out>.json`` with format ``onnx-int8`` and the calibration settings.

    ``cache``: the calibration cache (default ``<stem>.calib.json`` beside ``onnx_out``,
    see :mod:`sadc.export.calib_cache`): its ranges are used when they were made from the
    same network layers, images and method, and written after a calibration otherwise.
    """
    try:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise SadcError("onnxruntime is not installed: pip install 'sadc[cpu]'") from err
    import onnx

    from sadc.artefacts.sidecar import read_sidecar, write_onnx_artefact
    from sadc.export import calib_cache

    if method not in METHODS:
        raise SadcError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise SadcError(f"--int8-target {target}: choose one of {', '.join(TARGETS)}")
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    sidecar = read_sidecar(onnx_in)
    if sidecar["format"] not in ("onnx", "onnx-raw") or str(sidecar.get("precision", "fp32")) != "fp32":
        raise SadcError(
            f"{onnx_in}: format {sidecar['format']!r}; INT8 quantization needs an fp32 graph (format 'onnx' or 'onnx-raw')"
        )
    from sadc.data.reader import SkipList

    skips = SkipList()
    paths = select_calibration_images(calib_images, n, skips)
    reader = CalibrationImages(paths, tuple(sidecar["input_size"]), batch)
    calibrate = {
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "minmax": CalibrationMethod.MinMax,
    }
    op_types = QUANTIZED_OP_TYPES if target == "tensorrt" else CALIBRATED_OP_TYPES
    settings = {
        "quant_format": "QDQ",
        "target": target,
        "activations": "int8 symmetric per-tensor" if target == "tensorrt" else "uint8 asymmetric per-tensor",
        "weights": "int8 symmetric per-channel",
        "bias": "float" if target == "tensorrt" else "int32",
        "op_types": list(op_types),
    }
    if target == "tensorrt":
        flavour = {
            "ActivationSymmetric": True,
            "QuantizeBias": False,  # TensorRT rejects an int32 bias DequantizeLinear
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),  # Q/DQ on inputs, as TensorRT advises
        }
        activation_type = QuantType.QInt8
    else:
        flavour = {"ActivationSymmetric": False}
        activation_type = QuantType.QUInt8
    with tempfile.TemporaryDirectory(prefix="sadc-quant-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        # ORT prints calibration progress to stdout; the CLI prints its own summary.
        prepared, out_tmp = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # Shape inference + ORT's basic (standard-ONNX) graph optimizations: the
        # quantizer needs tensor shapes, and the result stays plain ONNX for TensorRT.
        _prepare(quant_pre_process, onnx_in, prepared)
        model = onnx.load(str(prepared))
        cache_file = Path(cache) if cache is not None else calib_cache.cache_path(onnx_out)
        key = calib_cache.cache_key(calib_cache.network_fingerprint(model, CALIBRATED_OP_TYPES), method, paths, batch)
        ranges_file, cache_args = Path(tmp) / "ranges.json", {}
        reused = False
        if calib_cache.ort_supports_cache():
            cached = calib_cache.read_ranges(cache_file, key)
            if cached is not None:
                ranges_file.write_text(json.dumps(cached))
                reused = True
            cache_args = {"calibration_cache_path": str(ranges_file)}  # ORT reads it, or writes it after calibrating
        quantize_static(
            str(prepared),  # a path: quantize_static moves a ModelProto's weights to external data
            str(out_tmp),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=activation_type,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=False,
            calibrate_method=calibrate[method],
            op_types_to_quantize=list(CALIBRATED_OP_TYPES),  # what calibration covers
            nodes_to_exclude=postprocess_nodes(model) + _left_float(model, op_types),
            extra_options={
                "WeightSymmetric": True,
                "DedicatedQDQPair": True,
                "CalibStridedMinMax": 1,  # one batch per calibrator pass (all methods), bounded memory
                **flavour,
            },
            **cache_args,
        )
        quantized = onnx.load(str(out_tmp))
        if cache_args and not reused and ranges_file.is_file():
            calib_cache.write_ranges(cache_file, key, json.loads(ranges_file.read_text()))
    onnx.checker.check_model(quantized)

    payload = {
        **sidecar,
        "format": "onnx-int8",
        "precision": "int8 network (QDQ), fp32 decode and NMS",
        "file": onnx_out.name,
        "sha256": None,
        "fp32_model": {"file": onnx_in.name, "sha256": sidecar.get("sha256")},
        "quantization": {
            **settings,
            "method": method,
            "calibration_images": len(paths),
            "calibration_batch": reader.batch,
            "calibration_skipped": sorted({str(p) for p, _ in [*skips.entries, *reader.skipped]}),
            "calibration_source": str(calib_images) if isinstance(calib_images, (str, Path)) else "list",
            "onnxruntime": _ort_version(),
            "calibration_cache": {
                "file": cache_file.name if cache_args else None,
                "reused": reused,
                "note": None if cache_args else "this onnxruntime has no calibration_cache_path: calibrated every time",
            },
        },
    }
    return write_onnx_artefact(onnx_out, quantized, payload)


def _left_float(model, op_types: tuple[str, ...]) -> list[str]:
    """Nodes of a calibrated op type that this target does not quantize (by name)."""
    return [n.name for n in model.graph.node if n.op_type in CALIBRATED_OP_TYPES and n.op_type not in op_types]


def _prepare(quant_pre_process, onnx_in: Path, prepared: Path) -> None:
    """ORT's ``quant_pre_process`` with ONNX's shape inference only (``skip_symbolic_shape``).

    The deploy graphs have static shapes but the batch, which ONNX's shape inference
    follows; ORT's symbolic pass adds nothing the quantizer uses (the quickstart
    student's INT8 graph is the same, node for node and weight for weight, with and
    without it: checked with onnxruntime 1.32). It also cannot read the deploy graph: it
    ignores ``GatherND``'s ``batch_dims`` (onnxruntime 1.32's ``_infer_GatherND``), and
    when it fails it saves a partial model with megabytes of external data to the
    working directory and raises a bare ``Exception``.
    """
    quant_pre_process(str(onnx_in.resolve()), str(prepared.resolve()), skip_symbolic_shape=True)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
