"""Helpers shared by the benchmark scripts: timing (sadc's own latency code) and the machine line."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from sadc.bench.latency import time_calls


def time_it(fn: Callable[[], object], *, warmup: int = 3, iters: int = 10) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` untimed calls (synchronised on CUDA)."""

    def synced():
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return statistics.median(time_calls(synced, warmup=warmup, iters=iters))


def machine_line() -> str:
    from sadc.engine.machine import machine_summary

    m = machine_summary()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads); {versions}"
