"""Training throughput against the machine's matmul roofline (issue 18, item 2).

For the quickstart teacher's train step (batch 16, NCHW as its recipe, and channels_last), the
quickstart student's supervised step (batch 16) and its SAD step (8 labeled + 8 unlabeled,
teacher forward included), the last two in the four forms of ``train.channels_last`` (student
and teacher) and ``train.batched_loss``, the recipe's first:

    fraction = (FLOPs of the step) / (median seconds of the step)
               / (fp32 GFLOP/s of a 2048^2 matmul, same threads)

where a training step counts 3x its forward FLOPs (backward = 2x forward, the usual
convention; torch.utils.flop_counter overcounts the backward of depthwise convolutions)
and the SAD step adds the teacher's forward. The student's and the SAD step run on the
setup of ``benchmarks.distill_overhead`` (``--teacher``, default ``auto``): the demo's trained
teacher on synthetic-world images when they exist, so that the pseudo boxes per image are
as many as in a real run; ``random`` (random weights on noise, every candidate a pseudo
box) overstates the SAD step's box matching (223-242 ms against 191 ms, 2026-12-05).
Forward FLOPs are sadc's own count (:func:`sadc.bench.flops.model_size`,
torch.utils.flop_counter on a forward);
all measured in one process; target >= 0.5. ``--isa both`` runs the measurement a second
time in a child process with torch, oneDNN and MKL held to AVX2 (the slow machine's kernels;
the variables must be set before torch loads). Where the rest goes: the profiler's share of
self CPU time by kind of operator (convolution forward/backward, normalisation,
element-wise, optimizer, the rest).

    python -m benchmarks.roofline [--isa native|avx2|both] [--iters 8] [--teacher auto|random|PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
KINDS = {  # first match wins: "convolution_backward" before "convolution"
    "conv bwd": ("convolution_backward",),
    "conv fwd": ("convolution", "conv2d", "mkldnn_convolution", "_convolution"),
    "norm": ("batch_norm", "group_norm", "native_group_norm", "native_batch_norm"),
    "optimizer": ("_foreach", "adamw", "addcdiv", "lerp"),
    "pool/upsample": ("max_pool", "upsample", "max_pool2d_with_indices"),
    "element-wise": ("add", "mul", "relu", "threshold", "hardswish", "sigmoid", "copy_", "fill_", "clamp"),
}


def kind_of(name: str) -> str:
    return next((kind for kind, keys in KINDS.items() if any(k in name for k in keys)), "other")


def calls(teacher_path: Path | None = None):
    """name -> (step function, GFLOP) for the teacher's, the student's and the SAD step.

    ``teacher_path``: the SAD step's trained teacher (and real images), None: random weights on noise."""
    import torch

    from benchmarks.distill_overhead import build, optimizer_step
    from sadc.engine.run import SupervisedObjective, training_forward
    from sadc.engine.trainer import build_optimizer
    from sadc.models.detector import build_detector
    from sadc.models.loading import spec_from_fields
    from sadc.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes/quickstart-teacher.yaml")
    torch.manual_seed(0)
    teacher = build_detector(spec_from_fields(recipe.model.teacher)).train()
    h, w = teacher.spec.input_size
    images = torch.randint(0, 256, (16, 3, h, w), dtype=torch.uint8)
    gt = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 64.0, 100.0, 90.0]]), "labels": torch.tensor([0, 3])}] * 16

    def train_step(channels_last: bool):
        model = build_detector(teacher.spec).train()
        model.load_state_dict(teacher.state_dict())
        forward = training_forward(model, recipe.train.model_copy(update={"channels_last": channels_last}))
        objective = SupervisedObjective(model, forward)
        return optimizer_step(objective, build_optimizer(model, recipe.train), (images, gt))

    from sadc.bench.flops import model_size

    student_recipe = load_recipe(ROOT / "recipes/quickstart.yaml")
    t = model_size(teacher.spec).gflops
    s = model_size(spec_from_fields(student_recipe.model.student)).gflops
    rows = {
        "teacher train step": (train_step(False), 16 * 3 * t),
        "teacher train step, channels_last": (train_step(True), 16 * 3 * t),
    }
    recipe_form = (student_recipe.train.channels_last, student_recipe.train.batched_loss)
    others = [f for f in [(False, False), (True, False), (False, True), (True, True)] if f != recipe_form]
    for form in [recipe_form, *others]:
        steps = build(16, teacher_path=teacher_path, channels_last=form[0], batched_loss=form[1])
        label = ("channels_last" if form[0] else "NCHW") + (", batched loss" if form[1] else ", torchvision loss")
        label += " (the recipe)" if form == recipe_form else ""
        rows[f"student train step, {label}"] = (steps["supervised"], 16 * 3 * s)
        rows[f"SAD step, {label}"] = (steps["distill"], 16 * (t + 3 * s))
    return rows


def measure(iters: int, teacher_path: Path | None = None) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.common import machine_line, time_it

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    peak = 2 * n**3 / time_it(lambda: a @ b, warmup=3, iters=10) / 1e9
    setup = f"trained teacher {teacher_path}, synthetic-world images" if teacher_path else "random weights, noise images"
    out = {"machine": machine_line(), "matmul_gflops": peak, "setup": setup, "rows": {}}
    for name, (fn, gflop) in calls(teacher_path).items():
        fn()
        fn()  # warm-up: oneDNN primitive caches, allocator
        flops = gflop * 1e9
        seconds = statistics.median(time_it(fn, warmup=0, iters=1) for _ in range(iters))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                fn()
        shares: dict[str, float] = defaultdict(float)
        events = [e for e in prof.key_averages() if e.key.startswith("aten::") or "Optimizer" in e.key]
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        for e in events:
            shares[kind_of(e.key)] += e.self_cpu_time_total / total
        achieved = flops / seconds / 1e9
        out["rows"][name] = {
            "gflop": flops / 1e9,
            "seconds": seconds,
            "gflops": achieved,
            "fraction": achieved / peak,
            "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
        }
    # matmul again, after: a busier machine would show here
    out["matmul_gflops_after"] = 2 * n**3 / time_it(lambda: a @ b, warmup=1, iters=10) / 1e9
    return out


def main() -> None:
    from benchmarks.distill_overhead import add_teacher_option, teacher_option

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", choices=["native", "avx2", "both"], default="both")
    ap.add_argument("--iters", type=int, default=8)
    add_teacher_option(ap)  # the SAD step's teacher
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # child mode: one JSON line
    args = ap.parse_args()
    teacher = teacher_option(ap, args.teacher)
    if args.json:
        print(json.dumps(measure(args.iters, teacher)))
        return
    isas = ["native", "avx2"] if args.isa == "both" else [args.isa]
    for isa in isas:
        env = {**os.environ, **(AVX2_ENV if isa == "avx2" else {})}
        if isa == "native":
            for k in AVX2_ENV:
                env.pop(k, None)
        cmd = [sys.executable, "-m", "benchmarks.roofline", "--json", "--iters", str(args.iters)]
        cmd += ["--teacher", str(teacher) if teacher else "random"]
        res = json.loads(
            subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        print(res["machine"])
        print(f"  fp32 matmul {res['matmul_gflops']:.0f} GFLOP/s before, {res['matmul_gflops_after']:.0f} after")
        print(f"  student and SAD steps: {res['setup']}")
        for name, r in res["rows"].items():
            where = ", ".join(f"{k} {v:.0%}" for k, v in r["shares"].items())
            print(
                f"  {name}: {r['gflop']:.1f} GFLOP in {r['seconds'] * 1e3:.0f} ms = {r['gflops']:.0f} GFLOP/s, "
                f"fraction = {r['fraction']:.2f} of matmul (target >= 0.5); time: {where}"
            )


if __name__ == "__main__":
    from benchmarks.common import run

    run(main)
