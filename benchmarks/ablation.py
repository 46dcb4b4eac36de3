"""Does SAD work? The paper's ablation on the synthetic world, with seeds and spreads.

Rows (same student, schedule, input size and seeds; scored on the synthetic val set):

    a   student, supervised only (labeled set)
    b   + plain sigmoid KL distillation (labeled images)
    c   + ADL with beta = 0, hard-to-mimic only (labeled images)
    d   + ADL, supervised setting (labeled images only)
    e   + unlabeled images, hard pseudo labels only (data distillation)
    f   SAD: + unlabeled images, ADL plus pseudo boxes (as the authors do)
    f'  SAD with the shifted unlabeled set (`sadc data synth --shift`)
    g   the teacher itself

The labeled set is 1,000 images and the unlabeled one 4,000 (1:4). Every run lives in
runs/ablation/ROW-sSEED and is resumed if interrupted, so the ablation itself resumes.
Results: a table in docs/ablation.md and benchmarks/RESULTS.md, a bar plot in
docs/ablation.png. Budget: see --steps; about 20 minutes per seed on 2 CPU cores at 400.

    python benchmarks/ablation.py                 # the full ablation (2 seeds)
    python benchmarks/ablation.py --quick         # a tiny version: checks the pipeline, asserts nothing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sadc.data.synth import make_synthetic_world  # noqa: E402
from sadc.distill.run import run_distill  # noqa: E402
from sadc.engine.checkpoint import load_checkpoint  # noqa: E402
from sadc.engine.run import run_train  # noqa: E402
from sadc.recipe import Recipe, load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    command: str  # "train" | "distill" | "teacher"
    overrides: tuple[str, ...] = ()
    unlabeled: str | None = None  # "base" | "shift" | None


LABELED_ONLY = ("distill.pseudo_labels=false",)
ROWS = [
    Row("a", "supervised only", "train", ("train.target=student",)),
    Row("b", "+ KL distillation", "distill", ("distill.loss=kl", *LABELED_ONLY)),
    Row("c", "+ ADL, beta=0", "distill", ("distill.loss=adl", "distill.beta=0", *LABELED_ONLY)),
    Row("d", "+ ADL (labeled only)", "distill", ("distill.loss=adl", *LABELED_ONLY)),
    Row("e", "+ unlabeled, pseudo labels only", "distill", ("distill.loss=none", "distill.pseudo_labels=true"), "base"),
    Row("f", "SAD: ADL + pseudo labels", "distill", ("distill.loss=adl", "distill.pseudo_labels=true"), "base"),
    Row("f'", "SAD, shifted unlabeled set", "distill", ("distill.loss=adl", "distill.pseudo_labels=true"), "shift"),
    Row("g", "teacher", "teacher"),
]

QUICK_MODEL = {
    "backbone": "tiny",
    "fpn_channels": 16,
    "input_size": [64, 64],
}


@dataclass
class Setup:
    data: Path
    teacher: Path
    out: Path
    steps: int
    seeds: list[int]
    quick: bool
    results: dict[str, list[dict]] = field(default_factory=dict)


def base_recipe(setup: Setup, row: Row, seed: int) -> Recipe:
    d = setup.data
    unlabeled = {"base": d / "unlabeled", "shift": d / "unlabeled-shift", None: None}[row.unlabeled]
    overrides = [
        f"name={row.key.replace(chr(39), 'p')}-s{seed}",
        f"output={setup.out}",
        f"seed={seed}",
        f"model.teacher.source={setup.teacher}",
        f"data.train.annotations={d / 'train.json'}",
        f"data.train.images={d / 'train'}",
        f"data.val.annotations={d / 'val.json'}",
        f"data.val.images={d / 'val'}",
        f"data.unlabeled={unlabeled if unlabeled else 'null'}",
        f"train.steps={setup.steps}",
        f"train.eval_every={setup.steps}",  # evaluate once, at the end: same for every row
        f"train.warmup_steps={min(50, setup.steps // 4)}",
    ]
    if setup.quick:
        overrides += [f"model.student.{k}={json.dumps(v)}" for k, v in QUICK_MODEL.items()]
        overrides += ["data.batch_size=4", "data.workers=0"]
    return load_recipe(ROOT / "recipes/quickstart.yaml", [*overrides, *row.overrides])


def run_row(setup: Setup, row: Row, seed: int, report_only: bool = False) -> dict | None:
    if row.command == "teacher":
        return load_checkpoint(setup.teacher)["metrics"]
    recipe = base_recipe(setup, row, seed)
    if report_only:  # finished runs only; nothing is trained
        last = recipe.run_dir / "last.pt"
        ckpt = load_checkpoint(last) if last.is_file() else None
        return ckpt["metrics"] if ckpt and ckpt.get("finished") else None
    if row.command == "train":
        run_dir = run_train(recipe, resume=True)
    else:
        run_dir = run_distill(recipe, resume=True)
    # The final evaluation (not the best one): no selection on the val set.
    return load_checkpoint(run_dir / "last.pt")["metrics"]


def prepare(args) -> Setup:
    if args.quick:
        tmp = Path(tempfile.mkdtemp(prefix="sadc-ablation-"))
        data = tmp / "synth"
        make_synthetic_world(data, train=24, val=8, unlabeled=32, size=64, seed=0, progress=False)
        make_synthetic_world(data, train=24, val=8, unlabeled=32, size=64, seed=0, shift=True, progress=False)
        teacher_recipe = load_recipe(
            ROOT / "recipes/quickstart-teacher.yaml",
            [f"output={tmp}", f"data.train.annotations={data / 'train.json'}", f"data.train.images={data / 'train'}",
             f"data.val.annotations={data / 'val.json'}", f"data.val.images={data / 'val'}", "train.steps=2", "train.warmup_steps=0",
             "train.eval_every=0", "data.batch_size=4", "data.workers=0",
             *[f"model.teacher.{k}={json.dumps(v)}" for k, v in QUICK_MODEL.items()]],
        )
        teacher = run_train(teacher_recipe, resume=True) / "last.pt"
        return Setup(data, teacher, tmp / "ablation", steps=2, seeds=[0], quick=True)
    data = ROOT / "data/synth"
    make_synthetic_world(data)
    make_synthetic_world(data, shift=True)
    teacher = ROOT / "runs/quickstart-teacher/best.pt"
    if not teacher.is_file():
        run_train(load_recipe(ROOT / "recipes/quickstart-teacher.yaml"), resume=True)
    return Setup(data, teacher, ROOT / args.out, steps=args.steps, seeds=args.seeds, quick=False)


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (max - min) / 2."""
    return statistics.fmean(values), (max(values) - min(values)) / 2


def flops_ratio(setup: Setup) -> float:
    from sadc.bench.flops import model_size
    from sadc.models.loading import spec_from_fields
    from sadc.models.spec import DetectorSpec

    student = spec_from_fields(base_recipe(setup, ROWS[0], 0).model.student)
    teacher = DetectorSpec(**load_checkpoint(setup.teacher)["spec"])
    return model_size(student).gflops / model_size(teacher).gflops


def table(setup: Setup) -> str:
    ratio = flops_ratio(setup)
    lines = [
        "| row | setting | runs | mAP | AP50 | AP75 | FLOPs vs teacher |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        runs = setup.results.get(row.key, [])
        if not runs:
            continue
        cells = []
        for k in ("mAP", "AP50", "AP75"):
            mean, half = spread([r[k] for r in runs])
            cells.append(f"{100 * mean:.1f} ± {100 * half:.1f}" if row.command != "teacher" else f"{100 * mean:.1f}")
        flops = "1.00" if row.command == "teacher" else f"{ratio:.2f}"
        lines.append(f"| ({row.key}) | {row.label} | {len(runs)} | " + " | ".join(cells) + f" | {flops} |")
    return "\n".join(lines)


def plot(setup: Setup, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ROWS if setup.results.get(r.key)]
    means = [100 * spread([x["mAP"] for x in setup.results[r.key]])[0] for r in rows]
    errs = [100 * spread([x["mAP"] for x in setup.results[r.key]])[1] for r in rows]
    colours = ["#9e9e9e" if r.key == "a" else "#1f77b4" if r.command == "distill" else "#2ca02c" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    labels = [f"({r.key})\n" + textwrap.fill(r.label, 14) for r in rows]
    bars = ax.bar(labels, means, yerr=errs, capsize=4, color=colours)
    for bar, m, e in zip(bars, means, errs, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, m + e + 0.6, f"{m:.1f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("val mAP@[.5:.95] (%)")
    ax.set_title(f"SAD ablation on the synthetic world: {len(setup.seeds)} seeds, {setup.steps} steps per run (bars: mean, whiskers: half range)")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylim(0, max(means) * 1.2 + 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(setup: Setup, text: str, elapsed: float | None) -> None:
    header = (
        f"Synthetic world, 1,000 labeled : 4,000 unlabeled images, 128 px; student MobileNetV3-Large FPN-64 "
        f"RetinaNet, teacher ResNet-18 FPN-64 RetinaNet (`recipes/quickstart*.yaml`); {setup.steps} steps per run, "
        f"seeds {setup.seeds}; mean ± half range over seeds; final (not best) evaluation."
        + (f" Wall time {elapsed / 60:.0f} min." if elapsed is not None else "")
        + "\n\n"
    )
    body = header + text + "\n"
    docs = ROOT / "docs/ablation.md"
    docs.write_text("# SAD ablation\n\nMade by `python benchmarks/ablation.py`.\n\n" + body + "\n![ablation](ablation.png)\n")
    plot(setup, ROOT / "docs/ablation.png")
    results = ROOT / "benchmarks/RESULTS.md"
    start, end = "<!-- ablation:start -->", "<!-- ablation:end -->"
    old = results.read_text() if results.is_file() else "# Benchmark results\n"
    block = f"{start}\n## Ablation (benchmarks/ablation.py)\n\n{body}{end}"
    if start in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    results.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description="SAD ablation on the synthetic world.")
    ap.add_argument("--quick", action="store_true", help="tiny models, tiny data, 2 steps: checks the pipeline only")
    ap.add_argument("--steps", type=int, default=400, help="optimiser steps per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", nargs="+", default=[r.key for r in ROWS], help="subset of rows, e.g. a d f")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--report-only", action="store_true", help="tabulate the finished runs; train nothing")
    args = ap.parse_args()
    t0 = time.time()
    setup = prepare(args)
    for row in ROWS:
        if row.key not in args.rows:
            continue
        for seed in setup.seeds if row.command != "teacher" else [0]:
            print(f"== ({row.key}) {row.label}, seed {seed}", flush=True)
            metrics = run_row(setup, row, seed, args.report_only)
            if metrics is not None:
                setup.results.setdefault(row.key, []).append(metrics)
    text = table(setup)
    print(text)
    if not setup.quick:
        write_results(setup, text, None if args.report_only else time.time() - t0)


if __name__ == "__main__":
    main()
