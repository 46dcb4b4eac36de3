"""RetinaNet's training loss for a whole batch at once: torchvision's loss, without its per-image loop.

torchvision's ``RetinaNet.compute_loss`` matches, builds targets and sums the focal and box
losses image by image: about 25 small tensor ops per image forward, as many backward.
At sadc's sizes (16 images of 128 px, 3,069 anchors, a 0.33-GFLOP student) those
thousands of tiny ops were ~10 % of a training step on 2 CPU cores. The functions here
compute the same quantities on the stacked batch:

- :func:`match_anchors`: torchvision's ``Matcher`` (thresholds, ignore band, low-quality
  matches) on a padded [N, M, A] IoU tensor; the matches are equal to the per-image ones;
- :func:`retinanet_loss`: the sigmoid focal loss over non-ignored anchors and the box
  loss (the head's ``_loss_type``: l1, smooth_l1, giou, diou or ciou) over foreground
  anchors, each image's sum divided by its own foreground count (at least 1), then the
  mean over images, as torchvision's heads do. Only the order of the floating-point
  sums differs (tests/test_retina_loss.py compares losses and gradients with torchvision's).

``Detector.loss`` uses it when ``train.batched_loss`` is set; the distillation objective's
anchor labelling uses :func:`match_anchors` always (integers, equal to the per-image ones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.ops import box_iou, complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss, sigmoid_focal_loss


def _stacked_targets(targets: list[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, list[int]]:
    """All images' boxes [sum M, 4] and labels [sum M] concatenated, and each image's box count M_i."""
    counts = [len(t["boxes"]) for t in targets]
    boxes = torch.cat([t["boxes"].reshape(-1, 4).to(device) for t in targets]) if targets else torch.zeros(0, 4, device=device)
    labels = (
        torch.cat([t["labels"].reshape(-1).to(device, torch.int64) for t in targets])
        if targets
        else torch.zeros(0, dtype=torch.int64, device=device)
    )
    return boxes, labels, counts


def match_anchors(matcher: Matcher, anchors: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    """int64 [N, A]: for each image and anchor, the matched box index (>= 0), -1 (background) or -2 (ignored).

    Equal to ``matcher(box_iou(boxes_i, anchors))`` image by image, and all -1 for an image
    without boxes (torchvision's RetinaNet rule). The IoU of every box with every anchor is
    one ``box_iou`` call; padded rows (images with fewer boxes than the most) hold -1, an
    IoU no anchor can have, and take no part in the low-quality matches.
    """
    boxes, _, counts = _stacked_targets(targets, anchors.device)
    return _match(matcher, anchors, boxes, counts)


def _match(matcher: Matcher, anchors: Tensor, boxes: Tensor, counts: list[int]) -> Tensor:
    """:func:`match_anchors` of the stacked boxes [sum M, 4], ``counts[i]`` of them image i's."""
    n, a = len(counts), anchors.shape[0]
    m = max(counts, default=0)
    if m == 0:
        return torch.full((n, a), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=anchors.device)
    real = torch.arange(m, device=anchors.device)[None, :] < torch.tensor(counts, device=anchors.device)[:, None]  # [N, M]
    iou = anchors.new_full((n, m, a), -1.0)
    iou[real] = box_iou(boxes.to(anchors.dtype), anchors)
    matched_vals, matches = iou.max(dim=1)  # [N, A]; padded rows never win (IoU >= 0 > -1)
    all_matches = matches.clone() if matcher.allow_low_quality_matches else None
    matches[matched_vals < matcher.low_threshold] = Matcher.BELOW_LOW_THRESHOLD
    matches[(matched_vals >= matcher.low_threshold) & (matched_vals < matcher.high_threshold)] = Matcher.BETWEEN_THRESHOLDS
    if all_matches is not None:
        # Matcher.set_low_quality_matches_: each box's best anchors (ties included) keep their best box.
        best = iou.max(dim=2, keepdim=True).values  # [N, M, 1]
        update = ((iou == best) & real[..., None]).any(dim=1)  # [N, A]
        matches = torch.where(update, all_matches, matches)
    return matches


def _box_loss(loss_type: str, box_coder, anchors: Tensor, gt: Tensor, regression: Tensor) -> Tensor:
    """Per-anchor box loss [F] (torchvision ``_box_loss`` with reduction none, summed over the 4 coordinates)."""
    if loss_type in ("l1", "smooth_l1"):
        target = box_coder.encode_single(gt, anchors)
        if loss_type == "l1":
            return F.l1_loss(regression, target, reduction="none").sum(-1)
        return F.smooth_l1_loss(regression, target, reduction="none", beta=1.0).sum(-1)
    pred = box_coder.decode_single(regression, anchors)
    fn = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}[loss_type]
    return fn(pred, gt, reduction="none", eps=1e-7)


def retinanet_loss(
    net: RetinaNet, cls_logits: Tensor, bbox_regression: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]]
) -> dict[str, Tensor]:
    """torchvision's RetinaNet losses for the batch: {"classification", "bbox_regression"}.

    cls_logits [N, A, C], bbox_regression [N, A, 4], anchors [A, 4] (the same for every
    image), targets: per image ``boxes`` [M_i, 4] xyxy and ``labels`` [M_i].
    """
    n = cls_logits.shape[0]
    boxes, labels, counts = _stacked_targets(targets, cls_logits.device)
    matches = _match(net.proposal_matcher, anchors, boxes, counts)
    per_image = torch.tensor(counts, dtype=torch.int64, device=cls_logits.device)
    offsets = per_image.cumsum(0) - per_image  # image i's first row in the stacked boxes
    fg = matches >= 0
    num_fg = fg.sum(dim=1).clamp(min=1).to(cls_logits.dtype)  # torchvision: max(1, num_foreground)
    img, anc = fg.nonzero(as_tuple=True)
    box_idx = (matches + offsets[:, None])[img, anc]

    target = torch.zeros_like(cls_logits)
    target[img, anc, labels[box_idx]] = 1.0
    valid = (matches != Matcher.BETWEEN_THRESHOLDS).unsqueeze(-1)
    focal = sigmoid_focal_loss(cls_logits, target, reduction="none")
    cls_per_image = torch.where(valid, focal, torch.zeros_like(focal)).sum(dim=(1, 2))

    head = net.head.regression_head
    per_anchor = _box_loss(head._loss_type, head.box_coder, anchors[anc], boxes[box_idx], bbox_regression[img, anc])
    box_per_image = per_anchor.new_zeros(n).index_add(0, img, per_anchor)
    return {
        "classification": (cls_per_image / num_fg).sum() / n,
        "bbox_regression": (box_per_image / num_fg).sum() / max(1, n),
    }
