"""Helpers shared by the benchmark scripts: timing and the machine line."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_it(fn: Callable[[], object], *, warmup: int = 3, iters: int = 10) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def machine_line() -> str:
    from sadc.engine.machine import machine_summary

    m = machine_summary()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads); {versions}"
