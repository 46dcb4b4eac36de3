"""Where an ONNX graph's time goes in ONNX Runtime: kernel time per operator type.

For each graph: ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) over
``--runs`` calls after ``--warmup``, on letterboxed images from ``--images`` (or random
pixels), with the session options ``sadc bench`` uses (all graph optimizations, ``--threads``
intra-op threads). Prints, per operator type after ORT's fusions (``QLinearConv``,
``Transpose``, ...), the kernel milliseconds per call, the share of the graph's kernel
time and the number of such kernels per call, then the wall-clock median of the calls; the
columns of several graphs side by side. The profiler adds a fixed cost to every kernel, so
graphs of many small nodes look slower under it than they run (compare the wall medians
with `sadc bench`).

    python -m benchmarks.ort_profile runs/quickstart/best.onnx runs/quickstart/best.int8.onnx --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import machine_line, run


def images(size: tuple[int, int], batch: int, folder: Path | None) -> np.ndarray:
    if folder is None:
        return np.random.default_rng(0).integers(0, 256, (batch, 3, *size), dtype=np.uint8)
    import torch

    from sadc.data.images import find_images, load_image
    from sadc.data.transforms import letterbox

    return torch.stack([letterbox(load_image(p), size)[0] for p in find_images(folder)[:batch]]).numpy()


def profile(path: Path, batch: int, runs: int, warmup: int, threads: int, folder: Path | None) -> tuple[dict, dict]:
    """(op type -> kernel ms per call, plus ``"(wall p50)"``; op type -> kernels run per call)."""
    from sadc.artefacts.sidecar import read_sidecar
    from sadc.runtime.onnx_rt import make_session

    size = tuple(read_sidecar(path)["input_size"])
    feed = {"images": images(size, batch, folder)}
    with tempfile.TemporaryDirectory(prefix="sadc-ortprof-") as tmp:
        profiling = {"enable_profiling": True, "profile_file_prefix": os.path.join(tmp, "prof")}
        session = make_session(path, threads=threads, options=profiling)
        for _ in range(warmup):
            session.run(None, feed)
        walls = []
        for _ in range(runs):
            t = time.perf_counter()
            session.run(None, feed)
            walls.append(time.perf_counter() - t)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    count: dict[str, float] = defaultdict(float)
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    skip_before = sorted(e["ts"] for e in model_runs)[warmup] if len(model_runs) > warmup else 0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= skip_before:
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
            count[e["args"]["op_name"]] += 1 / runs
    per_op["(wall p50)"] = statistics.median(walls) * 1000
    return per_op, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("graphs", nargs="+", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=Path, default=Path("data/synth/val"), help="a folder of images ('' for random pixels)")
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    folder = args.images if str(args.images) and args.images.is_dir() else None
    print(f"{machine_line()}; ORT {args.threads} intra-op threads")
    print(f"batch {args.batch}, {args.runs} calls after {args.warmup}, images {'random' if folder is None else folder}")
    profiles = {g: profile(g, args.batch, args.runs, args.warmup, args.threads, folder) for g in args.graphs}
    results = {g: r for g, (r, _) in profiles.items()}
    totals = {g: sum(v for k, v in r.items() if not k.startswith("(")) for g, r in results.items()}
    ops = sorted(
        {k for r in results.values() for k in r if not k.startswith("(")},
        key=lambda k: -max(r.get(k, 0) for r in results.values()),
    )
    head = f"{'op type':28s}" + "".join(f" | {g.name[-26:]:>26s}" for g in args.graphs)
    print(head)
    print("-" * len(head))
    shown = ops[: args.top]
    for op in shown:
        cells = "".join(
            f" | {results[g].get(op, 0):8.3f} ms {100 * results[g].get(op, 0) / totals[g]:5.1f} % x{profiles[g][1].get(op, 0):<3.0f}"
            for g in args.graphs
        )
        print(f"{op:28s}{cells}")
    rest = "".join(f" | {sum(results[g].get(o, 0) for o in ops[args.top :]):8.3f} ms {'':10s}" for g in args.graphs)
    print(f"{'(the rest)':28s}{rest}")
    print(f"{'kernel total':28s}" + "".join(f" | {totals[g]:8.3f} ms {'':10s}" for g in args.graphs))
    print(f"{'wall p50 per call':28s}" + "".join(f" | {results[g]['(wall p50)']:8.3f} ms {'':10s}" for g in args.graphs))


if __name__ == "__main__":
    run(main)
