"""The batched RetinaNet loss against torchvision's per-image loss: matches, values, gradients."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from sadc.engine.run import run_train
from sadc.models.detector import build_detector
from sadc.models.retina_loss import match_anchors, retinanet_loss
from sadc.recipe import recipe_from_dict
from tests.helpers import logged_losses, tiny_recipe_dict, tiny_spec


def _targets(seed: int, counts: list[int], size: int = 64) -> list[dict[str, torch.Tensor]]:
    """Random boxes inside a size x size image; some duplicated (IoU ties) and some tiny (low-quality matches)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for m in counts:
        xy = torch.rand(m, 2, generator=g) * (size - 4)
        wh = 2 + torch.rand(m, 2, generator=g) * (size / 2)
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
        if m >= 3:
            boxes[1] = boxes[0]  # a duplicate: two boxes tie on every anchor
            boxes[2] = torch.tensor([5.0, 5.0, 6.5, 6.0])  # tiny: its best IoU is under 0.4
        out.append({"boxes": boxes, "labels": torch.randint(0, 5, (m,), generator=g)})
    return out


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    det = build_detector(tiny_spec()).train()
    out = det.dense(det.preprocess(torch.randint(0, 255, (5, 3, 64, 64), dtype=torch.uint8)))
    return det, out


@pytest.mark.parametrize("low_quality", [True, False])
def test_matches_equal_torchvision_matcher_per_image(setup, low_quality):
    _, out = setup
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)
    targets = _targets(1, [3, 0, 7, 1, 12])
    got = match_anchors(matcher, out.anchors, targets)
    for i, t in enumerate(targets):
        if len(t["boxes"]) == 0:
            want = torch.full((out.anchors.shape[0],), -1, dtype=torch.int64)
        else:
            want = matcher(box_iou(t["boxes"], out.anchors))
        assert torch.equal(got[i], want), f"image {i}"
    # the three kinds of label all occur, so the comparison covers each rule
    assert {-2, -1}.issubset(set(got.unique().tolist())) and (got >= 0).any()


def test_no_boxes_anywhere_is_all_background(setup):
    det, out = setup
    got = match_anchors(det.net.proposal_matcher, out.anchors, _targets(2, [0, 0]))
    assert got.shape == (2, out.anchors.shape[0]) and (got == -1).all()


@pytest.mark.parametrize("loss_type", ["l1", "smooth_l1", "giou"])
@pytest.mark.parametrize("counts", [[3, 0, 7, 1, 12], [0, 0, 0, 0, 0]])
def test_loss_and_gradients_equal_torchvision(setup, loss_type, counts):
    det, _ = setup
    det.net.head.regression_head._loss_type = loss_type
    try:
        targets = _targets(3, counts)
        cls = torch.randn(5, *setup[1].cls_logits.shape[1:], dtype=torch.float64, requires_grad=True)
        reg = (0.1 * torch.randn(5, *setup[1].bbox_regression.shape[1:], dtype=torch.float64)).requires_grad_()
        anchors = setup[1].anchors.double()
        t64 = [{"boxes": t["boxes"].double(), "labels": t["labels"]} for t in targets]
        ours = retinanet_loss(det.net, cls, reg, anchors, t64)
        ref = det.net.compute_loss(t64, {"cls_logits": cls, "bbox_regression": reg}, [anchors] * 5)
        assert set(ours) == set(ref)
        for k in ref:
            torch.testing.assert_close(ours[k], ref[k], rtol=1e-10, atol=1e-12, msg=k)
        g_ours = torch.autograd.grad(sum(ours.values()), (cls, reg))
        g_ref = torch.autograd.grad(sum(ref.values()), (cls, reg))
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        if sum(counts):
            assert ref["bbox_regression"] > 0  # the box term was exercised
    finally:
        det.net.head.regression_head._loss_type = "l1"


def test_detector_loss_is_torchvision_unless_batched(setup):
    det, out = setup
    targets = _targets(4, [2, 5, 1, 0, 3])
    ref = det.net.compute_loss(targets, out.head_outputs(), [out.anchors] * 5)
    plain = det.loss(out, targets)
    assert torch.equal(plain["cls"], ref["classification"]) and torch.equal(plain["box"], ref["bbox_regression"])
    det.batched_loss = True
    try:
        batched = det.loss(out, targets)
    finally:
        det.batched_loss = False
    torch.testing.assert_close(batched["cls"], ref["classification"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched["box"], ref["bbox_regression"], rtol=1e-5, atol=1e-6)


def test_recipe_switch_reaches_training(tiny_world, tmp_path, monkeypatch):
    """train.batched_loss: the run's steps go through retinanet_loss, and its first loss is the per-image one's."""
    import sadc.models.detector as detector_module

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return retinanet_loss(*args, **kwargs)

    monkeypatch.setattr(detector_module, "retinanet_loss", counted)
    first = {}
    for batched in (False, True):
        fields = tiny_recipe_dict(tiny_world, tmp_path / str(batched), steps=2, eval_every=0, log_every=1, batched_loss=batched)
        recipe = recipe_from_dict(fields)
        before = len(calls)
        first[batched] = logged_losses(run_train(recipe))[0]
        assert (len(calls) > before) == batched
    assert first[True][0] == first[False][0] == 1
    assert first[True][1] == pytest.approx(first[False][1], rel=1e-5)
