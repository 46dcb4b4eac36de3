"""Export: deploy graph, ONNX contract, parity, INT8 QDQ structure, sidecars, formats, TensorRT args.

Everything runs on a tiny random RetinaNet at 64 px whose classification bias is set
positive, so that it makes confident (score >= 0.3) detections for the parity checks.
Exports are module-scoped fixtures: each graph is traced once. Tolerances: fp32 ONNX
Runtime vs torch within 1e-4 (scores) and 1e-3 px (boxes).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import typer
from onnx import numpy_helper
from PIL import Image

from sadc.artefacts.io import OUTPUT_NAMES
from sadc.artefacts.postprocess import PostProcess
from sadc.artefacts.sidecar import read_sidecar, sidecar_path
from sadc.data.images import noise_images
from sadc.errors import SadcError
from sadc.export import formats, tensorrt
from sadc.export.deploy import DeployModule, top_pairs
from sadc.export.onnx import export_onnx
from sadc.export.parity import (
    ParityError,
    ParityTolerance,
    check_parity,
    ort_session,
    parity_images,
    run_parity,
)
from sadc.export.quantize import (
    CalibrationImages,
    postprocess_nodes,
    quantize_int8,
    select_calibration_images,
)
from sadc.models.detector import build_detector
from sadc.models.spec import DetectorSpec
from tests.helpers import confident, invoke, save_detector, tiny_spec

K = 20
THRESHOLDS = PostProcess(max_detections=K, topk_candidates=200, iou_threshold=0.5, score_threshold=0.05)
ROOT = Path(__file__).resolve().parents[1]


def _tiny_spec() -> DetectorSpec:
    """One anchor per location and 3 classes: A*C = 258 (anchor, class) pairs at 64 px (see the padding test)."""
    return DetectorSpec(backbone="tiny", fpn_channels=16, class_names=["a", "b", "c"], input_size=(64, 64))


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return noise_images(n, (64, 64), seed)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return confident(build_detector(_tiny_spec()))


@pytest.fixture(scope="module")
def checkpoint(detector, tmp_path_factory) -> Path:
    return save_detector(tmp_path_factory.mktemp("run") / "best.pt", detector)


@pytest.fixture(scope="module")
def exported(checkpoint) -> Path:
    return export_onnx(checkpoint, checkpoint.with_suffix(".onnx"), post=THRESHOLDS)


@pytest.fixture(scope="module")
def exported_raw(detector, tmp_path_factory) -> Path:
    return export_onnx(detector, tmp_path_factory.mktemp("raw") / "m.raw.onnx", raw=True, simplify=False)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unlabeled")
    rng = np.random.default_rng(0)
    for i in range(6):  # odd sizes: the reader letterboxes
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def quantized(exported, calib_dir) -> Path:
    return quantize_int8(exported, exported.with_name("best.int8.onnx"), calib_dir, n=6, batch=4, method="minmax")


# ------------------------------------------------------------------------------ deploy module


@pytest.mark.parametrize("topk", [200, 30])  # k above and below the 86 anchors
def test_deploy_eager_equals_detector_detect(detector, topk):
    post = dataclasses.replace(THRESHOLDS, topk_candidates=topk)
    module = DeployModule(detector, post)
    images = _images(3)
    with torch.no_grad():
        num_dets, boxes, scores, labels = module(images)
        ref = detector.detect(detector.dense(detector.preprocess(images)), post)
    assert num_dets.dtype == labels.dtype == torch.int32 and boxes.dtype == scores.dtype == torch.float32
    assert num_dets.shape == (3, 1) and boxes.shape == (3, K, 4) and scores.shape == labels.shape == (3, K)
    for i, r in enumerate(ref):
        n = int(num_dets[i, 0])
        assert n == len(r["scores"]) > 0
        torch.testing.assert_close(scores[i, :n], r["scores"])
        torch.testing.assert_close(boxes[i, :n], r["boxes"])
        assert torch.equal(labels[i, :n].long(), r["labels"])
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not labels[i, n:].any()
    assert boxes.min() >= 0 and boxes.max() <= 64


@pytest.mark.parametrize(
    "spec",
    [
        _tiny_spec(),  # GroupNorm head
        _tiny_spec().model_copy(update={"head_norm": "none", "anchor_ratios": [0.5, 1.0, 2.0]}),
        DetectorSpec(arch="fcos", backbone="tiny", fpn_channels=64, class_names=["a", "b"], input_size=(64, 96)),
    ],
    ids=["retinanet-groupnorm", "retinanet-3-anchors", "fcos"],
)
def test_deploy_head_gives_the_detectors_outputs(spec):
    """The deploy graph's head (constant reshapes, level_rows) gives torchvision's head outputs, bit for bit.

    Its weights keep their names, and so do the exported graph's initializers.
    """
    torch.manual_seed(3)
    detector = build_detector(spec).eval()
    module = DeployModule(detector, raw=True)
    images = noise_images(2, spec.input_size, 0)
    with torch.no_grad():
        ref = detector.dense(detector.preprocess(images)).head_outputs()
        out = module.detector.dense(module.detector.preprocess(images)).head_outputs()
    assert module.detector.state_dict().keys() == detector.state_dict().keys()
    assert out.keys() == ref.keys() and len(ref) == (3 if spec.arch == "fcos" else 2)
    for name, value in ref.items():
        assert torch.equal(out[name], value), name


@pytest.mark.parametrize("graph", ["exported", "exported_raw"])  # simplified, and not (onnxslim folds some Shapes)
def test_exported_head_takes_no_shape_of_its_tensors(graph, request):
    """The head's and every GroupNorm's reshapes are constants: the network's only Shape reads are the FPN's upsampling.

    torchvision's head and torch's GroupNorm export read each level's Shape (31 reads in
    the quickstart student's graph); in the INT8 graph each read kept a DequantizeLinear
    of the whole tensor alive.
    """
    simplified = graph == "exported"
    graph = onnx.load(str(request.getfixturevalue(graph))).graph
    producer = {out: node for node in graph.node for out in node.output}
    reads = [producer[node.input[0]] for node in graph.node if node.op_type == "Shape" and node.input[0] in producer]
    read = [node.op_type for node in reads]
    network_ops = {"Conv", "Relu", "InstanceNormalization", "Add", "Mul", "MaxPool"}
    network = [op for op in read if op in network_ops]
    assert sum(node.op_type == "InstanceNormalization" for node in graph.node) > 0  # the GroupNorm head is there
    if simplified:  # one read per upsampling; unsimplified, torch's interpolate reads H and W apart
        assert len(network) <= sum(node.op_type == "Resize" for node in graph.node), read
    # the tiny backbone's GroupNorms included
    assert all("/fpn/" in node.name for node in reads if node.op_type in network_ops), [n.name for n in reads]
    assert "InstanceNormalization" not in network and "Relu" not in network, read


@pytest.mark.parametrize("k", [1, 7, 40, 50, 150])  # below, at and above the 50 anchors
def test_top_pairs_equals_topk_over_all_pairs(k):
    gen = torch.Generator().manual_seed(k)
    scores = torch.rand(3, 50, 3, generator=gen)  # distinct values: no ties to order
    scores[0, 17] = 2.0 + torch.arange(3.0)  # one anchor holds the 3 best pairs of image 0
    scores[1, :, 0] = 3.0 + torch.rand(50, generator=gen)  # every anchor's class 0 beats all else
    top, anchors, classes = top_pairs(scores, k)  # unordered: NMS sorts
    ref_top, ref_idx = scores.flatten(1).topk(k, dim=1)
    order = top.argsort(dim=1, descending=True)
    torch.testing.assert_close(top.gather(1, order), ref_top, rtol=0, atol=0)
    assert torch.equal((anchors * 3 + classes).gather(1, order), ref_idx)
    assert torch.equal(scores[torch.arange(3)[:, None], anchors, classes], top)


def test_deploy_graph_selects_unsorted_and_gathers_rows(exported):
    """The two candidate selections are unsorted TopKs (NMS sorts), the final one sorted;
    rows are gathered by GatherND (no int64 index expanded to [B, k, D])."""
    graph = onnx.load(str(exported)).graph
    tops = [n for n in graph.node if n.op_type == "TopK"]
    sorted_flags = [next((a.i for a in n.attribute if a.name == "sorted"), 1) for n in tops]
    assert sorted_flags == [0, 0, 1]
    ops = Counter(n.op_type for n in graph.node)
    assert ops["GatherND"] == 3 and ops["Expand"] == 0
    assert all(a.i == 1 for n in graph.node if n.op_type == "GatherND" for a in n.attribute if a.name == "batch_dims")


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_candidate_decoder_is_torchvisions_decode_bit_for_bit(detector, weights):
    from torchvision.models.detection._utils import BoxCoder

    from sadc.export.deploy import CandidateDecoder

    net = copy.deepcopy(detector)
    net.net.box_coder = BoxCoder(weights)
    anchors = net.dense(net.preprocess(_images(1))).anchors  # [A, 4]
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, anchors.shape[0], (3, 40), generator=gen)
    codes = torch.randn(3, 40, 4, generator=gen) * 3
    codes[0, :5, 2:] = 20.0  # past bbox_xform_clip: clamped as torchvision clamps
    decoder = CandidateDecoder(net, anchors)
    assert decoder.fast and (decoder.weights is None) == (weights == (1.0, 1.0, 1.0, 1.0))
    ref = net.decode_boxes(codes, anchors[idx])
    assert torch.equal(decoder(codes, idx), ref)
    assert torch.isfinite(ref).all()


def test_candidate_decoder_falls_back_for_fcos():
    from sadc.export.deploy import CandidateDecoder

    spec = DetectorSpec(arch="fcos", backbone="tiny", fpn_channels=64, class_names=["a"], input_size=(64, 64))
    fcos = build_detector(spec).eval()
    anchors = fcos.dense(fcos.preprocess(_images(1))).anchors
    idx = torch.randint(0, anchors.shape[0], (2, 10), generator=torch.Generator().manual_seed(1))
    codes = torch.rand(2, 10, 4, generator=torch.Generator().manual_seed(2))
    decoder = CandidateDecoder(fcos, anchors)
    assert not decoder.fast
    assert torch.equal(decoder(codes, idx), fcos.decode_boxes(codes, anchors[idx]))


def test_deploy_pads_when_few_survive(detector, tmp_path):
    module = DeployModule(detector, PostProcess(max_detections=K, topk_candidates=K, score_threshold=0.99))
    with torch.no_grad():
        num_dets, boxes, scores, _labels = module(_images(2))
    assert (num_dets < K).all()
    for i in range(2):
        n = int(num_dets[i, 0])
        assert not scores[i, n:].any() and not boxes[i, n:].any()
    # K beyond the A*C = 258 (anchor, class) pairs of the tiny model: padded in the graph too
    big = PostProcess(max_detections=300, topk_candidates=300)
    path = export_onnx(detector, tmp_path / "k300.onnx", simplify=False, post=big)
    images = _images(2)
    outs = ort_session(path).run(None, {"images": images.numpy()})
    with torch.no_grad():
        ref = DeployModule(detector, big)(images)
    assert outs[1].shape == (2, 300, 4) and (outs[0] <= 258).all()
    np.testing.assert_array_equal(outs[0], ref[0].numpy())
    np.testing.assert_allclose(outs[2], ref[2].numpy(), atol=1e-4)


def test_deploy_rejects_wrong_input_and_thresholds(detector):
    module = DeployModule(detector, THRESHOLDS)
    with pytest.raises(SadcError, match=r"expected uint8 \[B, 3, 64, 64\]"):
        module(torch.zeros(2, 3, 64, 64))
    with pytest.raises(SadcError, match="--iou"):
        DeployModule(detector, PostProcess(iou_threshold=0.0))
    with pytest.raises(SadcError, match="--topk 10 < --max-det 20"):
        DeployModule(detector, PostProcess(max_detections=20, topk_candidates=10))


# ------------------------------------------------------------------------------ ONNX contract


def test_onnx_contract_in_plain_onnxruntime(exported):
    model = onnx.load(str(exported))
    assert any(n.op_type == "NonMaxSuppression" for n in model.graph.node)
    assert not any(n.op_type in ("Pad", "Floor") for n in model.graph.node)  # TensorRT-hostile preprocessing
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("images", "tensor(uint8)", ["batch", 3, 64, 64])
    got = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    assert list(got) == list(OUTPUT_NAMES)
    assert got == {
        "num_dets": ("tensor(int32)", ["batch", 1]),
        "boxes": ("tensor(float)", ["batch", K, 4]),
        "scores": ("tensor(float)", ["batch", K]),
        "labels": ("tensor(int32)", ["batch", K]),
    }


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_onnx_matches_eager_torch(exported, detector, batch):
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    images = _images(batch, seed=batch)
    outs = session.run(None, {"images": images.numpy()})
    assert [o.dtype for o in outs] == [np.int32, np.float32, np.float32, np.int32]
    module = DeployModule(detector, THRESHOLDS)
    with torch.no_grad():
        ref = [r.numpy() for r in module(images)]
    assert outs[0].shape == (batch, 1) and (outs[0] > 0).all()
    np.testing.assert_array_equal(outs[0], ref[0])
    np.testing.assert_array_equal(outs[3], ref[3])
    np.testing.assert_allclose(outs[2], ref[2], atol=1e-4)
    np.testing.assert_allclose(outs[1], ref[1], atol=1e-3)


def test_raw_export_shapes_and_values(exported_raw, detector):
    session = ort.InferenceSession(str(exported_raw), providers=["CPUExecutionProvider"])
    images = _images(2)
    scores, boxes = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        out = detector.dense(detector.preprocess(images))
        ref_scores, ref_boxes = detector.decode(out)
    a = out.anchors.shape[0]
    assert [o.name for o in session.get_outputs()] == ["scores", "boxes"]
    assert [o.shape for o in session.get_outputs()] == [["batch", a, 3], ["batch", a, 4]]
    assert scores.shape == (2, a, 3) and boxes.shape == (2, a, 4)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-3)
    assert read_sidecar(exported_raw)["format"] == "onnx-raw"


# ------------------------------------------------------------------------------ sidecars


def test_sidecar_content(exported, checkpoint, detector):
    from sadc import __version__
    from sadc.artefacts.files import file_sha256

    side = read_sidecar(exported)
    assert sidecar_path(exported).name == "best.onnx.json"
    assert side["format"] == "onnx" and side["sadc_version"] == __version__ and side["opset"] == 17
    assert side["spec"] == detector.spec.model_dump(mode="json")
    assert side["class_names"] == ["a", "b", "c"] and side["input_size"] == [64, 64]
    assert side["mean"] == list(detector.spec.mean) and side["std"] == list(detector.spec.std)
    assert side["source"] == {"checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint)}
    assert side["sha256"] == file_sha256(exported)
    assert side["output_names"] == list(OUTPUT_NAMES)
    assert side["outputs"]["boxes"] == {"dtype": "float32", "shape": ["batch", K, 4]}
    assert side["thresholds"] == THRESHOLDS.to_json()


def test_read_sidecar_errors(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(
        SadcError,
        match=r"m\.onnx\.json not found and the file holds no sadc metadata: not a sadc export\? re-export with sadc export",
    ):
        read_sidecar(model)
    sidecar_path(model).write_text("{not json")
    with pytest.raises(SadcError, match="unreadable sidecar"):
        read_sidecar(model)
    sidecar_path(model).write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(SadcError, match="sidecar lacks spec"):
        read_sidecar(model)
    sidecar_path(model).write_text(json.dumps({"sidecar_version": 99}))
    with pytest.raises(SadcError, match="newer than this sadc"):
        read_sidecar(model)


# ------------------------------------------------------------------------------ parity


def test_parity_passes_on_the_export(exported, detector):
    report = run_parity(detector, exported, images=_images(6))
    assert report.passed, report.summary()
    assert report.n_torch > 0 and report.match_rate == 1.0
    assert set(report.raw_max_abs_diff) == {"scores", "boxes"}
    assert report.raw_max_abs_diff["scores"] < 1e-4 and report.raw_max_abs_diff["boxes"] < 1e-3  # px
    report.raise_if_failed()
    assert ParityTolerance().limit("boxes", 640) == pytest.approx(0.64) and ParityTolerance().limit("scores", 640) == 1e-3


def test_parity_catches_a_different_torch_model(exported, detector):
    from sadc.export.onnx import onnx_bytes

    other = confident(build_detector(_tiny_spec()))  # same architecture, other weights
    raw_session = ort_session(onnx_bytes(DeployModule(detector, raw=True)))
    report = check_parity(
        DeployModule(other, THRESHOLDS),
        ort_session(exported),
        _images(4),
        raw_reference=DeployModule(other, raw=True),
        raw_session=raw_session,
    )
    assert not report.passed and report.match_rate < 0.5
    assert report.raw_max_abs_diff["scores"] > 1e-2 and len(report.failures()) == 3  # match rate, scores, boxes
    with pytest.raises(ParityError, match=r"match rate 0\.\d+ < 0\.99; raw scores max abs diff"):
        report.raise_if_failed()


def test_parity_catches_perturbed_onnx_weights(exported, detector):
    model = onnx.load(str(exported))
    for init in model.graph.initializer:  # perturb every conv weight of the box regression head
        if "regression_head" in init.name and init.name.endswith("weight"):
            w = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(w + 0.05 * np.sign(w), init.name))
    report = check_parity(DeployModule(detector, THRESHOLDS), ort_session(model.SerializeToString()), _images(4))
    assert report.n_torch > 0 and report.match_rate < 0.5
    assert "match rate" in report.failures()[0]


def test_parity_fcos_export(tmp_path):
    """FCOS ranks by sqrt(cls * centerness) and its random boxes are often zero-area."""
    torch.manual_seed(1)
    spec = DetectorSpec(arch="fcos", backbone="tiny", fpn_channels=64, class_names=["a", "b"], input_size=(64, 96))
    fcos = confident(build_detector(spec), bias=2.0)
    path = export_onnx(fcos, tmp_path / "fcos.onnx", simplify=False, post=THRESHOLDS)
    report = run_parity(fcos, path, images=parity_images(spec, n=4))
    assert report.passed and report.n_torch > 0, report.summary()


def test_parity_batchnorm_detector_stays_in_eval(tmp_path):
    """BatchNorm (running statistics) must survive torch.onnx.export's train-mode restore."""
    from sadc.export.onnx import onnx_bytes

    torch.manual_seed(2)
    spec = _tiny_spec().model_copy(update={"head_norm": "batch"})
    model = confident(build_detector(spec))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial running statistics
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    module = DeployModule(model, raw=True)
    onnx_bytes(module)
    assert not module.training and not module.detector.training
    path = export_onnx(model, tmp_path / "bn.onnx", simplify=False, post=THRESHOLDS)
    report = run_parity(model, path, images=_images(4))
    assert report.passed and report.n_torch > 0, report.summary()


def test_level_batch_head_folds_into_the_convs(tmp_path):
    """head_norm: level_batch: the export folds each level's BatchNorm into a Conv of that level's own."""
    torch.manual_seed(6)
    model = confident(build_detector(_tiny_spec().model_copy(update={"head_norm": "level_batch"})))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # each level with statistics of its own
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = export_onnx(model, tmp_path / "lb.onnx", simplify=False, post=THRESHOLDS)
    graph = onnx.load(str(path)).graph
    assert not [n.name for n in graph.node if n.op_type == "BatchNormalization"]
    tower_weights = {n.input[1] for n in graph.node if n.op_type == "Conv" and "/head/" in n.name and "/conv/" in n.name}
    assert len(tower_weights) == 2 * 4 * 5  # 2 branches x 4 convs x 5 levels: one folded weight each
    report = run_parity(model, path, images=_images(4))
    assert report.passed and report.n_torch > 0, report.summary()


def test_match_counts_identical_zero_area_boxes():
    from sadc.export.parity import _match

    det = {
        "boxes": torch.tensor([[10.0, 5.0, 10.0, 9.0], [0.0, 0.0, 8.0, 8.0]]),
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.tensor([0, 1]),
    }
    assert _match(det, det, 0.99)[0] == 2
    other = {**det, "labels": torch.tensor([1, 1])}
    assert _match(det, other, 0.99)[0] == 1


def test_parity_images_from_folder(calib_dir, detector):
    images = parity_images(detector.spec, calib_dir, n=4)
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert parity_images(detector.spec, None, n=2).shape == (2, 3, 64, 64)


# ------------------------------------------------------------------------------ INT8


def _graph_index(model):
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producers, consumers


def test_int8_qdq_structure(quantized):
    model = onnx.load(str(quantized))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers, consumers = _graph_index(model)
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        x_dq, w_dq = producers.get(conv.input[0]), producers.get(conv.input[1])
        assert x_dq is not None and x_dq.op_type == "DequantizeLinear", conv.name
        assert w_dq is not None and w_dq.op_type == "DequantizeLinear", conv.name
        weight, scale, zero = (inits[name] for name in w_dq.input)
        assert weight.dtype == np.int8 and zero.dtype == np.int8 and not zero.any()
        axis = next(a.i for a in w_dq.attribute if a.name == "axis")
        assert axis == 0 and scale.shape == (weight.shape[0],)  # per output channel
        if len(conv.input) > 2:  # bias stays float for TensorRT
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
    for q in qs:  # activations: int8, symmetric
        scale, zero = inits[q.input[1]], inits[q.input[2]]
        assert zero.dtype == np.int8 and not zero.any() and scale.size == 1

    # Q/DQ only inside the network: every Q/DQ node, and every consumer of a DQ, still leads to a Conv.
    memo: dict[str, bool] = {}

    def leads_to_conv(node) -> bool:
        if node.name not in memo:
            memo[node.name] = False
            memo[node.name] = node.op_type == "Conv" or any(leads_to_conv(c) for o in node.output for c in consumers.get(o, []))
        return memo[node.name]

    assert all(leads_to_conv(n) for n in qs + dqs)
    assert all(leads_to_conv(c) for dq in dqs for c in consumers.get(dq.output[0], []))
    post = set(postprocess_nodes(model))
    assert any(n.op_type == "NonMaxSuppression" and n.name in post for n in model.graph.node)
    for node in model.graph.node:
        if node.name in post or node.op_type in ("Sigmoid", "Exp", "TopK", "NonMaxSuppression"):
            assert all(
                producers.get(i) is None or producers[i].op_type not in ("DequantizeLinear", "QuantizeLinear") for i in node.input
            )


def test_int8_cpu_target_is_u8s8_and_fuses_in_onnxruntime(exported, calib_dir, tmp_path):
    """--int8-target cpu: uint8 activations, int32 biases, Convs that ORT turns into QLinearConv."""
    import onnxruntime as ort

    path = quantize_int8(exported, tmp_path / "cpu.int8.onnx", calib_dir, n=6, batch=4, method="minmax", target="cpu")
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and all(inits[q.input[2]].dtype == np.uint8 for q in qs)
    producers, _ = _graph_index(model)
    biases = [producers[c.input[2]] for c in model.graph.node if c.op_type == "Conv" and len(c.input) > 2]
    assert biases and all(b.op_type == "DequantizeLinear" and inits[b.input[0]].dtype == np.int32 for b in biases)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert any(n.op_type == "QLinearConv" for n in optimized.graph.node)
    assert read_sidecar(path)["quantization"]["target"] == "cpu"
    with pytest.raises(SadcError, match="--int8-target gpu: choose one of tensorrt, cpu"):
        quantize_int8(exported, tmp_path / "x.int8.onnx", calib_dir, n=2, target="gpu")


def test_int8_cpu_target_folds_conv_relu(calib_dir, tmp_path):
    """--int8-target cpu: a Relu right after a Conv is folded into the Conv's quantized output.

    ResNet blocks (Conv+BN -> Relu -> Conv) then need no float Relu between a DQ and a Q;
    the TensorRT form keeps every Relu (TensorRT fuses them itself).
    """
    torch.manual_seed(4)
    spec = DetectorSpec(backbone="resnet10_half", fpn_channels=16, head_convs=1, class_names=["a"], input_size=(64, 64))
    fp32 = export_onnx(confident(build_detector(spec)), tmp_path / "r.onnx", post=THRESHOLDS)

    def relus_after(path: Path) -> Counter:
        graph = onnx.load(str(path)).graph
        producer = {out: node.op_type for node in graph.node for out in node.output}
        return Counter(
            # the FPN's P6 -> Relu -> P7: P6 also feeds the head, so its range stays its own
            "P6" if "extra_blocks" in n.name else producer.get(n.input[0], "input")
            for n in graph.node
            if n.op_type == "Relu"
        )

    quant = partial(quantize_int8, fp32, calib_images=calib_dir, n=4, batch=4, method="minmax")
    cpu, trt = quant(tmp_path / "cpu.int8.onnx", target="cpu"), quant(tmp_path / "trt.int8.onnx", target="tensorrt")
    assert relus_after(fp32)["Conv"] >= 5  # the stem and each block's first Conv
    assert relus_after(cpu)["DequantizeLinear"] == 0 and relus_after(cpu)["Conv"] == 0 and relus_after(cpu)["P6"] == 1
    assert sum(relus_after(trt).values()) == sum(relus_after(fp32).values())
    assert read_sidecar(cpu)["quantization"]["op_types"] == ["Conv", "ConvTranspose", "MatMul", "Gemm", "Relu"]
    assert "Relu" not in read_sidecar(trt)["quantization"]["op_types"]


def test_int8_runs_with_the_contract_and_sidecar(quantized, calib_dir):
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"images": _images(3).numpy()})
    assert [o.shape for o in outs] == [(3, 1), (3, K, 4), (3, K), (3, K)]
    side = read_sidecar(quantized)
    assert side["format"] == "onnx-int8" and side["thresholds"] == THRESHOLDS.to_json()
    q = side["quantization"]
    assert (q["method"], q["calibration_images"], q["calibration_batch"]) == ("minmax", 6, 4)
    assert q["calibration_source"] == str(calib_dir) and side["fp32_model"]["file"] == "best.onnx"


def test_calibration_reader_and_selection(calib_dir, tmp_path):
    paths = select_calibration_images(calib_dir, 3)
    assert len(paths) == 3 and len(set(paths)) == 3
    reader = CalibrationImages(paths, (64, 64), batch=2)
    batches = list(reader)
    assert len(reader) == 2 and [b["images"].shape for b in batches] == [(2, 3, 64, 64), (1, 3, 64, 64)]
    assert batches[0]["images"].dtype == np.uint8
    reader.set_range(1, 2)
    assert reader.get_next()["images"].shape[0] == 1 and reader.get_next() is None
    with pytest.raises(SadcError, match="no images found"):
        select_calibration_images(tmp_path, 4)


def test_quantize_refuses_bad_inputs(quantized, exported, calib_dir, tmp_path):
    with pytest.raises(SadcError, match="needs an fp32 graph"):
        quantize_int8(quantized, tmp_path / "x.int8.onnx", calib_dir)
    with pytest.raises(SadcError, match="--method magic"):
        quantize_int8(exported, tmp_path / "x.int8.onnx", calib_dir, method="magic")


def test_quantize_does_not_run_symbolic_shape_inference(exported, calib_dir, tmp_path, monkeypatch, caplog):
    """ORT's symbolic shape inference misreads the deploy graph's GatherND (it ignores
    batch_dims) and, when it fails, leaves a partial model in the working directory:
    quantization prepares the graph with ONNX's shape inference only, so a failing
    symbolic pass is never reached, and the user's folder stays clean."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    def fail(*args, **kwargs):
        Path("sym_shape_infer_temp.onnx").write_bytes(b"partial")  # what ORT does, in the cwd
        raise Exception("Incomplete symbolic shape inference")

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(fail))
    work = tmp_path / "work"
    work.mkdir()
    graph = work / "m.onnx"
    graph.write_bytes(exported.read_bytes())
    sidecar_path(graph).write_text(sidecar_path(exported).read_text())
    monkeypatch.chdir(work)
    out = quantize_int8(Path("m.onnx"), Path("m.int8.onnx"), calib_dir, n=2, batch=2, method="minmax")  # relative paths
    assert Path.cwd() == work and out.resolve() == work / "m.int8.onnx"
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["m.onnx", "m.onnx.json", "m.int8.onnx", "m.int8.onnx.json", "m.calib.json"]
    )
    assert "symbolic" not in caplog.text
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("Conv") > 0
    assert "GatherND" in ops


# ------------------------------------------------------------------------------ formats table


def test_formats_table_is_consistent(cli_app):
    names = [f.name for f in formats.FORMATS]
    assert len(set(names)) == len(names) and len({f.suffix for f in formats.FORMATS}) == len(names)
    command = typer.main.get_command(cli_app).commands["export"]
    cli_flags = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
    table_flags = {*formats.COMMON_OPTIONS, *(o for f in formats.FORMATS for o in f.options)}
    assert table_flags <= cli_flags, f"in the formats table but not flags of sadc export: {table_flags - cli_flags}"
    assert cli_flags - table_flags == {"--format"}, "a flag of sadc export that no format declares"
    assert [f.name for f in formats.FORMATS if f.needs_cuda] == ["engine"]
    from sadc.cli.export import Format

    assert [m.value for m in Format] == names


def test_docs_formats_section_is_current():
    text = (ROOT / "docs" / "export.md").read_text()
    assert formats.docs_section(text) == formats.formats_markdown(), "run: python -m sadc.export.formats --write docs/export.md"


def test_check_options_and_default_outputs():
    onnx_fmt, int8, engine = (formats.get_format(n) for n in ("onnx", "int8", "engine"))
    formats.check_options(engine, ["--half", "--max-batch", "--iou"])
    with pytest.raises(SadcError, match="--half does not apply to --format onnx; it applies to --format engine"):
        formats.check_options(onnx_fmt, ["--opset", "--half"])
    with pytest.raises(SadcError, match="--raw does not apply to --format int8"):
        formats.check_options(int8, ["--raw"])
    with pytest.raises(SadcError, match="unknown format"):
        formats.get_format("tflite")
    ckpt = Path("runs/x/best.pt")
    assert formats.default_output(ckpt, onnx_fmt) == Path("runs/x/best.onnx")
    assert formats.default_output(ckpt, onnx_fmt, raw=True) == Path("runs/x/best.raw.onnx")
    assert formats.default_output(ckpt, int8) == Path("runs/x/best.int8.onnx")
    assert formats.default_output(ckpt, engine) == Path("runs/x/best.engine")
    assert formats.sibling(Path("out/model.engine"), ".int8.onnx") == Path("out/model.int8.onnx")
    formats.check_output(int8, Path("m.int8.onnx"))
    formats.check_output(engine, Path("m.plan"))
    with pytest.raises(SadcError, match=r"ends in \.int8\.onnx"):
        formats.check_output(int8, Path("m.onnx"))  # would overwrite its own fp32 graph
    with pytest.raises(SadcError, match=r"an engine is not a \.onnx file"):
        formats.check_output(engine, Path("m.onnx"))


# ------------------------------------------------------------------------------ TensorRT (no GPU needed)


@pytest.mark.parametrize("bad", [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_batch_profile_validation(bad):
    with pytest.raises(SadcError, match="need 1 <= min <= opt <= max"):
        tensorrt.BatchProfile(*bad)


def test_batch_profile_shapes_and_trtexec():
    profile = tensorrt.BatchProfile(1, 4, 8)
    assert profile.shapes((64, 96)) == {"min": (1, 3, 64, 96), "opt": (4, 3, 64, 96), "max": (8, 3, 64, 96)}
    cmd = tensorrt.trtexec_command(
        Path("m.int8.onnx"), Path("m.engine"), precision="int8", profile=profile, input_size=(64, 96), workspace_gb=2
    )
    assert "--minShapes=images:1x3x64x96" in cmd and "--maxShapes=images:8x3x64x96" in cmd and "--stronglyTyped" in cmd


def test_precision_and_workspace_checks():
    tensorrt.check_precision("fp16", "onnx")
    tensorrt.check_precision("int8", "onnx-int8")
    with pytest.raises(SadcError, match="needs the QDQ graph"):
        tensorrt.check_precision("int8", "onnx")
    with pytest.raises(SadcError, match="builds only an int8 engine"):
        tensorrt.check_precision("fp16", "onnx-int8")
    with pytest.raises(SadcError, match="--workspace 0"):
        tensorrt.check_workspace(0)


def test_engine_sidecar_content(exported, tmp_path):
    side = tensorrt.engine_sidecar(
        read_sidecar(exported),
        onnx_path=exported,
        engine_path=tmp_path / "best.engine",
        precision="fp16",
        profile=tensorrt.BatchProfile(1, 2, 4),
        workspace_gb=2.0,
        tensorrt_version="10.9.0",
        gpu="NVIDIA A10",
        compute_capability="8.6",
        timing_cache=None,
    )
    trt = side["tensorrt"]
    assert side["format"] == "tensorrt" and side["class_names"] == ["a", "b", "c"] and side["onnx"]["format"] == "onnx"
    assert (trt["version"], trt["gpu"], trt["precision"]) == ("10.9.0", "NVIDIA A10", "fp16")
    assert trt["profile"]["images"] == {"min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}
    assert "GPU model and TensorRT version" in trt["note"]


def _tensorrt_ready() -> bool:
    try:
        tensorrt.import_tensorrt()
    except SadcError:
        return False
    return True


@pytest.mark.skipif(_tensorrt_ready(), reason="tensorrt and a CUDA GPU are present: the error path cannot happen")
def test_build_engine_without_tensorrt_fails_cleanly(exported, tmp_path):
    with pytest.raises(
        SadcError, match=r"TensorRT export needs tensorrt>=10 and a CUDA GPU: on a CUDA machine pip install 'sadc\[gpu\]'"
    ):
        tensorrt.build_engine(exported, tmp_path / "best.engine", precision="fp32")
    with pytest.raises(SadcError, match="need 1 <= min <= opt <= max"):  # arguments are checked first
        tensorrt.build_engine(exported, tmp_path / "best.engine", min_batch=4, opt_batch=2)


@pytest.mark.tensorrt
@pytest.mark.skipif(not _tensorrt_ready(), reason="needs tensorrt>=10 and a CUDA GPU (pip install 'sadc[gpu]' on a CUDA machine)")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_engine_on_gpu(exported, quantized, tmp_path, precision):
    source = quantized if precision == "int8" else exported
    cache = tmp_path / "timing.cache"
    engine = tensorrt.build_engine(
        source, tmp_path / "best.engine", precision=precision, max_batch=8, opt_batch=2, workspace_gb=1, timing_cache=cache
    )
    assert engine.stat().st_size > 0 and cache.stat().st_size > 0
    assert read_sidecar(engine)["tensorrt"]["precision"] == precision


# ------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def cli_app():
    from sadc.cli import export as export_cli

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so that the command is invoked by name as in `sadc export`
    app.command("export")(export_cli.export)
    return app


@pytest.fixture(scope="module")
def cli():
    return partial(invoke, "export")


def test_cli_exports_onnx_with_parity(cli, checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    result = cli(checkpoint, "--out", out, "--no-simplify", "--max-det", 10)
    assert result.exit_code == 0, result.output
    assert "parity: onnx vs torch" in result.output and out.is_file()
    assert read_sidecar(out)["thresholds"]["max_detections"] == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--half"], "--half does not apply to --format onnx"),
        (["-f", "int8"], "--format int8 needs --calib DIR"),
        (["-f", "engine", "--min-batch", "4", "--opt-batch", "2"], "need 1 <= min <= opt <= max"),
        (["--iou", "0"], "--iou 0.0: must be in (0, 1]"),
    ],
)
def test_cli_rejects_bad_flags(cli, checkpoint, args, message):
    result = cli(checkpoint, *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_counts_a_flag_given_at_its_default_value(cli, checkpoint):
    """Which flags were given comes from Click's parameter sources, not from the values."""
    result = cli(checkpoint, "--calib-images", 64)  # 64 is the default: still not a flag of --format onnx
    assert result.exit_code == 2 and "--calib-images does not apply to --format onnx" in result.output, result.output


def test_python_pipeline_writes_the_cli_artefact(cli, checkpoint, tmp_path):
    """export_checkpoint from Python and `sadc export` are one pipeline: same bytes, same sidecar."""
    from sadc.export.pipeline import ExportOptions, export_checkpoint

    by_cli = tmp_path / "cli" / "m.onnx"
    by_cli.parent.mkdir()
    result = cli(checkpoint, "--out", by_cli, "--no-simplify", "--no-parity", "--max-det", 10, "--conf", 0.2)
    assert result.exit_code == 0, result.output
    options = ExportOptions(out=tmp_path / "py" / "m.onnx", simplify=False, parity=False, max_detections=10, score_threshold=0.2)
    done = export_checkpoint(checkpoint, "onnx", options)
    assert done.written == [options.out] and done.parity == []
    assert options.out.read_bytes() == by_cli.read_bytes()
    ours, theirs = read_sidecar(options.out), read_sidecar(by_cli)
    assert ours["thresholds"] == theirs["thresholds"] == PostProcess(score_threshold=0.2, max_detections=10).to_json()
    assert ours["sha256"] == theirs["sha256"] and ours["source"] == theirs["source"]


def test_python_pipeline_refuses_options_of_other_formats(checkpoint, tmp_path):
    from sadc.export.pipeline import ExportOptions, export_checkpoint

    assert ExportOptions(half=True, simplify=False, calib_images=64).changed_flags() == ["--no-simplify", "--half"]
    with pytest.raises(SadcError, match="--half does not apply to --format onnx; it applies to --format engine"):
        export_checkpoint(checkpoint, "onnx", ExportOptions(out=tmp_path / "m.onnx", half=True))
    with pytest.raises(SadcError, match="--format int8 needs --calib DIR"):
        export_checkpoint(checkpoint, "int8", ExportOptions(out=tmp_path / "m.int8.onnx"))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"score_threshold": -0.1}, "--conf -0.1: must be in [0, 1]"),
        ({"score_threshold": 1.5}, "--conf 1.5: must be in [0, 1]"),
        ({"iou_threshold": 0.0}, "--iou 0.0: must be in (0, 1]"),
        ({"max_detections": 0}, "--max-det 0: must be at least 1"),
        ({"max_detections": 50, "topk_candidates": 10}, "--topk 10 < --max-det 50"),
    ],
)
def test_postprocess_errors_name_the_flag(fields, message):
    with pytest.raises(SadcError) as err:
        PostProcess(**fields)
    assert str(err.value).startswith(message)


def test_postprocess_reads_the_sidecar_thresholds_written_so_far():
    # The serialized form of sidecars written before PostProcess existed (key order, extra keys).
    old = {"max_detections": 20, "topk_candidates": 200, "iou_threshold": 0.6, "score_threshold": 0.1, "note": "ignored"}
    post = PostProcess.from_json(old)
    assert post == PostProcess(score_threshold=0.1, iou_threshold=0.6, max_detections=20, topk_candidates=200)
    assert PostProcess.from_json(post.to_json()) == post
    assert set(post.to_json()) == set(old) - {"note"}


@pytest.mark.skipif(_tensorrt_ready(), reason="tensorrt and a CUDA GPU are present")
def test_cli_engine_without_tensorrt_exits_2(cli, checkpoint, tmp_path):
    result = cli(checkpoint, "-f", "engine", "--out", tmp_path / "m.engine")
    assert result.exit_code == 2 and "TensorRT export needs tensorrt>=10 and a CUDA GPU" in result.output
    assert not (tmp_path / "m.onnx").exists()  # failed before spending time on the ONNX export


def test_cli_int8_with_val_reports_and_enforces_map_drop(cli, tiny_world, tmp_path, monkeypatch):
    """Real fp32/INT8 mAP on the synthetic val set, then a pretend 0.2 drop must fail --max-map-drop
    and leave the INT8 file marked unverified in its sidecar."""
    from sadc.export import gate

    torch.manual_seed(0)
    ckpt = save_detector(tmp_path / "best.pt", build_detector(tiny_spec()), step=0)
    real = gate.map_scores

    def worse(*args, **kwargs):
        scores = real(*args, **kwargs)
        assert set(scores) == {"reference", "artefact"} and "mAP" in scores["artefact"]
        return {**scores, "artefact": {**scores["artefact"], "mAP": scores["reference"]["mAP"] - 0.2}}

    monkeypatch.setattr(gate, "map_scores", worse)
    args = ["-f", "int8", "--calib", tiny_world / "unlabeled", "--calib-images", 8, "--val", tiny_world / "val.json"]
    result = cli(ckpt, *args, "--max-map-drop", 0.1, "--no-simplify", "--no-parity")
    assert result.exit_code == 2, result.output
    assert "INT8 ONNX accuracy on" in result.output and "(--max-map-drop 0.1)" in result.output
    side = read_sidecar(tmp_path / "best.int8.onnx")
    assert side["format"] == "onnx-int8" and side["verification"]["status"] == "failed"
    assert side["verification"]["map"]["change"] == pytest.approx(-0.2)
    assert read_sidecar(tmp_path / "best.onnx")["verification"]["status"] == "not checked"


def test_calibration_skips_unreadable_images_and_fails_when_none_read(exported, calib_dir, tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(calib_dir, mixed)
    (mixed / "broken.jpg").write_bytes(b"not an image")
    out = quantize_int8(exported, tmp_path / "m.int8.onnx", mixed, n=100, batch=4, method="minmax")
    assert [Path(p).name for p in read_sidecar(out)["quantization"]["calibration_skipped"]] == ["broken.jpg"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(SadcError, match=r"--calib .*bad: none of the 3 image files can be read"):
        quantize_int8(exported, tmp_path / "b.int8.onnx", bad, n=3, batch=2, method="minmax")
