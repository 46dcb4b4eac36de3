"""The deploy graph's top-k in ONNX Runtime: one unsorted TopK over all A*C scores vs sadc's two exact steps.

``sadc.export.deploy.top_pairs`` keeps the k best (anchor, class) pairs of scores [B, A, C]
by first keeping the k best anchors (by their best class score), then the k best pairs
among those anchors' k*C scores, both unsorted (TopK sorted=0, as NMS sorts). This
script exports both forms alone (scores in, the k scores and their flat indices out),
checks that they select the same pairs, and times them in ONNX Runtime (2 intra-op
threads, the session options of ``sadc bench``), interleaved over ``--rounds`` rounds; it
prints each form's median and the ratio two-step / one-step.

    python -m benchmarks.deploy_topk [--shape quickstart|coco|A,C] [--k 1000] [--batch 1 8]

``quickstart``: 3,069 anchors x 5 classes (128 px); ``coco``: 76,725 x 80 (RetinaNet at 640 px).
Scores are sigmoids of N(-5, 2) logits: mostly background, as a trained detector's are.
"""

from __future__ import annotations

import argparse
import io
import statistics
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import machine_line, run, time_it
from sadc.errors import SadcError
from sadc.export.deploy import top_pairs

SHAPES = {"quickstart": (3069, 5), "coco": (76725, 80)}


class OneStep(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        return scores.flatten(1).topk(self.k, dim=1, sorted=False)  # unsorted, as the deploy graph's


class TwoSteps(OneStep):
    def forward(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        top, anchors, classes = top_pairs(scores, self.k)
        return top, anchors * scores.shape[2] + classes


def session(module: nn.Module, example: Tensor):
    """``module`` exported with a dynamic batch, in an ONNX Runtime session as ``sadc bench`` makes it."""
    from sadc.runtime.onnx_rt import make_session

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation notice and tracer warnings, as in sadc export
        warnings.simplefilter("ignore")
        _export(module, example, buffer)
    return make_session(buffer.getvalue(), threads=2)


def _export(module: nn.Module, example: Tensor, buffer: io.BytesIO) -> None:
    torch.onnx.export(
        module,
        (example,),
        buffer,  # type: ignore[arg-type]
        dynamo=False,
        opset_version=17,
        input_names=["scores"],
        output_names=["top", "index"],
        dynamic_axes={"scores": {0: "batch"}, "top": {0: "batch"}, "index": {0: "batch"}},
    )


def shape_of(text: str) -> tuple[int, int]:
    """``--shape``: a named shape or ``A,C``."""
    if text in SHAPES:
        return SHAPES[text]
    try:
        a, c = (int(v) for v in text.split(","))
    except ValueError:
        raise SadcError(f"--shape {text}: quickstart, coco or A,C (two integers)") from None
    return a, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="quickstart", help="quickstart, coco or A,C")
    ap.add_argument("--k", type=int, default=1000, help="candidates kept (the export's --topk)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    a, c = shape_of(args.shape)
    k = min(args.k, a * c)
    print(machine_line())
    print(
        f"scores [B, {a}, {c}], k {k}; ONNX Runtime, 2 threads; median of {args.rounds} interleaved rounds of {args.iters} calls"
    )
    rng = np.random.default_rng(0)
    example = torch.rand(2, a, c)
    sessions = {"one TopK": session(OneStep(k), example), "two steps": session(TwoSteps(k), example)}
    for batch in args.batch:
        scores = (1 / (1 + np.exp(-rng.normal(-5.0, 2.0, (batch, a, c))))).astype(np.float32)
        feed = {"scores": scores}
        outs = {name: s.run(None, feed) for name, s in sessions.items()}
        (top1, idx1), (top2, idx2) = outs["one TopK"], outs["two steps"]
        same = np.array_equal(np.sort(top1, axis=1), np.sort(top2, axis=1))  # both unordered
        same = same and all(set(r1) == set(r2) for r1, r2 in zip(idx1, idx2, strict=True))
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.rounds):
            for name, s in sessions.items():
                times[name].append(time_it(lambda s=s, feed=feed: s.run(None, feed), warmup=5, iters=args.iters) * 1e3)
        one, two = (statistics.median(times[n]) for n in sessions)
        print(
            f"batch {batch}: one TopK {one:.3f} ms, two steps {two:.3f} ms, ratio {two / one:.2f}; "
            f"same pairs: {'yes' if same else 'NO'}"
        )


if __name__ == "__main__":
    run(main)
