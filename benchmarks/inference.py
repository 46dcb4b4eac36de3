"""Inference on the CPU: ONNX Runtime vs torch eager, INT8 vs FP32, and achieved GFLOP/s.

All measured in this one run, on the exported quickstart student (runs/quickstart/best.pt,
or the quickstart student architecture with random weights if it is not trained yet):

    ort_vs_torch[b]   ORT fp32 latency / torch eager latency (model only), b = 1 and 8; target <= 0.6
    flops_efficiency  ORT achieved GFLOP/s / this machine's fp32 matmul GFLOP/s (a large torch
                      matmul, same threads); target >= 0.6
    int8_vs_fp32      ORT INT8 latency / ORT fp32 latency, for both INT8 targets (tensorrt: S8S8,
                      cpu: U8S8); target <= 0.7

    python -m benchmarks.inference [--iters 20] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine_line, run, scratch_dir, time_it
from sadc.bench.flops import model_size

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(threads: int, n: int = 2048, iters: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = time_it(lambda: a @ b, warmup=3, iters=iters)
    return 2 * n**3 / t / 1e9


def student_checkpoint(tmp: Path) -> Path:
    ckpt = ROOT / "runs/quickstart/best.pt"
    if ckpt.is_file():
        return ckpt
    from sadc.artefacts.checkpoint import save_checkpoint
    from sadc.models.detector import build_detector
    from sadc.models.loading import spec_from_fields
    from sadc.recipe import load_recipe

    spec = spec_from_fields(load_recipe(ROOT / "recipes/quickstart.yaml").model.student)
    model = build_detector(spec)
    path = tmp / "student.pt"
    save_checkpoint(path, {"spec": spec.model_dump(mode="json"), "model": model.state_dict(), "recipe": {}})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description="ORT vs torch, INT8 vs FP32, achieved GFLOP/s")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sadc.export.onnx import export_onnx
    from sadc.export.quantize import quantize_int8
    from sadc.runtime.onnx_rt import OrtPredictor
    from sadc.runtime.torch_rt import TorchPredictor

    tmp = scratch_dir("sadc-inference-")
    ckpt = student_checkpoint(tmp)
    fp32 = export_onnx(ckpt, tmp / "student.onnx")
    calib = ROOT / "data/synth/unlabeled"
    int8 = {}
    if calib.is_dir():  # both INT8 flavours: TensorRT's S8S8 and ONNX Runtime's fast CPU U8S8
        for target in ("tensorrt", "cpu"):
            int8[target] = quantize_int8(fp32, tmp / f"student.{target}.int8.onnx", calib, n=64, target=target)
    torch_p = TorchPredictor(ckpt)
    ort_p = OrtPredictor(fp32, threads=args.threads)
    ort_q = {target: OrtPredictor(path, threads=args.threads) for target, path in int8.items()}
    spec = torch_p.spec
    gflops = model_size(spec).gflops
    peak = matmul_gflops(args.threads)

    print(machine_line())
    print(
        f"student {spec.backbone} FPN-{spec.fpn_channels} at {spec.input_size[0]}x{spec.input_size[1]}: "
        f"{gflops:.2f} GFLOPs/image; matmul peak {peak:.0f} GFLOP/s with {args.threads} threads"
    )
    for b in (1, 8):
        x = torch.randint(0, 256, (b, 3, *spec.input_size), dtype=torch.uint8)
        xn = np.ascontiguousarray(x.numpy())
        with torch.inference_mode():
            t_torch = time_it(lambda x=x: torch_p.model(x), iters=args.iters)
        t_ort = time_it(lambda xn=xn: ort_p.run(xn), iters=args.iters)
        line = (
            f"batch {b}: torch {t_torch * 1e3:.1f} ms, ort fp32 {t_ort * 1e3:.1f} ms, "
            f"ort_vs_torch = {t_ort / t_torch:.2f} (target <= 0.6); "
            f"ort {b * gflops / t_ort:.1f} GFLOP/s, flops_efficiency = {b * gflops / t_ort / peak:.2f} (target >= 0.6)"
        )
        for target, predictor in ort_q.items():
            t_q = time_it(lambda p=predictor, xn=xn: p.run(xn), iters=args.iters)
            line += f"; int8 ({target}) {t_q * 1e3:.1f} ms, int8_vs_fp32 = {t_q / t_ort:.2f}"
        line += " (int8 target <= 0.7)"
        print(line)


if __name__ == "__main__":
    run(main)
