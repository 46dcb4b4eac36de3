"""Student vs teacher: FLOPs and CPU latency of each recipe's student / its teacher.

For quickstart and the COCO recipes, at their input sizes, with random weights (nothing
is downloaded). Target: <= 0.5 for both ratios, the paper's "half the computation".

    python -m benchmarks.student_vs_teacher [--iters 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import machine_line, run, time_it
from sadc.bench.flops import model_size
from sadc.models.detector import build_detector
from sadc.models.loading import spec_from_fields
from sadc.models.torchvision_zoo import torchvision_spec
from sadc.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["quickstart", "coco-retinanet-r101-to-r50", "coco-retinanet-r50v2-to-mobilenetv3"]


def teacher_spec(recipe):
    t = recipe.model.teacher
    if t.source and t.source.startswith("torchvision:"):
        return torchvision_spec(t.source, tuple(recipe.model.student.input_size))
    if t.source and Path(t.source).is_file():
        from sadc.artefacts.checkpoint import load_checkpoint
        from sadc.models.spec import DetectorSpec

        return DetectorSpec(**load_checkpoint(Path(t.source))["spec"])
    if recipe.name == "quickstart":  # the teacher recipe gives the architecture
        return spec_from_fields(load_recipe(ROOT / "recipes/quickstart-teacher.yaml").model.teacher)
    return spec_from_fields(t).model_copy(update={"input_size": recipe.model.student.input_size})


def latency(spec, iters: int) -> float:
    model = build_detector(spec.model_copy(update={"pretrained_backbone": False})).eval()
    x = torch.randint(0, 256, (1, 3, *spec.input_size), dtype=torch.uint8)
    with torch.inference_mode():
        return time_it(lambda: model.dense(model.preprocess(x)), warmup=2, iters=iters)


def main() -> None:
    ap = argparse.ArgumentParser(description="student/teacher FLOPs and latency per recipe")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    print(machine_line())
    print(f"{'recipe':40s} {'input':>9s} {'GFLOPs s/t':>16s} {'flops ratio':>11s} {'ms s/t (b1)':>16s} {'latency ratio':>13s}")
    for name in RECIPES:
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        s_spec = spec_from_fields(recipe.model.student)
        t_spec = teacher_spec(recipe)
        s, t = model_size(s_spec), model_size(t_spec)
        ls, lt = latency(s_spec, args.iters), latency(t_spec, args.iters)
        size = "x".join(map(str, s_spec.input_size))
        print(
            f"{name:40s} {size:>9s} {s.gflops:7.1f}/{t.gflops:<8.1f} {s.gflops / t.gflops:11.2f} "
            f"{ls * 1e3:7.0f}/{lt * 1e3:<8.0f} {ls / lt:13.2f}"
        )
    print("target: both ratios <= 0.5")


if __name__ == "__main__":
    run(main)
