"""The SAD objective: supervised loss on labels, ADL on everything, pseudo boxes on unlabeled.

One step sees a labeled batch (images + ground truth) and/or an unlabeled batch. Both
go through the student in one forward (concatenated) and through the teacher once:

    labeled:    cls + box on ground truth           + lambda * ADL(student, teacher)
    unlabeled:  cls_pseudo + box_pseudo on teacher boxes (optional) + lambda * ADL

The ADL sum runs over every counted anchor of both parts and is divided by one
normaliser (the adaptive sum of q^theta, or the positive-anchor count), as the
authors' RetinaNet head does per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from sadc.distill.losses import distillation_loss
from sadc.distill.teacher import TeacherTargets
from sadc.errors import SadcError
from sadc.models.detector import DenseOutput, Detector
from sadc.recipe import DistillSection


def _split(out: DenseOutput, n: int) -> tuple[DenseOutput, DenseOutput]:
    """A batch's dense output split into its first ``n`` images and the rest."""

    def part(sl: slice) -> DenseOutput:
        return DenseOutput(
            cls_logits=out.cls_logits[sl],
            bbox_regression=out.bbox_regression[sl],
            anchors=out.anchors,
            num_anchors_per_level=out.num_anchors_per_level,
            bbox_ctrness=None if out.bbox_ctrness is None else out.bbox_ctrness[sl],
        )

    return part(slice(0, n)), part(slice(n, None))


def positive_anchors(model: Detector, anchors: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    """bool [N, A]: anchors the detector's own matcher assigns to a box (RetinaNet IoU rule)."""
    matcher = getattr(model.net, "proposal_matcher", None)
    if matcher is None:
        raise SadcError(f"distill.anchors=positives needs an IoU-matched detector (retinanet), not {model.spec.arch}")
    rows = []
    for t in targets:
        if t["boxes"].numel() == 0:
            rows.append(torch.zeros(anchors.shape[0], dtype=torch.bool, device=anchors.device))
        else:
            rows.append(matcher(box_iou(t["boxes"], anchors)) >= 0)
    return torch.stack(rows)


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
        out = self.forward(images)
        t_logits, pseudo = self.teacher(images)

        losses: dict[str, Tensor] = {}
        lab_out, unl_out = _split(out, n_lab)
        gt = labeled[1] if labeled is not None else []
        if labeled is not None:
            losses.update(self.student.loss(lab_out, gt))
        unl_pseudo = pseudo[n_lab:]
        if unlabeled is not None and self.cfg.pseudo_labels:
            pl = self.student.loss(unl_out, unl_pseudo)
            losses.update({f"{k}_pseudo": v for k, v in pl.items()})

        cfg = self.cfg
        if cfg.loss != "none":
            # Hard boxes per image: ground truth where there is some, else the teacher's.
            boxes = list(gt) + list(unl_pseudo)
            mask = None
            if cfg.anchors == "positives" or cfg.normalizer == "positives":
                positives = positive_anchors(self.student, out.anchors, boxes)
            if cfg.anchors == "positives":
                mask = positives
            if cfg.skip_empty and unlabeled is not None:
                keep = torch.tensor([True] * n_lab + [len(t["boxes"]) > 0 for t in unl_pseudo], device=images.device)
                keep = keep[:, None].expand(-1, out.cls_logits.shape[1])
                mask = keep if mask is None else mask & keep
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
                    num_positives=positives.sum() if cfg.normalizer == "positives" else None,
                )
            )
        return losses
