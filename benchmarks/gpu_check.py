"""The GPU proof behind benchmarks/gpu_check.sh: distil, bench and export TensorRT engines, one table.

Stages (each a `python3 -m sadc ...` run, timed; a stage whose package is missing is
skipped with one line):

1. world     `sadc data synth`: a small synthetic world (128 px)
2. teacher   `sadc train`: RetinaNet R18 FPN-64, a few hundred steps (skipped with --ckpt)
3. distill   `sadc distill`: MobileNetV3 student, AMP fp16, fp16 teacher (skipped with --ckpt)
4. bench     `sadc bench --device cuda` of the student checkpoint
5. onnx      `sadc export -f onnx` (parity gate) and `-f int8` (auto target, mAP gate)
6. engines   where tensorrt imports: `sadc export -f engine` fp32 / fp16 / int8 x --nms onnx / efficient,
             each with its parity and mAP gate (--val), then one `sadc bench --device cuda` of them all

The table goes to $OUT/gpu_check.md when $OUT is set, else stdout. On a machine without
CUDA it stops at once with one line, unless SADC_GPU_CHECK_ALLOW_CPU=1 (tests: every
stage on the CPU at toy sizes). Usage: python3 benchmarks/gpu_check.py [--ckpt S.pt] [--work DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle", "cross", "ring"]
ANCHORS = [[12, 15.1, 19], [24, 30.2, 38.1], [48, 60.5, 76.2], [96, 121, 152], [192, 242, 305]]


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Check:
    def __init__(self, work: Path, cpu: bool):
        self.work, self.cpu = work, cpu
        self.rows: list[list[str]] = []
        self.notes: list[str] = []
        self.paths: dict[int, Path] = {}  # row index -> the artefact it reports
        self.device = "cpu" if cpu else "cuda"

    def sadc(self, *args, timeout: int = 600) -> tuple[bool, float, str]:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "sadc", *map(str, args)]
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, time.perf_counter() - start, f"timed out after {timeout}s"
        out = (done.stdout + done.stderr).strip()
        errors = [line for line in out.splitlines() if "error:" in line]
        return done.returncode == 0, time.perf_counter() - start, (errors[-1] if errors else out.splitlines()[-1] if out else "")

    def row(self, stage, artefact, status, parity="", map_="", delta="", p50="", seconds=0.0, note=""):
        self.rows.append([stage, artefact, status, parity, map_, delta, p50, f"{seconds:.0f}", note])

    def skip(self, stage: str, why: str) -> None:
        line = f"skipped {stage}: {why}"
        print(line, flush=True)
        self.notes.append(line)

    def log(self, stage: str, ok: bool, seconds: float, last: str) -> None:
        print(f"{stage}: {'ok' if ok else 'FAILED'} in {seconds:.0f}s{'' if ok else ' - ' + last}", flush=True)


def recipe(check: Check, name: str, steps: int, *, teacher: Path | None = None) -> Path:
    import yaml

    w = check.work / "world"
    size = 64 if check.cpu else 128
    model = {
        "arch": "retinanet",
        "fpn_channels": 64,
        "head_norm": "group",
        "anchor_sizes": ANCHORS,
        "anchor_ratios": [0.5, 1.0, 2.0],
        "class_names": CLASSES,
        "input_size": [size, size],
    }
    data = {
        "name": name,
        "output": str(check.work / "runs"),
        "seed": 0,
        "model": {},
        "data": {
            "train": {"annotations": str(w / "train.json"), "images": str(w / "train")},
            "val": {"annotations": str(w / "val.json"), "images": str(w / "val")},
            "batch_size": 4 if check.cpu else 16,
            "workers": 0 if check.cpu else 4,
        },
        "train": {
            "steps": steps, "lr": 0.001, "optimizer": "adamw", "warmup_steps": min(50, steps // 4),
            "eval_every": 0, "log_every": max(1, steps // 4), "device": check.device,
            "amp": "off" if check.cpu else "fp16",
        },
    }  # fmt: skip
    if teacher is None:
        data["model"]["teacher"] = {**model, "backbone": "resnet18"}
        data["train"]["target"] = "teacher"
    else:
        data["model"]["teacher"] = {"source": str(teacher)}
        data["model"]["student"] = {**model, "backbone": "mobilenet_v3_large"}
        data["data"]["unlabeled"] = str(w / "unlabeled")
        data["distill"] = {"teacher_precision": "fp16"}
    path = check.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sidecar(path: Path) -> dict:
    try:
        return json.loads(Path(str(path) + ".json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def gate_cells(side: dict) -> tuple[str, str, str, str]:
    v = side.get("verification") or {}
    parity = v.get("parity") or {}
    m = v.get("map") or {}
    match = f"{parity['match_rate']:.3f}" if "match_rate" in parity else "-"
    return v.get("status", "-"), match, f"{m['mAP']:.4f}" if "mAP" in m else "-", f"{m['change']:+.4f}" if "change" in m else "-"


def latencies(bench_json: Path) -> dict[str, str]:
    try:
        results = json.loads(bench_json.read_text())["results"]
    except (OSError, json.JSONDecodeError, KeyError):
        return {}
    out = {}
    for r in results:
        model = sorted(r.get("latency", {}).get("model", []), key=lambda s: s["batch"])
        out[str(Path(r["path"]))] = " / ".join(f"{s['p50_ms']:.2f}" for s in model) if model else "-"
    return out


def run(check: Check, ckpt: Path | None) -> None:
    w = check.work / "world"
    sizes = (
        ["--train", 32, "--val", 16, "--unlabeled", 32, "--size", 64]
        if check.cpu
        else ["--train", 320, "--val", 64, "--unlabeled", 320, "--size", 128]
    )
    ok, secs, last = check.sadc("data", "synth", w, *sizes)
    check.log("world", ok, secs, last)
    check.row("world", "synthetic world", "ok" if ok else f"FAILED: {last}", seconds=secs)
    if not ok:
        return
    val = w / "val.json"
    steps = 4 if check.cpu else 200
    if ckpt is None:
        ok, secs, last = check.sadc("train", "-r", recipe(check, "teacher", steps))
        check.log("teacher", ok, secs, last)
        teacher = check.work / "runs" / "teacher" / "best.pt"
        amp = "fp32 (CPU rehearsal)" if check.cpu else "AMP fp16"
        check.row("teacher", f"R18 FPN-64, {steps} steps, {amp}", "ok" if ok else f"FAILED: {last}", seconds=secs)
        if not ok:
            return
        ok, secs, last = check.sadc("distill", "-r", recipe(check, "student", steps, teacher=teacher))
        check.log("distill", ok, secs, last)
        check.row(
            "distill",
            f"MobileNetV3 student, {steps} steps, {amp}, {'fp32' if check.cpu else 'fp16'} teacher",
            "ok" if ok else f"FAILED: {last}",
            seconds=secs,
        )
        if not ok:
            return
        ckpt = check.work / "runs" / "student" / "best.pt"
    bench_args = ["--data", val, "--batch", "1,8", "--warmup", 3 if check.cpu else 20, "--iters", 5 if check.cpu else 100]
    ok, secs, last = check.sadc("bench", ckpt, "--device", check.device, *bench_args, "--out", check.work / "bench-torch")
    check.log("bench torch", ok, secs, last)
    torch_bench = json.loads((check.work / "bench-torch" / "bench.json").read_text())["results"][0] if ok else {}
    check.row(
        "bench", f"{ckpt.name} (torch, {check.device})", "ok" if ok else f"FAILED: {last}",
        map_=f"{torch_bench['accuracy']['mAP']:.4f}" if torch_bench else "",
        p50=latencies(check.work / "bench-torch" / "bench.json").get(str(ckpt), ""), seconds=secs,
    )  # fmt: skip

    out = check.work / "export"
    artefacts: list[Path] = []  # what a row reports, in row order
    for fmt, extra in (("onnx", []), ("int8", ["--calib", w / "unlabeled", "--calib-images", 32, "--val", val])):
        target = out / ("best.onnx" if fmt == "onnx" else "best.int8.onnx")
        ok, secs, last = check.sadc("export", ckpt, "-f", fmt, "--out", target, *extra)
        check.log(f"export {fmt}", ok, secs, last)
        status, match, m, delta = gate_cells(sidecar(target))
        note = (sidecar(target).get("quantization") or {}).get("target_choice", "") if fmt == "int8" else ""
        check.row("export", target.name, status if ok else f"FAILED: {last}", match, m, delta, seconds=secs, note=note)
        if ok:
            artefacts.append(target)
            check.paths[len(check.rows) - 1] = target

    if not has("tensorrt"):
        check.skip("TensorRT engines", "tensorrt is not importable here (pip install tensorrt on a CUDA machine)")
    elif check.cpu:
        check.skip("TensorRT engines", "no CUDA GPU (SADC_GPU_CHECK_ALLOW_CPU=1)")
    else:
        for precision, extra in (
            ("fp32", []),
            ("fp16", ["--half"]),
            ("int8", ["--calib", w / "unlabeled", "--calib-images", 64]),
        ):
            for nms in ("onnx", "efficient"):
                engine = out / f"{precision}-{nms}" / "best.engine"
                ok, secs, last = check.sadc(
                    "export", ckpt, "-f", "engine", "--nms", nms, "--out", engine, "--val", val,
                    "--max-batch", 8, "--opt-batch", 8, "--timing-cache", out / "trt.cache", *extra,
                )  # fmt: skip
                check.log(f"engine {precision} {nms}", ok, secs, last)
                side = sidecar(engine)
                status, match, m, delta = gate_cells(side)
                version = (side.get("tensorrt") or {}).get("version", "")
                check.row(
                    "engine", f"{precision}, --nms {nms}", status if side else f"FAILED: {last}", match, m, delta,
                    seconds=secs, note=f"TensorRT {version}" + ("" if ok else f"; {last}"),
                )  # fmt: skip
                if ok:
                    artefacts.append(engine)
                    check.paths[len(check.rows) - 1] = engine
    engines = [a for a in artefacts if a.suffix == ".engine"]  # ONNX Runtime here is the CPU build: no CUDA rows for .onnx
    if engines:
        models = [ckpt, *engines]
        ok, secs, last = check.sadc(
            "bench", *models, "--device", check.device, *bench_args, "--no-accuracy", "--out", check.work / "bench-all"
        )
        check.log("bench all", ok, secs, last)
        times = latencies(check.work / "bench-all" / "bench.json")
        for index, path in check.paths.items():  # p50 of each exported artefact, from the one shared bench
            check.rows[index][6] = times.get(str(path), "")
        check.row("bench", f"{len(models)} artefacts, --device {check.device}", "ok" if ok else f"FAILED: {last}", seconds=secs)


def table(check: Check, total: float) -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (CPU rehearsal)"
    versions = [f"torch {torch.__version__}", f"python {platform.python_version()}"]
    for mod in ("torchvision", "onnxruntime", "tensorrt"):
        if has(mod):
            versions.append(f"{mod} {getattr(__import__(mod), '__version__', '?')}")
    header = ["stage", "artefact", "gate / status", "parity match", "mAP", "ΔmAP vs fp32 ONNX", "p50 ms (b1 / b8)", "s", "note"]
    lines = [
        "# sadc gpu_check",
        "",
        f"{gpu}; {', '.join(versions)}; total {total:.0f} s.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in check.rows]
    if check.notes:
        lines += [""] + [f"- {n}" for n in check.notes]
    lines += [
        "",
        "parity match: detections with score >= 0.3 matched against torch (the export gate's rule per artefact); "
        "mAP on the world's val set; p50: model-only latency from `sadc bench --device cuda`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="a sadc student checkpoint: skip teacher training and distillation")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("SADC_GPU_CHECK_WORK", "/tmp/sadc-gpu-check")))
    args = parser.parse_args(argv)
    cpu = os.environ.get("SADC_GPU_CHECK_ALLOW_CPU") == "1"
    import torch

    if not torch.cuda.is_available() and not cpu:
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a CUDA machine")
        return 2
    for module, stage in (("pydantic", "every stage"), ("onnx", "exports"), ("onnxruntime", "exports")):
        if not has(module):
            print(f"gpu_check: {module} is missing ({stage} need it); put its wheel in .whl/")
            return 2
    if args.ckpt is not None and not args.ckpt.is_file():
        print(f"gpu_check: --ckpt {args.ckpt}: file not found")
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    check = Check(args.work, cpu)
    for module, what in (
        ("onnxslim", "exports need it (or --no-simplify)"),
        ("faster_coco_eval", "mAP falls back to pycocotools"),
    ):
        if not has(module):
            check.notes.append(f"{module} missing: {what}")
    start = time.perf_counter()
    run(check, args.ckpt)
    text = table(check, time.perf_counter() - start)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.md").write_text(text)
        print(f"table written to {Path(out) / 'gpu_check.md'}")
    sys.stdout.write(text)
    return 0 if all(not str(r[2]).startswith(("FAILED", "failed")) for r in check.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
