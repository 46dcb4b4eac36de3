"""Parity: does the exported graph compute what the torch model computes?

Two comparisons, run after every export:

- raw: max |torch - onnx| of the dense scores [B, A, C] and decoded boxes [B, A, 4]
  (a raw graph, exported in memory, against :class:`DeployModule` with ``raw=True``);
  boxes are clipped to the image first, as the deploy graph clips them, and their
  tolerance is relative to the image size;
- detections: the final EfficientNMS-layout outputs, matched per image. A detection
  matches when the other side has one with the same label and IoU >= ``match_iou``
  (0.99), or every coordinate within 0.01 px (zero-area boxes have no IoU). Only
  detections with score >= ``min_score`` (0.3) must be matched, on both sides; the
  match rate is the lower of torch->onnx and onnx->torch. Low-score
  detections are left out because near the score threshold a 1e-6 difference flips
  whether a box exists at all.

:func:`check_parity` takes any torch callable and any ONNX Runtime session, so a
test can feed a deliberately broken model and see the failure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from sadc.artefacts.io import INPUT_NAME, detections_from_outputs
from sadc.artefacts.postprocess import PostProcess
from sadc.data.images import noise_images
from sadc.errors import SadcError
from sadc.export.deploy import DeployModule

log = logging.getLogger(__name__)

TorchFn = Callable[[Tensor], Sequence[Tensor]]
SAME_BOX_PX = 0.01


@dataclass(frozen=True)
class ParityTolerance:
    """Pass when match rate >= ``min_match_rate``, raw score diff <= ``max_abs_diff`` and
    raw box diff <= ``max_box_diff`` x the input's longer side (in pixels).

    The fp32 defaults: ONNX Runtime and PyTorch differ by float rounding only (~1e-6 on
    scores; on boxes ~1e-4 px at 256 px, growing with the box size, hence relative).
    """

    min_match_rate: float = 0.99
    max_abs_diff: float = 1e-3
    max_box_diff: float = 1e-3

    def limit(self, name: str, image_side: int) -> float:
        """The tolerance of raw output ``name`` (boxes: pixels for this input size)."""
        return self.max_box_diff * image_side if name == "boxes" else self.max_abs_diff


class ParityError(SadcError):
    """The exported graph disagrees with torch beyond tolerance."""


@dataclass
class ParityReport:
    """Outcome of one parity check (see the module docstring for the definitions)."""

    n_images: int
    raw_max_abs_diff: dict[str, float] = field(default_factory=dict)  # boxes in px, clipped to the image
    image_side: int = 0  # longer side of the input, for the relative box tolerance
    n_torch: int = 0  # torch detections with score >= min_score
    n_onnx: int = 0
    matched_torch: int = 0  # of n_torch, those with an onnx match
    matched_onnx: int = 0
    max_score_diff: float = 0.0  # over matched pairs
    compared_detections: bool = True
    min_score: float = 0.3
    match_iou: float = 0.99
    tolerance: ParityTolerance | None = field(default_factory=ParityTolerance)
    label: str = "onnx"

    @property
    def match_rate(self) -> float:
        """min(torch->onnx, onnx->torch) matched fraction; 1.0 when neither side has detections."""
        a = self.matched_torch / self.n_torch if self.n_torch else 1.0
        b = self.matched_onnx / self.n_onnx if self.n_onnx else 1.0
        return min(a, b)

    @property
    def max_abs_diff(self) -> float:
        return max(self.raw_max_abs_diff.values(), default=0.0)

    def failures(self) -> list[str]:
        """One phrase per violated tolerance (empty when passed or no tolerance)."""
        tol = self.tolerance
        if tol is None:
            return []
        out = []
        if self.compared_detections and self.match_rate < tol.min_match_rate:
            out.append(f"match rate {self.match_rate:.4f} < {tol.min_match_rate}")
        for name, diff in self.raw_max_abs_diff.items():
            limit = tol.limit(name, self.image_side)
            if not diff <= limit:  # also catches NaN
                out.append(f"raw {name} max abs diff {diff:.3g} > {limit:.3g}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def summary(self) -> str:
        parts = [f"{self.label} vs torch on {self.n_images} images"]
        if self.compared_detections:
            parts.append(
                f"match rate {self.match_rate:.4f} ({self.matched_torch}/{self.n_torch} torch, "
                f"{self.matched_onnx}/{self.n_onnx} {self.label} detections with score >= {self.min_score})"
            )
        parts += [f"raw {k} max abs diff {v:.3g}" for k, v in self.raw_max_abs_diff.items()]
        return "; ".join(parts)

    def table(self):
        """A rich Table of the numbers, with the tolerance and a pass/fail column."""
        from rich.table import Table

        tol = self.tolerance
        status = "report only" if tol is None else ("[green]ok" if self.passed else "[red]FAIL")
        table = Table(title=f"parity: {self.label} vs torch ({self.n_images} images)")
        for col, justify in (("check", "left"), ("value", "right"), ("tolerance", "right"), ("", "left")):
            table.add_column(col, justify=justify)
        if self.compared_detections:
            ok = tol is None or self.match_rate >= tol.min_match_rate
            table.add_row(
                f"match rate (IoU >= {self.match_iou}, same label, score >= {self.min_score})",
                f"{self.match_rate:.4f}",
                "report only" if tol is None else f">= {tol.min_match_rate}",
                "" if tol is None else ("[green]ok" if ok else "[red]FAIL"),
            )
            table.add_row("torch detections matched", f"{self.matched_torch}/{self.n_torch}", "", "")
            table.add_row(f"{self.label} detections matched", f"{self.matched_onnx}/{self.n_onnx}", "", "")
            table.add_row("max score diff (matched)", f"{self.max_score_diff:.3g}", "", "")
            if self.n_torch == 0 and self.n_onnx == 0:
                table.add_row(f"[yellow]no detection scored >= {self.min_score}: pass --parity-images", "", "", "")
        for name, diff in self.raw_max_abs_diff.items():
            limit = None if tol is None else tol.limit(name, self.image_side)
            ok = limit is None or diff <= limit
            table.add_row(
                f"raw {name} max abs diff" + (" (px, clipped)" if name == "boxes" else ""),
                f"{diff:.3g}",
                "report only" if limit is None else f"<= {limit:.3g}",
                "" if tol is None else ("[green]ok" if ok else "[red]FAIL"),
            )
        table.caption = status
        return table

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ParityError(
                f"parity check failed: {'; '.join(self.failures())} ({self.summary()}); "
                "the export is kept for inspection, fix the model/opset or pass --no-parity to skip"
            )


# ------------------------------------------------------------------------------ comparisons


def _batches(images: Tensor, batch_size: int) -> list[Tensor]:
    # Near-equal chunks rather than a short last batch: every batch size is exercised alike.
    n = images.shape[0]
    return list(torch.tensor_split(images, max(1, math.ceil(n / batch_size))))


def _run_session(session, batch: Tensor) -> list[np.ndarray]:
    return session.run(None, {INPUT_NAME: batch.numpy()})


def _match(ref: dict[str, Tensor], other: dict[str, Tensor], match_iou: float) -> tuple[int, list[float]]:
    """Greedy, highest score first: how many ``ref`` detections find an unused ``other``."""
    if len(ref["scores"]) == 0 or len(other["scores"]) == 0:
        return 0, []
    iou = box_iou(ref["boxes"], other["boxes"]).nan_to_num(0.0)
    # Zero-area boxes (e.g. clipped flat at the image border) have no IoU, even with
    # themselves: coordinates within SAME_BOX_PX count as the same box.
    same = (ref["boxes"][:, None, :] - other["boxes"][None, :, :]).abs().amax(-1) <= SAME_BOX_PX
    iou = torch.where(same, torch.ones_like(iou), iou)
    iou[ref["labels"][:, None] != other["labels"][None, :]] = -1.0
    used = torch.zeros(len(other["scores"]), dtype=torch.bool)
    matched, diffs = 0, []
    for i in ref["scores"].argsort(descending=True).tolist():
        cand = iou[i].masked_fill(used, -1.0)
        j = int(cand.argmax())
        if cand[j] >= match_iou:
            used[j] = True
            matched += 1
            diffs.append(abs(float(ref["scores"][i]) - float(other["scores"][j])))
    return matched, diffs


def _above(det: dict[str, Tensor], min_score: float) -> dict[str, Tensor]:
    keep = det["scores"] >= min_score
    return {k: v[keep] for k, v in det.items()}


def check_parity(
    reference: TorchFn | None,
    session,
    images: Tensor,
    *,
    raw_reference: TorchFn | None = None,
    raw_session=None,
    batch_size: int = 8,
    min_score: float = 0.3,
    match_iou: float = 0.99,
    tolerance: ParityTolerance | None = ParityTolerance(),  # frozen: one shared default is safe
    label: str = "onnx",
) -> ParityReport:
    """Compare a torch callable with an ONNX Runtime session on ``images`` uint8 [N, 3, H, W].

    ``reference(images)`` and ``session`` return the deploy layout (num_dets, boxes,
    scores, labels); either may be None to skip the detection comparison.
    ``raw_reference`` / ``raw_session`` return (scores, boxes) dense outputs; when both
    are given, their max abs differences are reported per output name.
    """
    h, w = int(images.shape[-2]), int(images.shape[-1])
    report = ParityReport(
        n_images=int(images.shape[0]),
        image_side=max(h, w),
        min_score=min_score,
        match_iou=match_iou,
        tolerance=tolerance,
        label=label,
        compared_detections=reference is not None and session is not None,
    )
    diffs: list[float] = []
    with torch.no_grad():
        for batch in _batches(images, batch_size):
            if reference is not None and session is not None:  # report.compared_detections
                ref = detections_from_outputs(*reference(batch))
                got = detections_from_outputs(*_run_session(session, batch))
                for r, g in zip(ref, got, strict=True):
                    r_hi, g_hi = _above(r, min_score), _above(g, min_score)
                    report.n_torch += len(r_hi["scores"])
                    report.n_onnx += len(g_hi["scores"])
                    m, d = _match(r_hi, g, match_iou)  # against all of g: 0.3001 vs 0.2999 still matches
                    report.matched_torch += m
                    diffs += d
                    report.matched_onnx += _match(g_hi, r, match_iou)[0]
            if raw_reference is not None and raw_session is not None:
                names = [o.name for o in raw_session.get_outputs()]
                for name, t_out, o_out in zip(names, raw_reference(batch), _run_session(raw_session, batch), strict=True):
                    t, o = t_out.numpy().astype(np.float64), o_out.astype(np.float64)
                    if name == "boxes":  # as the deploy graph uses them; far-off boxes of dead anchors don't matter
                        limits = np.array([w, h, w, h], dtype=np.float64)
                        t, o = np.clip(t, 0, limits), np.clip(o, 0, limits)
                    diff = float(np.max(np.abs(t - o))) if o.size else 0.0
                    report.raw_max_abs_diff[name] = max(report.raw_max_abs_diff.get(name, 0.0), diff)
    report.max_score_diff = max(diffs, default=0.0)
    return report


# ------------------------------------------------------------------------------ driver


def parity_images(spec, folder: Path | None = None, *, n: int = 8, seed: int = 0) -> Tensor:
    """uint8 [k, 3, H, W]: the first ``k <= n`` images of ``folder`` that decode, letterboxed, or ``n`` of noise.

    The folder is read by :mod:`sadc.data.reader` as every command reads one: files that
    cannot be read are skipped (logged), so a folder distill accepted is accepted here.
    Noise exercises the numerics but rarely gives a trained detector confident boxes;
    pass a folder of real images to check the detections too.
    """
    h, w = spec.input_size
    if folder is None:
        return noise_images(n, (h, w), seed)
    from itertools import islice

    from sadc.data.images import DataError
    from sadc.data.reader import SkipList, decoded, scan_images, text_name
    from sadc.data.transforms import letterbox

    try:
        scan = scan_images(Path(folder), what=f"parity images {text_name(folder)}")
    except DataError as err:
        raise SadcError(f"{err}; pass --parity-images DIR with readable images, or --no-parity") from None
    skips = SkipList(None, scan.skipped)
    images = [letterbox(image, (h, w))[0] for _, image in islice(decoded(scan.paths, skips), n)]
    if skips:
        log.warning(
            "parity: skipped %d unreadable images in %s (first: %s)",
            len(skips),
            text_name(folder),
            text_name(skips.entries[0][1]),
        )
    if not images:
        raise SadcError(f"parity images {text_name(folder)}: none of the images decode; pass --parity-images DIR or --no-parity")
    return torch.stack(images)


def ort_session(model: Path | bytes, *, threads: int | None = None):
    """A CPU ONNX Runtime session of a file or serialized model (the runtime's own session maker)."""
    from sadc.runtime.onnx_rt import make_session

    return make_session(model, provider="cpu", threads=threads)


def run_parity(
    detector,
    onnx_path: Path,
    *,
    images: Tensor,
    tolerance: ParityTolerance | None = ParityTolerance(),  # frozen: one shared default is safe
    compare_raw: bool = True,
    batch_size: int = 8,
    match_iou: float = 0.99,
) -> ParityReport:
    """Parity of an exported file against ``detector`` in torch, thresholds from its sidecar.

    ``match_iou``: IoU at which two detections count as the same (0.99 for fp32; an
    INT8 report uses a looser 0.5, since quantized boxes move by design).

    Deploy graphs: detections compared, and (``compare_raw``) a raw graph exported in
    memory compared with torch's dense outputs. Raw graphs: their outputs compared
    directly. The file's format (``onnx-int8`` etc.) only labels the report; pass
    ``tolerance=None`` for report-only checks such as INT8 against fp32 torch.
    """
    from sadc.artefacts.sidecar import read_sidecar
    from sadc.export.onnx import onnx_bytes

    sidecar = read_sidecar(onnx_path)
    post = PostProcess.from_json(sidecar["thresholds"])
    raw = sidecar["format"] == "onnx-raw"
    module = DeployModule(detector, post, raw=raw)
    session = ort_session(Path(onnx_path))
    label = sidecar["format"]
    if raw:
        return check_parity(
            None, None, images, raw_reference=module, raw_session=session, batch_size=batch_size, tolerance=tolerance, label=label
        )
    raw_module, raw_session = None, None
    if compare_raw:
        raw_module = DeployModule(detector, post, raw=True)
        raw_session = ort_session(onnx_bytes(raw_module, opset=int(sidecar.get("opset", 17))))
    return check_parity(
        module,
        session,
        images,
        raw_reference=raw_module,
        raw_session=raw_session,
        batch_size=batch_size,
        tolerance=tolerance,
        label=label,
        match_iou=match_iou,
    )
