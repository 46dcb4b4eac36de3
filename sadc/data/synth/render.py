"""A synthetic detection world that a small detector learns from scratch on a CPU.

Images show 1-6 flat shapes of five classes (circle, square, triangle, cross, ring) on a
textured background. The class signal is *shape only*: every object's colour is drawn
independently of its class. Objects are saturated and at least ``MIN_CONTRAST``
luminance levels brighter or darker than the background under them, edges are crisp
(no antialiasing), so boxes taken from the drawn mask are exact.

Base distribution (train, val, test, unlabeled): linear gradient + smooth blotches, low
saturation, random tint; strongly saturated objects. Shifted distribution
(unlabeled-shift): stripes or checkerboards in cool tints with more pixel noise, and
muted (low-saturation) objects -- same classes, same geometry.

Every image is a pure function of (seed, split, index): splits never share images,
and the output is byte-identical for the same arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "triangle", "cross", "ring")
"""Class names; COCO category ids are 1..len(CLASSES) in this order."""

SYNTH_VERSION = 1  # bump when the drawing changes: old folders then refuse to be reused
SPLIT_CODES = {"train": 0, "val": 1, "unlabeled": 2, "unlabeled-shift": 3, "test": 4}  # never renumber: seeds
MIN_CONTRAST = 60.0  # luminance levels (0..255) between an object and the background under it
MIN_VISIBLE = 0.6  # placement keeps every object at least this visible (occlusion is partial)
DROP_VISIBLE = 0.3  # safety net: an object less visible than this is not annotated
MAX_OBJECTS = 6
SIZE_RANGE = (14.0, 56.0)  # object diameter in px at a 128 px image; scales with the image
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class SynthObject:
    """One annotated object: COCO ``bbox`` [x, y, w, h] (pixel edges, tight on the visible
    mask), visible ``area`` in px, 0-based ``label`` into :data:`CLASSES`."""

    label: int
    bbox: tuple[float, float, float, float]
    area: float


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: independent across (seed, split, index)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, SPLIT_CODES[split], int(index)])


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV in [0, 1] -> RGB [..., 3] in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return 255.0 * v[..., None] * (1.0 - s[..., None] * ramp)


def _tint(rng: np.random.Generator, luma: float, hue_range: tuple[float, float], sat_range: tuple[float, float]) -> np.ndarray:
    """A low-saturation RGB colour (float [3]) with luminance ``luma``."""
    rgb = _hsv_to_rgb(np.array(rng.uniform(*hue_range)), np.array(rng.uniform(*sat_range)), np.array(1.0))
    return rgb * (luma / max(float(rgb @ _LUMA), 1.0))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-range smooth noise [size, size] (bicubic upsampling of a coarse grid)."""
    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _background(rng: np.random.Generator, size: int, shifted: bool) -> np.ndarray:
    """float32 [size, size, 3] background in 0..255, luminance roughly 70..170."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    angle = rng.uniform(0, math.pi)
    along = np.cos(angle) * xx + np.sin(angle) * yy  # -0.7..0.7
    mean = rng.uniform(80.0, 160.0)
    if not shifted:  # gradient between two tints + smooth blotches
        delta = rng.uniform(0.0, 30.0)
        c0 = _tint(rng, mean - delta, (0.0, 1.0), (0.03, 0.25))
        c1 = _tint(rng, mean + delta, (0.0, 1.0), (0.03, 0.25))
        t = np.clip(along + 0.5, 0, 1)[..., None]
        img = c0 * (1 - t) + c1 * t
        return (img + 12.0 * _smooth_noise(rng, size, 5)[..., None]).astype(np.float32)
    # shifted: stripes or a checkerboard between two cool tints
    delta = rng.uniform(10.0, 20.0)
    c0 = _tint(rng, mean - delta, (0.45, 0.7), (0.15, 0.35))
    c1 = _tint(rng, mean + delta, (0.45, 0.7), (0.15, 0.35))
    period = rng.uniform(6.0, 20.0) / size
    if rng.random() < 0.5:
        t = (np.floor(along / period) % 2)[..., None]
    else:
        across = -np.sin(angle) * xx + np.cos(angle) * yy
        t = ((np.floor(along / period) + np.floor(across / period)) % 2)[..., None]
    return (c0 * (1 - t) + c1 * t).astype(np.float32)


def _shape_mask(label: int, w: float, h: float, cx: float, cy: float, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """bool [y1-y0, x1-x0]: pixels (by centre) inside shape ``label`` of size w x h centred at (cx, cy)."""
    u = ((np.arange(x0, x1) + 0.5 - cx) / (w / 2))[None, :]
    v = ((np.arange(y0, y1) + 0.5 - cy) / (h / 2))[:, None]
    name = CLASSES[label]
    if name == "circle":
        return u**2 + v**2 <= 1.0
    if name == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if name == "triangle":  # apex up
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if name == "cross":
        arm = 0.32
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    if name == "ring":
        r2 = u**2 + v**2
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    raise ValueError(f"unknown shape {name}")


def _object_colour(rng: np.random.Generator, under_luma: float, shifted: bool) -> np.ndarray:
    """An RGB colour (float [3]) at least MIN_CONTRAST luminance away from ``under_luma``.

    Base palette: saturated (s 0.6-1); shifted palette: muted (s 0.2-0.45). Brighter or
    darker is chosen at random among the feasible sides.
    """
    n = 64
    sat = rng.uniform(0.2, 0.45, n) if shifted else rng.uniform(0.6, 1.0, n)
    rgb = _hsv_to_rgb(rng.uniform(0, 1, n), sat, rng.uniform(0.1, 1.0, n))
    luma = rgb @ _LUMA
    bright, dark = luma >= under_luma + MIN_CONTRAST, luma <= under_luma - MIN_CONTRAST
    sides = [m for m in (bright, dark) if m.any()]
    if not sides:  # cannot happen for backgrounds in 70..190, kept for safety
        return np.full(3, 0.0 if under_luma > 127 else 255.0)
    pick = sides[int(rng.integers(len(sides)))]
    return rgb[int(np.argmax(pick))]


def render_image(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, list[SynthObject]]:
    """Draw image ``index`` of ``split``: (uint8 [size, size, 3] RGB, visible objects).

    ``split == "unlabeled-shift"`` uses the shifted distribution. Objects are placed so
    that each earlier object stays at least MIN_VISIBLE visible; placements that would
    hide more are re-drawn (up to 20 tries, then the object is left out).
    """
    rng = image_rng(seed, split, index)
    shifted = split == "unlabeled-shift"
    image = _background(rng, size, shifted)
    owner = np.full((size, size), -1, dtype=np.int16)  # which object each pixel shows
    full_area: list[int] = []
    visible: list[int] = []
    labels: list[int] = []
    k = size / 128.0
    lo, hi = SIZE_RANGE[0] * k, min(SIZE_RANGE[1] * k, size - 4.0)
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        label = int(rng.integers(len(CLASSES)))
        for _attempt in range(20):
            diameter = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            stretch = math.exp(rng.uniform(-0.145, 0.145))  # aspect w/h = stretch**2 in 0.75..1.33
            w, h = min(diameter * stretch, size - 4.0), min(diameter / stretch, size - 4.0)
            cx, cy = rng.uniform(w / 2 + 1, size - w / 2 - 1), rng.uniform(h / 2 + 1, size - h / 2 - 1)
            x0, y0 = max(math.floor(cx - w / 2), 0), max(math.floor(cy - h / 2), 0)
            x1, y1 = min(math.ceil(cx + w / 2), size), min(math.ceil(cy + h / 2), size)
            mask = _shape_mask(label, w, h, cx, cy, x0, y0, x1, y1)
            covered = owner[y0:y1, x0:x1][mask]
            lost = np.bincount(covered[covered >= 0], minlength=len(labels))
            if mask.sum() >= 4 and all(visible[j] - lost[j] >= MIN_VISIBLE * full_area[j] for j in range(len(labels))):
                break
        else:
            continue
        under = float(image[y0:y1, x0:x1][mask].mean(axis=0) @ _LUMA)
        image[y0:y1, x0:x1][mask] = _object_colour(rng, under, shifted)
        owner[y0:y1, x0:x1][mask] = len(labels)
        for j in range(len(labels)):
            visible[j] -= int(lost[j])
        full_area.append(int(mask.sum()))
        visible.append(int(mask.sum()))
        labels.append(label)
    noise = 7.0 if shifted else 4.0
    image += rng.normal(0.0, noise, image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    objects = []
    for j, label in enumerate(labels):
        if visible[j] < DROP_VISIBLE * full_area[j]:
            continue
        ys, xs = np.nonzero(owner == j)
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = (float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0))
        objects.append(SynthObject(label, bbox, float(len(xs))))
    return pixels, objects
