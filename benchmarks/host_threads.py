"""End-to-end latency of ONNX Runtime artefacts: torch's host-side work on its pool vs on one thread.

``sadc bench``'s "e2e" column (and ``sadc predict``) decode files, letterbox them with torch,
run the predictor and map the boxes back with torch. Before 2026-12-05 that torch work ran
on torch's intra-op pool (2 threads here), whose OpenMP workers spin for a while after each
parallel region; ONNX Runtime's own threads then started on cores the spinning workers
held. :func:`sadc.runtime.base.host_work` now runs that work on one torch thread when the
model is not torch's. This script times both forms on the same artefacts, interleaved
(``--rounds`` rounds of ``--iters`` calls each, median of the per-round p50s), with the
model-only call beside them; "pooled" is the old path, got by marking the predictor as
running on torch's CPU threads.

    python -m benchmarks.host_threads [runs/quickstart/best.onnx runs/quickstart/best.int8.onnx]
        [--images data/synth/val] [--batches 1 8] [--rounds 5] [--iters 30]

Torch's thread count is the machine's cores up to 2 (as ``sadc bench --threads``); the three
AVX2 variables of issue 18 change torch's kernels only (ONNX Runtime ignores them).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np


def p50_p95(fn: Callable[[], object], iters: int) -> tuple[float, float]:
    """p50 and p95 in ms of ``iters`` calls (sadc bench's own timer; the caller warms up)."""
    from sadc.bench.latency import time_calls

    times = np.array(time_calls(fn, warmup=0, iters=iters)) * 1e3
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> None:
    from benchmarks.common import artefact_timing_setup, machine_line
    from sadc.bench.latency import files_for_batch, model_batch
    from sadc.runtime.load import load_predictor
    from sadc.runtime.predict import predict_files

    args, threads, files = artefact_timing_setup(__doc__, ["runs/quickstart/best.onnx", "runs/quickstart/best.int8.onnx"], 5)
    print(machine_line())
    print(f"torch threads {threads}, ONNX Runtime intra-op threads {threads}; {args.rounds} rounds x {args.iters} calls")
    print("artefact | batch | model p50 | e2e pooled p50 / p95 | e2e one thread p50 / p95 | pooled / one thread (p50)")
    for path in args.artefacts:
        predictor = load_predictor(path, threads=threads)
        for batch in args.batches:
            chosen = files_for_batch(files, batch)
            model = predictor.model_call(model_batch(batch, tuple(predictor.spec.input_size), files))

            def e2e(predictor=predictor, chosen=chosen):
                return predict_files(predictor, chosen)

            got: dict[str, list[tuple[float, float]]] = {"model": [], "pooled": [], "one": []}
            for _ in range(args.rounds):
                for form in ("model", "pooled", "one"):
                    predictor.torch_cpu = form == "pooled"  # the old path: host work on torch's pool
                    fn = model if form == "model" else e2e
                    for _ in range(5):
                        fn()  # warm-up, and the form's own thread state
                    got[form].append(p50_p95(fn, args.iters))
            med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in got.items()}
            print(
                f"{path.name} | {batch} | {med['model'][0]:.2f} ms | {med['pooled'][0]:.2f} / {med['pooled'][1]:.2f} ms | "
                f"{med['one'][0]:.2f} / {med['one'][1]:.2f} ms | {med['pooled'][0] / med['one'][0]:.2f}x"
            )


if __name__ == "__main__":
    from benchmarks.common import run

    run(main)
