"""Detector: a torchvision RetinaNet/FCOS behind sadc's dense-output contract.

The torchvision model supplies backbone, head, anchor generator, box coder and the
training losses; sadc bypasses its ``GeneralizedRCNNTransform`` (resize + normalise),
because sadc letterboxes to a fixed input size outside the network and feeds the
*same* uint8 tensor to teacher and student, each normalising with its own mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.ops import batched_nms, clip_boxes_to_image

from sadc.artefacts.postprocess import PostProcess
from sadc.models.backbones import build_backbone
from sadc.models.retina_loss import retinanet_loss
from sadc.models.spec import DetectorSpec


@dataclass
class DenseOutput:
    """Raw head outputs of one batch over one anchor grid.

    cls_logits: [N, A, C] classification logits (sigmoid, no background column)
    bbox_regression: [N, A, 4] box deltas (RetinaNet: BoxCoder dx,dy,dw,dh; FCOS: l,t,r,b)
    anchors: [A, 4] xyxy anchors in input pixels, shared by every image of the batch
    num_anchors_per_level: anchors of P3..P7, summing to A
    bbox_ctrness: [N, A, 1] FCOS centerness logits, else None
    """

    cls_logits: Tensor
    bbox_regression: Tensor
    anchors: Tensor
    num_anchors_per_level: list[int]
    bbox_ctrness: Tensor | None = None

    def head_outputs(self) -> dict[str, Tensor]:
        out = {"cls_logits": self.cls_logits, "bbox_regression": self.bbox_regression}
        if self.bbox_ctrness is not None:
            out["bbox_ctrness"] = self.bbox_ctrness
        return out


_LOSS_NAMES = {"classification": "cls", "bbox_regression": "box", "bbox_ctrness": "ctr"}


class Detector(nn.Module):
    """A single-stage detector with a fixed input size.

    ``forward(images uint8 [N, 3, H, W])`` returns detections (eval). Training code uses
    ``preprocess`` -> ``dense`` -> ``loss``; export uses ``preprocess`` -> ``dense`` ->
    ``decode``.
    """

    mean: Tensor  # buffers, registered in __init__
    std: Tensor
    batched_loss: bool = False  # RetinaNet: loss() through sadc.models.retina_loss (train.batched_loss)

    def __init__(self, spec: DetectorSpec, net: RetinaNet | FCOS):
        super().__init__()
        self.spec = spec
        self.net = net
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self._anchor_cache: dict[tuple, tuple[Tensor, list[int]]] = {}

    # -- the dense path ----------------------------------------------------------------

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (or float 0..255) [N, 3, H, W] -> normalised float [N, 3, H, W]."""
        return (images.float() - self.mean) / self.std

    def dense(self, x: Tensor) -> DenseOutput:
        """Normalised images [N, 3, H, W] -> :class:`DenseOutput`."""
        features = list(self.net.backbone(x).values())
        head = self.net.head(features)
        anchors, per_level = self._anchors(x, features)
        return DenseOutput(
            cls_logits=head["cls_logits"],
            bbox_regression=head["bbox_regression"],
            anchors=anchors,
            num_anchors_per_level=per_level,
            bbox_ctrness=head.get("bbox_ctrness"),
        )

    def _anchors(self, x: Tensor, features: list[Tensor]) -> tuple[Tensor, list[int]]:
        # Anchors depend only on the input and feature shapes: compute once per shape.
        key = (tuple(x.shape[-2:]), tuple(tuple(f.shape[-2:]) for f in features), x.device)
        if key not in self._anchor_cache:
            h, w = x.shape[-2:]
            image_list = ImageList(x[:1].float(), [(int(h), int(w))])
            # fp32 stand-ins of the feature shapes: the generator takes its dtype from the
            # features, and bf16/fp16 anchors (under autocast) would be rounded.
            shapes = [torch.empty((1, 1, *f.shape[-2:]), device=f.device) for f in features]
            anchors = self.net.anchor_generator(image_list, shapes)[0]
            per_level = [f.shape[-2] * f.shape[-1] * self.spec.anchors_per_location for f in features]
            self._anchor_cache[key] = (anchors, per_level)
        return self._anchor_cache[key]

    def loss(self, out: DenseOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Focal + box (+ centerness for FCOS) losses against ``targets``.

        targets: per image ``boxes`` [n, 4] xyxy input pixels and ``labels`` [n] int64 in
        0..C-1. Returns named unweighted loss terms: cls, box (, ctr).
        """
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        if isinstance(self.net, FCOS):
            anchors = [out.anchors] * out.cls_logits.shape[0]
            raw = self.net.compute_loss(targets, out.head_outputs(), anchors, out.num_anchors_per_level)
        elif self.batched_loss:  # torchvision's RetinaNet loss, computed for the batch at once
            raw = retinanet_loss(self.net, out.cls_logits, out.bbox_regression, out.anchors, targets)
        else:
            raw = self.net.compute_loss(targets, out.head_outputs(), [out.anchors] * out.cls_logits.shape[0])
        return {_LOSS_NAMES.get(k, k): v for k, v in raw.items()}

    def decode(self, out: DenseOutput) -> tuple[Tensor, Tensor]:
        """Scores [N, A, C] in 0..1 and boxes [N, A, 4] xyxy in input pixels (unclipped)."""
        n, a, _ = out.bbox_regression.shape
        anchors = out.anchors.unsqueeze(0).expand(n, a, 4)
        return self.scores(out), self.decode_boxes(out.bbox_regression, anchors)

    def scores(self, out: DenseOutput) -> Tensor:
        """Scores [N, A, C] in 0..1: sigmoid of the logits (FCOS: sqrt(cls * centerness))."""
        scores = torch.sigmoid(out.cls_logits)
        if out.bbox_ctrness is not None:
            scores = torch.sqrt(scores * torch.sigmoid(out.bbox_ctrness))
        return scores

    def decode_boxes(self, codes: Tensor, anchors: Tensor) -> Tensor:
        """Box codes [..., 4] against anchors [..., 4] (same shape) -> boxes [..., 4] xyxy, unclipped.

        Row by row, so decoding a subset of anchors (the deploy graph's top-k candidates)
        gives bit for bit the boxes of decoding them all.
        """
        coder = self.net.box_coder
        decode = coder.decode if isinstance(self.net, FCOS) else coder.decode_single  # Linear vs BoxCoder
        return decode(codes.reshape(-1, 4), anchors.reshape(-1, 4)).view(codes.shape)

    @torch.no_grad()
    def detect(self, out: DenseOutput, post: PostProcess = PostProcess()) -> list[dict[str, Tensor]]:
        """Per image ``{boxes [k,4] xyxy input px (clipped), scores [k], labels [k] int64}``, k <= K.

        ``post``: score threshold, top-k candidates, per-class NMS IoU and K (see
        :class:`~sadc.artefacts.postprocess.PostProcess`); eager, one image at a time.
        """
        scores, boxes = self.decode(out)
        size = tuple(self.spec.input_size)
        results = []
        num_classes = scores.shape[-1]
        for s, b in zip(scores, boxes, strict=True):
            flat = s.flatten()  # [A*C], anchor-major
            keep = flat > post.score_threshold
            idx = torch.nonzero(keep).squeeze(1)
            if idx.numel() > post.topk_candidates:
                idx = idx[flat[idx].topk(post.topk_candidates).indices]
            anchor_idx, labels = idx // num_classes, idx % num_classes
            cand = clip_boxes_to_image(b[anchor_idx], size)
            sc = flat[idx]
            kept = batched_nms(cand, sc, labels, post.iou_threshold)[: post.max_detections]
            results.append({"boxes": cand[kept], "scores": sc[kept], "labels": labels[kept]})
        return results

    def forward(self, images: Tensor, post: PostProcess = PostProcess()) -> list[dict[str, Tensor]]:
        return self.detect(self.dense(self.preprocess(images)), post)


# ------------------------------------------------------------------------------ builders


def _anchor_generator(spec: DetectorSpec) -> AnchorGenerator:
    sizes = tuple(tuple(level) for level in spec.anchor_sizes)
    ratios = (tuple(spec.anchor_ratios),) * len(sizes)
    if spec.arch == "fcos":
        ratios = ((1.0,),) * len(sizes)
    return AnchorGenerator(sizes, ratios)


class LevelBatchNorm(nn.Module):
    """BatchNorm2d with statistics and affine parameters of its own for each FPN level.

    The head's convs are shared by all levels, its norms are not (EfficientDet's head):
    P3's and P7's features differ in scale, so one set of BatchNorm statistics for every
    level (``head_norm: batch``) fits none of them. :class:`LevelNormRetinaNetHead` sets
    ``level`` before each level's pass. The ONNX export (eval mode) folds each level's norm
    into a Conv of that level's own, so the deploy graph's head is convs and Relus only,
    which its INT8 form runs as one QLinearConv into the next.
    """

    def __init__(self, channels: int, levels: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels))
        self.level = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.norms[self.level](x)


def set_head_level(head: nn.Module, level: int) -> None:
    """Point every :class:`LevelBatchNorm` of ``head`` at FPN level ``level`` (0 = P3)."""
    for module in head.modules():
        if isinstance(module, LevelBatchNorm):
            module.level = level


class LevelNormRetinaNetHead(RetinaNetHead):
    """torchvision's RetinaNet head run level by level, for :class:`LevelBatchNorm`; same outputs."""

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        levels = []
        for level, features in enumerate(x):
            set_head_level(self, level)
            levels.append(super().forward([features]))
        return {name: torch.cat([out[name] for out in levels], dim=1) for name in levels[0]}


def _head_norm(spec: DetectorSpec):
    c = spec.fpn_channels
    if spec.head_norm == "group":
        # At least 2 channels per group: P7 is 1x1 at small inputs, and a group of one
        # value cannot be normalised.
        return partial(nn.GroupNorm, next((g for g in (32, 16, 8, 4, 2) if c % g == 0 and c // g >= 2), 1))
    if spec.head_norm == "batch":
        return nn.BatchNorm2d
    if spec.head_norm == "level_batch":
        return partial(LevelBatchNorm, levels=len(spec.anchor_sizes))
    return None


def build_detector(spec: DetectorSpec) -> Detector:
    """A randomly initialised detector (backbone ImageNet weights if the spec asks)."""
    if spec.builder:
        from sadc.models.torchvision_zoo import build_torchvision_net

        return Detector(spec, build_torchvision_net(spec, weights=None))
    backbone = build_backbone(spec.backbone, spec.fpn_channels, spec.pretrained_backbone)
    anchors = _anchor_generator(spec)
    common = dict(
        # Resize/normalise are never used (sadc calls backbone and head directly), but
        # torchvision needs the arguments; min/max sizes equal the input size for clarity.
        min_size=min(spec.input_size),
        max_size=max(spec.input_size),
        image_mean=list(spec.mean),
        image_std=list(spec.std),
        anchor_generator=anchors,
    )
    if spec.arch == "fcos":
        # torchvision's FCOS head is GroupNorm(32) by construction; head_norm does not apply.
        head = FCOSHead(spec.fpn_channels, 1, spec.num_classes)
        net = FCOS(backbone, spec.num_classes, head=head, **common)
    else:
        head_type = LevelNormRetinaNetHead if spec.head_norm == "level_batch" else RetinaNetHead
        head = head_type(spec.fpn_channels, anchors.num_anchors_per_location()[0], spec.num_classes, norm_layer=_head_norm(spec))
        net = RetinaNet(backbone, spec.num_classes, head=head, **common)
    if spec.head_convs < 4:  # a lighter head: keep the first convs of each branch's tower
        per_conv = 3 if spec.arch == "fcos" else 1  # FCOS towers are flat conv, norm, relu
        for branch in (net.head.classification_head, net.head.regression_head):
            branch.conv = nn.Sequential(*list(branch.conv)[: spec.head_convs * per_conv])
    return Detector(spec, net)


class DenseForward(nn.Module):
    """uint8 images -> :class:`DenseOutput` as a module's ``forward``, for DDP to wrap.

    DistributedDataParallel synchronises gradients only for work done inside its
    ``forward``, so training goes through this module rather than ``Detector.dense``.
    """

    def __init__(self, detector: Detector, channels_last: bool = False):
        super().__init__()
        self.detector = detector
        self.channels_last = channels_last
        if channels_last:
            detector.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> DenseOutput:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.detector.dense(self.detector.preprocess(images))
