"""Image decoding, letterbox geometry, COCO/folder datasets, samplers and loaders."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sadc.data import (
    CocoDataset,
    DataError,
    ImageReadError,
    InfiniteSampler,
    LetterboxMeta,
    TrainTransform,
    UnlabeledFolder,
    boxes_from_letterbox,
    boxes_to_letterbox,
    build_loader,
    collate,
    find_images,
    hflip,
    letterbox,
    load_image,
)
from sadc.errors import SadcError
from sadc.recipe import AugmentSection


def _png(path: Path, h: int = 24, w: int = 32, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path)
    return path


# ----------------------------------------------------------------------------- find_images


def test_find_images_recursive_case_insensitive_sorted(tmp_path: Path) -> None:
    _png(tmp_path / "b.PNG")
    _png(tmp_path / "a" / "x.Jpg")
    _png(tmp_path / "a" / "deep" / "y.tiff")
    (tmp_path / "notes.txt").write_text("not an image")
    _png(tmp_path / ".hidden" / "h.png")
    _png(tmp_path / "._resource.png")
    found = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/deep/y.tiff", "a/x.Jpg", "b.PNG"]


def test_find_images_symlink_loop_terminates(tmp_path: Path) -> None:
    _png(tmp_path / "sub" / "one.png")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # sub/loop -> root: a cycle
    os.symlink(tmp_path / "sub", tmp_path / "alias")  # the same folder twice
    found = find_images(tmp_path)
    assert len(found) == 1 and found[0].name == "one.png"


def test_find_images_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="image folder not found") as err:
        find_images(missing)
    assert str(missing) in str(err.value)
    assert isinstance(err.value, SadcError)


# ------------------------------------------------------------------------------ load_image


def test_exif_orientation_swaps_shape(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    Image.new("RGB", (40, 20), (10, 200, 10)).save(path, exif=exif.tobytes())
    image = load_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 20)


def test_grayscale_and_rgba_and_palette(tmp_path: Path) -> None:
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    gray = load_image(tmp_path / "g.png")
    assert gray.shape == (3, 4, 5) and (gray == 77).all()

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[0, 255], [128, 255]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out[:, 0, 0].tolist() == [0, 0, 0]  # transparent -> black
    assert out[:, 0, 1].tolist() == [200, 100, 50]
    assert out[:, 1, 0].tolist() == [100, 50, 25]  # half alpha composited on black

    pal = Image.new("P", (3, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0, 1, 0])
    pal.save(tmp_path / "p.png", transparency=1)
    out = load_image(tmp_path / "p.png")
    assert out[:, 0, 0].tolist() == [255, 0, 0] and out[:, 0, 1].tolist() == [0, 0, 0]


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    data = np.array([[0, 1000, 25700, 65535]], dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    out = load_image(tmp_path / "deep.png")
    assert out[0, 0].tolist() == [0, 4, 100, 255]  # 1000 * 255/65535 = 3.9, not clipped to 255


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    r, g, b = load_image(tmp_path / "c.jpg").float().mean(dim=(1, 2)).tolist()
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("kind", ["zero", "text", "truncated", "missing"])
def test_unreadable_files_raise_naming_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.jpg"
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, I am not a JPEG")
    elif kind == "truncated":
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageReadError, match="cannot read image") as err:
        load_image(path)
    assert str(err.value).startswith(str(path))


# ------------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("hw", [(1, 1), (20, 4000), (4000, 20), (37, 91), (128, 128)])
@pytest.mark.parametrize("scale", [0.6, 1.0, 1.4])
def test_letterbox_shape_and_box_round_trip(hw: tuple[int, int], scale: float) -> None:
    h, w = hw
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
    out, meta = letterbox(image, (64, 96), scale=scale)
    assert out.shape == (3, 64, 96) and out.dtype == torch.uint8
    assert (meta.orig_h, meta.orig_w) == (h, w)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * torch.tensor([w, h]) * 0.5
    wh = torch.rand(20, 2, generator=g) * torch.tensor([w, h]) * 0.5
    boxes = torch.cat([xy, xy + wh], dim=1)
    back = boxes_from_letterbox(boxes_to_letterbox(boxes, meta), meta)
    assert torch.allclose(back, boxes, atol=1e-3 * max(h, w), rtol=0)


def test_letterbox_places_content_and_pads() -> None:
    image = torch.full((3, 10, 20), 255, dtype=torch.uint8)
    out, meta = letterbox(image, (20, 20))
    assert meta == LetterboxMeta(scale=1.0, pad_x=0.0, pad_y=5.0, orig_h=10, orig_w=20)
    assert (out[:, 5:15] == 255).all() and (out[:, :5] == 114).all() and (out[:, 15:] == 114).all()
    # scale > 1: content is centre-cropped; the original centre stays the canvas centre
    _, big = letterbox(image, (20, 20), scale=2.0)
    centre = boxes_to_letterbox(torch.tensor([[10.0, 5.0, 10.0, 5.0]]), big)
    assert torch.allclose(centre, torch.tensor([[10.0, 10.0, 10.0, 10.0]]))


def test_hflip_is_an_involution() -> None:
    image = torch.arange(3 * 4 * 6, dtype=torch.uint8).reshape(3, 4, 6)
    boxes = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.5, 0.0, 6.0, 4.0]])
    img1, b1 = hflip(image, boxes)
    assert b1.tolist() == [[4.0, 1.0, 6.0, 3.0], [0.0, 0.0, 4.5, 4.0]]
    img2, b2 = hflip(img1, b1)
    assert torch.equal(img2, image) and torch.equal(b2, boxes)


def test_train_transform_flip_scale_and_drop() -> None:
    image = torch.randint(0, 255, (3, 40, 80), dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 1.0, 40.0]])  # the second is 1 px wide
    eval_img, eval_boxes, _meta, keep = TrainTransform((64, 64))(image, boxes, torch.Generator())
    assert keep.tolist() == [True, False]
    assert torch.allclose(eval_boxes, boxes[:1] * 0.8 + torch.tensor([0.0, 16.0, 0.0, 16.0]))
    always_flip = TrainTransform((64, 64), AugmentSection(hflip=1.0, scale_jitter=(1.0, 1.0)))
    img, flipped, _, _ = always_flip(image, boxes, torch.Generator().manual_seed(1))
    assert torch.equal(img, eval_img.flip(-1))
    assert torch.allclose(flipped, hflip(eval_img, eval_boxes)[1])
    jitter = TrainTransform((64, 64), AugmentSection(hflip=0.5, scale_jitter=(0.5, 1.5)))
    a = jitter(image, boxes, torch.Generator().manual_seed(7))
    b = jitter(image, boxes, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


# ---------------------------------------------------------------------------------- COCO


def _coco_fixture(tmp_path: Path) -> tuple[Path, Path, dict]:
    images = tmp_path / "img"
    for name in ("a.png", "b.png", "c.png"):
        _png(images / name, h=24, w=32)
    data = {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 32, "height": 24},
            {"id": 11, "file_name": "b.png", "width": 32, "height": 24},
            {"id": 12, "file_name": "c.png", "width": 32, "height": 24},
        ],
        "categories": [{"id": 9, "name": "nine"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 9, "bbox": [2, 2, 10, 8], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20, 10, 20, 20]},  # clipped to 32x24
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [0, 0, 30, 20], "iscrowd": 1},
            {"id": 4, "image_id": 12, "category_id": 7, "bbox": [4, 4, 4, 4]},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, images, data


def test_coco_mapping_crowd_and_empty(tmp_path: Path) -> None:
    ann, images, _ = _coco_fixture(tmp_path)
    ds = CocoDataset(ann, images, (48, 64))
    assert ds.cat_ids == [3, 7, 9] and ds.class_names == ["three", "seven", "nine"]
    assert ds.image_ids == [10, 11, 12] and len(ds) == 3 and ds.coco_json == ann
    image, target = ds[0]
    assert image.shape == (3, 48, 64)
    assert target["labels"].tolist() == [2, 0]  # crowd annotation 3 dropped
    expected = torch.tensor([[2.0, 2.0, 12.0, 10.0], [20.0, 10.0, 32.0, 24.0]]) * 2  # scale 2, no pad
    assert torch.allclose(target["boxes"], expected) and target["boxes"].dtype == torch.float32
    assert target["image_id"] == 10 and target["meta"].scale == 2.0
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.int64


def test_coco_augmentation_is_a_function_of_seed_epoch_index(tmp_path: Path) -> None:
    ann, images, _ = _coco_fixture(tmp_path)
    ds = CocoDataset(ann, images, (48, 64), AugmentSection(hflip=0.5, scale_jitter=(0.5, 1.5)), seed=3)
    first = [ds[k][1]["boxes"] for k in range(0, 30, 3)]  # image 0 over epochs 0..9
    again = [ds[k][1]["boxes"] for k in range(0, 30, 3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len({tuple(b.flatten().tolist()) for b in first}) > 1  # epochs differ


def _mutate(data: dict, how: str) -> dict:
    data = json.loads(json.dumps(data))
    if how == "dup_image":
        data["images"][1]["id"] = 10
    elif how == "dup_category":
        data["categories"][1]["id"] = 9
    elif how == "unknown_image":
        data["annotations"][0]["image_id"] = 99
    elif how == "unknown_category":
        data["annotations"][0]["category_id"] = 5
    elif how == "bbox_3":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif how == "zero_size":
        data["annotations"][0]["bbox"] = [1, 2, 0, 5]
    elif how == "negative":
        data["annotations"][0]["bbox"] = [1, 2, -4, 5]
    elif how == "outside":
        data["annotations"][0]["bbox"] = [40, 2, 5, 5]
    elif how == "no_images":
        del data["images"]
    return data


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("dup_image", "duplicate image id 10"),
        ("dup_category", "duplicate category id 9"),
        ("unknown_image", "annotation id 1 has unknown image_id 99"),
        ("unknown_category", "annotation id 1 has unknown category_id 5"),
        ("bbox_3", "annotation id 1: bbox must be 4"),
        ("zero_size", "annotation id 1: bbox [1, 2, 0, 5] has zero or negative"),
        ("negative", "annotation id 1: bbox [1, 2, -4, 5] has zero or negative"),
        ("outside", "annotation id 1: bbox [40, 2, 5, 5] lies outside image id 10"),
        ("no_images", "'images' is missing"),
    ],
)
def test_coco_validation_errors(tmp_path: Path, how: str, expected: str) -> None:
    ann, images, data = _coco_fixture(tmp_path)
    ann.write_text(json.dumps(_mutate(data, how)))
    with pytest.raises(DataError) as err:
        CocoDataset(ann, images, (32, 32))
    message = str(err.value)
    assert message.startswith(str(ann)) and expected in message and "\n" not in message


def test_coco_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="annotation file not found"):
        CocoDataset(tmp_path / "none.json", tmp_path, (32, 32))
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [,]}')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON \(line 1"):
        CocoDataset(bad, tmp_path, (32, 32))


def test_coco_missing_image_file(tmp_path: Path) -> None:
    ann, images, _ = _coco_fixture(tmp_path)
    ds = CocoDataset(ann, images, (32, 32))
    (images / "b.png").unlink()
    with pytest.raises(ImageReadError, match=r"b\.png: cannot read image"):
        ds[1]  # gone after the up-front check: still one line naming the file
    with pytest.raises(DataError, match=r"1 of 3 listed images are not in .*\(first: b.png\)"):
        CocoDataset(ann, images, (32, 32))  # missing before: refused up front, before any training


# ----------------------------------------------------------------------------- UnlabeledFolder


def test_image_folder_skips_and_reports(tmp_path: Path) -> None:
    root = tmp_path / "unl"
    for i in range(3):
        _png(root / f"ok{i}.png", colour=(i * 50, 0, 0))
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not a jpeg")
    ds = UnlabeledFolder(root, (32, 32))
    assert len(ds) == 3 and [p.name for p, _ in ds.skipped] == ["empty.png", "text.jpg"]
    ds.write_skipped(tmp_path / "skipped.tsv")
    lines = (tmp_path / "skipped.tsv").read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{root / 'empty.png'}\t")
    image, target = ds[4]  # epoch 1, item 1
    assert image.shape == (3, 32, 32) and target["boxes"].shape == (0, 4) and target["path"].endswith("ok1.png")


def test_image_folder_falls_forward_on_decode_failure(tmp_path: Path, caplog) -> None:
    root = tmp_path / "unl"
    root.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "a.jpg", quality=95)
    (root / "a.jpg").write_bytes((root / "a.jpg").read_bytes()[:3000])  # header ok, pixels truncated
    _png(root / "b.png")
    ds = UnlabeledFolder(root, (32, 32))
    assert len(ds) == 2 and ds.skipped == []
    with caplog.at_level(logging.WARNING, logger="sadc"):
        _, target = ds[0]
    assert "skipping unreadable image" in caplog.text and "a.jpg" in caplog.text
    assert target["path"].endswith("b.png") and [p.name for p, _ in ds.skipped] == ["a.jpg"]


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images found \(looked for .bmp, .jpeg"):
        UnlabeledFolder(tmp_path / "empty", (32, 32))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("nope")
    with pytest.raises(DataError, match="none of the 1 image files can be read"):
        UnlabeledFolder(tmp_path / "bad", (32, 32))


# ------------------------------------------------------------------------ samplers/loaders


def _take(sampler: InfiniteSampler, n: int) -> list[int]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_infinite_sampler_epochs_determinism_and_resume() -> None:
    stream = _take(InfiniteSampler(7, seed=5), 35)
    assert stream == _take(InfiniteSampler(7, seed=5), 35)
    assert stream != _take(InfiniteSampler(7, seed=6), 35)
    for epoch in range(5):
        assert sorted(stream[epoch * 7 : (epoch + 1) * 7]) == list(range(epoch * 7, (epoch + 1) * 7))
    for start in (0, 3, 7, 12):
        assert _take(InfiniteSampler(7, seed=5, start=start), 10) == stream[start : start + 10]
    assert _take(InfiniteSampler(4, shuffle=False), 6) == [0, 1, 2, 3, 4, 5]


def test_infinite_sampler_ddp_ranks_partition_the_stream() -> None:
    stream = _take(InfiniteSampler(10, seed=1), 60)
    ranks = [_take(InfiniteSampler(10, seed=1, rank=r, world_size=3), 20) for r in range(3)]
    assert [x for triple in zip(*ranks) for x in triple] == stream
    assert _take(InfiniteSampler(10, seed=1, rank=2, world_size=3, start=4), 5) == ranks[2][4:9]


def test_loaders_resume_eval_and_workers(tmp_path: Path) -> None:
    ann, images, _ = _coco_fixture(tmp_path)
    ds = CocoDataset(ann, images, (32, 32), AugmentSection(), seed=0)
    loader = build_loader(ds, batch_size=2, workers=0, shuffle=True, seed=4)
    batches = [b for _, b in zip(range(4), loader)]
    images0, targets0 = batches[0]
    assert images0.shape == (2, 3, 32, 32) and images0.dtype == torch.uint8 and len(targets0) == 2
    resumed = next(iter(build_loader(ds, batch_size=2, workers=0, shuffle=True, seed=4, start_step=3)))
    assert torch.equal(resumed[0], batches[3][0])
    assert [t["image_id"] for t in resumed[1]] == [t["image_id"] for t in batches[3][1]]
    in_workers = build_loader(ds, batch_size=2, workers=2, shuffle=True, seed=4)
    parallel = [b for _, b in zip(range(4), in_workers)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, parallel))
    evaluation = list(build_loader(ds, batch_size=2, workers=0, shuffle=True, seed=0, infinite=False))
    assert [[t["image_id"] for t in b[1]] for b in evaluation] == [[10, 11], [12]]


def test_collate_stacks_images_and_keeps_targets() -> None:
    batch = [(torch.zeros(3, 4, 4, dtype=torch.uint8), {"x": i}) for i in range(3)]
    images, targets = collate(batch)
    assert images.shape == (3, 3, 4, 4) and targets == [{"x": 0}, {"x": 1}, {"x": 2}]
