import pytest
import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

from sadc.artefacts.postprocess import PostProcess
from sadc.errors import SadcError
from sadc.models.backbones import build_backbone, list_backbones, register_backbone
from sadc.models.detector import build_detector
from sadc.models.loading import load_detector
from sadc.models.spec import DetectorSpec
from sadc.models.torchvision_zoo import torchvision_spec

FCOS_SIZES = [[8.0], [16.0], [32.0], [64.0], [128.0]]


@pytest.mark.parametrize("backbone", list_backbones())
def test_backbones_give_five_levels(backbone):
    net = build_backbone(backbone, 16).eval()
    with torch.no_grad():
        feats = list(net(torch.zeros(1, 3, 64, 64)).values())
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert {f.shape[1] for f in feats} == {16}


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny")(lambda c, p: None)


@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
@pytest.mark.parametrize("backbone", ["tiny", "resnet18", "mobilenet_v3_large"])
def test_every_architecture_trains_and_detects(arch, backbone):
    spec = DetectorSpec(
        arch=arch,
        backbone=backbone,
        fpn_channels=64 if arch == "fcos" else 16,
        class_names=["a", "b", "c"],
        input_size=(64, 96),
        anchor_sizes=FCOS_SIZES if arch == "fcos" else [[8.0, 11.0], [16.0, 22.0], [32.0, 45.0], [64.0, 90.0], [128.0, 181.0]],
    )
    model = build_detector(spec).train()
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    out = model.dense(model.preprocess(images))
    locations = 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2 + 1 * 1
    a = locations * spec.anchors_per_location
    assert out.cls_logits.shape == (2, a, 3)
    assert out.bbox_regression.shape == (2, a, 4)
    assert out.anchors.shape == (a, 4)
    assert sum(out.num_anchors_per_level) == a
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model.loss(out, targets)
    assert set(losses) == ({"cls", "box", "ctr"} if arch == "fcos" else {"cls", "box"})
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    dets = model(images, PostProcess(score_threshold=0.0, max_detections=7))
    assert len(dets) == 2 and dets[0]["boxes"].shape == (7, 4)
    assert (dets[0]["boxes"][:, 2:] <= torch.tensor([96.0, 64.0])).all() and (dets[0]["boxes"] >= 0).all()


def test_detect_matches_torchvision_postprocess():
    """sadc's decode + batched NMS equals torchvision's own RetinaNet post-processing."""
    torch.manual_seed(0)
    spec = DetectorSpec(backbone="tiny", fpn_channels=16, class_names=["a", "b"], input_size=(64, 64))
    model = build_detector(spec).eval()
    with torch.no_grad():
        head = model.net.head.classification_head.cls_logits
        head.bias.fill_(0.5)  # confident, so there is something to suppress
        x = model.preprocess(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
        out = model.dense(x)
        ours = model.detect(out, PostProcess(score_threshold=0.05, iou_threshold=0.5, max_detections=50, topk_candidates=10_000))
        feats = list(model.net.backbone(x).values())
        anchors = model.net.anchor_generator(ImageList(x, [(64, 64)] * 2), feats)
        split = {k: list(v.split(out.num_anchors_per_level, dim=1)) for k, v in out.head_outputs().items()}
        split_anchors = [list(a.split(out.num_anchors_per_level)) for a in anchors]
        model.net.score_thresh, model.net.nms_thresh, model.net.detections_per_img = 0.05, 0.5, 50
        model.net.topk_candidates = 10_000
        ref = model.net.postprocess_detections(split, split_anchors, [(64, 64)] * 2)
    for o, r in zip(ours, ref, strict=True):
        assert len(o["scores"]) == len(r["scores"]) > 0
        torch.testing.assert_close(o["scores"], r["scores"])
        torch.testing.assert_close(o["boxes"], r["boxes"])
        assert torch.equal(o["labels"], r["labels"])


@pytest.mark.slow
def test_torchvision_spec_and_state_dict_round_trip(tmp_path):
    """A torchvision COCO architecture loads from a plain state-dict file (no download)."""
    spec = torchvision_spec("torchvision:retinanet_resnet50_fpn_v2", (256, 256))
    assert spec.num_classes == 91 and spec.class_names[1] == "person" and len(set(spec.class_names)) == 91
    assert spec.anchors_per_location == 9
    net = torchvision.models.get_model("retinanet_resnet50_fpn_v2", weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / "tv.pth"
    torch.save(net.state_dict(), path)
    model = load_detector(spec, str(path))
    assert torch.equal(model.net.head.classification_head.cls_logits.weight, net.head.classification_head.cls_logits.weight)
    out = model.dense(model.preprocess(torch.zeros(1, 3, 256, 256, dtype=torch.uint8)))
    assert out.cls_logits.shape[-1] == 91


def test_state_dict_for_wrong_architecture_fails_clearly(tmp_path, tiny_spec):
    path = tmp_path / "other.pth"
    torch.save(build_detector(tiny_spec.model_copy(update={"fpn_channels": 8})).state_dict(), path)
    with pytest.raises(SadcError, match=r"other\.pth: weights do not fit the architecture"):
        load_detector(tiny_spec, str(path))
    with pytest.raises(SadcError, match="model source not found"):
        load_detector(tiny_spec, str(tmp_path / "nope.pt"))
    with pytest.raises(SadcError, match="not a supported torchvision detector"):
        load_detector(tiny_spec, "torchvision:yolo")


@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
def test_head_convs_shortens_both_towers_only(arch):
    c = 64
    kw = dict(arch=arch, backbone="tiny", fpn_channels=c, class_names=["a", "b"], anchor_sizes=FCOS_SIZES)
    full, light = build_detector(DetectorSpec(**kw)), build_detector(DetectorSpec(**kw, head_convs=2))

    def tower_convs(model):
        heads = (model.net.head.classification_head, model.net.head.regression_head)
        return [sum(isinstance(m, torch.nn.Conv2d) for m in h.conv.modules()) for h in heads]

    assert tower_convs(full) == [4, 4] and tower_convs(light) == [2, 2]
    # the same outputs (shapes) from a lighter model; the backbone is untouched
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    a, b = full.dense(full.preprocess(x)), light.dense(light.preprocess(x))
    assert a.cls_logits.shape == b.cls_logits.shape and a.bbox_regression.shape == b.bbox_regression.shape
    # one tower conv: 3x3 weights, a bias in FCOS only (RetinaNet's conv feeds its norm), GroupNorm's affine
    per_conv = c * c * 9 + (c if arch == "fcos" else 0) + 2 * c
    removed = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in light.parameters())
    assert removed == 2 * 2 * per_conv  # two convs from each of the two towers
    assert full.net.backbone.state_dict().keys() == light.net.backbone.state_dict().keys()


def test_head_convs_is_validated():
    with pytest.raises(ValueError, match="head_convs"):
        DetectorSpec(head_convs=0)
    assert DetectorSpec().head_convs == 4  # checkpoints written before the field load as before


def test_level_batch_head_normalises_each_level_on_its_own(tiny_spec):
    """head_norm: level_batch equals, level by level, torchvision's BatchNorm head holding that level's norms."""
    from torchvision.models.detection.retinanet import RetinaNetHead

    from sadc.models.detector import LevelBatchNorm

    torch.manual_seed(5)
    spec = tiny_spec.model_copy(update={"head_norm": "level_batch", "head_convs": 2})
    detector = build_detector(spec).train()
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    features = list(detector.net.backbone(detector.preprocess(images)).values())
    with torch.no_grad():
        detector.net.head(features)  # one training pass: each level's statistics from its own features
    norms = [m for m in detector.net.head.modules() if isinstance(m, LevelBatchNorm)]
    assert len(norms) == 4 and all(len(m.norms) == len(features) == 5 for m in norms)
    for m in norms:
        assert all(int(bn.num_batches_tracked) == 1 for bn in m.norms)
        assert not torch.allclose(m.norms[0].running_var, m.norms[4].running_var)
    detector.eval()
    with torch.no_grad():
        out = detector.net.head(features)
        sizes = [f.shape[-2] * f.shape[-1] * spec.anchors_per_location for f in features]
        for level, rows in enumerate(zip(out["cls_logits"].split(sizes, 1), out["bbox_regression"].split(sizes, 1))):
            plain = RetinaNetHead(spec.fpn_channels, spec.anchors_per_location, spec.num_classes, torch.nn.BatchNorm2d)
            for branch in (plain.classification_head, plain.regression_head):
                branch.conv = torch.nn.Sequential(*list(branch.conv)[:2])
            state = {
                k.replace(f"norms.{level}.", ""): v
                for k, v in detector.net.head.state_dict().items()
                if "norms." not in k or f"norms.{level}." in k
            }
            plain.load_state_dict(state)
            ref = plain.eval()([features[level]])
            torch.testing.assert_close(rows[0], ref["cls_logits"], rtol=0, atol=0)
            torch.testing.assert_close(rows[1], ref["bbox_regression"], rtol=0, atol=0)
