"""mAP equals pycocotools' COCOeval, and the letterbox inverse puts boxes back in place."""

import pytest
import torch

from sadc.data.coco import CocoDataset
from sadc.data.evaluate import coco_map, evaluate, to_coco_results
from sadc.data.loaders import build_loader
from tests.helpers import noisy_detections, pycocotools_stats


def test_map_equals_pycocotools(tiny_world):
    gt = tiny_world / "val.json"
    results = noisy_detections(gt)
    ours = coco_map(gt, results)
    ref = pycocotools_stats(gt, results)
    assert 0.1 < ours["mAP"] < 0.95
    for name, value in zip(["mAP", "AP50", "AP75", "APs", "APm", "APl"], ref[:6], strict=True):
        assert ours[name] == pytest.approx(max(value, 0.0), abs=1e-4), name


def test_perfect_predictions_through_the_letterbox_score_one(tiny_world):
    """Ground truth as predicted by a model in network pixels maps back to mAP 1.0."""
    data = CocoDataset(tiny_world / "val.json", tiny_world / "val", (96, 160))  # non-square: real padding
    loader = build_loader(data, batch_size=4, workers=0, shuffle=False, seed=0, infinite=False)
    it = iter(loader)
    _, first_targets = next(it)
    assert first_targets[0]["meta"].pad_x > 0

    def oracle(images, _targets=iter(loader)):  # noqa: B008 - one iterator shared by every call, on purpose
        _, targets = next(_targets)
        return [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in targets]

    metrics = evaluate(oracle, loader, data.coco_json, data.cat_ids)
    assert metrics["mAP"] == pytest.approx(1.0, abs=1e-6)


def test_to_coco_results_maps_labels_to_category_ids(tiny_world):
    data = CocoDataset(tiny_world / "val.json", tiny_world / "val", (64, 64))
    _, target = data[0]
    det = {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([2])}
    (res,) = to_coco_results([det], [target], data.cat_ids)
    assert res["category_id"] == data.cat_ids[2]
    assert res["bbox"] == pytest.approx([1.0, 2.0, 10.0, 20.0])
