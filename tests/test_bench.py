"""sadc bench: latency statistics, FLOP counting, runtimes agreeing, reports and CI gates.

Tiny models on the tiny synthetic world; timing is exercised, never asserted (a fake
clock drives the statistics tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sadc.artefacts.postprocess import PostProcess
from sadc.bench.flops import model_size
from sadc.bench.latency import LatencyStats, fixed_batch, measure, summarize, time_calls
from sadc.bench.report import machine_line
from sadc.bench.run import BenchReport, BenchResult, check_gates, parse_batches
from sadc.engine.machine import int8_dot_products
from sadc.errors import SadcError
from sadc.models.detector import build_detector
from sadc.runtime.load import BACKENDS, backend_for, load_predictor
from tests.helpers import invoke, one_line, pycocotools_stats, save_tiny_checkpoint, tensorrt_runs_here, tiny_spec


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint .pt, its ONNX export with the torch predictor's thresholds)."""
    from sadc.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("bench")
    ckpt = save_tiny_checkpoint(folder / "best.pt")
    onnx_path = export_onnx(
        ckpt,
        folder / "best.onnx",
        post=PostProcess(score_threshold=0.05, iou_threshold=0.5, max_detections=100, topk_candidates=1000),
    )
    return ckpt, onnx_path


# ------------------------------------------------------------------------------ latency statistics


def test_percentiles_and_throughput_match_numpy():
    durations = [0.010, 0.012, 0.011, 0.050, 0.009, 0.013, 0.010, 0.030, 0.011, 0.012]
    stats = summarize(durations, batch=4, warmup=3)
    p50, p90, p99 = np.percentile(np.array(durations), [50, 90, 99]) * 1e3
    assert stats.p50_ms == pytest.approx(p50) and stats.p90_ms == pytest.approx(p90) and stats.p99_ms == pytest.approx(p99)
    assert stats.mean_ms == pytest.approx(np.mean(durations) * 1e3)
    assert stats.throughput == pytest.approx(4 * len(durations) / sum(durations))
    assert (stats.batch, stats.warmup, stats.iters) == (4, 3, len(durations))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowStart:
    """A model whose first ``slow`` calls take 1 s and the rest 10 ms, on a fake clock."""

    def __init__(self, clock: FakeClock, slow: int):
        self.clock, self.slow, self.calls = clock, slow, 0

    def __call__(self):
        self.calls += 1
        self.clock.now += 1.0 if self.calls <= self.slow else 0.010


def test_warmup_calls_are_not_timed():
    clock = FakeClock()
    model = SlowStart(clock, slow=3)
    durations = time_calls(model, warmup=3, iters=5, clock=clock)
    assert model.calls == 8
    assert durations == pytest.approx([0.010] * 5)
    stats = measure(SlowStart(clock, slow=3), batch=2, warmup=3, iters=5, clock=clock)
    assert stats.p99_ms == pytest.approx(10.0) and stats.throughput == pytest.approx(200.0)
    # Without warm-up the slow calls land in the statistics: the clock is what is measured.
    cold = measure(SlowStart(clock, slow=3), batch=2, warmup=0, iters=5, clock=clock)
    assert cold.p50_ms == pytest.approx(1000.0)


def test_counts_and_batches_are_validated():
    with pytest.raises(SadcError, match="--iters 0"):
        time_calls(lambda: None, warmup=0, iters=0)
    with pytest.raises(SadcError, match="--warmup -1"):
        time_calls(lambda: None, warmup=-1, iters=1)
    assert parse_batches("1, 8,1") == (1, 8)
    for bad in ("", "0", "a,b", "1,-2"):
        with pytest.raises(SadcError, match="--batch"):
            parse_batches(bad)


def test_fixed_batch_is_identical_for_every_artefact():
    a, b = fixed_batch(4, (64, 96)), fixed_batch(4, (64, 96))
    assert a.dtype == torch.uint8 and a.shape == (4, 3, 64, 96) and torch.equal(a, b)


# ------------------------------------------------------------------------------ size


def test_gflops_are_twice_the_conv_multiply_adds():
    """FlopCounterMode's count equals 2 x the multiply-adds of every convolution, counted by hand."""
    spec = tiny_spec()
    size = model_size(spec)
    detector = build_detector(spec).eval()
    macs = []

    def hook(module, inputs, output):
        k = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]  # (Cin / groups) * kh * kw
        macs.append(output.numel() * k)

    for m in detector.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        detector.dense(detector.preprocess(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)))
    assert size.gflops == pytest.approx(2 * sum(macs) / 1e9, rel=1e-9)
    assert size.params == sum(p.numel() for p in detector.parameters())
    assert size.input_size == (64, 64)


# ------------------------------------------------------------------------------ runtimes


def test_backend_table_picks_by_suffix(tmp_path):
    assert backend_for(Path("a/best.pt")).name == "torch"
    assert backend_for(Path("a/best.int8.onnx")).name == "onnxruntime"
    assert backend_for(Path("a/best.engine")).name == "tensorrt"
    assert len({b.name for b in BACKENDS}) == len(BACKENDS)
    with pytest.raises(SadcError, match=r"unknown artefact type '\.tflite'"):
        backend_for(Path("m.tflite"))
    with pytest.raises(SadcError, match="model not found"):
        load_predictor(tmp_path / "nope.onnx")


def test_torch_and_onnx_predictors_agree(artefacts):
    """Same batch, same format: boxes float32 [k, 4], scores float32 [k], labels int64 [k]; same values."""
    ckpt, onnx_path = artefacts
    images = fixed_batch(3, (64, 64), seed=1)
    outputs = [load_predictor(p, threads=1).predict(images) for p in (ckpt, onnx_path)]
    for ref, got in zip(*outputs, strict=True):
        for det in (ref, got):
            assert set(det) == {"boxes", "scores", "labels"}
            assert det["boxes"].dtype == det["scores"].dtype == torch.float32 and det["labels"].dtype == torch.int64
            assert det["boxes"].shape == (len(det["scores"]), 4) and det["labels"].shape == det["scores"].shape
        assert len(ref["scores"]) > 5  # confident: the comparison is not vacuous
        assert len(got["scores"]) == len(ref["scores"])
        torch.testing.assert_close(got["scores"], ref["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(got["boxes"], ref["boxes"], atol=1e-2, rtol=0)
        assert torch.equal(got["labels"], ref["labels"])


def test_model_only_calls_run_the_model(artefacts):
    images = fixed_batch(2, (64, 64))
    ckpt, onnx_path = artefacts
    torch_out = load_predictor(ckpt).model_call(images)()
    ort_out = load_predictor(onnx_path, threads=1).model_call(images)()
    assert len(torch_out) == 2 and set(torch_out[0]) == {"boxes", "scores", "labels"}
    assert [o.shape[0] for o in ort_out] == [2, 2, 2, 2]  # num_dets, boxes, scores, labels


def _fake_engine(folder: Path, onnx_path: Path, *, sidecar: bool) -> Path:
    engine = folder / "m.engine"
    engine.write_bytes(b"not really an engine")
    if sidecar:
        payload = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text())
        payload.update(format="tensorrt", file=engine.name, tensorrt={"precision": "fp16", "version": "10.9", "gpu": "x"})
        (folder / "m.engine.json").write_text(json.dumps(payload))
    return engine


@pytest.mark.skipif(tensorrt_runs_here(), reason="TensorRT and CUDA are present: the clean failure cannot happen")
def test_tensorrt_engine_fails_cleanly_via_cli(artefacts, tmp_path, tiny_world):
    _, onnx_path = artefacts
    engine = _fake_engine(tmp_path, onnx_path, sidecar=True)
    result = invoke("bench", engine, "--data", tiny_world / "val.json", "--device", "cuda", "--out", tmp_path / "b")
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert "TensorRT needs" in line and "pip install 'sadc[gpu]' on a CUDA machine" in line and "Traceback" not in line


def test_engine_without_sidecar_is_refused(artefacts, tmp_path, tiny_world):
    _, onnx_path = artefacts
    engine = _fake_engine(tmp_path, onnx_path, sidecar=False)
    result = invoke("bench", engine, "--data", tiny_world / "val.json", "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert "m.engine.json not found" in one_line(result.output)


# ------------------------------------------------------------------------------ the command


def test_bench_end_to_end_reports_and_map_equals_pycocotools(artefacts, tiny_world, tmp_path):
    ckpt, onnx_path = artefacts
    out, dets = tmp_path / "report", tmp_path / "dets.json"
    result = invoke(
        "bench", ckpt, onnx_path, "--data", tiny_world / "val.json", "--batch", "1,2",
        "--warmup", "1", "--iters", "2", "--threads", "1", "--out", out, "--save-detections", dets,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mAP" in result.output and "p50 ms" in result.output
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    report = json.loads((out / "bench.json").read_text())
    assert report["settings"]["threads"] == 1 and report["settings"]["batches"] == [1, 2]
    assert report["machine"]["cpu"] and "torch" in report["machine"]["versions"]
    first, second = report["results"]
    assert (first["backend"], second["backend"]) == ("torch", "onnxruntime")
    assert first["gflops"] == second["gflops"] > 0 and first["params"] > 0
    for r in report["results"]:
        for kind in ("model", "end_to_end"):
            assert [s["batch"] for s in r["latency"][kind]] == [1, 2]
            assert all(s["iters"] == 2 and s["warmup"] == 1 and s["p50_ms"] > 0 for s in r["latency"][kind])

    saved = json.loads(dets.read_text())
    assert len(saved) > 0
    ref = pycocotools_stats(tiny_world / "val.json", saved)
    assert ref[0] > 0 and ref[1] > 0  # the random model still scores a little; the comparison is not 0 == 0
    assert first["accuracy"]["mAP"] == pytest.approx(ref[0], rel=1e-6)  # well within the 1e-4 asked
    assert first["accuracy"]["AP50"] == pytest.approx(ref[1], rel=1e-6)
    assert abs(second["delta_map"]) < 1e-3  # the export scores what the checkpoint scores
    md = (out / "bench.md").read_text()
    assert "onnxruntime:" in md and "torch:" in md and "bench.png" in md
    # the machine line says which kernels the torch rows ran and whether ORT's INT8 has its fast ones
    assert f"torch kernels {torch.backends.cpu.get_cpu_capability()}" in md
    assert report["machine"]["int8_dot"] == int8_dot_products()


def _report(maps: list[float]) -> BenchReport:
    results = [
        BenchResult(name=f"m{i}.onnx", path=f"m{i}.onnx", backend="onnxruntime", file_mb=1.0, accuracy={"mAP": m})
        for i, m in enumerate(maps)
    ]
    return BenchReport(machine={}, settings={}, results=results)


def test_gates():
    check_gates(_report([0.40, 0.39]), fail_under_map=0.35, max_map_drop=0.02)  # passes
    with pytest.raises(SadcError) as err:
        check_gates(_report([0.40, 0.30]), fail_under_map=0.35)
    assert str(err.value) == "gate failed: m1.onnx mAP 0.3000 < --fail-under-map 0.3500"
    with pytest.raises(SadcError) as err:
        check_gates(_report([0.40, 0.37]), max_map_drop=0.02)
    assert "m1.onnx mAP 0.3700 is 0.0300 below m0.onnx's 0.4000 (--max-map-drop 0.0200)" in str(err.value)
    with pytest.raises(SadcError, match=r"did you mean 0\.35"):
        check_gates(_report([0.4]), fail_under_map=35)


def test_fail_under_map_exits_2_with_one_line(artefacts, tiny_world, tmp_path):
    ckpt, _ = artefacts
    result = invoke(
        "bench", ckpt, "--data", tiny_world / "val.json", "--no-latency", "--fail-under-map", "0.99", "--out", tmp_path / "b"
    )
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "gate failed: " in errors[0] and "best.pt (torch) mAP" in errors[0] and "< --fail-under-map 0.9900" in errors[0]
    assert (tmp_path / "b" / "bench.json").is_file()  # reports are written before the verdict


def test_bench_flag_errors_are_one_line(artefacts, tiny_world, tmp_path):
    ckpt, _ = artefacts
    result = invoke("bench", ckpt, "--data", tiny_world / "val.json", "--no-accuracy", "--max-map-drop", "0.01")
    assert result.exit_code == 2 and "--max-map-drop needs the accuracy pass" in one_line(result.output)
    result = invoke("bench", ckpt, "--data", tiny_world / "val.json", "--batch", "0")
    assert result.exit_code == 2 and "--batch 0" in one_line(result.output)
    copy = tmp_path / "copy.pt"
    shutil.copy(ckpt, copy)
    result = invoke("bench", copy, tmp_path / "missing.onnx", "--no-accuracy")
    assert result.exit_code == 2 and "missing.onnx: model not found" in one_line(result.output)


def test_latency_stats_json_roundtrip():
    stats = LatencyStats(batch=1, warmup=0, iters=1, p50_ms=1.0, p90_ms=1.0, p99_ms=1.0, mean_ms=1.0, throughput=1000.0)
    assert LatencyStats(**json.loads(json.dumps(stats.to_json()))) == stats


@pytest.mark.parametrize(
    ("int8_dot", "says"),
    [
        (["avx512_vnni"], "INT8 dot products avx512_vnni)"),
        ([], "no INT8 dot-product instructions (VNNI/AMX/asimddp): ONNX Runtime's INT8 may be no faster than fp32)"),
        (None, "torch kernels AVX2)"),  # flags unreadable: nothing said of INT8
    ],
)
def test_machine_line_says_kernels_and_int8_instructions(int8_dot, says):
    machine = {"cpu": "EPYC", "cores": 2, "cpu_capability": "AVX2", "int8_dot": int8_dot, "versions": {"torch": "2.14.1"}}
    line = machine_line(BenchReport(machine=machine, settings={"device": "cpu", "threads": 2}, results=[]))
    assert line.startswith("EPYC (2 cores, torch kernels AVX2") and says in line and line.endswith("torch 2.14.1")


def test_latency_rows_give_each_p50_as_a_ratio_of_the_first_artefacts():
    from sadc.bench.report import latency_rows

    def stats(batch: int, p50: float) -> LatencyStats:
        return LatencyStats(batch=batch, warmup=1, iters=2, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50, throughput=1.0)

    teacher = BenchResult(
        name="t.pt", path="t.pt", backend="torch", file_mb=1.0, latency={"model": [stats(1, 20.0), stats(8, 80.0)]}
    )
    student = BenchResult(
        name="s.onnx",
        path="s.onnx",
        backend="onnxruntime",
        file_mb=1.0,
        latency={"model": [stats(1, 5.0), stats(2, 9.0), stats(8, 24.0)]},
    )
    header, rows = latency_rows(BenchReport(machine={}, settings={}, results=[teacher, student]))
    col = header.index("x ref")
    assert header[col - 1] == "p50 ms"
    assert [(row[0], row[1], row[col]) for row in rows] == [
        ("t.pt", "1", "ref"), ("t.pt", "8", "ref"),
        ("s.onnx", "1", "0.25"), ("s.onnx", "2", "-"), ("s.onnx", "8", "0.30"),  # no batch 2 for the reference
    ]  # fmt: skip


def test_model_only_timing_runs_on_the_end_to_end_files_or_noise_without_them(tiny_world):
    """The model-only batch is the first B files, decoded and letterboxed like predict's; noise only without files."""
    from sadc.bench.latency import bench_latency
    from sadc.data.images import load_image
    from sadc.data.transforms import letterbox

    class Recorder:
        spec = tiny_spec()
        name = "recorder"
        path = Path("recorder.onnx")
        torch_cpu = False

        def __init__(self):
            self.inputs: list[torch.Tensor] = []

        def model_call(self, images):
            self.inputs.append(images)
            return lambda: None

        def predict(self, images):
            return [
                {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
                for _ in images
            ]

    files = sorted((tiny_world / "val").glob("*.png"))[:3]
    recorder = Recorder()
    bench_latency(recorder, batches=[2, 5], warmup=1, iters=1, files=files)
    size = tuple(recorder.spec.input_size)
    expected = [letterbox(load_image(files[i % 3]), size)[0] for i in range(5)]  # 5 > 3 files: they cycle
    assert torch.equal(recorder.inputs[0], torch.stack(expected[:2]))
    assert torch.equal(recorder.inputs[1], torch.stack(expected))
    recorder = Recorder()
    bench_latency(recorder, batches=[2], warmup=1, iters=1)
    assert torch.equal(recorder.inputs[0], fixed_batch(2, size))


def test_plot_labels_of_nearby_points_do_not_overlap_and_stay_in_the_axes():
    """fp32 torch, its ONNX and INT8 exports have equal mAPs and close latencies: their labels must not print over
    each other (the demo's plot did), nor leave the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from sadc.bench.report import _place_labels

    points = [("quickstart-teacher/best.pt (torch)", 16.5, 0.627), ("quickstart/best.pt (torch)", 5.6, 0.573),
              ("quickstart/best.onnx (ort cpu)", 2.34, 0.5731), ("quickstart/best.int8.onnx (ort cpu)", 1.99, 0.5722)]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for _, x, y in points:
        ax.scatter([x], [y], s=60)
    ax.set_xlim(0, 16.5 * 1.35)
    ax.set_ylim(0.55, 0.65)
    fig.tight_layout()
    _place_labels(fig, ax, [(text, x, y, "C0") for text, x, y in points])
    renderer = fig.canvas.get_renderer()
    notes = [child for child in ax.get_children() if isinstance(child, matplotlib.text.Annotation)]
    assert sorted(n.get_text() for n in notes) == sorted(text for text, _, _ in points)  # one label per point
    boxes = [Text.get_window_extent(n, renderer) for n in notes]
    inside = ax.get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert inside.x0 <= a.x0 and a.x1 <= inside.x1 and inside.y0 <= a.y0 and a.y1 <= inside.y1, notes[i].get_text()
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)
