"""DeployModule: uint8 images in, TensorRT EfficientNMS-style detections out.

One module is both the exported graph and its own eager reference:

    images uint8 [B, 3, H, W]
      -> cast, subtract mean, divide by std          (no Resize/Pad: TensorRT-friendly)
      -> backbone + FPN + head                        (Detector.dense; DeployHead: the head's
                                                       reshapes are constants, no Shape ops)
      -> scores, top-k over A*C in two exact steps    (Detector.scores; ReduceMax, TopK, GatherND, TopK;
                                                       unsorted: NMS sorts)
      -> decode the k candidates against their anchors, clip to the image
                                                      (GatherND, Gather, CandidateDecoder: the anchors'
                                                       centres and sizes are constants)
      -> per-class NMS                                (torchvision eager, ONNX NonMaxSuppression exported)
      -> re-rank the survivors, pad to K              (ScatterElements, TopK, Where)
    num_dets int32 [B, 1], boxes float32 [B, K, 4], scores float32 [B, K], labels int32 [B, K]

Rows past ``num_dets`` are zero. Boxes are x1, y1, x2, y2 in input pixels, clipped to
[0, W] x [0, H]. The eager result equals :meth:`Detector.detect` with the same
thresholds (up to the order of exactly tied scores).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import batched_nms

from sadc.artefacts.io import OUTPUT_NAMES, RAW_OUTPUT_NAMES
from sadc.artefacts.postprocess import PostProcess
from sadc.errors import SadcError
from sadc.models.detector import Detector, set_head_level


class MultiClassNMS(torch.autograd.Function):
    """Per-class greedy NMS over a batch, as ONNX ``NonMaxSuppression`` selects it.

    forward(boxes [B, N, 4] xyxy, scores [B, N], labels [B, N] int64, max_output, iou_threshold,
    score_threshold, class_offset) -> selected [S, 3] int64 rows (batch, 0, box index), batch
    by batch, each batch in descending score order, at most ``max_output`` rows per batch.
    Boxes with score <= ``score_threshold`` are dropped, and a box is suppressed by a
    higher-scored box of the same label with IoU > ``iou_threshold``.

    Eager: torchvision ``batched_nms`` per image. Export (TorchScript exporter): the
    ``symbolic`` below emits one class-agnostic ``NonMaxSuppression`` over boxes shifted
    by ``label * class_offset``, so boxes of different labels never overlap (the
    coordinate trick batched_nms itself uses); ``class_offset`` must exceed every
    coordinate, which holds for boxes clipped to the image. TensorRT >= 8.5 imports the
    node natively (INMSLayer), so no plugin is needed.
    """

    @staticmethod
    def forward(ctx, boxes, scores, labels, max_output, iou_threshold, score_threshold, class_offset):
        rows = []
        for b in range(boxes.shape[0]):
            cand = torch.nonzero(scores[b] > score_threshold).squeeze(1)
            keep = batched_nms(boxes[b, cand], scores[b, cand], labels[b, cand], iou_threshold)[:max_output]
            idx = cand[keep]
            rows.append(torch.stack([torch.full_like(idx, b), torch.zeros_like(idx), idx], dim=1))
        return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, labels, max_output, iou_threshold, score_threshold, class_offset):
        float_type = torch.onnx.TensorProtoDataType.FLOAT
        offset = g.op("Mul", g.op("Cast", labels, to_i=float_type), g.op("Constant", value_t=torch.tensor(class_offset)))
        offset = g.op("Unsqueeze", offset, g.op("Constant", value_t=torch.tensor([2])))  # [B, N, 1]
        shifted = g.op("Add", boxes, offset)
        class_scores = g.op("Unsqueeze", scores, g.op("Constant", value_t=torch.tensor([1])))  # [B, 1, N]
        return g.op(
            "NonMaxSuppression",
            shifted,
            class_scores,
            g.op("Constant", value_t=torch.tensor([max_output], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
            center_point_box_i=0,
        )


class KeepBatchReshape(torch.autograd.Function):
    """x [B, ...] -> x.reshape(B, *shape), exported as one ``Reshape`` on the constant [0, *shape].

    ONNX's 0 copies the batch from the input, so the graph needs no ``Shape`` of ``x``:
    the TorchScript exporter turns ``x.shape[0]`` into Shape, Gather and Concat ops, and
    once the graph is quantized, each such Shape reads a DequantizeLinear of the whole
    tensor of its own (in ONNX Runtime's optimized quickstart INT8 graph, 32 of the 74
    DequantizeLinear fed only a Shape).
    """

    @staticmethod
    def forward(ctx, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        return x.reshape(x.shape[0], *shape)

    @staticmethod
    def symbolic(g, x, shape):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor([0, *shape], dtype=torch.int64)))


def level_rows(x: Tensor, width: int) -> Tensor:
    """A head output [B, A*width, H, W] -> [B, H*W*A, width], rows in torchvision's (y, x, anchor) order.

    torchvision views [B, A, width, H, W], permutes to [B, H, W, A, width] and reshapes;
    one transpose to [B, H, W, A*width] and one constant reshape give the same rows.
    Under ONNX Runtime's INT8 kernels, which run channels-last, that transpose cancels.
    """
    return KeepBatchReshape.apply(x.permute(0, 2, 3, 1), (-1, width))


class GroupNormExport(torch.autograd.Function):
    """``F.group_norm`` exported without a ``Shape`` of its input (see :class:`KeepBatchReshape`).

    forward(x [B, C, H, W], weight, bias, groups, eps, chw = x's [C, H, W], half) is
    ``F.group_norm`` itself. The symbolic is torch's own export of it, Reshape [0, G, -1],
    InstanceNormalization, Reshape, Mul, Add, with the second Reshape on the constant
    [0, C, H, -1]: H is a constant of a deploy graph, whose input size is fixed (torch's
    shape inference wants a -1 beside the 0).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float, chw: tuple[int, ...], half: bool) -> Tensor:
        return nn.functional.group_norm(x, groups, weight, bias, eps)

    @staticmethod
    def symbolic(g, x, weight, bias, groups, eps, chw, half):
        dtype = torch.float16 if half else torch.float32
        y = g.op("Reshape", x, g.op("Constant", value_t=torch.tensor([0, groups, -1], dtype=torch.int64)))
        y = g.op(
            "InstanceNormalization",
            y,
            g.op("Constant", value_t=torch.ones(groups, dtype=dtype)),
            g.op("Constant", value_t=torch.zeros(groups, dtype=dtype)),
            epsilon_f=eps,
        )
        y = g.op("Reshape", y, g.op("Constant", value_t=torch.tensor([0, *chw[:-1], -1], dtype=torch.int64)))
        per_channel = g.op("Constant", value_t=torch.tensor([-1, 1, 1], dtype=torch.int64))
        return g.op("Add", g.op("Mul", y, g.op("Reshape", weight, per_channel)), g.op("Reshape", bias, per_channel))


class DeployGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (affine) whose forward goes through :class:`GroupNormExport`; same parameter names."""

    @classmethod
    def of(cls, norm: nn.GroupNorm) -> DeployGroupNorm:
        new = cls(norm.num_groups, norm.num_channels, norm.eps, affine=True, device=norm.weight.device)
        new.weight, new.bias = norm.weight, norm.bias
        return new

    def forward(self, x: Tensor) -> Tensor:
        chw = tuple(int(d) for d in x.shape[1:])  # constants of the traced graph
        return GroupNormExport.apply(x, self.weight, self.bias, self.num_groups, self.eps, chw, x.dtype == torch.float16)


class DeployHead(nn.Module):
    """A RetinaNet or FCOS head with the same outputs, its levels flattened by :func:`level_rows`.

    The branches keep their names, so the graph's weights keep theirs.
    """

    def __init__(self, head: RetinaNetHead | FCOSHead):
        super().__init__()
        self.classification_head: Any = head.classification_head  # conv, cls_logits, num_classes
        self.regression_head: Any = head.regression_head  # conv, bbox_reg (, bbox_ctrness)
        self.fcos = isinstance(head, FCOSHead)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        cls, reg = self.classification_head, self.regression_head
        out: dict[str, list[Tensor]] = {"cls_logits": [], "bbox_regression": []}
        for level, x in enumerate(features):
            set_head_level(self, level)  # LevelBatchNorm heads
            out["cls_logits"].append(level_rows(cls.cls_logits(cls.conv(x)), cls.num_classes))
            box_features = reg.conv(x)
            if self.fcos:  # torchvision's FCOSRegressionHead
                out["bbox_regression"].append(level_rows(nn.functional.relu(reg.bbox_reg(box_features)), 4))
                out.setdefault("bbox_ctrness", []).append(level_rows(reg.bbox_ctrness(box_features), 1))
            else:
                out["bbox_regression"].append(level_rows(reg.bbox_reg(box_features), 4))
        return {name: torch.cat(levels, dim=1) for name, levels in out.items()}


def _for_export(detector: Detector) -> Detector:
    """``detector`` (a private copy) with its reshapes made constants of the graph.

    Every GroupNorm (the head's, and a backbone's where it has them) and the head's
    flattening. The outputs are the same bits: eagerly, DeployGroupNorm computes
    F.group_norm as nn.GroupNorm does, and level_rows moves the same values.
    """

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.GroupNorm) and child.affine:
                setattr(module, name, DeployGroupNorm.of(child))
            else:
                swap(child)

    swap(detector.net)
    detector.net.head = DeployHead(detector.net.head)
    return detector


class RowGather(torch.autograd.Function):
    """x [B, N, D], idx [B, k] -> [B, k, D]: row idx[b, j] of x[b], exported as one ``GatherND``.

    ``GatherND`` with ``batch_dims=1`` on idx [B, k, 1] copies whole rows. The
    TorchScript exporter writes ``x.gather`` as ``GatherElements`` on an index expanded
    to [B, k, D]: ONNX Runtime materialises that int64 index (``Expand``, 0.3 ms of the
    quickstart student's 8-image call) and reads it element by element. TensorRT imports
    ``GatherND`` as an IGatherLayer in kND mode with ``batch_dims`` element-wise dims.
    """

    @staticmethod
    def forward(ctx, x: Tensor, idx: Tensor) -> Tensor:
        return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    @staticmethod
    def symbolic(g, x, idx):
        rows = g.op("Unsqueeze", idx, g.op("Constant", value_t=torch.tensor([2])))  # [B, k, 1]
        return g.op("GatherND", x, rows, batch_dims_i=1)


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, D], idx [B, k] -> [B, k, D]: row idx[b, j] of x[b] (one ``GatherND`` in the graph)."""
    return RowGather.apply(x, idx)


class CandidateDecoder(nn.Module):
    """Decode the candidates' box codes against their anchors, bit for bit as :meth:`Detector.decode_boxes`.

    RetinaNet's ``BoxCoder.decode_single`` takes the anchors' widths, heights and centres
    apart column by column at run time: about 40 small graph ops (Slice, Gather, Mul,
    Add, Unsqueeze, Concat) on the k candidates. The anchors are constants of the deploy
    graph, so their centres and sizes are computed once here, with torchvision's
    arithmetic, and the graph does the rest on [B, k, 2] halves: Gather, Div, Clip, Exp,
    four Mul/Add, Sub, Add, Concat. Each output element goes through the same float
    operations in the same order as in torchvision, so the boxes are the same bits (a
    test checks). Other coders (FCOS's ``BoxLinearCoder``) use ``Detector.decode_boxes``.
    """

    table: Tensor  # [A, 4]: centre x, centre y, width, height of each anchor
    weights: Tensor | None  # BoxCoder's (wx, wy, ww, wh); None where all are 1

    def __init__(self, detector: Detector, anchors: Tensor):
        super().__init__()
        self.decode_boxes = detector.decode_boxes  # a method, not a submodule: DeployModule owns the detector
        coder = detector.net.box_coder
        self.fast = isinstance(coder, BoxCoder)
        if self.fast:
            widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
            ctr_x, ctr_y = anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights
            self.register_buffer("table", torch.stack([ctr_x, ctr_y, widths, heights], dim=1), persistent=False)
            weights = torch.tensor(coder.weights, dtype=torch.float32)
            # x / 1.0 == x: no Div. A buffer, so that it moves with the module (no copy per call).
            self.register_buffer("weights", None if bool((weights == 1).all()) else weights, persistent=False)
            self.clip = float(coder.bbox_xform_clip)
        else:
            self.register_buffer("table", anchors.clone(), persistent=False)

    def forward(self, codes: Tensor, anchor_idx: Tensor) -> Tensor:
        """codes [B, k, 4], anchor_idx [B, k] -> boxes [B, k, 4] xyxy, unclipped."""
        anchors = self.table[anchor_idx]  # [B, k, 4]
        if not self.fast:
            return self.decode_boxes(codes, anchors)
        if self.weights is not None:
            codes = codes / self.weights
        ctr, size = anchors[..., :2], anchors[..., 2:]
        pred_ctr = codes[..., :2] * size + ctr
        pred_size = torch.exp(codes[..., 2:].clamp(max=self.clip)) * size
        half = 0.5 * pred_size
        return torch.cat([pred_ctr - half, pred_ctr + half], dim=-1)


def top_pairs(scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The k best (anchor, class) pairs of scores [B, A, C]: (scores, anchors, classes), each [B, k], unordered.

    The same pairs as ``scores.flatten(1).topk(k)`` (up to which of exactly tied scores
    at the k-th place is kept), found in two exact steps: an anchor with a pair in the
    top k has its best class score in the top k of the anchors' best scores (fewer than k
    pairs beat it), so the k best anchors hold all k pairs. ONNX Runtime's TopK costs far
    more over A*C values than over A and then k*C: with k = 1,000, the selection takes
    0.48x the time of one TopK at the quickstart's 3,069 x 5 scores (batch 1; 0.53x at
    batch 8) and 0.33x at COCO's 76,725 x 80 (``python -m benchmarks.deploy_topk``).
    """
    num_anchors, num_classes = scores.shape[1], scores.shape[2]
    # Neither selection is sorted (TopK sorted=0): NMS orders its input by score itself,
    # and the survivors are ranked again at the end. ONNX Runtime then selects without
    # sorting the k values (TopK 0.70 -> 0.33 ms at the quickstart's batch 8); TensorRT's
    # TopK always sorts, which sorted=0 allows.
    best_anchors = scores.amax(dim=2).topk(min(k, num_anchors), dim=1, sorted=False).indices  # [B, ka]
    pairs = gather_rows(scores, best_anchors).flatten(1)  # [B, ka*C]
    top_scores, idx = pairs.topk(k, dim=1, sorted=False)  # [B, k], in no particular order
    row = torch.div(idx, num_classes, rounding_mode="trunc")  # idx >= 0: trunc == floor, and a plain Div
    return top_scores, best_anchors.gather(1, row), idx - row * num_classes  # idx % C without a Mod node


class DeployModule(nn.Module):
    """A detector wrapped for deployment (see the module docstring for the graph).

    ``post`` holds the graph's thresholds and K (constants of the exported graph).

    ``half=True`` runs backbone, FPN and head in fp16 (normalisation, decode and NMS in
    fp32): the fp16 graph of TensorRT 11's strongly typed fp16 engines.

    ``raw=True`` stops after decode: outputs ``scores`` [B, A, C] (after sigmoid; FCOS:
    sqrt(cls * centerness)) and ``boxes`` [B, A, 4] exactly as :meth:`Detector.decode`
    gives them (unclipped), for parity checks and custom post-processing.

    The detector is copied and the module is always in eval mode (``train()`` is a
    no-op), so the caller's module is untouched and BatchNorm uses running statistics.
    """

    anchors: Tensor  # a buffer, registered in __init__

    def __init__(
        self,
        detector: Detector,
        post: PostProcess = PostProcess(),
        *,
        raw: bool = False,
        half: bool = False,
    ):
        super().__init__()
        self.detector = _for_export(copy.deepcopy(detector)).eval()
        self.spec = detector.spec
        self.post = post
        self.raw = raw
        self.fp16 = half  # not self.half: that is nn.Module.half()
        h, w = self.spec.input_size
        with torch.no_grad():
            probe = torch.zeros(1, 3, h, w, dtype=torch.uint8)
            anchors = self.detector.dense(self.detector.preprocess(probe)).anchors
        # Anchors depend only on the fixed input size: a constant of the graph, not ops.
        self.register_buffer("anchors", anchors.clone(), persistent=False)
        self.decoder = CandidateDecoder(self.detector, anchors)
        self.num_classes = self.spec.num_classes
        self.class_offset = float(max(h, w) + 1)
        if half:  # the network only: mean/std (Detector buffers) and anchors stay fp32
            self.detector.net.half()

    def train(self, mode: bool = True) -> DeployModule:
        """Stay in eval mode whatever ``mode`` says: a deploy graph has no training mode.

        torch.onnx.export "restores" the mode it found by calling ``train(True)`` on a
        module constructed in training mode, which would switch BatchNorm to batch
        statistics for every later eager call (the parity reference).
        """
        return super().train(False)

    @property
    def output_names(self) -> tuple[str, ...]:
        return RAW_OUTPUT_NAMES if self.raw else OUTPUT_NAMES

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """images uint8 [B, 3, H, W] -> (num_dets, boxes, scores, labels) or raw (scores, boxes)."""
        if not torch.jit.is_tracing():
            self._check_input(images)
        x = self.detector.preprocess(images)
        if self.fp16:
            # fp16 backbone/FPN/head, back to fp32 for decode and NMS: box coordinates in
            # pixels need more than fp16's 11 bits, and TensorRT keeps the graph's types.
            out = self.detector.dense(x.half())
            out = dataclasses.replace(
                out,
                cls_logits=out.cls_logits.float(),
                bbox_regression=out.bbox_regression.float(),
                bbox_ctrness=None if out.bbox_ctrness is None else out.bbox_ctrness.float(),
            )
        else:
            out = self.detector.dense(x)
        out = dataclasses.replace(out, anchors=self.anchors)
        if self.raw:
            return self.detector.decode(out)  # scores [B, A, C] in 0..1, boxes [B, A, 4] xyxy
        return self._postprocess(self.detector.scores(out), out.bbox_regression)

    def _check_input(self, images: Tensor) -> None:
        h, w = self.spec.input_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, h, w) or images.dtype != torch.uint8:
            raise SadcError(
                f"images: expected uint8 [B, 3, {h}, {w}], got {images.dtype} {list(images.shape)}; "
                "letterbox to the spec's input_size first"
            )

    def _postprocess(self, scores: Tensor, codes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """scores [B, A, C] in 0..1, box codes [B, A, 4] -> the four deploy outputs."""
        h, w = self.spec.input_size
        num_classes = self.num_classes
        post = self.post
        k = min(post.topk_candidates, scores.shape[1] * num_classes)
        cand_scores, anchor_idx, cand_labels = top_pairs(scores, k)  # [B, k] each, by score
        # Decode and clip the k candidates, not all A anchors (k rows instead of A: 1,000
        # against 3,069 at the quickstart's 128 px, 76,725 at COCO's 640), row for row
        # the same arithmetic as Detector.detect.
        cand_codes = gather_rows(codes, anchor_idx)  # [B, k, 4]
        cand_boxes = self.decoder(cand_codes, anchor_idx)
        limits = torch.tensor([w, h, w, h], dtype=cand_boxes.dtype, device=cand_boxes.device)
        # Not clip_boxes_to_image: its strided slices + stack become six graph ops, Max + Min two.
        cand_boxes = torch.min(cand_boxes.clamp(min=0), limits)  # clip x to [0, W], y to [0, H]

        selected = MultiClassNMS.apply(
            cand_boxes,
            cand_scores,
            cand_labels,
            post.max_detections,
            post.iou_threshold,
            post.score_threshold,
            self.class_offset,
        )  # [S, 3]: (batch, 0, candidate)
        # Mark the survivors in a [B, k] mask, then re-rank them by score (NMS keeps score
        # order, so this is the NMS order) and take K: no per-image Python loop, so the
        # exported graph keeps a dynamic batch.
        keep = torch.zeros_like(cand_scores).flatten()
        keep = keep.scatter(0, selected[:, 0] * k + selected[:, 2], torch.ones_like(selected[:, 0], dtype=keep.dtype))
        keep = keep.view_as(cand_scores) > 0
        ranked = torch.where(keep, cand_scores, torch.full_like(cand_scores, -1.0))
        n_out = min(post.max_detections, k)
        top_scores, order = ranked.topk(n_out, dim=1)  # [B, n_out]
        valid = keep.gather(1, order)
        out_scores = torch.where(valid, top_scores, torch.zeros_like(top_scores))
        out_boxes = torch.where(
            valid.unsqueeze(-1),
            gather_rows(cand_boxes, order),
            torch.zeros_like(cand_boxes[:, :n_out]),
        )
        out_labels = torch.where(valid, cand_labels.gather(1, order), torch.zeros_like(order))
        num_dets = valid.sum(dim=1, keepdim=True)
        if n_out < post.max_detections:  # fewer candidates than K: pad with zero rows
            pad = post.max_detections - n_out
            out_scores = torch.cat([out_scores, torch.zeros_like(out_scores[:, :1]).expand(-1, pad)], dim=1)
            out_labels = torch.cat([out_labels, torch.zeros_like(out_labels[:, :1]).expand(-1, pad)], dim=1)
            out_boxes = torch.cat([out_boxes, torch.zeros_like(out_boxes[:, :1]).expand(-1, pad, 4)], dim=1)
        return num_dets.to(torch.int32), out_boxes, out_scores, out_labels.to(torch.int32)
