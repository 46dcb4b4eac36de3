"""Distillation overhead: one SAD step vs a supervised student step plus a teacher forward.

    ratio = t(distill step) / (t(supervised student step) + t(teacher inference))

on the same batch (quickstart sizes: 8 labeled + 8 unlabeled images at 128 px, the
quickstart teacher and student architectures, random weights; the teacher's threshold
is 0 so that pseudo boxes exist). Target: <= 1.05.

The three are timed in turn, ``--rounds`` times (each a median of ``--iters`` calls), and
the ratio is the median of the per-round ratios: a slow spell of a shared machine then
hits all three, not one. ``--compare TREE`` runs the same rounds on another checkout of
sadc (e.g. the main branch) in a second process, interleaved with this one's, so that
before/after ratios come from one run on one machine::

    python -m benchmarks.distill_overhead [--batch 16] [--iters 5] [--rounds 7] [--compare /path/to/main]

Within a round the calls alternate (supervised, teacher, distill, supervised, ...). Besides
the median ratio, the ratio of each kind's fastest call is printed: on a loaded machine
interference only adds time, so the minima are the least disturbed estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("supervised", "teacher", "distill")


def optimizer_step(objective, opt, batch) -> Callable[[], None]:
    """One training step as a call: the objective's losses, backward, optimizer step."""

    def run():
        losses = objective(batch)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return run


def build(
    batch: int = 16,
    recipe_path: Path = ROOT / "recipes/quickstart.yaml",
    teacher_recipe: Path = ROOT / "recipes/quickstart-teacher.yaml",
) -> dict[str, Callable[[], object]]:
    """The three calls to time: a supervised student step, a teacher inference and a SAD step."""
    from sadc.distill.objective import DistillObjective
    from sadc.distill.teacher import TeacherTargets
    from sadc.engine.run import SupervisedObjective
    from sadc.engine.trainer import build_optimizer
    from sadc.models.detector import DenseForward, build_detector
    from sadc.models.loading import spec_from_fields
    from sadc.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    torch.manual_seed(0)
    student = build_detector(spec_from_fields(recipe.model.student)).train()
    teacher = build_detector(spec_from_fields(load_recipe(teacher_recipe).model.teacher)).eval()
    h, w = student.spec.input_size
    n = batch
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8)
    gt = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 64.0, 100.0, 90.0]]), "labels": torch.tensor([0, 3])}] * n
    labeled = (images[: n // 2], gt[: n // 2])
    unlabeled = (images[n // 2 :], [{}] * (n - n // 2))
    opt = build_optimizer(student, recipe.train)
    targets = TeacherTargets(teacher, list(range(teacher.spec.num_classes)), threshold=0.0)  # pseudo boxes exist

    def teacher_only():
        with torch.inference_mode():
            targets(images)

    return {
        "supervised": optimizer_step(SupervisedObjective(student, DenseForward(student)), opt, (images, gt)),
        "teacher": teacher_only,
        "distill": optimizer_step(
            DistillObjective(student, DenseForward(student), targets, recipe.distill), opt, (labeled, unlabeled)
        ),
    }


def one_round(calls: dict[str, Callable[[], object]], iters: int) -> dict[str, list[float]]:
    """Seconds of ``iters`` calls of each of the three, interleaved call by call (S T D S T D ...)."""
    from benchmarks.common import time_it

    out: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(iters):
        for kind in KINDS:
            out[kind].append(time_it(calls[kind], warmup=0, iters=1))
    return out


def ratio(t: dict[str, float]) -> float:
    return t["distill"] / (t["supervised"] + t["teacher"])


def summarize(rounds: list[dict[str, list[float]]]) -> dict[str, float]:
    """Median of each kind's per-round medians, the median of the per-round ratios, and the ratio of the
    fastest calls (``ratio_min``: interference only adds time, so the minimum is the least disturbed)."""
    medians = [{kind: statistics.median(r[kind]) for kind in KINDS} for r in rounds]
    out = {kind: statistics.median(m[kind] for m in medians) for kind in KINDS}
    out["ratio"] = statistics.median(ratio(m) for m in medians)
    out["ratio_min"] = ratio({kind: min(min(r[kind]) for r in rounds) for kind in KINDS})
    return out


def sad_step_seconds(batch: int, iters: int) -> float:
    return statistics.median(one_round(build(batch), iters)["distill"])


def _worker(batch: int, iters: int) -> None:
    """``--worker``: build once, then one JSON line of round times per line read from stdin."""
    calls = build(batch)
    one_round(calls, 1)  # warm-up outside the rounds
    import sadc

    print(json.dumps({"ready": sadc.__file__}), flush=True)
    for _ in sys.stdin:
        print(json.dumps(one_round(calls, iters)), flush=True)


def _start(tree: Path, batch: int, iters: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # This file's worker (the other tree's benchmark may predate it), that tree's sadc.
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--batch", str(batch), "--iters", str(iters)]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())["ready"]
    assert Path(ready).is_relative_to(tree), f"{ready} is not {tree}'s sadc"
    return proc


def _ask(proc: subprocess.Popen) -> dict[str, list[float]]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("round\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def _line(name: str, s: dict[str, float]) -> str:
    return (
        f"{name}: supervised step {s['supervised'] * 1e3:.0f} ms, teacher inference {s['teacher'] * 1e3:.0f} ms, "
        f"distill step {s['distill'] * 1e3:.0f} ms, ratio {s['ratio']:.3f} (medians), {s['ratio_min']:.3f} (fastest calls)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="SAD step / (student step + teacher inference)")
    ap.add_argument("--batch", type=int, default=16, help="images per step (half labeled, half unlabeled)")
    ap.add_argument("--iters", type=int, default=5, help="timed calls per kind and round (their median)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds of the three in turn (the median ratio is reported)")
    ap.add_argument("--compare", type=Path, help="another sadc checkout, timed in interleaved rounds with this one")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.batch, args.iters)
        return
    from benchmarks.common import machine_line

    print(machine_line(), f"cpu capability {torch.backends.cpu.get_cpu_capability()}", sep="; ")
    if args.compare is None:
        calls = build(args.batch)
        one_round(calls, 1)
        s = summarize([one_round(calls, args.iters) for _ in range(args.rounds)])
        print(_line(f"batch {args.batch}, {args.rounds} rounds", s))
        print(f"distill_overhead ratio = {s['ratio']:.3f} (target <= 1.05)")
        return
    trees = {"this tree": ROOT, f"{args.compare}": args.compare.resolve()}
    procs = {name: _start(tree, args.batch, args.iters) for name, tree in trees.items()}
    rounds: dict[str, list[dict[str, list[float]]]] = {name: [] for name in trees}
    try:
        for i in range(args.rounds):
            for name in list(trees) if i % 2 == 0 else list(trees)[::-1]:  # alternate which goes first
                rounds[name].append(_ask(procs[name]))
                print(f"round {i + 1} {name}: {json.dumps(rounds[name][-1])}", file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            proc.kill()
    print(f"batch {args.batch}: {args.rounds} interleaved rounds of {args.iters} timed calls per kind")
    for name in trees:
        per_round = " ".join(f"{ratio({k: statistics.median(v) for k, v in r.items()}):.3f}" for r in rounds[name])
        print(_line(name, summarize(rounds[name])), "| per-round ratios", per_round)


if __name__ == "__main__":
    main()
