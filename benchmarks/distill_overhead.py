"""Distillation overhead: one SAD step vs a supervised student step plus a teacher forward.

    ratio = t(distill step) / (t(supervised student step) + t(teacher inference))

on the same batch (quickstart sizes: 8 labeled + 8 unlabeled images at 128 px, the
quickstart teacher and student architectures, in the recipe's memory format and loss:
``train.channels_last``, ``train.batched_loss``). Target: <= 1.05. Two setups:

- ``--teacher PATH`` (default: runs/quickstart-teacher/best.pt when it and data/synth
  exist): that trained teacher at the quickstart's pseudo-box threshold (0.4), on real
  synthetic-world images (train images with their boxes, unlabeled images), so the
  pseudo boxes per image are as many as in a real run (3.4 for the demo's teacher);
- ``--teacher random``: random weights on noise images, the teacher's threshold 0 so that
  pseudo boxes exist at all. NMS then sees 1,000 candidates per image and the student
  matches up to 100 pseudo boxes per unlabeled image against 2 labeled ones, so this
  setup overstates the SAD step's box matching (and the teacher call's NMS).

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


DEMO_TEACHER = ROOT / "runs/quickstart-teacher/best.pt"
DEMO_DATA = ROOT / "data/synth"


def default_teacher() -> Path | None:
    """The demo's trained teacher when it and the synthetic world exist, else None (random weights)."""
    return DEMO_TEACHER if DEMO_TEACHER.is_file() and (DEMO_DATA / "train.json").is_file() else None


def add_teacher_option(ap: argparse.ArgumentParser) -> None:
    """``--teacher auto|random|PATH``, read by :func:`teacher_option` (this script's and benchmarks.roofline's)."""
    ap.add_argument(
        "--teacher",
        default="auto",
        help="a trained teacher checkpoint, 'random' (random weights on noise images), or 'auto' (default: "
        "runs/quickstart-teacher/best.pt with data/synth when both exist, else random)",
    )


def teacher_option(ap: argparse.ArgumentParser, value: str) -> Path | None:
    """``--teacher``'s checkpoint, or None for random weights; a usage error where the file is missing."""
    teacher = default_teacher() if value == "auto" else None if value == "random" else Path(value)
    if teacher is not None and not teacher.is_file():
        ap.error(f"--teacher {teacher}: no such checkpoint (or use --teacher random)")
    return teacher


def real_batch(
    n: int, data: Path = DEMO_DATA, size: tuple[int, int] = (128, 128)
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """n // 2 train images with their boxes, then n - n // 2 unlabeled images, letterboxed to ``size``.

    The boxes are listed for all n images (the unlabeled half repeats the first ones) because
    the supervised step trains on the whole batch; the SAD step ignores them for that half.
    """
    from sadc.data.coco import CocoDataset
    from sadc.data.folder import UnlabeledFolder

    labeled = CocoDataset(data / "train.json", data / "train", size)
    unlabeled = UnlabeledFolder(data / "unlabeled", size)
    items = [labeled[i] for i in range(n // 2)]
    images = [image for image, _ in items] + [unlabeled[i][0] for i in range(n - n // 2)]
    gt = [{"boxes": target["boxes"], "labels": target["labels"]} for _, target in items]
    return torch.stack(images), gt + gt[: n - n // 2]


def build(
    batch: int = 16,
    recipe_path: Path = ROOT / "recipes/quickstart.yaml",
    teacher_recipe: Path = ROOT / "recipes/quickstart-teacher.yaml",
    teacher_path: Path | None = None,
    data: Path = DEMO_DATA,
    batched_loss: bool | None = None,
    channels_last: bool | None = None,
) -> dict[str, Callable[[], object]]:
    """The three calls to time: a supervised student step, a teacher inference and a SAD step.

    ``teacher_path``: a trained teacher, run on real images at the recipe's pseudo-box
    threshold; None: random weights on noise images, threshold 0 (see the module doc).
    ``batched_loss``: the student's loss as ``train.batched_loss: true`` (True) or torchvision (False)
    computes it, ``channels_last``: the student's and the teacher's memory format; None: as the recipe says.
    """
    from sadc.data.images import noise_images
    from sadc.distill.objective import DistillObjective
    from sadc.distill.teacher import TeacherTargets
    from sadc.engine.run import SupervisedObjective, training_forward
    from sadc.engine.trainer import build_optimizer
    from sadc.models.detector import build_detector
    from sadc.models.loading import spec_from_fields
    from sadc.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    torch.manual_seed(0)
    student = build_detector(spec_from_fields(recipe.model.student)).train()
    forms = {"batched_loss": batched_loss, "channels_last": channels_last}
    train = recipe.train.model_copy(update={k: v for k, v in forms.items() if v is not None})
    forward = training_forward(student, train)  # as sadc train/distill build it
    nhwc = train.channels_last
    n = batch
    if teacher_path is None:
        teacher = build_detector(spec_from_fields(load_recipe(teacher_recipe).model.teacher)).eval()
        images = noise_images(n, student.spec.input_size)
        gt = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 64.0, 100.0, 90.0]]), "labels": torch.tensor([0, 3])}] * n
        threshold = 0.0  # random weights score ~0.01: pseudo boxes exist only at 0
    else:
        from sadc.artefacts.checkpoint import load_checkpoint
        from sadc.models.loading import detector_from_checkpoint

        teacher = detector_from_checkpoint(load_checkpoint(teacher_path)).eval()
        images, gt = real_batch(n, data, tuple(student.spec.input_size))
        threshold = recipe.distill.pseudo_threshold
    labeled = (images[: n // 2], gt[: n // 2])
    unlabeled = (images[n // 2 :], [{}] * (n - n // 2))
    opt = build_optimizer(student, recipe.train)
    targets = TeacherTargets(teacher, list(range(teacher.spec.num_classes)), threshold=threshold, channels_last=nhwc)

    def teacher_only():
        with torch.inference_mode():
            targets(images)

    return {
        "supervised": optimizer_step(SupervisedObjective(student, forward), opt, (images, gt)),
        "teacher": teacher_only,
        "distill": optimizer_step(DistillObjective(student, forward, targets, recipe.distill), opt, (labeled, unlabeled)),
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


def _worker(batch: int, iters: int, teacher: Path | None) -> None:
    """``--worker``: build once, then one JSON line of round times per line read from stdin."""
    calls = build(batch, teacher_path=teacher)
    one_round(calls, 1)  # warm-up outside the rounds
    import sadc

    print(json.dumps({"ready": sadc.__file__}), flush=True)
    for _ in sys.stdin:
        print(json.dumps(one_round(calls, iters)), flush=True)


def _start(tree: Path, batch: int, iters: int, teacher: Path | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # This file's worker (the other tree's benchmark may predate it), that tree's sadc.
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--batch", str(batch), "--iters", str(iters)]
    cmd += ["--teacher", str(teacher) if teacher else "random"]
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
    add_teacher_option(ap)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    teacher = teacher_option(ap, args.teacher)
    if args.worker:
        _worker(args.batch, args.iters, teacher)
        return
    from benchmarks.common import machine_line

    print(machine_line())
    print(
        f"teacher: {teacher}, real images, pseudo-box threshold of the recipe"
        if teacher
        else "teacher: random weights on noise images, pseudo-box threshold 0 (overstates box matching)"
    )
    if args.compare is None:
        calls = build(args.batch, teacher_path=teacher)
        one_round(calls, 1)
        s = summarize([one_round(calls, args.iters) for _ in range(args.rounds)])
        print(_line(f"batch {args.batch}, {args.rounds} rounds", s))
        print(f"distill_overhead ratio = {s['ratio']:.3f} (target <= 1.05)")
        return
    trees = {"this tree": ROOT, f"{args.compare}": args.compare.resolve()}
    procs = {name: _start(tree, args.batch, args.iters, teacher) for name, tree in trees.items()}
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
    from benchmarks.common import run

    run(main)
