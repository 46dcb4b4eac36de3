"""TensorRT engine from a sadc ONNX export (TensorRT 10 and 11 Python API).

    builder = trt.Builder(logger)
    network = builder.create_network(flags)      # explicit batch is the only mode since TRT 10
    trt.OnnxParser(network, logger).parse_from_file(onnx)
    config: WORKSPACE pool limit, FP16 flag (TRT 10 fp16 only), optimization profile on "images",
            timing cache (read, reused, written back)
    builder.build_serialized_network(network, config) -> engine bytes

Precision:
- fp32: no precision flag (TensorRT may still use TF32 on Ampere+, its default).
- fp16, TensorRT 10: ``BuilderFlag.FP16`` on the fp32 graph (a weakly typed network).
- fp16, TensorRT 11 (which removed the flag): a *strongly typed* network from the fp16
  graph (``export_onnx(..., half=True)``, format ``onnx-fp16``): backbone, FPN and head
  in fp16, normalisation, decode and NMS in fp32, as the graph's types say.
- int8: the QDQ graph from ``sadc export --format int8``, built as a strongly typed
  network: explicit quantization, no calibrator and no INT8 flag (the documented way
  since TensorRT 10.1; it also works on TensorRT 11). Layers outside the Q/DQ pairs
  (decode, NMS) run in fp32, as in the graph.

TensorRT is reached only through :func:`sadc.runtime.trt_host.load_tensorrt`, the seam
tests replace with a fake ``trt`` module. Everything that needs no GPU (argument
checks, profile shapes, sidecar content) is plain Python. An engine only runs on the
GPU model and TensorRT version that built it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sadc.artefacts.io import INPUT_NAME
from sadc.artefacts.postprocess import PostProcess
from sadc.artefacts.sidecar import ENGINE_NOTE
from sadc.errors import SadcError, brief

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
MIN_TENSORRT = 10
MAX_TOPK = 3840  # ITopKLayer: k <= 3840 (TensorRT's operator reference, TopK)
TENSORRT_MISSING = "TensorRT export needs tensorrt>=10 and a CUDA GPU: on a CUDA machine pip install 'sadc[gpu]'"


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes of the optimization profile: ``1 <= min <= opt <= max``.

    TensorRT tunes kernels for ``opt`` and accepts any batch in [min, max].
    """

    min: int = 1
    opt: int = 8
    max: int = 16

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise SadcError(f"--min-batch {self.min} --opt-batch {self.opt} --max-batch {self.max}: need 1 <= min <= opt <= max")

    def shapes(self, input_size: tuple[int, int]) -> dict[str, tuple[int, int, int, int]]:
        """``{"min": (min, 3, H, W), "opt": ..., "max": ...}`` for the ``images`` input."""
        h, w = int(input_size[0]), int(input_size[1])
        return {k: (b, 3, h, w) for k, b in (("min", self.min), ("opt", self.opt), ("max", self.max))}


def graph_precision(sidecar: dict[str, Any]) -> str:
    """The precision an ONNX graph was written in, from its sidecar: fp32, fp16 or int8."""
    return {"onnx-int8": "int8", "onnx-fp16": "fp16"}.get(sidecar.get("format", ""), "fp32")


def check_precision(precision: str, onnx_format: str) -> None:
    """Refuse precision/graph combinations TensorRT would build wrongly or not at all."""
    if precision not in PRECISIONS:
        raise SadcError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if onnx_format == "onnx-raw":
        raise SadcError("a raw graph (--raw) has no detections; build an engine from a deploy graph")
    if precision == "int8" and onnx_format != "onnx-int8":
        raise SadcError(
            f"int8 engine needs the QDQ graph (format onnx-int8), got {onnx_format!r}: "
            "pass --calib DIR to sadc export --format engine"
        )
    if precision != "int8" and onnx_format == "onnx-int8":
        raise SadcError(f"a QDQ (onnx-int8) graph builds only an int8 engine, not {precision}; drop --half")
    if precision == "fp32" and onnx_format == "onnx-fp16":
        raise SadcError("an fp16 graph (onnx-fp16) builds an fp16 engine, not fp32; pass --half or the fp32 .onnx")


def strongly_typed(precision: str, onnx_format: str, host) -> bool:
    """Whether the network is built strongly typed (precisions from the graph, no precision flags).

    INT8 (explicit Q/DQ) and fp16 graphs always are; an fp16 engine from the fp32 graph
    uses TensorRT 10's ``BuilderFlag.FP16`` instead, which TensorRT 11 removed: there it
    is refused (``sadc export`` builds TensorRT 11 fp16 engines from the fp16 graph).
    """
    if onnx_format in ("onnx-int8", "onnx-fp16"):
        return True
    if precision == "fp16" and not host.has_fp16_flag():
        raise SadcError(
            f"TensorRT {host.version} has no FP16 builder flag (removed in TensorRT 11): build fp16 from the fp16 "
            "graph (sadc export -f engine --half does this; in Python export_onnx(..., half=True))"
        )
    return False


def check_workspace(workspace_gb: float) -> int:
    """Workspace in bytes; GiB in (0, 1024]."""
    if not 0 < workspace_gb <= 1024:
        raise SadcError(f"--workspace {workspace_gb}: GiB of builder scratch memory, in (0, 1024]")
    return int(workspace_gb * (1 << 30))


def check_topk(post: PostProcess, nms: str) -> None:
    """Refuse, before any work, a deploy graph whose TopK TensorRT cannot build.

    The ONNX-NMS graph keeps ``--topk`` candidates with TopK; the EfficientNMS graph has
    no TopK of its own (the plugin sorts its fixed 4096 candidates).
    """
    if nms == "onnx" and post.topk_candidates > MAX_TOPK:
        raise SadcError(
            f"--topk {post.topk_candidates}: TensorRT's TopK keeps at most {MAX_TOPK} values; "
            f"use --topk {MAX_TOPK} or fewer for an engine, or --nms efficient"
        )


def import_tensorrt():
    """The :class:`~sadc.runtime.trt_host.TensorRTHost` to build with, or :class:`SadcError` saying what is missing."""
    from sadc.runtime import trt_host

    try:
        return trt_host.load_tensorrt()
    except trt_host.TensorRTUnavailable as err:
        raise SadcError(f"{TENSORRT_MISSING} ({err})") from None


def engine_sidecar(
    onnx_sidecar: dict[str, Any],
    *,
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    profile: BatchProfile,
    workspace_gb: float,
    tensorrt_version: str,
    gpu: str,
    compute_capability: str,
    timing_cache: Path | None,
) -> dict[str, Any]:
    """The ``<engine>.json`` payload: the ONNX sidecar's contract plus how the engine was built."""
    from sadc.artefacts.files import file_sha256

    shapes = profile.shapes(tuple(onnx_sidecar["input_size"]))
    return {
        **{k: v for k, v in onnx_sidecar.items() if k != "verification"},  # the engine gets its own
        "format": "tensorrt",
        "file": Path(engine_path).name,
        "sha256": file_sha256(engine_path) if Path(engine_path).is_file() else None,
        "onnx": {"file": Path(onnx_path).name, "format": onnx_sidecar["format"], "sha256": onnx_sidecar.get("sha256")},
        "tensorrt": {
            "version": tensorrt_version,
            "gpu": gpu,
            "compute_capability": compute_capability,
            "precision": precision,
            "profile": {INPUT_NAME: {k: list(v) for k, v in shapes.items()}},
            "workspace_gb": workspace_gb,
            "timing_cache": str(timing_cache) if timing_cache else None,
            "note": ENGINE_NOTE,
        },
    }


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str = "fp32",
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 16,
    workspace_gb: float = 4.0,
    timing_cache: Path | None = None,
) -> Path:
    """Build ``engine_path`` (+ ``<engine>.json``) from a sadc ONNX export on this GPU.

    Arguments are checked before TensorRT is imported, so mistakes fail fast on any
    machine. ``timing_cache``: a file reused when present and rewritten afterwards,
    which makes rebuilds on the same GPU much faster. TensorRT is reached through
    :func:`sadc.runtime.trt_host.load_tensorrt` (the seam tests replace).
    """
    from sadc.artefacts.files import atomic_write
    from sadc.artefacts.sidecar import read_sidecar, write_sidecar

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SadcError(f"{onnx_path}: ONNX file not found")
    sidecar = read_sidecar(onnx_path)
    check_precision(precision, sidecar["format"])
    profile = BatchProfile(min_batch, opt_batch, max_batch)
    workspace = check_workspace(workspace_gb)
    host = import_tensorrt()
    trt = host.trt
    typed = strongly_typed(precision, sidecar["format"], host)
    shapes = profile.shapes(tuple(sidecar["input_size"]))

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SadcError(f"{onnx_path}: TensorRT {host.version} cannot parse it ({brief(errors, 400)})")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if precision == "fp16" and not typed:
        config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 10: a weakly typed network may pick fp16 kernels
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt_profile)

    cache_bytes = timing_cache.read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s was made on another device or TensorRT; starting a fresh one", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    log.info("building %s TensorRT engine from %s (this takes minutes)", precision, onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SadcError(f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above)")
    atomic_write(engine_path, lambda f: f.write(memoryview(serialized)))
    if timing_cache:
        atomic_write(Path(timing_cache), lambda f: f.write(memoryview(config.get_timing_cache().serialize())))

    payload = engine_sidecar(
        sidecar,
        onnx_path=onnx_path,
        engine_path=engine_path,
        precision=precision,
        profile=profile,
        workspace_gb=workspace_gb,
        tensorrt_version=host.version,
        gpu=host.gpu,
        compute_capability=host.compute_capability,
        timing_cache=timing_cache,
    )
    payload["tensorrt"]["strongly_typed"] = typed
    write_sidecar(engine_path, payload)
    return engine_path


def trtexec_command(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    profile: BatchProfile,
    input_size,
    workspace_gb: float,
    timing_cache: Path | None = None,
) -> str:
    """The ``trtexec`` line that builds the same engine (for docs and for the CLI's summary)."""
    shapes = profile.shapes(tuple(input_size))
    fmt = {k: "x".join(str(d) for d in v) for k, v in shapes.items()}
    parts = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={INPUT_NAME}:{fmt['min']}",
        f"--optShapes={INPUT_NAME}:{fmt['opt']}",
        f"--maxShapes={INPUT_NAME}:{fmt['max']}",
        f"--memPoolSize=workspace:{int(workspace_gb * 1024)}M",
    ]
    if precision == "fp16":
        parts.append("--fp16")
    if precision == "int8":
        parts.append("--stronglyTyped")
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(parts)
