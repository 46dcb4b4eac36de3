"""Which student for the quickstart recipe: deploy latency (ORT fp32) against SAD mAP.

Issue 18 item 3: the student must be <= 0.35x the teacher's latency in the deploy runtime
(both exported to ONNX with NMS, ONNX Runtime fp32, 2 threads) at batch 1 and 8, and within
1 mAP point of the teacher after the demo's budget or 1,200 steps.

Two phases, each resumable:

    python -m benchmarks.student_search latency          # every candidate, random or trained weights
    python -m benchmarks.student_search train --steps 600 --only resnet18_half-h2,...
    python -m benchmarks.student_search report           # table + plot (RESULTS.md block)

``latency`` exports each candidate (its trained checkpoint from ``train`` when there is
one, else random weights) and the teacher (runs/quickstart-teacher/best.pt) and times them
interleaved, ``--rounds`` times, median of medians, in one run; the ratios are per round.
``train`` distils each candidate from the quickstart teacher with recipes/quickstart.yaml
(only the student's architecture changed), seed 0, evaluating on val (the selection split)
and, for the report, on test.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine_line, run, scratch_dir, split_metrics

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs/search"
TEACHER = ROOT / "runs/quickstart-teacher/best.pt"
RESULTS = ROOT / "benchmarks/RESULTS.md"
PLOT = ROOT / "docs/student-search.png"


@dataclass(frozen=True)
class Candidate:
    key: str
    label: str
    student: dict = field(default_factory=dict)  # model.student overrides of recipes/quickstart.yaml (all of
    # backbone, head_convs and fpn_channels where they differ from the recipe's: the recipe's student changes)


CANDIDATES = [
    Candidate(
        "mbv3l-h4",
        "MobileNetV3-L, head 4 convs (quickstart until 2026-11-30)",
        {"backbone": "mobilenet_v3_large", "head_convs": 4},
    ),
    Candidate("mbv3l-h2", "MobileNetV3-L, head 2 convs", {"backbone": "mobilenet_v3_large", "head_convs": 2}),
    Candidate("mbv3s-h2", "MobileNetV3-S, head 2 convs", {"backbone": "mobilenet_v3_small", "head_convs": 2}),
    Candidate("r18half-h4", "ResNet-18 at half width, head 4 convs", {"backbone": "resnet18_half", "head_convs": 4}),
    Candidate("r18half-h2", "ResNet-18 at half width, head 2 convs", {"backbone": "resnet18_half", "head_convs": 2}),
    Candidate("r10half-h2", "ResNet-10 at half width, head 2 convs", {"backbone": "resnet10_half", "head_convs": 2}),
    Candidate(
        "r10half-h2-f48",
        "ResNet-10 at half width, FPN-48, head 2",
        {"backbone": "resnet10_half", "head_convs": 2, "fpn_channels": 48},
    ),
    Candidate("regx400-h2", "RegNetX-400MF, head 2 convs", {"backbone": "regnet_x_400mf", "head_convs": 2}),
]
BY_KEY = {c.key: c for c in CANDIDATES}


def recipe_for(c: Candidate, steps: int, seed: int = 0):
    from sadc.recipe import load_recipe

    overrides = [
        f"name={c.key}-{steps}-s{seed}",
        f"output={OUT}",
        f"seed={seed}",
        f"model.teacher.source={TEACHER}",
        f"train.steps={steps}",
        "train.lr=0.001",  # as the candidates were measured (the recipe's lr is 2e-3 since 2026-12-05)
        "train.batched_loss=false",  # likewise (the recipe's loss is batched since 2026-12-05)
        "model.student.head_norm=group",  # likewise (the recipe's head is per-level BatchNorm since 2026-12-05)
        *(f"model.student.{k}={json.dumps(v)}" for k, v in c.student.items()),
    ]
    return load_recipe(ROOT / "recipes/quickstart.yaml", overrides)


def student_spec(c: Candidate):
    from sadc.models.loading import spec_from_fields

    return spec_from_fields(recipe_for(c, 600).model.student)


def trained(c: Candidate, steps: int) -> Path | None:
    last = recipe_for(c, steps).run_dir / "last.pt"
    return last if last.is_file() else None


# ---------------------------------------------------------------------------- latency


def export_for_latency(c: Candidate | None, steps: int, tmp: Path, raw: bool) -> tuple[Path, str]:
    """ONNX of the teacher (c None) or a candidate: trained weights where they exist.

    With random weights the number of boxes that reach NMS is arbitrary, so the deploy
    graph's time is too; ``raw`` (the network and box decode, no top-k/NMS) is the fair
    comparison of candidates that are not all trained.
    """
    from sadc.export.onnx import export_onnx
    from sadc.models.detector import build_detector

    if c is None:
        return export_onnx(TEACHER, tmp / "teacher.onnx", raw=raw), "trained"
    ckpt = trained(c, steps)
    torch.manual_seed(0)
    source = ckpt if ckpt else build_detector(student_spec(c))
    return export_onnx(source, tmp / f"{c.key}.onnx", raw=raw), "trained" if ckpt else "random"


def latency(args) -> None:
    from sadc.bench.latency import time_calls
    from sadc.runtime.onnx_rt import OrtPredictor

    torch.set_num_threads(args.threads)
    keys = args.only.split(",") if args.only else [c.key for c in CANDIDATES]
    tmp = scratch_dir("sadc-search-")
    from sadc.artefacts.io import INPUT_NAME
    from sadc.artefacts.sidecar import read_sidecar
    from sadc.runtime.onnx_rt import make_session

    models: dict[str, tuple[Callable[[np.ndarray], object], str]] = {}
    paths = {}
    for key in ["teacher", *keys]:
        path, weights = export_for_latency(None if key == "teacher" else BY_KEY[key], args.steps, tmp, args.raw)
        paths[key] = path
        if args.raw:  # OrtPredictor wants detections; the raw graph's session is run as it is
            session = make_session(path, threads=args.threads)
            models[key] = (lambda x, s=session: s.run(None, {INPUT_NAME: x}), weights)
        else:
            models[key] = (OrtPredictor(path, threads=args.threads).run, weights)
    size = tuple(read_sidecar(paths["teacher"])["input_size"])  # the students share the teacher's grid
    rng = np.random.default_rng(0)
    batches = {b: rng.integers(0, 256, (b, 3, *size), dtype=np.uint8) for b in (1, 8)}
    per_round: dict[str, dict[int, list[float]]] = {k: {1: [], 8: []} for k in models}
    for _ in range(args.rounds):  # interleaved: a slow spell hits every model alike
        for b, x in batches.items():
            for key, (p, _) in models.items():
                per_round[key][b].append(statistics.median(time_calls(lambda p=p, x=x: p(x), warmup=3, iters=args.iters)))
    out = {
        "machine": machine_line(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "rounds": args.rounds,
        "graph": "raw" if args.raw else "deploy",
    }
    rows = {}
    for key, (_, weights) in models.items():
        rows[key] = {"weights": weights}
        for b in (1, 8):
            ms = statistics.median(per_round[key][b]) * 1e3
            ratios = [s / t for s, t in zip(per_round[key][b], per_round["teacher"][b], strict=True)]
            rows[key][f"b{b}_ms"] = ms
            rows[key][f"b{b}_ratio"] = statistics.median(ratios)
            rows[key][f"b{b}_ratio_range"] = [min(ratios), max(ratios)]
    out["rows"] = rows
    OUT.mkdir(parents=True, exist_ok=True)
    cap = out["cpu_capability"]
    (OUT / f"latency-{out['graph']}-{cap}.json").write_text(json.dumps(out, indent=1))
    print(out["machine"])  # it ends with "kernels <capability>"
    for key, r in rows.items():
        print(
            f"{key:16s} {r['weights']:7s} b1 {r['b1_ms']:6.2f} ms ({r['b1_ratio']:.2f}x)  "
            f"b8 {r['b8_ms']:7.2f} ms ({r['b8_ratio']:.2f}x)"
        )


# ------------------------------------------------------------------------------ train


def split_map(ckpt: Path, split: str) -> float:
    """COCO mAP of a checkpoint on data/synth/<split> (cached beside it per step)."""
    return split_metrics(ckpt, ROOT / "data/synth", split)["mAP"]


def train(args) -> None:
    from sadc.distill.run import run_distill

    keys = args.only.split(",") if args.only else [c.key for c in CANDIDATES]
    for key in keys:
        recipe = recipe_for(BY_KEY[key], args.steps)
        run_dir = run_distill(recipe, resume=True)
        print(f"{key}: val {split_map(run_dir / 'last.pt', 'val'):.4f}  test {split_map(run_dir / 'last.pt', 'test'):.4f}")


# ----------------------------------------------------------------------------- report


def report(args) -> None:
    lat = {}
    for path in sorted(OUT.glob("latency-*.json")):
        data = json.loads(path.read_text())
        lat[f"{data.get('graph', 'deploy')} {data['cpu_capability']}"] = data
    teacher = {s: split_map(TEACHER, s) for s in ("val", "test")}
    lines = [
        "| student | GFLOPs | " + " | ".join(f"{cap} b1 / b8 ms (x teacher)" for cap in lat) + " | val mAP | test mAP |",
        "|---|---:|" + "---|" * len(lat) + "---:|---:|",
    ]
    from sadc.artefacts.checkpoint import load_checkpoint
    from sadc.bench.flops import model_size
    from sadc.models.loading import checkpoint_spec

    def cells(key: str) -> str:
        out = []
        for data in lat.values():
            r = data["rows"].get(key)
            out.append(f"{r['b1_ms']:.2f} / {r['b8_ms']:.1f} ({r['b1_ratio']:.2f} / {r['b8_ratio']:.2f})" if r else "—")
        return " | ".join(out)

    tspec = checkpoint_spec(load_checkpoint(TEACHER))
    lines.append(
        f"| teacher R18 FPN-64 (700 steps) | {model_size(tspec).gflops:.2f} | {cells('teacher')} | "
        f"{teacher['val']:.3f} | {teacher['test']:.3f} |"
    )
    points = []  # (key, raw b1 ratio, raw b8 ratio, val mAP or None)
    raw = next((d for d in lat.values() if d.get("graph") == "raw"), None)
    for c in CANDIDATES:
        ckpt = trained(c, args.steps)
        maps = {s: split_map(ckpt, s) for s in ("val", "test")} if ckpt else None
        m = f"{maps['val']:.3f} | {maps['test']:.3f}" if maps else "— | —"
        lines.append(f"| {c.label} | {model_size(student_spec(c)).gflops:.2f} | {cells(c.key)} | {m} |")
        r = raw["rows"].get(c.key) if raw else None
        if r:
            points.append((c.key, r["b1_ratio"], r["b8_ratio"], maps["val"] if maps else None))
    text = "\n".join(lines)
    print(text)
    if points:
        plot(points, teacher["val"])
    (OUT / f"report-{args.steps}.md").write_text(text + "\n")


def plot(points, teacher_map: float) -> None:
    """Raw-graph latency ratio (x) against SAD val mAP (y); untrained candidates on the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = [m for *_, m in points if m is not None]
    floor = min([*known, teacher_map]) - 0.03
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, b, col in ((axes[0], 1, 1), (axes[1], 8, 2)):
        for point in points:
            key, x, m = point[0], point[col], point[3]
            ax.scatter(
                x, m if m is not None else floor, marker="o" if m is not None else "x", c="C0" if m is not None else "grey"
            )
            ax.annotate(
                key if m is not None else f"{key} (not trained)",
                (x, m if m is not None else floor),
                fontsize=7,
                rotation=0 if m is not None else 60,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axvline(0.35, ls="--", c="grey", label="target 0.35x")
        ax.axhline(teacher_map - 0.01, ls=":", c="grey", label="teacher - 1 point")
        ax.set_xlabel(f"latency / teacher's latency, ONNX Runtime fp32, raw graph, batch {b}")
    axes[0].set_ylabel("SAD student val mAP (600 steps)")
    axes[0].legend(loc="center right", fontsize=7)
    fig.suptitle(f"quickstart student candidates (teacher val mAP {teacher_map:.3f})")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main() -> None:
    global TEACHER
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=["latency", "train", "report"])
    ap.add_argument("--only", default="", help="comma-separated candidate keys")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw", action="store_true", help="time the network + decode only (no top-k/NMS)")
    ap.add_argument("--teacher", type=Path, default=TEACHER, help="the teacher checkpoint (default: the quickstart's)")
    args = ap.parse_args()
    TEACHER = args.teacher.resolve()
    {"latency": latency, "train": train, "report": report}[args.phase](args)


if __name__ == "__main__":
    run(main)
