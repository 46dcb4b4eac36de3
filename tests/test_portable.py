"""Artefacts compared fairly and travelling alone: equal thresholds in bench, INT8 target and
calibration cache, ONNX metadata instead of a lost sidecar, torchvision teachers as artefacts.

Tiny random detectors on the tiny synthetic world (64 px); the one torchvision test runs
RetinaNet-ResNet50 at 64 px once, with random weights when none are cached.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sadc.artefacts.postprocess import PostProcess
from sadc.artefacts.sidecar import read_sidecar, sidecar_path
from sadc.bench.run import BenchSettings, check_gates, run_bench
from sadc.errors import SadcError
from sadc.export import quantize
from tests.helpers import save_tiny_checkpoint

runner = CliRunner()
EXPORTED = PostProcess(score_threshold=0.25, max_detections=20)


def scalars(metrics: dict) -> dict[str, float]:
    """The COCO numbers of an accuracy dict (per-class tables left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def invoke(*args):
    from sadc.cli.main import app

    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def exports(tiny_world, tmp_path_factory):
    """best.pt, and best.onnx + best.int8.onnx exported by one `sadc export -f int8 --conf 0.25 --max-det 20`."""
    folder = tmp_path_factory.mktemp("portable")
    ckpt = save_tiny_checkpoint(folder / "best.pt", bias=0.5)
    calls = []
    real = quantize.CalibrationImages.get_next
    quantize.CalibrationImages.get_next = lambda self: calls.append(1) or real(self)
    try:
        result = invoke(
            "export", ckpt, "-f", "int8", "--calib", tiny_world / "unlabeled", "--calib-images", 8,
            "--conf", 0.25, "--max-det", 20, "--no-parity", "--no-simplify",
        )  # fmt: skip
    finally:
        quantize.CalibrationImages.get_next = real
    assert result.exit_code == 0, result.output
    return ckpt, folder / "best.onnx", folder / "best.int8.onnx", result.output, len(calls)


def test_int8_auto_target_on_a_cpu_machine_is_the_cpu_form(exports):
    *_, int8, output, _ = exports
    from sadc.runtime.trt_host import tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("CUDA + TensorRT are present: auto picks tensorrt here")
    assert "int8 target: cpu (auto: no CUDA + TensorRT here" in output
    quant = read_sidecar(int8)["quantization"]
    assert quant["target"] == "cpu" and quant["target_choice"].startswith("auto: no CUDA + TensorRT here")
    assert quant["activations"].startswith("uint8")


@pytest.mark.parametrize(("dots", "noted"), [([], True), (["avx512_vnni"], False), (None, False)])
def test_cpu_int8_export_notes_a_cpu_without_int8_dot_products(exports, tiny_world, tmp_path, monkeypatch, dots, noted):
    """On a CPU without VNNI (a Zen 3) ONNX Runtime's INT8 can be slower than fp32: the export says so, once."""
    import sadc.engine.machine as machine

    monkeypatch.setattr(machine, "int8_dot_products", lambda: dots)
    ckpt, *_ = exports
    out = tmp_path / "best.int8.onnx"
    result = invoke(
        "export", ckpt, "-f", "int8", "--int8-target", "cpu", "--out", out, "--calib", tiny_world / "unlabeled",
        "--calib-images", 4, "--no-parity", "--no-simplify",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ("no INT8 dot-product instructions" in result.output) is noted
    assert (
        "ONNX Runtime's INT8 may be no faster than fp32 here; sadc bench times both" in result.output.replace("\n", " ")
        or not noted
    )


def test_second_int8_export_reuses_the_calibration_cache(exports, tiny_world, monkeypatch):
    """Other thresholds and another target: the ranges come from best.calib.json, no image is read."""
    ckpt, _, int8, _, first_calls = exports
    assert first_calls > 0 and (int8.parent / "best.calib.json").is_file()
    assert read_sidecar(int8)["quantization"]["calibration_cache"]["reused"] is False
    calls = []
    real = quantize.CalibrationImages.get_next
    monkeypatch.setattr(quantize.CalibrationImages, "get_next", lambda self: calls.append(1) or real(self))
    out = int8.parent / "again" / "best.int8.onnx"
    out.parent.mkdir()
    (int8.parent / "best.calib.json").replace(out.parent / "best.calib.json")  # the cache travels with the stem
    result = invoke(
        "export", ckpt, "-f", "int8", "--out", out, "--calib", tiny_world / "unlabeled", "--calib-images", 8,
        "--int8-target", "tensorrt", "--conf", 0.3, "--no-parity", "--no-simplify",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [] and "ranges reused from best.calib.json" in result.output
    quant = read_sidecar(out)["quantization"]
    assert quant["target"] == "tensorrt" and quant["calibration_cache"]["reused"] is True
    (out.parent / "best.calib.json").replace(int8.parent / "best.calib.json")


def test_bench_runs_every_artefact_with_the_exports_thresholds(exports, tiny_world):
    """A .pt beside its .onnx (--conf 0.25 --max-det 20) and .int8.onnx: ΔmAP measures the runtime only."""
    from sadc.runtime.accuracy import predictor_accuracy
    from sadc.runtime.torch_rt import TorchPredictor

    ckpt, onnx_path, int8, *_ = exports
    settings = BenchSettings(batches=(4,), latency=False, data=tiny_world / "val.json")
    report = run_bench([ckpt, onnx_path, int8], settings)
    torch_row, onnx_row, int8_row = report.results
    assert torch_row.post == onnx_row.post == int8_row.post == PostProcess.from_json(read_sidecar(onnx_path)["thresholds"])
    assert torch_row.post.score_threshold == 0.25 and torch_row.post.max_detections == 20
    # The torch row equals a TorchPredictor given those thresholds, scored independently ...
    val = tiny_world / "val.json"
    alike = predictor_accuracy(TorchPredictor(ckpt, post=EXPORTED), val, tiny_world / "val", batch_size=4)
    assert scalars(torch_row.accuracy) == pytest.approx(scalars(alike))
    # ... which is not what sadc's default thresholds score (the difference the old bench reported as ΔmAP).
    default = predictor_accuracy(TorchPredictor(ckpt), val, tiny_world / "val", batch_size=4)
    assert scalars(default) != pytest.approx(scalars(alike))
    # fp32 ONNX Runtime vs torch with equal thresholds: every metric within float noise.
    assert report.delta_map(onnx_row) == pytest.approx(0.0, abs=1e-3)
    assert scalars(onnx_row.accuracy) == pytest.approx(scalars(torch_row.accuracy), abs=1e-3)
    assert report.delta_map(int8_row) is not None and report.same_postprocess


def test_bench_refuses_delta_map_across_different_thresholds(exports, tiny_world, tmp_path):
    from sadc.bench.report import model_rows
    from sadc.export.onnx import export_onnx

    ckpt, onnx_path, *_ = exports
    other = export_onnx(ckpt, tmp_path / "default.onnx", simplify=False)  # sadc's default thresholds
    report = run_bench([onnx_path, other], BenchSettings(batches=(4,), latency=False, data=tiny_world / "val.json"))
    assert not report.same_postprocess and report.delta_map(report.results[1]) is None
    header, rows = model_rows(report)
    assert header[-1] == "thresholds" and rows[0][-1] == "conf 0.25, iou 0.5, max-det 20, topk 1000"
    assert (
        rows[1][-1] == "conf 0.05, iou 0.5, max-det 100, topk 1000" and rows[1][header.index("ΔmAP")] == "n/a (other thresholds)"
    )
    with pytest.raises(SadcError, match=r"--max-map-drop: .* ran with other thresholds"):
        check_gates(report, max_map_drop=0.01)


def test_onnx_without_its_sidecar_runs_in_predict_and_bench(exports, tiny_world, tmp_path):
    import shutil

    _, onnx_path, *_ = exports
    alone = tmp_path / "copied.onnx"
    shutil.copy(onnx_path, alone)  # copied without the .json
    assert not sidecar_path(alone).exists()
    side = read_sidecar(alone)
    assert side["thresholds"] == read_sidecar(onnx_path)["thresholds"] and side["spec"] == read_sidecar(onnx_path)["spec"]
    result = invoke("predict", alone, tiny_world / "val", "--out", tmp_path / "pred", "--conf", 0.25)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pred" / "detections.json").is_file()
    result = invoke(
        "bench", alone, "--data", tiny_world / "val.json", "--batch", 2, "--warmup", 0, "--iters", 1, "--out", tmp_path / "b"
    )
    assert result.exit_code == 0, result.output
    import json

    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert bench["results"][0]["path"].endswith("copied.onnx") and bench["results"][0]["accuracy"]["mAP"] is not None
    broken = tmp_path / "plain.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(SadcError, match=r"plain\.onnx\.json not found and the file holds no sadc metadata"):
        read_sidecar(broken)


def test_torchvision_sources_in_bench_predict_and_pseudo_label(tiny_world, tmp_path):
    """torchvision:retinanet_resnet50_fpn at 64 px: benched, predicted and pseudo-labelled like a checkpoint."""
    source = "torchvision:retinanet_resnet50_fpn"
    result = invoke(
        "bench", source, "--input-size", 64, "--no-accuracy", "--batch", 1, "--warmup", 0, "--iters", 1, "--out", tmp_path / "b"
    )
    assert result.exit_code == 0, result.output
    import json

    name = json.loads((tmp_path / "b" / "bench.json").read_text())["results"][0]["name"]
    assert name.startswith("torchvision:retinanet_resnet50_fpn (torch, ")
    if "random weights" in name:  # no cache, no download: said once, in one (log) line
        said = " ".join(result.output.split())
        assert said.count("no cached COCO weights and none can be downloaded") == 1 and "random weights" in said
    images = sorted((tiny_world / "val").iterdir())[:2]
    result = invoke("predict", source, *images, "--input-size", 64, "--out", tmp_path / "pred", "--conf", 0.5)
    assert result.exit_code == 0, result.output
    result = invoke(
        "pseudo-label", source, tiny_world / "val", "--input-size", 64, "--out", tmp_path / "pseudo.json", "--batch", 8
    )
    assert result.exit_code == 0, result.output
    result = invoke("bench", source, "--no-accuracy")
    assert result.exit_code == 2 and "pass --input-size N" in result.output


def test_torchvision_export_source_resolution():
    """`sadc export torchvision:NAME` checks the name and --input-size before any work."""
    from sadc.export.pipeline import ExportOptions, export_checkpoint

    with pytest.raises(SadcError, match="pass --input-size N"):
        export_checkpoint("torchvision:retinanet_resnet50_fpn", "onnx", ExportOptions())
    with pytest.raises(SadcError, match="not a supported torchvision detector"):
        export_checkpoint("torchvision:yolo_v99", "onnx", ExportOptions(input_size="64"))
    with pytest.raises(SadcError, match="--input-size 12: an integer N or H,W, each at least 32"):
        export_checkpoint("torchvision:retinanet_resnet50_fpn", "onnx", ExportOptions(input_size="12"))
