"""Teacher targets: one frozen forward per batch gives soft logits and hard pseudo boxes.

The teacher sees the *same* uint8 tensor as the student (each normalises with its own
mean/std), so its dense outputs line up anchor for anchor with the student's. That is
checked once at start-up by :func:`check_distillable`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sadc.artefacts.postprocess import PostProcess
from sadc.errors import SadcError
from sadc.models.detector import Detector


class IncompatibleModels(SadcError):
    pass


def class_index(teacher: Detector, student: Detector, class_map: dict[str, str] | None) -> list[int]:
    """For each student class, the teacher's class index (``class_map``: student -> teacher name).

    Without a class map, classes must be the same names in the same order, or the
    teacher's may contain every student class (matched by name).
    """
    t_names = list(teacher.spec.class_names)
    index = {n: i for i, n in enumerate(t_names)}
    out = []
    for name in student.spec.class_names:
        t_name = (class_map or {}).get(name, name)
        if t_name not in index:
            close = [n for n in t_names if n.lower() == t_name.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise IncompatibleModels(
                f"student class {name!r} has no teacher class {t_name!r}{hint}; map it with "
                f"distill.class_map (student name -> one of the teacher's {len(t_names)} classes)"
            )
        out.append(index[t_name])
    if class_map:
        unknown = set(class_map) - set(student.spec.class_names)
        if unknown:
            raise IncompatibleModels(f"distill.class_map names {sorted(unknown)}, which are not student classes")
    return out


@torch.no_grad()
def check_distillable(teacher: Detector, student: Detector, input_size: tuple[int, int]) -> None:
    """Fail with one line naming what differs unless both anchor grids are equal at ``input_size``."""
    h, w = input_size
    x = torch.zeros(1, 3, h, w, dtype=torch.uint8)
    was_t, was_s = teacher.training, student.training
    teacher.eval(), student.eval()
    try:
        t = teacher.dense(teacher.preprocess(x.to(next(teacher.parameters()).device)))
        s = student.dense(student.preprocess(x.to(next(student.parameters()).device)))
    finally:
        teacher.train(was_t), student.train(was_s)
    ts, ss = teacher.spec, student.spec
    if ts.anchors_per_location != ss.anchors_per_location:
        raise IncompatibleModels(
            f"teacher has {ts.anchors_per_location} anchors per location, student {ss.anchors_per_location}; "
            "give the student the teacher's anchor_sizes and anchor_ratios"
        )
    if t.num_anchors_per_level != s.num_anchors_per_level:
        raise IncompatibleModels(
            f"anchors per pyramid level differ at input {h}x{w} (teacher {t.num_anchors_per_level}, student "
            f"{s.num_anchors_per_level}): the strides differ; use backbones with strides 8..128 (P3-P7)"
        )
    if not torch.allclose(t.anchors.cpu(), s.anchors.cpu(), atol=1e-3):
        raise IncompatibleModels(
            f"anchor boxes differ (teacher sizes {ts.anchor_sizes} ratios {ts.anchor_ratios}, student sizes "
            f"{ss.anchor_sizes} ratios {ss.anchor_ratios}); give the student the teacher's anchors"
        )
    if ts.arch != ss.arch:
        raise IncompatibleModels(f"teacher is {ts.arch}, student is {ss.arch}: distil within one architecture")


def pseudo_targets(
    detections: Sequence[Mapping[str, Tensor]],
    *,
    threshold: float = 0.4,
    class_map: Sequence[int] | None = None,
) -> list[dict[str, Tensor]]:
    """Hard targets for data distillation: teacher detections scoring >= threshold.

    Args:
        detections: one mapping per image with "boxes" [n, 4] (x1, y1, x2, y2, input
            pixels), "scores" [n] in [0, 1] and "labels" [n] int (teacher classes).
        threshold: keep a detection when score >= threshold.
        class_map: optional teacher label -> student label table (index = teacher
            label); -1 drops the detection. Teacher labels outside the table raise.

    Returns:
        One {"boxes": float [m, 4], "labels": int64 [m]} per image, detached, on the
        device of the input; m may be 0.
    """
    table = None if class_map is None else torch.as_tensor(list(class_map), dtype=torch.int64)
    targets = []
    for i, det in enumerate(detections):
        boxes = det["boxes"].detach().reshape(-1, 4)
        labels = det["labels"].detach().to(torch.int64).reshape(-1)
        keep = det["scores"].detach().reshape(-1) >= threshold
        boxes, labels = boxes[keep], labels[keep]
        if table is not None:
            if labels.numel() and (labels.min() < 0 or labels.max() >= len(table)):
                raise ValueError(
                    f"image {i}: teacher labels span [{int(labels.min())}, "
                    f"{int(labels.max())}] but class_map has {len(table)} entries"
                )
            labels = table.to(labels.device)[labels]
            mapped = labels >= 0
            boxes, labels = boxes[mapped], labels[mapped]
        targets.append({"boxes": boxes, "labels": labels})
    return targets


@dataclass
class TeacherTargets:
    """Soft targets and pseudo boxes from a frozen teacher.

    ``__call__(images uint8 [N, 3, H, W], pseudo_from=0)`` returns (logits [N, A, C_student]
    sliced to the student's classes, pseudo targets of ``images[pseudo_from:]``: per image
    {boxes [m, 4] xyxy input px, labels [m] int64 in student classes}; none when
    ``pseudo_from`` is None). Boxes nobody uses (those of labeled images) are thus never
    decoded and NMS'd. The teacher runs in eval and inference mode, in ``precision``
    (fp16/bf16 autocast on CUDA only).
    """

    teacher: Detector
    classes: list[int]  # student class i <- teacher class classes[i]
    threshold: float = 0.4
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.teacher.eval().requires_grad_(False)
        if self.channels_last:
            self.teacher.to(memory_format=torch.channels_last)
        n_teacher = self.teacher.spec.num_classes
        table = [-1] * n_teacher
        for student_label, teacher_label in enumerate(self.classes):
            table[teacher_label] = student_label
        self.class_table = table
        self.identity = self.classes == list(range(n_teacher))

    def _autocast(self, device: torch.device):
        if self.precision == "fp32" or (device.type != "cuda" and self.precision == "fp16"):
            return contextlib.nullcontext()  # CPUs have no fast fp16: fp32 there
        return torch.autocast(device.type, dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)

    def __call__(self, images: Tensor, pseudo_from: int | None = 0) -> tuple[Tensor, list[dict[str, Tensor]]]:
        logits, targets = self._infer(images, pseudo_from)
        # Inference tensors cannot be saved for backward (the ADL keeps the teacher
        # logits); clones made outside inference mode are ordinary tensors.
        return logits.clone(), [{k: v.clone() for k, v in t.items()} for t in targets]

    @torch.inference_mode()
    def _infer(self, images: Tensor, pseudo_from: int | None) -> tuple[Tensor, list[dict[str, Tensor]]]:
        x = images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        with self._autocast(images.device):
            out = self.teacher.dense(self.teacher.preprocess(x))
        # Reduced-precision outputs back to fp32: losses, decode and NMS want it.
        out.cls_logits, out.bbox_regression = out.cls_logits.float(), out.bbox_regression.float()
        if out.bbox_ctrness is not None:
            out.bbox_ctrness = out.bbox_ctrness.float()
        logits = out.cls_logits if self.identity else out.cls_logits[..., self.classes]
        if pseudo_from is None or pseudo_from >= images.shape[0]:
            return logits, []
        if pseudo_from > 0:
            ctr = None if out.bbox_ctrness is None else out.bbox_ctrness[pseudo_from:]
            out = dataclasses.replace(
                out, cls_logits=out.cls_logits[pseudo_from:], bbox_regression=out.bbox_regression[pseudo_from:], bbox_ctrness=ctr
            )
        dets = self.teacher.detect(out, PostProcess(score_threshold=self.threshold))
        targets = pseudo_targets(dets, threshold=self.threshold, class_map=None if self.identity else self.class_table)
        return logits, targets
