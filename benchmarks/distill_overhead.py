"""Distillation overhead: one SAD step vs a supervised student step plus a teacher forward.

    ratio = t(distill step) / (t(supervised student step) + t(teacher inference))

on the same batch (quickstart sizes: 8 labeled + 8 unlabeled images at 128 px, the
quickstart teacher and student architectures, random weights). Target: <= 1.10.

    python -m benchmarks.distill_overhead [--batch 16] [--iters 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import machine_line, time_it
from sadc.distill.objective import DistillObjective
from sadc.distill.teacher import TeacherTargets
from sadc.engine.run import SupervisedObjective
from sadc.engine.trainer import build_optimizer
from sadc.models.detector import DenseForward, build_detector
from sadc.models.loading import spec_from_fields
from sadc.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def measure(batch: int = 16, iters: int = 10, recipe_path: Path = ROOT / "recipes/quickstart.yaml",
            teacher_recipe: Path = ROOT / "recipes/quickstart-teacher.yaml") -> dict[str, float]:
    """Median seconds of a supervised student step, a teacher inference and a SAD step."""
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

    return {
        "supervised": time_it(supervised, iters=iters),
        "teacher": time_it(teacher_only, iters=iters),
        "distill": time_it(distill, iters=iters),
        "size": (h, w),
    }


def sad_step_seconds(batch: int, iters: int) -> float:
    return measure(batch, iters)["distill"]


def main() -> None:
    ap = argparse.ArgumentParser(description="SAD step / (student step + teacher inference)")
    ap.add_argument("--batch", type=int, default=16, help="images per step (half labeled, half unlabeled)")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    t = measure(args.batch, args.iters)
    ratio = t["distill"] / (t["supervised"] + t["teacher"])
    h, w = t["size"]
    print(machine_line())
    print(f"batch {args.batch} at {h}x{w}: supervised step {t['supervised'] * 1e3:.0f} ms, "
          f"teacher inference {t['teacher'] * 1e3:.0f} ms, distill step {t['distill'] * 1e3:.0f} ms")
    print(f"distill_overhead ratio = {ratio:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
