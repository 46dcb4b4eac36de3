"""The SAD objective's rules from the authors' code: ignored anchors, skipped images, the schedule.

The teacher is a stub returning fixed logits and chosen pseudo boxes, so each test knows
exactly which anchors are in RetinaNet's ignore band and which images have no box.
Gradients are read on the student's dense outputs (cls logits, box deltas) per image
and anchor.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.ops import box_iou

from sadc.data.loaders import Concatenated, decode_index
from sadc.distill.objective import DistillObjective
from sadc.distill.run import _batches, step_kinds
from sadc.models.detector import build_detector
from sadc.recipe import DistillSection, recipe_from_dict

# Boxes chosen so that several of the tiny detector's 172 anchors fall in the ignore band.
GT = {"boxes": torch.tensor([[12.0, 9.0, 20.0, 29.0], [39.0, 36.0, 55.0, 52.0]]), "labels": torch.tensor([1, 2])}
PSEUDO = {"boxes": torch.tensor([[9.0, 12.0, 29.0, 20.0], [39.0, 27.0, 63.0, 39.0]]), "labels": torch.tensor([3, 0])}
EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


class _Forward(nn.Module):
    """The student's dense forward, keeping the outputs so a test can read their gradients."""

    def __init__(self, student):
        super().__init__()
        self.student, self.out = student, None

    def forward(self, images):
        out = self.student.dense(self.student.preprocess(images))
        out.cls_logits.retain_grad()
        out.bbox_regression.retain_grad()
        self.out = out
        return out


def _objective(tiny_spec, pseudo: list[dict], **cfg):
    torch.manual_seed(0)
    student = build_detector(tiny_spec).eval()  # eval: BatchNorm does not mix the images of a batch
    forward = _Forward(student)
    n_anchors = student.dense(student.preprocess(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))).cls_logits.shape[1]
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, n_anchors, 5, generator=g) * 3  # the same rows whatever the batch

    def teacher(images, pseudo_from=0):  # TeacherTargets' contract: boxes of images[pseudo_from:], none for None
        return logits[: len(images)], [] if pseudo_from is None else pseudo[pseudo_from : len(images)]

    return DistillObjective(student, forward, teacher, DistillSection(**cfg)), forward


def _images(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))


def _ignore_band(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """bool [A]: RetinaNet's ignore label, restated: best IoU in [0.4, 0.5) and not a box's best anchor."""
    iou = box_iou(anchors, boxes)  # [A, M]
    best = iou.max(dim=1).values
    is_best_of_a_box = (iou == iou.max(dim=0).values[None, :]).any(dim=1)
    return (best >= 0.4) & (best < 0.5) & ~is_best_of_a_box


def test_ignored_anchors_carry_no_adl(tiny_spec):
    """Labeled image against its ground truth, unlabeled image against the teacher's box."""
    pseudo = [PSEUDO, PSEUDO]  # the teacher's boxes; image 0 is labeled and uses GT instead
    batch = ((_images(2)[:1], [GT]), (_images(2)[1:], [{}]))
    grads = {}
    for anchors in ("not_ignored", "all"):
        objective, forward = _objective(tiny_spec, pseudo, anchors=anchors, pseudo_labels=False)
        losses = objective(batch)
        losses["distill"].backward()
        grads[anchors] = forward.out.cls_logits.grad.abs().sum(-1)  # [N, A]
    anchors_xyxy = forward.out.anchors
    for image, boxes in ((0, GT["boxes"]), (1, PSEUDO["boxes"])):
        ignored = _ignore_band(anchors_xyxy, boxes)
        assert ignored.sum() >= 3, "the test boxes must put some anchors in the ignore band"
        assert torch.all(grads["not_ignored"][image, ignored] == 0)
        assert torch.all(grads["not_ignored"][image, ~ignored] > 0)
        assert torch.all(grads["all"][image, ignored] > 0)  # the same anchors do learn under anchors=all


def test_a_skipped_image_contributes_zero_to_every_loss_term(tiny_spec):
    pseudo = [GT, PSEUDO, EMPTY]  # image 2: the teacher finds nothing
    images = _images(3)
    batch = ((images[:1], [GT]), (images[1:], [{}, {}]))
    objective, forward = _objective(tiny_spec, pseudo, skip_empty=True)
    losses = objective(batch)
    assert float(losses.pop("skipped_empty")) == 1.0
    assert set(losses) == {"cls", "box", "cls_pseudo", "box_pseudo", "distill"}
    for name in losses:
        forward.out = None
        losses_again = objective(batch)  # a fresh graph per term
        losses_again[name].backward()
        grads = [g for g in (forward.out.cls_logits.grad, forward.out.bbox_regression.grad) if g is not None]
        assert any(g[:2].abs().sum() > 0 for g in grads), f"{name} trains nothing"  # the check below can fail
        for grad in grads:  # None: the term does not reach that output at all
            assert torch.all(grad[2] == 0), f"{name} trains the skipped image"
    # Same values as the batch without that image (the teacher's logits of images 0, 1 are unchanged).
    without, _ = _objective(tiny_spec, pseudo[:2], skip_empty=True)
    reference = without(((images[:1], [GT]), (images[1:2], [{}])))
    for name, value in losses.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6, msg=name)
    # Without skip_empty the empty image is trained as all background.
    plain, forward = _objective(tiny_spec, pseudo, skip_empty=False)
    plain(batch)["cls_pseudo"].backward()
    assert forward.out.cls_logits.grad[2].abs().sum() > 0


def test_every_image_skipped_still_gives_a_graph(tiny_spec):
    objective, forward = _objective(tiny_spec, [EMPTY, EMPTY], skip_empty=True)
    losses = objective((None, (_images(2), [{}, {}])))
    total = sum(v for k, v in losses.items() if k != "skipped_empty")
    assert float(total.detach()) == 0.0 and float(losses["skipped_empty"]) == 2.0
    total.backward()
    assert forward.out.cls_logits.grad.abs().sum() == 0


def test_unlabeled_images_with_ground_truth_train_on_it(tiny_spec):
    """data.unlabeled: [labeled, ...] -- the labeled images in the unlabeled stream keep their boxes."""
    objective, _ = _objective(tiny_spec, [PSEUDO])
    image = _images(1)
    with_gt = objective((None, (image, [{**GT, "has_gt": True}])))
    direct = objective.student.loss(objective.forward(image), [GT])
    torch.testing.assert_close(with_gt["cls_pseudo"], direct["cls"])
    teacher_boxes = objective((None, (image, [{**GT, "has_gt": False}])))
    assert not torch.allclose(teacher_boxes["cls_pseudo"], direct["cls"])


# --- the schedule ------------------------------------------------------------------------


class _Numbered(Dataset):
    """Item k of the encoded-index convention -> (a 1x1x1 image holding its index, {"i": index})."""

    def __init__(self, n: int, offset: int):
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k):
        _, i = decode_index(k, self.n)
        return torch.full((1, 1, 1), self.offset + i, dtype=torch.uint8), {"i": self.offset + i}


def _schedule(recipe, labeled, unlabeled, start: int, steps: int):
    make = _batches(recipe, labeled, unlabeled, 2, 2, SimpleNamespace(rank=0, world_size=1))
    it = make(start)
    out = []
    for _ in range(steps):
        lab, unl = next(it)
        out.append(
            ("L" if lab is not None else "-")
            + ("U" if unl is not None else "-")
            + ":"
            + ",".join(str(t["i"]) for part in (lab, unl) if part is not None for t in part[1])
        )
    return out


@pytest.mark.parametrize("schedule", ["alternate", "joint"])
def test_schedule_order_and_resume(schedule):
    data = {"train": {"annotations": "a.json", "images": "a"}, "unlabeled": "u", "schedule": schedule, "workers": 0}
    recipe = recipe_from_dict({"data": data})
    labeled, unlabeled = _Numbered(5, 0), _Numbered(7, 100)
    run = _schedule(recipe, labeled, unlabeled, 0, 9)
    kinds = [s.split(":")[0] for s in run]
    if schedule == "alternate":
        assert kinds == ["L-", "-U"] * 4 + ["L-"]  # labeled first, as the authors' loader
        # Each stream continues where it stopped two steps earlier: no image repeated within an epoch.
        lab_seen = [int(i) for s in run[0::2] for i in s.split(":")[1].split(",")]
        assert sorted(lab_seen[:5]) == [0, 1, 2, 3, 4]
        assert all(int(i) >= 100 for s in run[1::2] for i in s.split(":")[1].split(","))
    else:
        assert kinds == ["LU"] * 9
    for start in (3, 4):  # resume at an odd and an even step
        assert _schedule(recipe, labeled, unlabeled, start, 9 - start) == run[start:]


def test_step_kinds_counts_what_each_stream_consumed():
    lab, unl, kinds = step_kinds("alternate", 5, 2, 2)
    assert (lab, unl) == (3, 2) and next(kinds) == (False, True)
    lab, unl, kinds = step_kinds("joint", 5, 2, 0)
    assert (lab, unl) == (5, 5) and next(kinds) == (True, False)


def test_concatenated_keeps_each_parts_encoding_and_flags_ground_truth():
    both = Concatenated([_Numbered(2, 0), _Numbered(3, 100)], [True, False])
    assert len(both) == 5
    assert [both[k][1]["i"] for k in range(5)] == [0, 1, 100, 101, 102]
    assert both[5 + 3][1] == {"i": 101, "has_gt": False}  # epoch 1, item 3 -> part 1, item 1
    assert both[1][1]["has_gt"] is True
    with pytest.raises(ValueError, match="ground_truth"):
        Concatenated([_Numbered(2, 0)], [True, False])


def test_recipe_rules_for_the_schedule_and_the_unlabeled_list():
    train = {"annotations": "a.json", "images": "a"}
    with pytest.raises(Exception, match=r"data\.schedule=alternate .* needs data\.train and data\.unlabeled"):
        recipe_from_dict({"data": {"train": train, "schedule": "alternate"}})
    with pytest.raises(Exception, match=r"lists `labeled` .* data\.train is not set"):
        recipe_from_dict({"data": {"unlabeled": ["labeled", "u"]}})
    recipe = recipe_from_dict({"data": {"train": train, "unlabeled": ["labeled", "u", "v"]}})
    assert [str(s) for s in recipe.data.unlabeled_sources] == ["labeled", "u", "v"]
