"""One adversarial folder through every command that reads "a folder of images".

distill (unlabeled, with loader workers), predict, pseudo-label and export (INT8
calibration and parity images) must each exit 0 on it, use every readable image and
list every unreadable one exactly once, whatever the names, links and file contents.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import distill_recipe, invoke, save_tiny_checkpoint, write_recipe

ROOT = Path(__file__).resolve().parents[1]
LATIN1 = b"caf\xe9.png"  # not UTF-8: os.listdir gives 'caf\udce9.png'
BAD_LATIN1 = b"photo-\xe9.jpg"
LONG = "n" * 240 + ".png"  # 244 bytes: near the 255-byte name limit


def _text(name: bytes | str) -> str:
    """A name as sadc prints it: undecodable bytes as \\xNN."""
    return (name if isinstance(name, bytes) else os.fsencode(name)).decode("utf-8", "backslashreplace")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt")


def hostile_folder(root: Path, outside: Path) -> tuple[set[str], set[str]]:
    """An image folder as found in the wild; returns (readable, unreadable) names relative to ``root`` as printed."""
    rng = np.random.default_rng(0)

    def rgb(h: int, w: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    (root / "sub").mkdir(parents=True)
    (outside / "dir").mkdir(parents=True)
    rgb(48, 64).save(root / "plain.png")
    rgb(20, 4000).save(root / "wide.png")
    rgb(4000, 20).save(root / "tall.png")
    rgb(1, 1).save(root / "pixel.png")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(root / "deep16.png")
    rgb(32, 32).convert("CMYK").save(root / "cmyk.jpg")
    rgb(32, 32).convert("P").save(root / "palette.png", transparency=0)
    rgb(32, 32).convert("LA").save(root / "gray-alpha.png")
    rgb(32, 32).convert("L").save(root / "gray.jpg")
    rgb(30, 40).save(root / "a.webp")
    rgb(30, 40).save(root / "b.bmp")
    rgb(30, 40).save(root / "c.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    rgb(30, 50).save(root / "rotated.jpg", exif=exif)
    rgb(30, 50).save(root / "sub" / "nested.JPG")
    rgb(16, 16).save(root / LONG)
    with open(os.fsencode(root) + b"/" + LATIN1, "wb") as f:
        rgb(24, 24).save(f, format="PNG")
    (root / "x.jpg").mkdir()  # a folder with an image suffix
    rgb(16, 16).save(root / "x.jpg" / "inside.png")
    rgb(16, 16).save(outside / "far.png")
    rgb(16, 16).save(outside / "dir" / "deep.png")
    os.symlink(outside / "far.png", root / "far.png")  # a link to a file outside the folder
    os.symlink(outside / "dir", root / "linked")  # a link to a folder outside, followed
    os.symlink(root, root / "sub" / "loop")  # a loop: visited once
    os.symlink(root / "nowhere.png", root / "broken.png")  # a broken link
    (root / ".hidden.jpg").write_text("a macOS resource fork")
    (root / "notes.txt").write_text("not an image")
    # unreadable files with image suffixes
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("I am not a JPEG")
    rgb(64, 64).save(root / "cut.jpg", quality=95)
    (root / "cut.jpg").write_bytes((root / "cut.jpg").read_bytes()[:1500])  # header fine, pixels cut short
    rgb(64, 64).save(root / "sub" / "cut.tif")
    (root / "sub" / "cut.tif").write_bytes((root / "sub" / "cut.tif").read_bytes()[:2000])
    rgb(64, 64).save(root / "cut.png")
    (root / "cut.png").write_bytes((root / "cut.png").read_bytes()[:300])
    with open(os.fsencode(root) + b"/" + BAD_LATIN1, "wb") as f:
        f.write(b"\xff\xd8 not really")
    readable = {
        "plain.png", "wide.png", "tall.png", "pixel.png", "deep16.png", "cmyk.jpg", "palette.png", "gray-alpha.png",
        "gray.jpg", "a.webp", "b.bmp", "c.tif", "rotated.jpg", "sub/nested.JPG", LONG, _text(LATIN1), "x.jpg/inside.png",
        "far.png", "linked/deep.png",
    }  # fmt: skip
    unreadable = {"zero.jpg", "text.jpg", "cut.jpg", "sub/cut.tif", "cut.png", _text(BAD_LATIN1)}
    return readable, unreadable


def _listed(path: Path, root: Path) -> list[str]:
    """Names (relative to root) in a skipped-images list, one per line, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0].removeprefix(_text(str(root)) + "/") for line in lines]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    readable, unreadable = hostile_folder(base / "in", base / "outside")
    return base / "in", readable, unreadable


def test_predict_uses_every_readable_image_and_lists_each_unreadable_once(folder, teacher, tmp_path):
    """A real process: the non-UTF-8 names must survive stdout, the list file and the drawn files' names."""
    root, readable, unreadable = folder
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", "sadc", "predict", str(teacher), str(root), "--out", str(out), "--conf", "0.9"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {len(unreadable)} unreadable images" in proc.stdout
    assert sorted(_listed(out / "skipped_images.txt", root)) == sorted(unreadable)
    drawn = {
        _text(p.relative_to(out).as_posix())
        for p in out.rglob("*")
        if p.is_file() and p.suffix != ".json" and p.name != "skipped_images.txt"
    }
    assert drawn == readable


def test_pseudo_label_writes_every_readable_image_once_and_no_duplicate_boxes(folder, teacher, tmp_path):
    root, readable, unreadable = folder
    out = tmp_path / "p" / "pseudo.json"
    result = invoke("pseudo-label", teacher, root, "--out", out, "--threshold", "0.3", "--batch", "4")
    assert result.exit_code == 0, result.output
    coco = json.loads(out.read_text())
    names = [_text(im["file_name"]) for im in coco["images"]]
    assert sorted(names) == sorted(readable)  # each once, links outside the folder included
    assert len({im["id"] for im in coco["images"]}) == len(names)
    rows = Counter((a["image_id"], tuple(a["bbox"]), a["category_id"], a["score"]) for a in coco["annotations"])
    assert rows and max(rows.values()) == 1
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    assert max(per_image.values()) <= 100  # max_detections of the teacher
    assert sorted(_listed(tmp_path / "p" / "pseudo.skipped.txt", root)) == sorted(unreadable)


def test_distill_with_loader_workers_lists_each_unreadable_image_once(folder, teacher, tiny_world, tmp_path):
    root, _, unreadable = folder
    data = distill_recipe(tiny_world, tmp_path / "runs", teacher, steps=6, warmup_steps=0)  # 24 draws: every file
    data["data"].update(unlabeled=str(root), workers=2)
    result = invoke("distill", "--recipe", write_recipe(tmp_path / "r.yaml", data))
    assert result.exit_code == 0, result.output
    listed = _listed(tmp_path / "runs" / "student" / "skipped_images.txt", root)
    assert sorted(listed) == sorted(unreadable)  # once each, although two workers met the cut ones


def test_export_calibrates_and_checks_parity_on_the_folder(folder, teacher, tmp_path):
    root, readable, unreadable = folder
    out = tmp_path / "m.int8.onnx"
    result = invoke(
        "export", teacher, "-f", "int8", "--int8-target", "cpu", "--calib", root, "--calib-batch", "2",
        "--calib-images", "64", "--parity-images", root, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["quantization"]["calibration_images"] == len(readable)
    skipped = {_text(Path(p).relative_to(root).as_posix()) for p in sidecar["quantization"]["calibration_skipped"]}
    assert skipped == unreadable


def test_a_calibration_batch_of_only_unreadable_files_cannot_happen(teacher, tmp_path):
    """8 good PNGs and an empty z.jpg: the last batch of 8 would hold only z.jpg (`No data is collected` before)."""
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(1)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    (calib / "z.jpg").write_bytes(b"")
    export_int8 = ("export", teacher, "-f", "int8", "--int8-target", "cpu", "--calib", calib, "--no-parity")
    result = invoke(*export_int8, "--out", tmp_path / "m.int8.onnx")
    assert result.exit_code == 0, result.output
    (calib / "0.png").rename(calib / "a.jpg")  # also when the first batch is the bad one
    (calib / "z.jpg").rename(calib / "0.jpg")
    result = invoke(*export_int8, "--calib-batch", "1", "--out", tmp_path / "n.int8.onnx")
    assert result.exit_code == 0, result.output


def test_a_file_that_fails_in_every_loader_worker_is_listed_once(tmp_path, caplog):
    """Both workers decode the truncated file (each batch holds both files); the list has it once."""
    from sadc.data.folder import UnlabeledFolder
    from sadc.data.loaders import build_loader

    root = tmp_path / "unl"
    root.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "b.jpg", quality=95)
    (root / "b.jpg").write_bytes((root / "b.jpg").read_bytes()[:1500])
    data = UnlabeledFolder(root, (32, 32))
    data.write_skipped(tmp_path / "skipped.txt")
    loader = iter(build_loader(data, batch_size=2, workers=2, shuffle=False, seed=0))
    reported = 0
    with caplog.at_level(logging.WARNING, logger="sadc"):
        for _ in range(4):  # batches 0, 2 from worker 0; 1, 3 from worker 1
            _, targets = next(loader)
            reported += sum(len(t["skipped"]) for t in targets)
            data.record(targets)
    assert reported == 2  # once in each worker
    assert [r.getMessage().split(": ")[0] for r in caplog.records if "b.jpg" in r.getMessage()] == ["skipping unreadable image"]
    assert _listed(tmp_path / "skipped.txt", root) == ["b.jpg"]
