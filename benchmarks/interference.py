"""`sadc bench` on a quiet and on a busy machine (issue 18, item 5).

Runs ``sadc bench --no-accuracy`` on the same artefacts four times: quiet and busy, each
with ``--repeat 1`` and ``--repeat R``. "Busy" is ``--load`` other processes, each running
single-threaded fp32 matmuls for the whole bench (what another engineer's training does
to a shared 2-core machine). Prints, per run, bench's own verdict (bench.json
``interference``), every artefact's p50 at each batch size, and each artefact's p50 as a
ratio of the first artefact's; then how far the busy runs' p50s and ratios moved from the
quiet ones. What the feature promises: the busy runs are flagged, and with ``--repeat`` the
ratios between artefacts stay near the quiet ones even where the p50s do not.

    python -m benchmarks.interference runs/quickstart-teacher/best.pt runs/quickstart/best.pt \\
        runs/quickstart/best.onnx runs/quickstart/best.int8.onnx [--load 2] [--repeat 5]

The three AVX2 variables of issue 18 (see benchmarks/roofline.py) in the environment hold
the torch artefacts to AVX2 kernels; ONNX Runtime ignores them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine_line, run

LOAD = "import torch\ntorch.set_num_threads(1)\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"


def bench(models: list[Path], out: Path, repeat: int, iters: int) -> dict:
    cmd = [sys.executable, "-m", "sadc", "bench", *map(str, models), "--no-accuracy", "--out", str(out)]
    cmd += ["--repeat", str(repeat), "--iters", str(iters), "--device", "cpu"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "bench.json").read_text())


def p50s(report: dict) -> dict[tuple[str, int], float]:
    return {(r["name"], cell["batch"]): cell["p50_ms"] for r in report["results"] for cell in r["latency"]["model"]}


def ratios(p: dict[tuple[str, int], float], first: str) -> dict[tuple[str, int], float]:
    return {(name, b): ms / p[(first, b)] for (name, b), ms in p.items() if name != first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--load", type=int, default=2, help="busy processes during the busy runs")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    print(machine_line())
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sadc-interference-") as tmp:
        for busy in (False, True):
            for repeat in (1, args.repeat):
                name = f"{'busy' if busy else 'quiet'}, --repeat {repeat}"
                loads = []
                if busy:
                    loads = [
                        subprocess.Popen([sys.executable, "-c", LOAD], env={**os.environ, "OMP_NUM_THREADS": "1"})
                        for _ in range(args.load)
                    ]
                    time.sleep(5)  # the load average climbs towards the load
                try:
                    t = time.perf_counter()
                    runs[name] = bench(args.models, Path(tmp) / name.replace(", --", "-").replace(" ", ""), repeat, args.iters)
                    print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
                finally:
                    for p in loads:
                        p.kill()
                        p.wait()
                if not busy:
                    time.sleep(2)
    first = runs["quiet, --repeat 1"]["results"][0]["name"]
    print(f"ratios are p50 / the p50 of {first} at the same batch; busy = {args.load} single-threaded matmul loops")
    for name, report in runs.items():
        info = report["interference"]
        verdict = "reliable" if info["reliable"] else "UNRELIABLE: " + "; ".join(info["reasons"])
        print(f"\n{name}: load {info['load_before']:.2f} before, {info['load_after']:.2f} after; {verdict}")
        p = p50s(report)
        r = ratios(p, first)
        for (model, b), ms in p.items():
            extra = f", x{r[(model, b)]:.2f} of the first" if (model, b) in r else ""
            print(f"  {model:40s} b{b}: p50 {ms:8.2f} ms{extra}")
    quiet_p = p50s(runs["quiet, --repeat 1"])
    quiet_r = ratios(quiet_p, first)
    print("\nagainst quiet, --repeat 1: median (max) of |busy / quiet - 1| over the cells")
    for name, report in runs.items():
        p = p50s(report)
        r = ratios(p, first)
        dp = [abs(p[k] / quiet_p[k] - 1) for k in quiet_p]
        dr = [abs(r[k] / quiet_r[k] - 1) for k in quiet_r]
        print(
            f"  {name:20s} p50s {statistics.median(dp):6.1%} ({max(dp):6.1%})   "
            f"ratios {statistics.median(dr):6.1%} ({max(dr):6.1%})"
        )


if __name__ == "__main__":
    run(main)
