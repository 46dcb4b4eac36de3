"""Can the loaders keep up? images/s the loaders deliver / images/s the trainer consumes.

Loader side: the quickstart recipe's labeled (COCO, augmented) and unlabeled (folder,
augmented) loaders with its workers, iterated without training. Trainer side: SAD steps
of the quickstart student + teacher (random weights) on the same batch shape. Target >= 1.5.

    python -m benchmarks.data_pipeline [--batches 30] [--steps 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.common import machine_line, run
from sadc.data.coco import CocoDataset
from sadc.data.folder import UnlabeledFolder
from sadc.data.loaders import build_loader
from sadc.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def loader_rate(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _ = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description="loader throughput / trainer throughput")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="override the recipe's data.workers")
    args = ap.parse_args()
    recipe = load_recipe(ROOT / "recipes/quickstart.yaml")
    data = recipe.data
    workers = data.workers if args.workers is None else args.workers
    size = tuple(recipe.model.student.input_size)
    if not (ROOT / "data/synth/train.json").is_file():
        sys.exit("data/synth is missing: run `sadc data synth data/synth` first")
    labeled = CocoDataset(data.train.annotations, data.train.images, size, data.augment)
    unlabeled = UnlabeledFolder(data.unlabeled, size, data.augment)
    bs = data.batch_size
    lab = loader_rate(build_loader(labeled, batch_size=bs, workers=workers, shuffle=True, seed=0), args.batches)
    unl = loader_rate(build_loader(unlabeled, batch_size=bs, workers=workers, shuffle=True, seed=0), args.batches)
    # One SAD step consumes bs labeled + bs unlabeled images: the pair's delivery rate.
    delivered = 1.0 / (0.5 / lab + 0.5 / unl)

    from benchmarks.distill_overhead import sad_step_seconds

    step_s = sad_step_seconds(batch=2 * bs, iters=args.steps)
    consumed = 2 * bs / step_s
    print(machine_line())
    print(f"loaders ({workers} workers each): labeled {lab:.0f} img/s, unlabeled {unl:.0f} img/s, paired {delivered:.0f} img/s")
    print(f"trainer: SAD step of {2 * bs} images {step_s * 1e3:.0f} ms = {consumed:.0f} img/s")
    print(f"data_pipeline ratio = {delivered / consumed:.2f} (target >= 1.5)")
    print("note: measured separately; in training the loader workers share the same cores with the step.")


if __name__ == "__main__":
    run(main)
