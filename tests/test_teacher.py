"""Hard targets from a teacher's detections: thresholds and class maps (sadc.distill.teacher)."""

from __future__ import annotations

import pytest
import torch

from sadc.distill.teacher import pseudo_targets


def _detections():
    return [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]]),
            "scores": torch.tensor([0.9, 0.4, 0.39]),
            "labels": torch.tensor([2, 0, 1]),
        },
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]


def test_pseudo_targets_threshold_is_inclusive():
    out = pseudo_targets(_detections(), threshold=0.4)
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels"}
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]))
    assert out[0]["labels"].tolist() == [2, 0] and out[0]["labels"].dtype == torch.int64
    assert out[1]["boxes"].shape == (0, 4) and out[1]["labels"].shape == (0,)
    assert pseudo_targets(_detections(), threshold=0.95)[0]["boxes"].shape == (0, 4)


def test_pseudo_targets_class_map_remaps_and_drops():
    out = pseudo_targets(_detections(), threshold=0.0, class_map=[-1, 0, 5])
    assert out[0]["labels"].tolist() == [5, 0]  # teacher 2 -> 5, 0 dropped, 1 -> 0
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[0.0, 0, 10, 10], [1, 2, 3, 4]]))
    with pytest.raises(ValueError, match="class_map"):
        pseudo_targets(_detections(), threshold=0.0, class_map=[0, 1])
