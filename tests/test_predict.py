"""sadc predict: boxes drawn in original-image coordinates, COCO results, input expansion."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sadc.data.images import load_image
from sadc.errors import SadcError
from sadc.models.spec import DetectorSpec
from sadc.runtime.annotate import draw_detections
from sadc.runtime.base import host_work
from sadc.runtime.inputs import expand_inputs
from sadc.runtime.predict import predict_files, predict_images
from tests.helpers import invoke, save_tiny_checkpoint, tensorrt_runs_here


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("predict") / "best.pt", bias=0.5)


@pytest.fixture(scope="module")
def images(tiny_world, tmp_path_factory) -> Path:
    """Six synthetic val images, two of them resized to non-square sizes (real letterbox padding)."""
    folder = tmp_path_factory.mktemp("images")
    for i, src in enumerate(sorted((tiny_world / "val").glob("*.png"))[:6]):
        img = Image.open(src).convert("RGB")
        if i in (1, 4):
            img = img.resize((150, 90) if i == 1 else (70, 120))
        img.save(folder / src.name)
    return folder


def test_predict_draws_boxes_on_the_originals(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    result = invoke("predict", checkpoint, images, "--out", out, "--conf", "0.3", "--batch", "4")
    assert result.exit_code == 0, result.output
    sources = sorted(images.glob("*.png"))
    for src in sources:
        assert (out / src.name).is_file(), src.name
        assert Image.open(out / src.name).size == Image.open(src).size

    detections = json.loads((out / "detections.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score", "file_name"} <= set(detections[0])
    assert all(d["score"] >= 0.3 for d in detections)
    for d in detections:  # every box lies inside its original image (xywh, original px)
        w, h = Image.open(images / d["file_name"]).size
        x, y, bw, bh = d["bbox"]
        assert x >= 0 and y >= 0 and bw >= 0 and bh >= 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3

    # Pixels changed on the outline of a drawn box, in original coordinates.
    first = max(detections, key=lambda d: d["bbox"][2] * d["bbox"][3])
    before, after = pixels(images / first["file_name"]), pixels(out / first["file_name"])
    x, y, bw, bh = first["bbox"]
    x1, y1 = int(np.clip(round(x), 0, after.shape[1] - 1)), int(np.clip(round(y), 0, after.shape[0] - 1))
    y2 = int(np.clip(round(y + bh), 0, after.shape[0] - 1))  # the left edge, from y1 to y2
    left_edge = np.abs(after[y1 : y2 + 1, max(x1 - 1, 0) : x1 + 2] - before[y1 : y2 + 1, max(x1 - 1, 0) : x1 + 2])
    assert left_edge.sum(axis=-1).max() > 0

    # detections.json is a COCO results file: image ids and names follow the input order,
    # which for the synthetic world are its val.json ids, so COCOeval loads it as is.
    from pycocotools.coco import COCO

    gt_json = {
        "images": [
            {"id": i + 1, "file_name": p.name, "width": Image.open(p).size[0], "height": Image.open(p).size[1]}
            for i, p in enumerate(sources)
        ],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(["circle", "square", "triangle", "cross", "ring"])],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_json
        gt.createIndex()
        dt = gt.loadRes(detections)
    assert len(dt.getAnnIds()) == len(detections)
    names = {img["id"]: img["file_name"] for img in gt_json["images"]}
    assert all(names[d["image_id"]] == d["file_name"] for d in detections)


class FixedPredictor:
    """A Predictor that finds one box [16, 16, 48, 48] (input px) in every 64x64 input."""

    spec = DetectorSpec(backbone="tiny", fpn_channels=16, class_names=["a", "b"], input_size=(64, 64))
    name = "fixed"
    path = Path("fixed.pt")

    def predict(self, images):
        box = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
        return [{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])} for _ in images]


def test_boxes_map_back_through_the_letterbox_and_are_drawn_there():
    image = torch.full((3, 128, 64), 40, dtype=torch.uint8)  # H 128, W 64: scale 0.5, pad_x 16
    (det,) = predict_images(FixedPredictor(), [image])
    torch.testing.assert_close(det["boxes"], torch.tensor([[0.0, 32.0, 64.0, 96.0]]))
    drawn = draw_detections(image, det, FixedPredictor.spec.class_names)
    assert drawn.shape == image.shape and drawn.dtype == torch.uint8
    changed = (drawn != image).any(dim=0)
    assert changed[64, 0] and changed[32, 32] and changed[95:97, 32].any()  # left, top, bottom edge (PIL: inclusive)
    assert not changed[64, 32] and not changed[110, 32]  # inside the box and below it
    assert torch.equal(image, torch.full((3, 128, 64), 40, dtype=torch.uint8))  # the original is untouched


class ThreadsSeen(FixedPredictor):
    """FixedPredictor that records torch's thread count while its model runs (``torch_cpu``: as given)."""

    def __init__(self, torch_cpu: bool | None):
        if torch_cpu is not None:
            self.torch_cpu = torch_cpu
        self.seen: list[int] = []

    def predict(self, images):
        self.seen.append(torch.get_num_threads())
        return super().predict(images)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("torch_cpu", "inside"), [(None, 1), (False, 1), (True, 2)])
def test_host_work_runs_on_one_torch_thread_beside_another_runtime(two_threads, torch_cpu, inside, tmp_path):
    """ORT/TensorRT-like predictors (and ones that do not say) get torch's host-side work on one thread, so
    torch's spinning OpenMP workers do not take the cores from the runtime; a torch CPU model keeps its pool."""
    predictor = ThreadsSeen(torch_cpu)
    predict_images(predictor, [torch.zeros(3, 64, 64, dtype=torch.uint8)])
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(path)
    predict_files(predictor, [path])
    assert predictor.seen == [inside, inside]
    assert torch.get_num_threads() == 2  # restored
    with pytest.raises(RuntimeError, match="boom"), host_work(predictor):
        assert torch.get_num_threads() == inside
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2  # restored after an error too


def test_accuracy_runs_its_loop_on_one_torch_thread_beside_another_runtime(two_threads, tiny_world, tiny_spec):
    from sadc.runtime.accuracy import predictor_accuracy

    predictor = ThreadsSeen(False)
    predictor.spec = tiny_spec  # the world's classes at 64 px
    metrics = predictor_accuracy(predictor, tiny_world / "val.json", tiny_world / "val", batch_size=8)
    assert predictor.seen == [1, 1] and metrics  # 16 val images in two batches
    assert torch.get_num_threads() == 2


def test_torch_predictor_says_whether_it_uses_torchs_cpu_threads(checkpoint):
    from sadc.runtime.torch_rt import TorchPredictor

    assert TorchPredictor(checkpoint).torch_cpu is True


def test_torch_predictor_runs_channels_last_on_the_cpu_with_the_same_detections(checkpoint, tiny_world):
    """channels_last is oneDNN's faster layout on CPUs; the detections must not depend on it."""
    from sadc.runtime.torch_rt import TorchPredictor

    def layout(predictor) -> bool:
        conv = next(m for m in predictor.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        return conv.weight.is_contiguous(memory_format=torch.channels_last)

    default, nchw = TorchPredictor(checkpoint), TorchPredictor(checkpoint, channels_last=False)
    assert default.channels_last and layout(default) and not nchw.channels_last and not layout(nchw)
    images = torch.stack([load_image(path) for path in sorted((tiny_world / "val").glob("*.png"))[:4]])
    for a, b in zip(default.predict(images), nchw.predict(images), strict=True):
        assert a["labels"].tolist() == b["labels"].tolist() and len(a["boxes"]) > 0
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=1e-4)


def test_expand_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "x.png")
    (tmp_path / "notes.txt").write_text("hi")
    inputs, many = expand_inputs([str(tmp_path / "a" / "x.png"), str(tmp_path / "b")])
    assert [i.name for i in inputs] == ["x.png", "x_1.png"] and many
    inputs, many = expand_inputs([str(tmp_path / "*" / "*.png")])
    assert len(inputs) == 2 and many
    for bad, message in (
        (tmp_path / "nope.png", "no such file or folder"),
        (tmp_path / "notes.txt", "not an image file"),
        (tmp_path / "*.jpg", "matches no image files"),
    ):
        with pytest.raises(SadcError, match=message):
            expand_inputs([str(bad)])


def test_predict_errors_are_one_line(checkpoint, images, tmp_path):
    result = invoke("predict", checkpoint, tmp_path / "missing", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "missing: no such file or folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = invoke("predict", checkpoint, images, "--out", tmp_path / "o", "--conf", "1.5")
    assert result.exit_code == 2 and "--conf 1.5" in result.output


def test_predict_with_an_engine_fails_cleanly(checkpoint, images, tmp_path):
    if tensorrt_runs_here():
        pytest.skip("TensorRT and CUDA are present: the clean failure cannot happen")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    result = invoke("predict", engine, images, "--out", tmp_path / "o", "--device", "cuda")
    assert result.exit_code == 2 and "m.engine.json not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
