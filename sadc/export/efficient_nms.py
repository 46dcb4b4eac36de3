"""The TensorRT EfficientNMS variant of the deploy graph (``sadc export -f engine --nms efficient``).

The deploy graph's NMS is ONNX ``NonMaxSuppression``, which TensorRT imports as its
INMSLayer; NVIDIA/TensorRT#4248 measures that layer at a fraction of the EfficientNMS
plugin's speed on TensorRT 10.0-10.6. This variant is the raw graph (scores [B, A, C]
after sigmoid, decoded boxes [B, A, 4]) with the boxes clipped to the image and one
``EfficientNMS_TRT`` node appended (TensorRT's plugin README, plugin version "1")::

    raw scores [B, A, C] ───────────────────────────────┐
    raw boxes  [B, A, 4] ─ Max(0) ─ Min([W, H, W, H]) ──┴─ EfficientNMS_TRT (domain "TRT")
        -> num_dets int32 [B, 1], boxes float32 [B, K, 4], scores float32 [B, K], labels int32 [B, K]

Attributes: ``background_class`` -1 (no background column), ``box_coding`` 0 (corners,
x1 y1 x2 y2), ``score_activation`` 0 (scores are already sigmoids), ``class_agnostic`` 0
(per-class NMS, as the ONNX graph), ``iou_threshold`` / ``score_threshold`` /
``max_output_boxes`` from :class:`~sadc.artefacts.postprocess.PostProcess`. The outputs
are named like the deploy graph's, so every runtime reads one contract. The node is in
the custom domain ``TRT`` (declared in ``opset_import``), which keeps ``onnx.checker``
working; TensorRT's ONNX parser imports any node it has no importer for as the plugin of
the same name, whatever its domain. Two differences from the ONNX graph: the plugin keeps
scores >= the threshold (ONNX: >) and sorts the best 4096 candidates instead of
``topk_candidates``. ONNX Runtime cannot run the plugin: this graph is for engines only.
"""

from __future__ import annotations

from typing import Any

from sadc.artefacts.io import OUTPUT_NAMES, RAW_OUTPUT_NAMES
from sadc.artefacts.postprocess import PostProcess
from sadc.errors import SadcError

PLUGIN = "EfficientNMS_TRT"
DOMAIN = "TRT"
PLUGIN_CANDIDATES = 4096  # the plugin's fixed numSelectedBoxes
NMS_CHOICES = ("onnx", "efficient")


def nms_note(kind: str) -> dict[str, Any]:
    """The sidecar's ``nms`` entry for ``kind`` (onnx or efficient)."""
    if kind == "efficient":
        return {"kind": "efficient", "op": f"{DOMAIN}::{PLUGIN}", "candidates": PLUGIN_CANDIDATES, "runs_in": "TensorRT only"}
    return {"kind": "onnx", "op": "NonMaxSuppression"}


def efficient_nms_graph(raw: Any, post: PostProcess, input_size: tuple[int, int]) -> Any:
    """A raw-graph ModelProto (outputs ``scores`` [B, A, C], ``boxes`` [B, A, 4]) -> the EfficientNMS graph.

    The raw graph's outputs are renamed ``raw_scores`` / ``raw_boxes`` and stay internal;
    the new outputs follow :data:`~sadc.artefacts.io.OUTPUT_NAMES` with K =
    ``post.max_detections``. ``raw`` is not modified.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(raw)
    graph = model.graph
    names = [o.name for o in graph.output]
    if sorted(names) != sorted(RAW_OUTPUT_NAMES):
        raise SadcError(f"EfficientNMS needs the raw graph (outputs {list(RAW_OUTPUT_NAMES)}), got {names}")
    renamed = {name: f"raw_{name}" for name in RAW_OUTPUT_NAMES}
    for node in graph.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
        node.input[:] = [renamed.get(i, i) for i in node.input]
    del graph.output[:]

    import numpy as np

    h, w = int(input_size[0]), int(input_size[1])
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros((), dtype=np.float32), "nms_clip_low"),
            numpy_helper.from_array(np.array([w, h, w, h], dtype=np.float32), "nms_clip_high"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Max", ["raw_boxes", "nms_clip_low"], ["nms_boxes_low"], name="nms_clip_low"),
            helper.make_node("Min", ["nms_boxes_low", "nms_clip_high"], ["nms_boxes"], name="nms_clip_high"),
            helper.make_node(
                PLUGIN,
                ["nms_boxes", "raw_scores"],
                list(OUTPUT_NAMES),
                name="efficient_nms",
                domain=DOMAIN,
                background_class=-1,
                box_coding=0,
                iou_threshold=float(post.iou_threshold),
                max_output_boxes=int(post.max_detections),
                plugin_version="1",
                score_activation=0,
                score_threshold=float(post.score_threshold),
                class_agnostic=0,
            ),
        ]
    )
    k = int(post.max_detections)
    shapes: dict[str, tuple[int, list[str | int | None]]] = {
        "num_dets": (TensorProto.INT32, ["batch", 1]),
        "boxes": (TensorProto.FLOAT, ["batch", k, 4]),
        "scores": (TensorProto.FLOAT, ["batch", k]),
        "labels": (TensorProto.INT32, ["batch", k]),
    }
    graph.output.extend(helper.make_tensor_value_info(n, shapes[n][0], shapes[n][1]) for n in OUTPUT_NAMES)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    onnx.checker.check_model(model)
    return model


def export_efficient_nms(raw_path, out_path, post: PostProcess):
    """Write the EfficientNMS graph of the raw export ``raw_path`` (fp32, fp16 or INT8) to ``out_path`` (+ sidecar).

    The sidecar keeps the raw graph's format (its precision: ``onnx``, ``onnx-fp16``,
    ``onnx-int8``), takes the deploy outputs and ``post``'s thresholds, and records
    ``nms.kind = "efficient"``.
    """
    import onnx

    from sadc.artefacts.sidecar import read_sidecar, write_onnx_artefact

    sidecar = read_sidecar(raw_path)
    model = efficient_nms_graph(onnx.load(str(raw_path)), post, tuple(sidecar["input_size"]))
    k = post.max_detections
    fmt = sidecar["format"]
    if fmt == "onnx-raw":
        fmt = "onnx-fp16" if str(sidecar.get("precision", "")).startswith("fp16") else "onnx"
    payload = {
        **sidecar,
        "format": fmt,
        "output_names": list(OUTPUT_NAMES),
        "outputs": {
            "num_dets": {"dtype": "int32", "shape": ["batch", 1]},
            "boxes": {"dtype": "float32", "shape": ["batch", k, 4]},
            "scores": {"dtype": "float32", "shape": ["batch", k]},
            "labels": {"dtype": "int32", "shape": ["batch", k]},
        },
        "thresholds": post.to_json(),
        "box_format": "xyxy, input pixels, clipped to the image",
        "nms": nms_note("efficient"),
        "raw_model": {"file": sidecar.get("file"), "sha256": sidecar.get("sha256")},
    }
    return write_onnx_artefact(out_path, model, payload)
