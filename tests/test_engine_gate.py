"""The engine path on a CPU, through the TensorRT seam: gate, EfficientNMS graph, TensorRT 11 fp16, versions.

``tests/fake_tensorrt.py`` replaces ``sadc.runtime.trt_host.load_tensorrt``: its
"engines" are the ONNX graphs they were built from, run by ONNX Runtime on CPU memory
at the addresses TrtPredictor hands over, so the builder, the gate and the runtime run
their real code. Tolerances are the gate's own (sadc.export.gate.RULES); the fp16 graph
is also compared with torch fp32 on dense scores (within 1e-2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from sadc.artefacts.postprocess import PostProcess
from sadc.artefacts.sidecar import read_sidecar
from sadc.errors import SadcError
from sadc.export.pipeline import ExportOptions, export_checkpoint
from sadc.models.detector import build_detector
from sadc.models.spec import DetectorSpec
from sadc.runtime import trt_host
from tests.fake_tensorrt import FakeTensorRT

POST = dict(max_detections=20, topk_candidates=200)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from sadc.artefacts.checkpoint import save_checkpoint

    torch.manual_seed(0)
    spec = DetectorSpec(
        backbone="tiny", fpn_channels=16, class_names=["circle", "square", "triangle", "cross", "ring"], input_size=(64, 64)
    )
    detector = build_detector(spec).eval()
    with torch.no_grad():
        detector.net.head.classification_head.cls_logits.bias.fill_(1.0)  # confident: parity has detections to match
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_checkpoint(
        path, {"spec": spec.model_dump(mode="json"), "model": detector.state_dict(), "recipe": {}, "metrics": {}, "step": 1}
    )
    return path


def _use(monkeypatch, fake: FakeTensorRT) -> FakeTensorRT:
    monkeypatch.setattr(trt_host, "load_tensorrt", lambda device="cuda": fake.host())
    return fake


def _engine(checkpoint, tmp_path, monkeypatch, fake=None, **options) -> tuple[Path, FakeTensorRT]:
    fake = _use(monkeypatch, fake or FakeTensorRT())
    out = tmp_path / "best.engine"
    export_checkpoint(checkpoint, "engine", ExportOptions(out=out, simplify=False, max_batch=8, opt_batch=4, **POST, **options))
    return out, fake


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_gate_runs_parity_on_every_precision(checkpoint, tiny_world, tmp_path, monkeypatch, precision):
    extra = (
        {"half": True}
        if precision == "fp16"
        else {"calib": tiny_world / "unlabeled", "calib_images": 8}
        if precision == "int8"
        else {}
    )
    engine, fake = _engine(checkpoint, tmp_path, monkeypatch, **extra)
    side = read_sidecar(engine)
    check = side["verification"]
    assert side["tensorrt"]["precision"] == precision and side["tensorrt"]["version"] == "10.9.0"
    assert check["status"] == "passed" and check["parity"]["detections"]["torch"] > 0
    if precision == "int8":  # judged by mAP: parity reported only
        assert check["parity"]["min_match_rate"] is None and side["quantization"]["target"] == "tensorrt"
        assert fake.builds[-1] == {"onnx": "best.int8.onnx", "strongly_typed": True, "flags": []}
    else:
        assert check["parity"]["match_rate"] >= check["parity"]["min_match_rate"]
        # TensorRT 10: fp16 from the fp32 graph with the FP16 flag, weakly typed
        assert fake.builds[-1] == {"onnx": "best.onnx", "strongly_typed": False, "flags": ["FP16"] if precision == "fp16" else []}


def test_tensorrt11_fp16_is_strongly_typed_from_the_fp16_graph(checkpoint, tmp_path, monkeypatch):
    engine, fake = _engine(checkpoint, tmp_path, monkeypatch, FakeTensorRT("11.4.0", fp16_flag=False), half=True)
    assert fake.builds == [{"onnx": "best.fp16.onnx", "strongly_typed": True, "flags": []}]
    graph = read_sidecar(tmp_path / "best.fp16.onnx")
    assert graph["format"] == "onnx-fp16" and graph["verification"]["status"] == "passed"
    assert read_sidecar(engine)["verification"]["status"] == "passed"
    # The network is fp16, decode/NMS fp32: fp16 Conv weights, fp32 NMS inputs.
    model = onnx.load(str(tmp_path / "best.fp16.onnx"))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    types = {i.data_type for i in model.graph.initializer if i.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}
    from sadc.export import tensorrt

    with pytest.raises(SadcError, match="has no FP16 builder flag"):  # the fp32 graph cannot be fp16 there
        tensorrt.build_engine(tmp_path / "best.onnx", tmp_path / "x.engine", precision="fp16")


def test_fp16_onnx_graph_matches_torch_in_onnxruntime(checkpoint, tmp_path):
    """The fp16 graph on ONNX Runtime (CPU): detections within the fp16 rule, dense scores within 1e-2 of fp32 torch."""
    import onnxruntime as ort

    from sadc.data.images import noise_images
    from sadc.export.deploy import DeployModule
    from sadc.export.gate import RULES, gate_artefact
    from sadc.export.onnx import export_onnx, load_export_source

    detector = load_export_source(checkpoint).detector
    images = noise_images(16, (64, 64), 1)
    graph = export_onnx(detector, tmp_path / "m.fp16.onnx", post=PostProcess(**POST), half=True, simplify=False)
    report, _ = gate_artefact(detector, graph, RULES[("onnx", "fp16")], images=images)
    assert report.passed and report.match_rate >= 0.95 and report.n_torch > 0
    raw = export_onnx(detector, tmp_path / "m.fp16.raw.onnx", raw=True, half=True, simplify=False)
    scores, boxes = ort.InferenceSession(str(raw)).run(None, {"images": images.numpy()})
    with torch.no_grad():
        ref_scores, ref_boxes = DeployModule(detector, raw=True)(images)
    assert np.abs(scores - ref_scores.numpy()).max() < 1e-2
    assert np.abs(np.clip(boxes, 0, 64) - np.clip(ref_boxes.numpy(), 0, 64)).max() < 0.5  # px


def test_efficient_nms_graph_structure(checkpoint, tmp_path):
    from sadc.export.efficient_nms import efficient_nms_graph
    from sadc.export.onnx import export_onnx

    raw = export_onnx(checkpoint, tmp_path / "m.raw.onnx", raw=True, simplify=False)
    post = PostProcess(score_threshold=0.25, iou_threshold=0.6, max_detections=20)
    model = efficient_nms_graph(onnx.load(str(raw)), post, (64, 64))
    onnx.checker.check_model(model)
    nms = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(nms) == 1 and nms[0].domain == "TRT" and ("TRT", 1) in {(o.domain, o.version) for o in model.opset_import}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nms[0].attribute}
    assert attrs == {
        "background_class": -1, "box_coding": 0, "iou_threshold": pytest.approx(0.6), "max_output_boxes": 20,
        "plugin_version": b"1", "score_activation": 0, "score_threshold": pytest.approx(0.25), "class_agnostic": 0,
    }  # fmt: skip
    producers = {o: n for n in model.graph.node for o in n.output}
    boxes, scores = nms[0].input
    assert producers[boxes].op_type == "Min" and producers[producers[boxes].input[0]].op_type == "Max"  # clipped
    assert scores == "raw_scores" and "NonMaxSuppression" not in {n.op_type for n in model.graph.node}
    outputs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert list(outputs) == ["num_dets", "boxes", "scores", "labels"] and list(nms[0].output) == list(outputs)
    assert outputs["boxes"] == ["batch", 20, 4] and outputs["labels"] == ["batch", 20]
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert types == {"num_dets": 6, "boxes": 1, "scores": 1, "labels": 6}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_efficient_nms_engine_passes_the_gate(checkpoint, tiny_world, tmp_path, monkeypatch, precision):
    extra = {"calib": tiny_world / "unlabeled", "calib_images": 8} if precision == "int8" else {}
    engine, fake = _engine(checkpoint, tmp_path, monkeypatch, nms="efficient", **extra)
    tag = ".int8" if precision == "int8" else ""
    assert fake.builds[-1]["onnx"] == f"best{tag}.efficientnms.onnx"
    side = read_sidecar(engine)
    assert side["nms"]["kind"] == "efficient" and side["verification"]["status"] == "passed"
    assert side["verification"]["parity"]["detections"]["torch"] > 0
    from sadc.runtime.onnx_rt import OrtPredictor

    with pytest.raises(SadcError, match="EfficientNMS_TRT plugin, which only TensorRT runs"):
        OrtPredictor(tmp_path / f"best{tag}.efficientnms.onnx")


def test_failed_engine_gate_exits_2_and_marks_the_sidecar(checkpoint, tmp_path, monkeypatch):
    from sadc.cli.main import app

    fake = _use(monkeypatch, FakeTensorRT())
    real_build = fake.module.Builder

    def wrong_weights(logger):  # an engine that computes something else (a broken build)
        builder = real_build(logger)
        build = builder.build_serialized_network

        def broken(network, config):
            model = onnx.load(network.onnx_path)
            for init in model.graph.initializer:
                if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 4:
                    arr = onnx.numpy_helper.to_array(init)
                    init.CopyFrom(onnx.numpy_helper.from_array(arr[..., ::-1, :].copy(), init.name))
            onnx.save(model, network.onnx_path + ".broken.onnx")
            network.onnx_path += ".broken.onnx"
            return build(network, config)

        builder.build_serialized_network = broken
        return builder

    fake.module.Builder = wrong_weights
    out = tmp_path / "best.engine"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "-f", "engine", "--out", str(out), "--no-simplify", "--max-det", "20"]
    )
    assert result.exit_code == 2, result.output
    assert "fp32 engine" in result.output and "failed its gate: parity: match rate" in result.output
    side = read_sidecar(out)
    assert out.is_file() and side["verification"]["status"] == "failed"
    assert read_sidecar(tmp_path / "best.onnx")["verification"]["status"] == "passed"


def test_engine_refuses_another_tensorrt_version(checkpoint, tmp_path, monkeypatch):
    from sadc.runtime.load import load_predictor

    engine, _ = _engine(checkpoint, tmp_path, monkeypatch, FakeTensorRT("10.9.0"), parity=False)
    assert read_sidecar(engine)["verification"]["status"] == "not checked"
    assert load_predictor(engine, device="cuda").predict(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    _use(monkeypatch, FakeTensorRT("10.8.0"))
    with pytest.raises(SadcError) as err:
        load_predictor(engine, device="cuda")
    line = str(err.value)
    assert "\n" not in line and "built with TensorRT 10.9.0, this is TensorRT 10.8.0" in line and "rebuild it" in line


def test_engine_refuses_a_topk_tensorrt_cannot_build(checkpoint, tmp_path, monkeypatch):
    """TensorRT's TopK keeps at most 3840 values: one line before any export, not a parser error."""
    fake = _use(monkeypatch, FakeTensorRT())
    options = dict(out=tmp_path / "best.engine", simplify=False, max_detections=20)
    with pytest.raises(SadcError) as err:
        export_checkpoint(checkpoint, "engine", ExportOptions(topk_candidates=3841, **options))
    assert str(err.value) == (
        "--topk 3841: TensorRT's TopK keeps at most 3840 values; use --topk 3840 or fewer for an engine, or --nms efficient"
    )
    assert list(tmp_path.iterdir()) == [] and fake.builds == []
    export_checkpoint(checkpoint, "engine", ExportOptions(topk_candidates=3841, nms="efficient", parity=False, **options))
    export_checkpoint(checkpoint, "engine", ExportOptions(topk_candidates=3840, parity=False, **options))
    assert [b["onnx"] for b in fake.builds] == ["best.efficientnms.onnx", "best.onnx"]


def test_engine_mAP_gate_with_val(checkpoint, tiny_world, tmp_path, monkeypatch):
    """--val scores the engine and the fp32 ONNX graph; the sidecar keeps both numbers."""
    from sadc.export.pipeline import ExportResult  # noqa: F401 - the result type holds map_scores

    fake = _use(monkeypatch, FakeTensorRT())
    out = tmp_path / "best.engine"
    result = export_checkpoint(
        checkpoint,
        "engine",
        ExportOptions(out=out, simplify=False, parity=False, max_batch=8, val=tiny_world / "val.json", max_map_drop=0.05, **POST),
    )
    assert fake.builds and set(result.map_scores) == {"reference", "artefact"}
    gate = read_sidecar(out)["verification"]
    assert gate["status"] == "passed" and gate["map"]["change"] == pytest.approx(0.0, abs=1e-6)
    assert gate["map"]["reference_mAP"] == pytest.approx(result.map_scores["reference"]["mAP"])


def test_no_tensorrt_here_is_one_line(checkpoint, tmp_path):
    """Without the fake, this CPU machine has no TensorRT: the seam says so before any work."""
    ready, _ = trt_host.tensorrt_available()
    if ready:
        pytest.skip("TensorRT and CUDA are present here")
    with pytest.raises(SadcError, match="TensorRT export needs tensorrt>=10 and a CUDA GPU"):
        export_checkpoint(checkpoint, "engine", ExportOptions(out=tmp_path / "m.engine"))
    assert not (tmp_path / "m.onnx").exists()


def test_docs_state_the_gate_rules():
    from sadc.export.gate import rules_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    assert rules_markdown() in docs, "docs/export.md: paste sadc.export.gate.rules_markdown() into 'The gate'"
