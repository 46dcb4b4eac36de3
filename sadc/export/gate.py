"""One gate for every artefact: parity against torch, then mAP against the fp32 ONNX graph.

Every file ``sadc export`` writes that runs detections (fp32, fp16 and INT8 ONNX graphs,
fp32, fp16 and INT8 engines, either NMS) goes through :func:`gate_artefact`:

1. parity: the artefact and the torch ``DeployModule`` (same thresholds, from the
   artefact's sidecar) run on the same images; detections with score >= 0.3 must find
   a partner of the same label with IoU >= ``match_iou`` on the other side, and the match
   rate (the lower of both directions) must reach the rule's ``min_match_rate``. fp32
   ONNX graphs also compare the dense scores and boxes (see :mod:`sadc.export.parity`).
2. mAP (with ``--val``): COCO mAP of the artefact and of the fp32 ONNX graph on the
   labeled set; the artefact fails when it is more than ``--max-map-drop`` below.

:data:`RULES` holds each kind's tolerances (docs/export.md prints the same table). The
outcome goes into the artefact's sidecar as ``verification`` (status ``passed``,
``failed`` or ``not checked``); a failure keeps the file, marks it ``failed`` and raises
:class:`GateError` (``sadc export`` exits 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sadc.errors import SadcError
from sadc.export.parity import ParityError, ParityReport, ParityTolerance


class GateError(ParityError):
    """An artefact failed its parity or mAP gate; it is kept and marked unverified in its sidecar."""


@dataclass(frozen=True)
class GateRule:
    """Tolerances of one kind of artefact. ``tolerance`` None: parity is reported, mAP decides."""

    name: str
    tolerance: ParityTolerance | None
    match_iou: float
    compare_raw: bool = False  # dense outputs compared too (fp32 ONNX: a raw graph is exported in memory)

    def describe(self) -> str:
        if self.tolerance is None:
            return f"match rate reported (IoU >= {self.match_iou}); judged by mAP"
        text = f"match rate >= {self.tolerance.min_match_rate} at IoU >= {self.match_iou}"
        if self.compare_raw:
            text += (
                f"; raw scores within {self.tolerance.max_abs_diff:g}, raw boxes within "
                f"{self.tolerance.max_box_diff:g} x the longer side"
            )
        return text


RULES: dict[tuple[str, str], GateRule] = {
    ("onnx", "fp32"): GateRule("fp32 ONNX", ParityTolerance(), 0.99, compare_raw=True),
    # fp16 activations move scores by ~1e-3 and boxes by a fraction of a pixel.
    ("onnx", "fp16"): GateRule("fp16 ONNX", ParityTolerance(min_match_rate=0.95), 0.9),
    ("onnx", "int8"): GateRule("INT8 ONNX", None, 0.5),
    # TensorRT's fp32 uses TF32 tensor cores by default on Ampere and later: ~1e-3 on scores.
    ("engine", "fp32"): GateRule("fp32 engine", ParityTolerance(min_match_rate=0.97), 0.95),
    ("engine", "fp16"): GateRule("fp16 engine", ParityTolerance(min_match_rate=0.95), 0.9),
    ("engine", "int8"): GateRule("INT8 engine", None, 0.5),
}


def rules_markdown() -> str:
    """The rules as a markdown table (docs/export.md)."""
    lines = ["| artefact | parity (detections with score >= 0.3, vs torch) |", "| --- | --- |"]
    lines += [f"| {rule.name} | {rule.describe()} |" for rule in RULES.values()]
    return "\n".join(lines) + "\n"


class PredictorSession:
    """An ONNX-Runtime-like ``run(None, feeds)`` over a predictor's model-only ``run`` (engines)."""

    def __init__(self, predictor):
        self.predictor = predictor

    def run(self, _names, feeds: dict) -> list:
        import torch

        from sadc.artefacts.io import INPUT_NAME, OUTPUT_NAMES

        out = self.predictor.run(torch.from_numpy(feeds[INPUT_NAME]))
        if isinstance(out, dict):
            out = [out[name] for name in OUTPUT_NAMES]
        return [o.cpu().numpy() if hasattr(o, "cpu") else o for o in out]


def check_parity_of(detector, artefact: Path, rule: GateRule, images, *, predictor=None) -> ParityReport:
    """Parity of ``artefact`` against ``detector`` under ``rule``: ONNX files in ONNX Runtime (CPU),
    engines through ``predictor`` (a :class:`~sadc.runtime.trt_rt.TrtPredictor`)."""
    from sadc.artefacts.postprocess import PostProcess
    from sadc.artefacts.sidecar import read_sidecar
    from sadc.export.deploy import DeployModule
    from sadc.export.parity import check_parity, run_parity

    if predictor is None:
        return run_parity(
            detector, artefact, images=images, tolerance=rule.tolerance, compare_raw=rule.compare_raw, match_iou=rule.match_iou
        )
    sidecar = read_sidecar(artefact)
    module = DeployModule(detector, PostProcess.from_json(sidecar["thresholds"]))
    batch = max(1, min(8, getattr(predictor, "max_batch", 8)))
    return check_parity(
        module,
        PredictorSession(predictor),
        images,
        batch_size=batch,
        tolerance=rule.tolerance,
        match_iou=rule.match_iou,
        label=rule.name,
    )


def map_scores(reference: Path, predictor, val: Path, *, console=None, batch_size: int = 8) -> dict[str, dict[str, float]]:
    """COCO metrics of the fp32 ONNX graph ``reference`` and of ``predictor`` on ``val`` (a COCO json,
    YOLO data.yaml or VOC folder): ``{"reference": {...}, "artefact": {...}}``."""
    from sadc.runtime.accuracy import predictor_accuracy
    from sadc.runtime.onnx_rt import OrtPredictor

    val = Path(val)
    if not val.exists():
        raise SadcError(f"--val {val}: not found (a COCO json, a YOLO data.yaml or a VOC folder, e.g. data/synth/val.json)")
    batch = max(1, min(batch_size, getattr(predictor, "max_batch", batch_size)))
    return {
        "reference": predictor_accuracy(OrtPredictor(reference), val, batch_size=batch_size, console=console),
        "artefact": predictor_accuracy(predictor, val, batch_size=batch, console=console),
    }


def map_table(name: str, scores: dict[str, dict[str, float]], val: Path):
    from rich.table import Table

    table = Table(title=f"{name} accuracy on {val}")
    for col in ("model", "mAP", "AP50", "AP75"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, s in (("fp32 ONNX (reference)", scores["reference"]), (name, scores["artefact"])):
        table.add_row(label, *(f"{s[k]:.4f}" for k in ("mAP", "AP50", "AP75")))
    table.caption = f"mAP change {scores['artefact']['mAP'] - scores['reference']['mAP']:+.4f}"
    return table


def verification(
    rule: GateRule, report: ParityReport | None, scores: dict | None, max_map_drop: float | None, failures: list[str]
) -> dict[str, Any]:
    """The sidecar's ``verification`` entry."""
    entry: dict[str, Any] = {"status": "failed" if failures else "passed", "rule": rule.name, "failures": failures}
    if report is not None:
        entry["parity"] = {
            "images": report.n_images,
            "match_rate": report.match_rate,
            "match_iou": report.match_iou,
            "min_score": report.min_score,
            "min_match_rate": None if rule.tolerance is None else rule.tolerance.min_match_rate,
            "max_score_diff": report.max_score_diff,
            "raw_max_abs_diff": dict(report.raw_max_abs_diff),
            "detections": {"torch": report.n_torch, "artefact": report.n_onnx},
        }
    if scores is not None:
        entry["map"] = {
            "mAP": scores["artefact"]["mAP"],
            "reference_mAP": scores["reference"]["mAP"],
            "change": scores["artefact"]["mAP"] - scores["reference"]["mAP"],
            "max_map_drop": max_map_drop,
        }
    return entry


def not_checked(artefact: Path, why: str) -> None:
    from sadc.artefacts.sidecar import update_sidecar

    update_sidecar(artefact, {"verification": {"status": "not checked", "why": why}})


def gate_artefact(
    detector,
    artefact: Path,
    rule: GateRule,
    *,
    images=None,
    predictor=None,
    reference: Path | None = None,
    val: Path | None = None,
    max_map_drop: float | None = None,
    console=None,
) -> tuple[ParityReport | None, dict | None]:
    """Parity (when ``images`` is given) and mAP (when ``val`` and ``reference`` are) of one artefact.

    Writes the outcome into the artefact's sidecar; raises :class:`GateError` naming every
    failed check when one fails (the file stays, marked ``failed``).
    """
    from sadc.artefacts.sidecar import update_sidecar

    report = scores = None
    failures: list[str] = []
    if images is not None:
        report = check_parity_of(detector, artefact, rule, images, predictor=predictor)
        if console is not None:
            console.print(report.table())
        failures += [f"parity: {f}" for f in report.failures()]
    if val is not None and reference is not None and not failures:
        from sadc.runtime.onnx_rt import OrtPredictor

        scores = map_scores(reference, predictor or OrtPredictor(artefact), val, console=console)
        if console is not None:
            console.print(map_table(rule.name, scores, val))
        drop = scores["reference"]["mAP"] - scores["artefact"]["mAP"]
        if max_map_drop is not None and drop > max_map_drop:
            failures.append(
                f"mAP {scores['artefact']['mAP']:.4f} is {drop:.4f} below the fp32 ONNX graph's "
                f"{scores['reference']['mAP']:.4f} (--max-map-drop {max_map_drop})"
            )
    if images is None and scores is None:
        not_checked(artefact, "--no-parity")
        return None, None
    update_sidecar(artefact, {"verification": verification(rule, report, scores, max_map_drop, failures)})
    if failures:
        hint = (
            "calibrate on more or more representative images (--calib, --calib-images), try --method percentile, or ship fp32/fp16"
            if "int8" in rule.name.lower()
            else "fix the model/opset, or pass --no-parity to skip"
        )
        raise GateError(
            f"{rule.name} {artefact} failed its gate: {'; '.join(failures)}; kept, marked unverified in its sidecar; {hint}"
        )
    return report, scores
