"""The synthetic world: determinism, honest boxes, balance, shift, stage reuse, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sadc.data import CocoDataset, DataError, make_synthetic_world
from sadc.data.synth import CLASSES, render_image
from tests.helpers import invoke

TINY = dict(train=8, val=4, test=3, unlabeled=6, size=64, seed=3)
LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    make_synthetic_world(out, **TINY)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_coco_validity(world: Path) -> None:
    assert sorted(p.name for p in world.iterdir()) == [
        "synth.json",
        "test",
        "test.json",
        "train",
        "train.json",
        "unlabeled",
        "val",
        "val.json",
    ]
    assert len(list((world / "unlabeled").glob("*.png"))) == 6
    ds = CocoDataset(world / "train.json", world / "train", (64, 64))
    assert len(ds) == 8 and ds.class_names == list(CLASSES) and ds.cat_ids == [1, 2, 3, 4, 5]
    data = json.loads((world / "val.json").read_text())
    assert len(data["images"]) == 4 and all(
        1 <= sum(a["image_id"] == i["id"] for a in data["annotations"]) <= 6 for i in data["images"]
    )


def test_same_seed_same_bytes_other_seed_other_images(world: Path, tmp_path: Path) -> None:
    make_synthetic_world(tmp_path / "again", **TINY)
    assert _files(tmp_path / "again") == _files(world)
    make_synthetic_world(tmp_path / "other", **{**TINY, "seed": 4})
    assert (tmp_path / "other" / "train" / "000000.png").read_bytes() != (world / "train" / "000000.png").read_bytes()


def test_splits_never_share_images() -> None:
    a, _ = render_image(0, "train", 0, 64)
    b, _ = render_image(0, "val", 0, 64)
    c, _ = render_image(0, "unlabeled", 0, 64)
    d, _ = render_image(0, "test", 0, 64)
    assert not np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(b, d)


def test_test_split_leaves_the_other_splits_as_they_were(world: Path, tmp_path: Path) -> None:
    """Adding the held-out test split changes no byte of train / val / unlabeled (numbers still reproduce)."""
    make_synthetic_world(tmp_path / "old", **{**TINY, "test": 0})
    old, new = _files(tmp_path / "old"), _files(world)
    assert not any(k.startswith("test") for k in old)
    assert {k: v for k, v in new.items() if not k.startswith(("test", "synth.json"))} == {
        k: v for k, v in old.items() if k != "synth.json"
    }
    data = json.loads((world / "test.json").read_text())
    assert len(data["images"]) == 3 and data["annotations"]
    summary = make_synthetic_world(tmp_path / "old", **TINY)  # an old folder gains the test split, reusing the rest
    assert summary["reused"] == ["train", "val", "unlabeled"]
    again = _files(tmp_path / "old")
    assert json.loads(again.pop("synth.json")) == json.loads(new.pop("synth.json")) and again == new


def test_boxes_inside_and_area_consistent(world: Path) -> None:
    for split in ("train", "val"):
        for ann in json.loads((world / f"{split}.json").read_text())["annotations"]:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64 and w >= 1 and h >= 1
            assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0


def test_boxes_are_tight_on_the_pixels() -> None:
    """Single-object images: each inner box edge touches the object, the line outside it does not.

    The line just outside an edge must look like background (close to the line 2 px out),
    while the line just inside must contain object pixels (far from the line just outside).
    """
    checked = 0
    for index in range(80):
        pixels, objects = render_image(11, "train", index, 64)
        if len(objects) != 1:
            continue
        luma = pixels.astype(np.float64) @ LUMA
        x, y, w, h = (int(v) for v in objects[0].bbox)
        x1, y1 = x + w, y + h
        rows, cols = slice(y, y1), slice(x, x1)
        edges = []  # (inner line, line just outside, line 2 px outside)
        if x >= 2:
            edges.append((luma[rows, x], luma[rows, x - 1], luma[rows, x - 2]))
        if x1 <= 62:
            edges.append((luma[rows, x1 - 1], luma[rows, x1], luma[rows, x1 + 1]))
        if y >= 2:
            edges.append((luma[y, cols], luma[y - 1, cols], luma[y - 2, cols]))
        if y1 <= 62:
            edges.append((luma[y1 - 1, cols], luma[y1, cols], luma[y1 + 1, cols]))
        for inner, outside, further in edges:
            assert np.abs(inner - outside).max() > 35, f"image {index}: box edge inside the object's margin"
            assert np.abs(outside - further).max() < 25, f"image {index}: object pixels outside the box"
            checked += 1
    assert checked >= 20


def test_classes_roughly_balanced_and_sizes_in_range() -> None:
    counts = np.zeros(len(CLASSES))
    sides = []
    for index in range(300):
        for obj in render_image(0, "train", index, 64)[1]:
            counts[obj.label] += 1
            sides.append(max(obj.bbox[2], obj.bbox[3]))
    assert counts.min() > 0.75 * counts.mean() and counts.max() < 1.25 * counts.mean()
    assert 2.5 < counts.sum() / 300 < 4.5  # 1..6 objects per image, a few re-drawn or left out
    assert min(sides) >= 3 and max(sides) <= 33  # 14..56 px at 128 px -> 7..28 at 64, aspect <= 1.33


def test_shifted_distribution_differs() -> None:
    def stats(split: str) -> tuple[float, float]:
        images = np.stack([render_image(0, split, i, 64)[0] for i in range(30)]).astype(np.float64)
        blue_minus_red = float((images[..., 2] - images[..., 0]).mean())
        roughness = float(np.abs(np.diff(images @ LUMA, axis=2)).mean())
        return blue_minus_red, roughness

    base, shifted = stats("unlabeled"), stats("unlabeled-shift")
    assert shifted[0] > base[0] + 10  # cool tints
    assert shifted[1] > 1.5 * base[1]  # stripes / checkerboards and more noise


def test_stage_reuse_and_mismatch(world: Path, capsys: pytest.CaptureFixture) -> None:
    before = {p: p.stat().st_mtime_ns for p in world.rglob("*.png")}
    summary = make_synthetic_world(world, **TINY)
    assert summary["reused"] == ["train", "val", "test", "unlabeled"]
    assert capsys.readouterr().out == ""  # the data layer prints nothing; the CLI reports reuse
    assert before == {p: p.stat().st_mtime_ns for p in world.rglob("*.png")}
    with pytest.raises(DataError, match=r"train was made with count=8, .* not count=9, .*delete") as err:
        make_synthetic_world(world, **{**TINY, "train": 9})
    assert str(world) in str(err.value)


def test_shift_coexists_with_base(tmp_path: Path, world: Path) -> None:
    out = tmp_path / "w"
    make_synthetic_world(out, **TINY)
    summary = make_synthetic_world(out, **{**TINY, "shift": True})
    assert summary["reused"] == ["train", "val", "test"]
    assert set(summary["splits"]) == {"train", "val", "test", "unlabeled-shift"}
    assert len(list((out / "unlabeled-shift").glob("*.png"))) == 6 and (out / "unlabeled").is_dir()


def test_interrupted_split_is_redone_and_foreign_folders_refused(tmp_path: Path, world: Path) -> None:
    out = tmp_path / "w"
    make_synthetic_world(out, **TINY)
    manifest = json.loads((out / "synth.json").read_text())
    del manifest["splits"]["unlabeled"]  # as if killed before unlabeled was recorded
    (out / "synth.json").write_text(json.dumps(manifest))
    (out / ".tmp-unlabeled").mkdir()
    (out / ".tmp-unlabeled" / "half.png").write_bytes(b"")
    summary = make_synthetic_world(out, **TINY)
    assert summary["reused"] == ["train", "val", "test"] and not (out / ".tmp-unlabeled").exists()
    assert _files(out) == _files(world)
    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="not made by sadc data synth"):
        make_synthetic_world(foreign, **TINY)


def test_cli_synth_and_preview(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = invoke("data", "synth", out, "--train", 3, "--val", 2, "--unlabeled", 0, "--size", 64)
    assert result.exit_code == 0, result.output
    assert "train 3 images" in result.output and "classes circle" in result.output
    result = invoke("data", "synth", out, "--train", 3, "--val", 2, "--unlabeled", 0, "--size", 64)
    assert result.exit_code == 0 and "reusing train, val" in result.output, result.output
    grid = tmp_path / "grid.png"
    result = invoke("data", "preview", out / "val.json", "--out", grid, "--n", 2, "--cell", 64)
    assert result.exit_code == 0, result.output
    with Image.open(grid) as img:
        assert img.size == (2 * 64 + 3 * 4, 64 + 2 * 4)


def test_progress_callback_sees_every_image(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    make_synthetic_world(tmp_path / "w", **TINY, progress=lambda *a: calls.append(a))
    for split, n in (("train", 8), ("val", 4), ("test", 3), ("unlabeled", 6)):
        assert [c[1:] for c in calls if c[0] == split] == [(i, n) for i in range(n + 1)]
