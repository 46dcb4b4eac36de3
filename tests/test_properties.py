"""Property-based tests (hypothesis): invariants over inputs nobody would think to write down.

Box coding round trips through the detector's own decode, letterbox geometry and its
inverse, recipe overrides (and arbitrary recipe data: only RecipeError may come out),
and the distillation losses' invariants the example tests in test_losses.py do not
already pin down (the authors' form, the criterion with masks and normalisers).
"""

from __future__ import annotations

import math
import string

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sadc.data.transforms import (
    TrainTransform,
    boxes_from_letterbox,
    boxes_to_letterbox,
    letterbox,
)
from sadc.distill.losses import (
    adaptive_distillation_loss,
    distillation_loss,
    sigmoid_kl_loss,
)
from sadc.models.detector import DenseOutput, build_detector
from sadc.models.spec import DetectorSpec
from sadc.recipe import Recipe, RecipeError, parse_override, recipe_from_dict

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ box coding


@pytest.fixture(scope="module")
def detectors() -> dict[str, object]:
    spec = dict(
        backbone="tiny", class_names=["a", "b"], input_size=(64, 64), anchor_sizes=[[8.0], [16.0], [32.0], [64.0], [128.0]]
    )
    return {
        "retinanet": build_detector(DetectorSpec(arch="retinanet", fpn_channels=16, **spec)).eval(),
        "fcos": build_detector(DetectorSpec(arch="fcos", fpn_channels=64, **spec)).eval(),
    }


@st.composite
def anchors_and_boxes(draw, n: int = 16):
    """xyxy float64 anchors [n, 4] and boxes [n, 4] within the coder's range.

    RetinaNet's BoxCoder clamps log-size deltas at log(1000/16), so a box is at most
    ~60x its anchor's size; centres are within a few anchor sizes.
    """
    floats = st.floats(0.0, 1.0, allow_nan=False)
    u = np.asarray(draw(st.lists(st.tuples(*[floats] * 8), min_size=n, max_size=n)), dtype=np.float64)
    aw, ah = 1 + 400 * u[:, 0], 1 + 400 * u[:, 1]
    ax, ay = -100 + 800 * u[:, 2], -100 + 800 * u[:, 3]
    bw, bh = aw * np.exp((u[:, 4] - 0.5) * 8), ah * np.exp((u[:, 5] - 0.5) * 8)  # e^±4: below the clamp
    bx, by = ax + aw / 2 + (u[:, 6] - 0.5) * 4 * aw - bw / 2, ay + ah / 2 + (u[:, 7] - 0.5) * 4 * ah - bh / 2
    anchors = np.stack([ax, ay, ax + aw, ay + ah], axis=1)
    boxes = np.stack([bx, by, bx + bw, by + bh], axis=1)
    return torch.from_numpy(anchors), torch.from_numpy(boxes)


@SETTINGS
@given(pair=anchors_and_boxes())
@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
def test_box_encode_then_detector_decode_returns_the_boxes(detectors, arch, pair):
    """What the loss encodes against an anchor, Detector.decode turns back into the same box."""
    anchors, boxes = pair
    model = detectors[arch]
    coder = model.net.box_coder
    codes = coder.encode(anchors, boxes) if arch == "fcos" else coder.encode_single(boxes, anchors)
    out = DenseOutput(
        cls_logits=torch.zeros(1, len(anchors), 2, dtype=torch.float64),
        bbox_regression=codes[None],
        anchors=anchors,
        num_anchors_per_level=[len(anchors)],
        bbox_ctrness=torch.zeros(1, len(anchors), 1, dtype=torch.float64) if arch == "fcos" else None,
    )
    _, decoded = model.decode(out)
    scale = boxes.abs().max().item() + 1
    torch.testing.assert_close(decoded[0], boxes, atol=1e-9 * scale, rtol=1e-9)


# ------------------------------------------------------------------------------- letterbox

sides = st.integers(1, 1500)
canvas = st.sampled_from([32, 64, 96, 128, 160])


@SETTINGS
@given(
    h=sides, w=sides, out_h=canvas, out_w=canvas, scale=st.floats(0.25, 2.0), u=st.lists(st.floats(0, 1), min_size=4, max_size=4)
)
def test_letterbox_maps_boxes_forward_and_back(h, w, out_h, out_w, scale, u):
    assume(h * w <= 600_000)  # keep the resize cheap
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    out, meta = letterbox(image, (out_h, out_w), scale=scale)
    assert out.shape == (3, out_h, out_w) and out.dtype == torch.uint8
    assert (meta.orig_h, meta.orig_w) == (h, w)
    # A box inside the original image goes to the network canvas and back unchanged.
    x1, x2 = sorted((u[0] * w, u[1] * w))
    y1, y2 = sorted((u[2] * h, u[3] * h))
    box = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float64)
    there = boxes_to_letterbox(box, meta)
    torch.testing.assert_close(boxes_from_letterbox(there, meta), box, atol=1e-6 * max(h, w), rtol=0)
    # The image's corners land on the drawn content (whose size is rounded to whole pixels,
    # so the far edge is within half a pixel), and the content is centred on the canvas.
    corners = boxes_to_letterbox(torch.tensor([[0.0, 0.0, w, h]], dtype=torch.float64), meta)[0].tolist()
    drawn_w, drawn_h = max(1, round(w * meta.scale)), max(1, round(h * meta.scale))
    assert corners[:2] == [meta.pad_x, meta.pad_y]
    slack_w, slack_h = max(0.5, 1 - w * meta.scale), max(0.5, 1 - h * meta.scale)  # content is drawn >= 1 px
    assert (
        abs(corners[2] - (meta.pad_x + drawn_w)) <= slack_w + 1e-9 and abs(corners[3] - (meta.pad_y + drawn_h)) <= slack_h + 1e-9
    )
    assert abs(2 * meta.pad_x + drawn_w - out_w) <= 1 and abs(2 * meta.pad_y + drawn_h - out_h) <= 1
    if scale <= 1.0:  # no overflow: the whole image is on the canvas
        assert min(corners[:2]) >= 0 and corners[2] <= out_w + 0.5 and corners[3] <= out_h + 0.5


@SETTINGS
@given(
    h=st.integers(8, 300), w=st.integers(8, 300), seed=st.integers(0, 2**32 - 1),
    boxes=arrays(np.float64, (5, 4), elements=st.floats(-50, 350, allow_nan=False)),
)  # fmt: skip
def test_train_transform_boxes_stay_on_the_canvas_and_keep_matches(h, w, seed, boxes):
    from sadc.recipe import AugmentSection

    xy1, xy2 = np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])
    boxes = torch.from_numpy(np.concatenate([xy1, xy2], axis=1))
    transform = TrainTransform((64, 96), AugmentSection(hflip=0.5, scale_jitter=(0.5, 1.5)))
    out, net_boxes, _meta, keep = transform(torch.zeros(3, h, w, dtype=torch.uint8), boxes, torch.Generator().manual_seed(seed))
    assert out.shape == (3, 64, 96) and keep.shape == (5,) and len(net_boxes) == int(keep.sum())
    assert (net_boxes[:, 0::2] >= 0).all() and (net_boxes[:, 0::2] <= 96).all()
    assert (net_boxes[:, 1::2] >= 0).all() and (net_boxes[:, 1::2] <= 64).all()
    assert ((net_boxes[:, 2:] - net_boxes[:, :2]) >= transform.min_size).all()


# -------------------------------------------------------------------------------- recipes

identifiers = st.text(string.ascii_lowercase + "_", min_size=1, max_size=8).filter(lambda s: s[0] != "_")
scalars = st.one_of(
    st.integers(-(10**12), 10**12),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: "e" not in repr(f)),  # PyYAML reads 1e-5 as text
    st.text(string.ascii_letters + string.digits + "_-/.", min_size=1, max_size=12).filter(
        lambda s: not isinstance(yaml.safe_load(s), (int, float, bool)) and yaml.safe_load(s) is not None
    ),
)


@SETTINGS
@given(key=st.lists(identifiers, min_size=1, max_size=4), value=st.one_of(scalars, st.lists(scalars, max_size=4)))
def test_override_parses_key_path_and_yaml_value(key, value):
    text = ".".join(key) + "=" + yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
    path, parsed = parse_override(text)
    assert path == key
    assert parsed == value or (isinstance(value, float) and math.isclose(parsed, value, rel_tol=1e-12))


@SETTINGS
@given(key=st.lists(identifiers, min_size=1, max_size=3), raw=st.text(max_size=20))
def test_override_value_is_everything_after_the_first_equals_sign(key, raw):
    path, value = parse_override(".".join(key) + "=" + raw)
    assert path == key
    try:
        expected = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        expected = raw  # not YAML: taken as text
    assert value == expected or (value != value and expected != expected)  # NaN == NaN here


@SETTINGS
@given(texts=st.lists(st.text(max_size=30), max_size=4))
def test_any_override_text_validates_or_is_one_recipe_error(texts):
    try:
        recipe = recipe_from_dict({}, "fuzz", overrides=texts)
    except RecipeError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(recipe, Recipe)


KNOWN = ["name", "output", "seed", "model", "student", "teacher", "data", "train", "val", "steps", "lr", "batch_size",
         "warmup_steps", "anchor_sizes", "class_names", "distill", "class_map", "export", "bench", "unlabeled", "source"]  # fmt: skip
recipe_data = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KNOWN), st.text(max_size=6)), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(data=recipe_data)
def test_any_recipe_data_validates_or_is_one_recipe_error(data):
    """Adversarial recipes: whatever YAML can hold, validation ends in a Recipe or one RecipeError line."""
    try:
        recipe = recipe_from_dict(data, "fuzz.yaml")
    except RecipeError as err:
        assert "\n" not in str(err) and str(err).startswith("fuzz.yaml")
    else:
        assert isinstance(recipe, Recipe)


# --------------------------------------------------------------------------------- losses

extreme = st.floats(-1e4, 1e4, width=32, allow_nan=False)


@SETTINGS
@given(
    logits=arrays(np.float32, (2, 32), elements=extreme),
    gamma=st.sampled_from([0.0, 0.25, 1.0, 2.0]),
    beta=st.floats(0.0, 2.0),
    alpha=st.floats(0.0, 1.0),
    temperature=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_authors_form_is_nonnegative_and_finite_with_finite_gradients(logits, gamma, beta, alpha, temperature):
    s = torch.from_numpy(logits[0]).requires_grad_(True)
    t = torch.from_numpy(logits[1])
    loss = adaptive_distillation_loss(s, t, gamma=gamma, beta=beta, temperature=temperature, form="authors", alpha=alpha)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    (grad,) = torch.autograd.grad(loss.sum(), s)
    assert torch.isfinite(grad).all()


@SETTINGS
@given(
    t=arrays(np.float32, (48,), elements=extreme),
    gamma=st.floats(0.0, 3.0),
    beta=st.floats(0.0, 2.0),
    temperature=st.floats(0.1, 5.0),
)
def test_paper_adl_is_zero_with_zero_gradient_when_the_student_is_the_teacher(t, gamma, beta, temperature):
    teacher = torch.from_numpy(t)
    student = teacher.clone().requires_grad_(True)
    loss = adaptive_distillation_loss(student, teacher, gamma=gamma, beta=beta, temperature=temperature)
    assert torch.equal(loss.detach(), torch.zeros_like(teacher))
    (grad,) = torch.autograd.grad(loss.sum(), student)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-6, rtol=0)
    assert torch.equal(sigmoid_kl_loss(teacher, teacher, temperature=temperature), torch.zeros_like(teacher))


@SETTINGS
@given(
    logits=arrays(np.float32, (2, 2, 6, 3), elements=extreme),
    mask=arrays(np.bool_, (2, 6)),
    loss=st.sampled_from(["adl", "kl"]),
    normalizer=st.sampled_from(["adaptive", "positives"]),
    num_positives=st.integers(0, 20),
    theta=st.floats(0.5, 3.0),
)
def test_distillation_criterion_is_finite_nonnegative_and_zero_on_agreement(logits, mask, loss, normalizer, num_positives, theta):
    """Any mask (even empty), any normaliser (even 0 positives): a finite, >= 0 scalar; 0 when they agree."""
    s = torch.from_numpy(logits[0]).requires_grad_(True)
    t = torch.from_numpy(logits[1])
    kwargs = dict(loss=loss, theta=theta, normalizer=normalizer, anchor_mask=torch.from_numpy(mask), num_positives=num_positives)
    value = distillation_loss(s, t, **kwargs)["distill"]
    assert value.dim() == 0 and torch.isfinite(value) and value >= 0
    (grad,) = torch.autograd.grad(value, s)
    assert torch.isfinite(grad).all()
    assert (grad[~torch.from_numpy(mask)] == 0).all()  # anchors outside the mask get nothing
    agree = distillation_loss(t.clone(), t, **kwargs)["distill"]
    assert agree == 0
