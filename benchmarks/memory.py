"""Memory: ADL's extra memory vs the student's logits, and peak RSS of `sadc distill`.

adl_saved_ratio = bytes autograd keeps for ADL's backward / bytes of the student logits
                  (target <= 2: the loss should cost no more than two logit tensors)
peak RSS        of `sadc distill --recipe recipes/quickstart.yaml` (a few steps) and of
                the COCO R50 recipe as a dry run at batch 2 (random weights, 1 step)

python -m benchmarks.memory [--steps 20] [--no-rss]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import machine_line, run
from sadc.distill.losses import distillation_loss

ROOT = Path(__file__).resolve().parents[1]


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs (unique storages)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def adl_ratio(n: int = 16, a: int = 3069, c: int = 5) -> tuple[float, int]:
    student = torch.randn(n, a, c, requires_grad=True)
    teacher = torch.randn(n, a, c)
    logits_bytes = student.numel() * student.element_size()
    extra = saved_bytes(lambda: distillation_loss(student, teacher)["distill"])
    # The student logits themselves are saved too (they exist anyway): count only the extra.
    return (extra - logits_bytes) / logits_bytes, logits_bytes


def peak_rss(cmd: list[str]) -> float:
    """Peak RSS (MB) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-1500:], proc.stderr[-1500:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description="ADL memory and distill peak RSS")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-rss", action="store_true")
    args = ap.parse_args()
    print(machine_line())
    ratio, nbytes = adl_ratio()
    print(
        f"ADL (quickstart shapes [16, 3069, 5]): extra saved for backward = {ratio:.2f} x the student logits "
        f"({nbytes / 1e6:.2f} MB) (target <= 2)"
    )
    if args.no_rss:
        return
    sadc = [sys.executable, "-m", "sadc"]
    with tempfile.TemporaryDirectory() as tmp:
        if (ROOT / "runs/quickstart-teacher/best.pt").is_file() and (ROOT / "data/synth/train.json").is_file():
            rss = peak_rss(
                [
                    *sadc,
                    "distill",
                    "--recipe",
                    "recipes/quickstart.yaml",
                    f"output={tmp}",
                    f"train.steps={args.steps}",
                    "train.eval_every=0",
                    "data.workers=0",
                ]
            )
            print(f"peak RSS sadc distill quickstart ({args.steps} steps, workers 0): {rss:.0f} MB")
        rss = peak_rss(
            [
                *sadc,
                "distill",
                "--recipe",
                "recipes/coco-retinanet-r101-to-r50.yaml",
                "--dry-run",
                f"output={tmp}",
                "data.batch_size=2",
            ]
        )
        print(f"peak RSS sadc distill coco-retinanet-r101-to-r50 --dry-run (batch 2 labeled + 2 unlabeled, 608 px): {rss:.0f} MB")


if __name__ == "__main__":
    run(main)
