"""Model-only latency on noise vs on real images, per artefact (why `sadc bench` times real images).

Until 2026-12-05 `sadc bench` timed the model-only call on seeded random pixels. A trained
detector finds the most boxes in noise, and a torch model's NMS works on every box over
the score threshold, so its model-only time depended on that choice; ONNX graphs, whose
top-k is fixed, barely. This script times each artefact's ``model_call`` on both inputs,
interleaved (``--rounds`` rounds of ``--iters`` calls, median of the per-round p50s), and
counts the detections each input gives.

    python -m benchmarks.model_inputs [ARTEFACTS...] [--images data/synth/val] [--batches 1 8]

Default artefacts: the quickstart's teacher and student checkpoints and the student's fp32
and INT8 ONNX. Torch threads: the machine's cores up to 2 (as `sadc bench`).
"""

from __future__ import annotations

import statistics

DEFAULT = [
    "runs/quickstart-teacher/best.pt",
    "runs/quickstart/best.pt",
    "runs/quickstart/best.onnx",
    "runs/quickstart/best.int8.onnx",
]


def main() -> None:
    from benchmarks.common import artefact_timing_setup, machine_line, time_it
    from sadc.bench.latency import fixed_batch, model_batch
    from sadc.runtime.load import load_predictor

    args, threads, files = artefact_timing_setup(__doc__, DEFAULT, 3)
    print(machine_line())
    print(f"{args.rounds} interleaved rounds x {args.iters} calls; median of the rounds' p50")
    print("artefact | batch | noise p50 (detections) | images p50 (detections) | noise / images")
    for path in args.artefacts:
        predictor = load_predictor(path, threads=threads)
        size = tuple(predictor.spec.input_size)
        for batch in args.batches:
            inputs = {"noise": fixed_batch(batch, size), "images": model_batch(batch, size, files)}
            calls = {k: predictor.model_call(v) for k, v in inputs.items()}
            got: dict[str, list[float]] = {k: [] for k in inputs}
            for _ in range(args.rounds):
                for k, call in calls.items():
                    got[k].append(time_it(call, warmup=3, iters=args.iters) * 1e3)  # median ms
            med = {k: statistics.median(v) for k, v in got.items()}
            dets = {k: sum(len(d["boxes"]) for d in predictor.predict(v)) for k, v in inputs.items()}
            print(
                f"{path.parent.name}/{path.name} | {batch} | {med['noise']:.2f} ms ({dets['noise']}) | "
                f"{med['images']:.2f} ms ({dets['images']}) | {med['noise'] / med['images']:.2f}x"
            )


if __name__ == "__main__":
    from benchmarks.common import run

    run(main)
