"""The SAD objective: supervised loss on labels, ADL on everything, pseudo boxes on unlabeled.

A step sees a labeled batch (images + ground truth) and/or an unlabeled batch
(data.schedule=joint gives both, =alternate one or the other in turn). Both go through
the student in one forward (concatenated) and through the teacher once:

    labeled:    cls + box on ground truth                                + lambda * ADL
    unlabeled:  cls_pseudo + box_pseudo on the teacher's boxes (optional) + lambda * ADL

An unlabeled image that carries ground truth (data.unlabeled lists `labeled`) is trained
on that ground truth instead of the teacher's boxes, as the authors' unlabeled stream is.
The ADL sum runs over the counted anchors of both parts and is divided by one
normaliser (the adaptive sum of q^theta, or the positive-anchor count), as the
authors' RetinaNet head does per batch. Which anchors count (distill.anchors) and
which images count at all (distill.skip_empty) follow the authors' code by default:
see docs/distill.md, "Authors' code and sadc".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import Matcher

from sadc.distill.losses import distillation_loss
from sadc.distill.teacher import TeacherTargets
from sadc.errors import SadcError
from sadc.models.detector import DenseOutput, Detector
from sadc.models.retina_loss import match_anchors
from sadc.recipe import DistillSection


def _rows(out: DenseOutput, index: slice | list[int]) -> DenseOutput:
    """The dense output of the images ``index`` (a slice or a list of batch positions)."""
    return DenseOutput(
        cls_logits=out.cls_logits[index],
        bbox_regression=out.bbox_regression[index],
        anchors=out.anchors,
        num_anchors_per_level=out.num_anchors_per_level,
        bbox_ctrness=None if out.bbox_ctrness is None else out.bbox_ctrness[index],
    )


def anchor_matches(model: Detector, anchors: Tensor, targets: list[dict[str, Tensor]]) -> Tensor | None:
    """int64 [N, A]: the detector's own IoU matcher per image, or None for a detector without one (FCOS).

    Values: box index >= 0 (positive), ``Matcher.BELOW_LOW_THRESHOLD`` (-1, background) or
    ``Matcher.BETWEEN_THRESHOLDS`` (-2, RetinaNet's ignore band: best IoU in [0.4, 0.5) and
    not a box's best anchor). An image without boxes is all background. This is the
    labelling of the authors' roi_data/retinanet.py (label -1 = ignore); like theirs
    (RPN_STRADDLE_THRESH -1), anchors reaching outside the image are labelled by IoU as
    any other, not ignored.
    """
    matcher = getattr(model.net, "proposal_matcher", None)
    return None if matcher is None else match_anchors(matcher, anchors, targets)


def positive_anchors(model: Detector, anchors: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    """bool [N, A]: anchors the detector's own matcher assigns to a box (RetinaNet IoU rule)."""
    matches = anchor_matches(model, anchors, targets)
    if matches is None:
        raise SadcError(f"distill.anchors=positives needs an IoU-matched detector (retinanet), not {model.spec.arch}")
    return matches >= 0


@dataclass
class DistillObjective:
    """``objective((labeled, unlabeled)) -> {cls, box, cls_pseudo, box_pseudo, distill}``.

    labeled: (images uint8 [N1, 3, H, W], targets) or None; unlabeled: (images uint8
    [N2, 3, H, W], _) or None. ``forward`` maps uint8 images to the student's
    :class:`DenseOutput` (the student itself, or its DDP wrapper).
    """

    student: Detector
    forward: nn.Module
    teacher: TeacherTargets
    cfg: DistillSection

    def __post_init__(self) -> None:
        # The recipe validator catches this for students built from fields; a student loaded
        # from a checkpoint is only known here, still before the first step.
        uses_positives = self.cfg.loss != "none" and "positives" in (self.cfg.anchors, self.cfg.normalizer)
        if uses_positives and getattr(self.student.net, "proposal_matcher", None) is None:
            key = "distill.anchors" if self.cfg.anchors == "positives" else "distill.normalizer"
            raise SadcError(
                f"{key}=positives needs IoU-matched anchors (arch retinanet), but the student is "
                f"{self.student.spec.arch}; use distill.anchors=all and distill.normalizer=adaptive"
            )

    def __call__(self, batch) -> dict[str, Tensor]:
        labeled, unlabeled = batch
        parts = [b[0] for b in (labeled, unlabeled) if b is not None]
        images = torch.cat(parts) if len(parts) > 1 else parts[0]
        n_lab = 0 if labeled is None else labeled[0].shape[0]
        cfg = self.cfg
        # Teacher boxes are needed only for unlabeled images, and only by the pseudo-box loss,
        # skip_empty or an anchor choice that matches boxes: labeled images get logits alone.
        matches_boxes = cfg.loss != "none" and (cfg.anchors != "all" or cfg.normalizer == "positives")
        wants_boxes = unlabeled is not None and (cfg.pseudo_labels or cfg.skip_empty or matches_boxes)
        # The teacher first: its forward then runs before the student's saved activations
        # take memory (measured ~4 ms faster a step on 2 cores than after them).
        t_logits, pseudo = self.teacher(images, pseudo_from=n_lab if wants_boxes else None)
        out = self.forward(images)

        losses: dict[str, Tensor] = {}
        lab_out, unl_out = _rows(out, slice(0, n_lab)), _rows(out, slice(n_lab, None))
        gt = list(labeled[1]) if labeled is not None else []
        if labeled is not None:
            losses.update(self.student.loss(lab_out, gt))
        # Hard boxes of unlabeled images: their ground truth where the stream carries it, else the teacher's.
        unl_hard = [
            {"boxes": t["boxes"], "labels": t["labels"]} if t.get("has_gt") else p
            for t, p in zip(unlabeled[1] if unlabeled is not None else [], pseudo)
        ]
        # skip_empty: an unlabeled image without a box is out of every term (the authors' filter_for_training).
        keep = [not (cfg.skip_empty and len(h["boxes"]) == 0) for h in unl_hard]
        if unlabeled is not None and cfg.skip_empty:
            losses["skipped_empty"] = torch.tensor(float(keep.count(False)), device=images.device)
        if unlabeled is not None and cfg.pseudo_labels:
            kept = [i for i, k in enumerate(keep) if k]
            if kept:
                pl = self.student.loss(_rows(unl_out, kept), [unl_hard[i] for i in kept])
            else:  # every image skipped: zeros that still reach the graph (backward and DDP need one)
                pl = {k: 0.0 * v for k, v in self.student.loss(unl_out, unl_hard).items()}
            losses.update({f"{k}_pseudo": v for k, v in pl.items()})

        if cfg.loss != "none":
            boxes = gt + unl_hard
            matches = None
            if cfg.anchors != "all" or cfg.normalizer == "positives":
                matches = anchor_matches(self.student, out.anchors, boxes)
            mask: Tensor | None = None
            if cfg.anchors == "positives" and matches is not None:  # matched above
                mask = matches >= 0
            elif cfg.anchors == "not_ignored" and matches is not None:  # no ignore band without an IoU matcher
                mask = matches != Matcher.BETWEEN_THRESHOLDS
            if not all(keep):
                rows = torch.tensor([True] * n_lab + keep, device=images.device)
                rows = rows[:, None].expand(-1, out.cls_logits.shape[1])
                mask = rows if mask is None else mask & rows
            losses.update(
                distillation_loss(
                    out.cls_logits,
                    t_logits,
                    loss=cfg.loss,
                    gamma=cfg.gamma,
                    beta=cfg.beta,
                    temperature=cfg.temperature,
                    theta=cfg.theta,
                    form=cfg.form,
                    alpha=cfg.alpha,
                    normalizer=cfg.normalizer,
                    anchor_mask=mask,
                    num_positives=(matches >= 0).sum() if cfg.normalizer == "positives" and matches is not None else None,
                )
            )
        return losses
