"""Distillation overhead: one SAD step vs a supervised student step plus a teacher forward.

    ratio = t(distill step) / (t(supervised student step) + t(teacher inference))

on the same batch (quickstart sizes: 8 labeled + 8 unlabeled images at 128 px, the
quickstart teacher and student architectures, random weights). Target: <= 1.10.

    python benchmarks/distill_overhead.py [--batch 16] [--iters 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line, time_it  # noqa: E402
from sadc.distill.objective import DistillObjective  # noqa: E402
from sadc.distill.teacher import TeacherTargets  # noqa: E402
from sadc.engine.run import SupervisedObjective  # noqa: E402
from sadc.engine.trainer import build_optimizer  # noqa: E402
from sadc.models.detector import DenseForward, build_detector  # noqa: E402
from sadc.models.loading import spec_from_fields  # noqa: E402
from sadc.recipe import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--recipe", default=str(ROOT / "recipes/quickstart.yaml"))
    ap.add_argument("--teacher-recipe", default=str(ROOT / "recipes/quickstart-teacher.yaml"))
    ap.add_argument("--batch", type=int, default=16, help="images per step (half labeled, half unlabeled)")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()

    recipe = load_recipe(args.recipe)
    torch.manual_seed(0)
    student = build_detector(spec_from_fields(recipe.model.student)).train()
    teacher = build_detector(spec_from_fields(load_recipe(args.teacher_recipe).model.teacher)).eval()
    h, w = student.spec.input_size
    n = args.batch
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8)
    gt = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 64.0, 100.0, 90.0]]), "labels": torch.tensor([0, 3])}] * n
    labeled = (images[: n // 2], gt[: n // 2])
    unlabeled = (images[n // 2 :], [{}] * (n - n // 2))
    opt = build_optimizer(student, recipe.train)
    targets = TeacherTargets(teacher, list(range(teacher.spec.num_classes)), threshold=0.0)  # pseudo boxes exist

    def step(objective, batch):
        def run():
            losses = objective(batch)
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()

        return run

    supervised = step(SupervisedObjective(student, DenseForward(student)), (images, gt))
    distill = step(DistillObjective(student, DenseForward(student), targets, recipe.distill), (labeled, unlabeled))

    def teacher_only():
        with torch.inference_mode():
            targets(images)

    t_sup = time_it(supervised, iters=args.iters)
    t_teacher = time_it(teacher_only, iters=args.iters)
    t_distill = time_it(distill, iters=args.iters)
    ratio = t_distill / (t_sup + t_teacher)
    print(machine_line())
    print(f"batch {n} at {h}x{w}: supervised step {t_sup * 1e3:.0f} ms, teacher inference {t_teacher * 1e3:.0f} ms, "
          f"distill step {t_distill * 1e3:.0f} ms")
    print(f"distill_overhead ratio = {ratio:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
