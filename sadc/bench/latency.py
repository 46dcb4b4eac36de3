"""Latency: warm up, then time a call ``iters`` times; percentiles and throughput.

Two things are timed per artefact and batch size B, and never mixed up:

- **model**: the predictor's model-only call (``Predictor.model_call``) on one
  fixed uint8 [B, 3, H, W] batch (:func:`model_batch`: the end-to-end files, decoded and
  letterboxed once, or seeded random pixels where there are none; the same for every
  artefact of that input size). CUDA calls synchronise before returning.
- **end_to_end**: :func:`sadc.runtime.predict.predict_files` on B image files: read + decode
  (JPEG/PNG) + letterbox + the predictor's ``predict`` (model + conversion to per-image
  tensors on the host) + mapping boxes back to original image pixels.

Numbers (:class:`LatencyStats`): p50/p90/p99 of the per-call wall time in ms
(``numpy.percentile``, linear interpolation), their mean, and throughput in images/s
= B x iters / (sum of the timed calls). Warm-up calls run first and are not recorded:
they pay for lazy initialisation, allocator growth, cuDNN / TensorRT tactic choice
and cold caches.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sadc.data.images import noise_images
from sadc.errors import SadcError

Clock = Callable[[], float]
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of one (artefact, kind, batch size): ms per batch, images/s."""

    batch: int
    warmup: int
    iters: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # images per second over the timed calls
    rounds: int = 1  # with bench --repeat N: every field is the median over N interleaved rounds
    p50_rounds_ms: list[float] | None = None  # each round's p50 (the spread the median hides)

    def to_json(self) -> dict:
        return asdict(self)


def median_of_rounds(rounds: Sequence[LatencyStats]) -> LatencyStats:
    """One :class:`LatencyStats` of the same (artefact, kind, batch) timed in several rounds: each number is
    the median of the rounds' (p50 the median of the per-round medians), ``iters`` their sum."""
    if len(rounds) == 1:
        return rounds[0]
    med = lambda name: float(np.median([getattr(r, name) for r in rounds]))
    first = rounds[0]
    return LatencyStats(
        batch=first.batch,
        warmup=first.warmup,
        iters=sum(r.iters for r in rounds),
        p50_ms=med("p50_ms"),
        p90_ms=med("p90_ms"),
        p99_ms=med("p99_ms"),
        mean_ms=med("mean_ms"),
        throughput=med("throughput"),
        rounds=len(rounds),
        p50_rounds_ms=[r.p50_ms for r in rounds],
    )


def check_counts(warmup: int, iters: int) -> None:
    if warmup < 0:
        raise SadcError(f"--warmup {warmup}: must be >= 0")
    if iters < 1:
        raise SadcError(f"--iters {iters}: must be >= 1")


def time_calls(fn: Callable[[], object], *, warmup: int, iters: int, clock: Clock = time.perf_counter) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times; the durations (s) of the timed calls.

    ``clock`` is injectable so that tests can drive time; ``fn`` must itself wait for
    its work to finish (CUDA: synchronise), or the time is only the launch.
    """
    check_counts(warmup, iters)
    for _ in range(warmup):
        fn()
    durations = []
    for _ in range(iters):
        start = clock()
        fn()
        durations.append(clock() - start)
    return durations


def summarize(durations_s: Sequence[float], *, batch: int, warmup: int) -> LatencyStats:
    """:class:`LatencyStats` of timed call durations (seconds) for batch size ``batch``."""
    d = np.asarray(durations_s, dtype=np.float64)
    if d.size == 0:
        raise SadcError("no timed calls to summarize (--iters must be >= 1)")
    p50, p90, p99 = np.percentile(d, PERCENTILES) * 1e3
    total = float(d.sum())
    return LatencyStats(
        batch=int(batch),
        warmup=int(warmup),
        iters=int(d.size),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(d.mean() * 1e3),
        throughput=float(batch * d.size / total) if total > 0 else float("inf"),
    )


def measure(fn: Callable[[], object], *, batch: int, warmup: int, iters: int, clock: Clock = time.perf_counter) -> LatencyStats:
    """Warm up, time and summarize ``fn`` (one call processes ``batch`` images)."""
    return summarize(time_calls(fn, warmup=warmup, iters=iters, clock=clock), batch=batch, warmup=warmup)


def fixed_batch(batch: int, input_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """uint8 [batch, 3, H, W] of seeded random pixels: the same tensor for every artefact and run."""
    return noise_images(batch, input_size, seed)


def model_batch(batch: int, input_size: tuple[int, int], files: Sequence[Path] | None = None) -> torch.Tensor:
    """The model-only input: uint8 [batch, 3, H, W] of ``files`` (:func:`files_for_batch`) decoded and
    letterboxed to ``input_size`` as in :func:`sadc.runtime.predict.predict_images`; :func:`fixed_batch`
    without files.

    Real images, because the model-only time of a torch model depends on them: its NMS works
    on every box above the score threshold, and a trained detector finds the maximum number
    of boxes in noise (100 per image for the quickstart's; 26-30 on val images at batch 1).
    The quickstart student's eager forward took 33.1 ms at batch 8 on noise and 24.0 ms on
    val images; ONNX graphs, whose top-k is fixed, within 5 % (benchmarks/RESULTS.md).
    """
    if not files:
        return fixed_batch(batch, input_size)
    from sadc.data.images import load_image
    from sadc.runtime.predict import letterbox_batch

    return letterbox_batch([load_image(path) for path in files_for_batch(files, batch)], input_size)[0]


def files_for_batch(files: Sequence[Path], batch: int) -> list[Path]:
    """The first ``batch`` files, cycling when there are fewer (the same files for every artefact)."""
    if not files:
        raise SadcError("no image files for the end-to-end timing")
    return [files[i % len(files)] for i in range(batch)]


def bench_latency(
    predictor,
    *,
    batches: Sequence[int],
    warmup: int,
    iters: int,
    files: Sequence[Path] | None = None,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[LatencyStats]]:
    """``{"model": [stats per batch], "end_to_end": [stats per batch]}`` for one predictor.

    ``files``: images for the end-to-end timing; without them only ``model`` is timed.
    """
    from sadc.runtime.predict import predict_files

    check_counts(warmup, iters)
    out: dict[str, list[LatencyStats]] = {"model": [], "end_to_end": []}
    for batch in batches:
        if progress:
            progress(f"latency {predictor.name} batch {batch}: model")
        call = predictor.model_call(model_batch(batch, tuple(predictor.spec.input_size), files))
        out["model"].append(measure(call, batch=batch, warmup=warmup, iters=iters, clock=clock))
        if files:
            if progress:
                progress(f"latency {predictor.name} batch {batch}: end to end")
            chosen = files_for_batch(files, batch)
            out["end_to_end"].append(
                measure(functools.partial(predict_files, predictor, chosen), batch=batch, warmup=warmup, iters=iters, clock=clock)
            )
    return out
