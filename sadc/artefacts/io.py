"""The deploy graph's I/O contract, shared by the exporter and every runtime.

    input   images    uint8   [B, 3, H, W]
    outputs num_dets  int32   [B, 1]
            boxes     float32 [B, K, 4]   x1, y1, x2, y2 in input pixels
            scores    float32 [B, K]
            labels    int32   [B, K]

The layout of TensorRT's EfficientNMS, so that ONNX Runtime and TensorRT consumers read
one format. Rows past ``num_dets`` are zero.
"""

from __future__ import annotations

from typing import Any

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "labels")
"""Outputs of the deploy graph, in order (TensorRT EfficientNMS layout)."""
RAW_OUTPUT_NAMES = ("scores", "boxes")
"""Outputs of the raw graph: sigmoid scores [B, A, C], decoded boxes [B, A, 4] (unclipped)."""
INPUT_NAME = "images"


def detections_from_outputs(num_dets: Any, boxes: Any, scores: Any, labels: Any) -> list[dict[str, Any]]:
    """EfficientNMS layout (torch or numpy) -> per image ``{boxes [k,4], scores [k], labels [k] int64}`` tensors."""
    import torch

    num_dets, boxes, scores, labels = (torch.as_tensor(t) for t in (num_dets, boxes, scores, labels))
    out = []
    for i in range(num_dets.shape[0]):
        n = int(num_dets[i, 0])
        out.append({"boxes": boxes[i, :n].float(), "scores": scores[i, :n].float(), "labels": labels[i, :n].long()})
    return out
