"""Helpers shared by the benchmark scripts: timing (sadc's own latency code) and the machine line."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

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
    """CPU, cores, torch threads, package versions and torch's CPU kernels, in one line."""
    from sadc.engine.machine import machine_summary

    m = machine_summary()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    # the vector kernels torch runs (AVX2, AVX512, ...): speeds and results differ across them
    return f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads); {versions}; kernels {m['cpu_capability']}"


def split_metrics(checkpoint: Path, data: Path, split: str) -> dict:
    """COCO metrics of ``checkpoint`` on ``data/<split>.json``, cached beside it per step
    (``<stem>.<split>_metrics.json``), so that a report rerun evaluates nothing twice."""
    from sadc.artefacts.checkpoint import load_checkpoint

    step = load_checkpoint(checkpoint).get("step")
    cache = checkpoint.with_name(f"{checkpoint.stem}.{split}_metrics.json")
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("step") == step:
            return cached["metrics"]
    from sadc.runtime.accuracy import predictor_accuracy
    from sadc.runtime.torch_rt import TorchPredictor

    metrics = predictor_accuracy(TorchPredictor(checkpoint), data / f"{split}.json", data / split)
    cache.write_text(json.dumps({"step": step, "metrics": metrics}))
    return metrics
