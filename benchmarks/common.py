"""Helpers shared by the benchmark scripts: timing (sadc's own latency code) and the machine line."""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from sadc.bench.latency import time_calls
from sadc.errors import SadcError


def run(main: Callable[[], object]) -> None:
    """Run a script's ``main``: a :class:`SadcError` (a missing file, a graph without its
    sidecar, ...) is one line on stderr and exit code 2, as in the ``sadc`` commands."""
    try:
        main()
    except SadcError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def scratch_dir(prefix: str) -> Path:
    """A new temporary folder, removed when the process exits (also after an error).

    For what a benchmark writes only to read back (exports, tiny runs): ``ablation
    --quick`` alone writes ~700 MB, once per test run.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


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


def artefact_timing_setup(doc: str, artefacts: list[str], rounds: int) -> tuple[argparse.Namespace, int, list[Path]]:
    """The command line of the scripts that time artefacts on image files (host_threads, model_inputs):
    (args, torch threads = the cores up to 2 as in ``sadc bench``, the image files of ``--images``)."""
    from sadc.data.images import find_images

    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("artefacts", nargs="*", type=Path, default=[root / a for a in artefacts])
    ap.add_argument("--images", type=Path, default=root / "data/synth/val")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    threads = min(2, torch.get_num_threads())
    torch.set_num_threads(threads)
    return args, threads, find_images(args.images)


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
