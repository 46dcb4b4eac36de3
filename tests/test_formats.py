"""COCO, YOLO and VOC layouts: one internal form, the same numbers, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sadc.data.evaluate import evaluate
from sadc.data.formats import detect_format, open_labeled, read_split, write_layouts
from sadc.data.images import DataError
from sadc.data.loaders import build_loader
from sadc.recipe import recipe_from_dict
from tests.helpers import distill_recipe, fails_cleanly, invoke, pycocotools_stats, save_tiny_checkpoint


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory) -> Path:
    """A copy of the tiny world with its labeled splits also written as yolo/ and voc/."""
    out = tmp_path_factory.mktemp("layouts") / "synth"
    shutil.copytree(tiny_world, out)
    write_layouts(out, ["coco", "yolo", "voc"])
    return out


def sources(world: Path) -> dict[str, Path]:
    return {"coco": world / "val.json", "yolo": world / "yolo" / "data.yaml", "voc": world / "voc"}


def _boxes(coco: dict) -> list[tuple]:
    return [(a["image_id"], a["category_id"], *a["bbox"], a["iscrowd"]) for a in coco["annotations"]]


def test_layouts_read_back_to_the_same_coco(world):
    ref = read_split(world / "val.json")
    for fmt, path in sources(world).items():
        data = read_split(path, split="val")
        assert data.format == fmt == detect_format(path)
        assert data.class_names == ref.class_names
        assert [(i["id"], i["width"], i["height"]) for i in data.coco["images"]] == [
            (i["id"], i["width"], i["height"]) for i in ref.coco["images"]
        ]
        np.testing.assert_allclose(np.array(_boxes(data.coco)), np.array(_boxes(ref.coco)), atol=1e-6)
    train = read_split(world / "yolo", split="train")  # the folder of the data.yaml works too
    assert len(train.coco["images"]) == len(read_split(world / "train.json").coco["images"])


def test_noisy_predictions_score_the_same_in_every_layout(world):
    """Detections jittered from the ground truth: one mAP whatever the layout, equal to pycocotools on the json."""
    ref_json = world / "val.json"
    scores = {}
    for fmt, path in sources(world).items():
        data = open_labeled(path, (64, 64), split="val")
        loader = build_loader(data, batch_size=4, workers=0, shuffle=False, seed=0, infinite=False)
        gen = torch.Generator().manual_seed(0)

        def noisy(images, _targets=iter(loader), gen=gen):  # noqa: B008 - one iterator shared by every call, on purpose
            _, targets = next(_targets)
            out = []
            for t in targets:
                boxes = t["boxes"] + torch.randn(t["boxes"].shape, generator=gen) * 2.0
                out.append({"boxes": boxes, "scores": torch.rand(len(boxes), generator=gen), "labels": t["labels"]})
            return out

        scores[fmt] = evaluate(noisy, loader, data.coco, data.cat_ids, save_detections=world / f"det-{fmt}.json")
    assert 0.1 < scores["coco"]["mAP"] < 0.95
    for fmt in ("yolo", "voc"):
        assert scores[fmt]["mAP"] == pytest.approx(scores["coco"]["mAP"], abs=1e-9)
        assert scores[fmt]["per_class"] == scores["coco"]["per_class"]
    reference = pycocotools_stats(ref_json, json.loads((world / "det-voc.json").read_text()))
    assert scores["voc"]["mAP"] == pytest.approx(reference[0], abs=1e-6)


def test_bench_gives_the_same_map_for_every_layout(world, tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    results = {}
    for fmt, path in sources(world).items():
        out = tmp_path / fmt
        result = invoke("bench", ckpt, "--data", path, "--no-latency", "--out", out, "--device", "cpu")
        assert result.exit_code == 0, result.output
        results[fmt] = json.loads((out / "bench.json").read_text())["results"][0]
    coco = results["coco"]
    assert sum(c["gt"] for c in coco["per_class"].values()) == len(json.loads((world / "val.json").read_text())["annotations"])
    for fmt in ("yolo", "voc"):
        assert results[fmt]["accuracy"] == coco["accuracy"]
        assert results[fmt]["per_class"] == coco["per_class"]


def _yolo_copy(world: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "yolo"
    shutil.copytree(world / "yolo", dst)
    return dst


@pytest.mark.parametrize(
    "row, fragment",
    [
        ("0 0.5 0.5 0.2", "line 2: 4 numbers, expected 5"),
        ("7 0.5 0.5 0.2 0.2", "line 2: class id 7 is past names (0..4)"),
        ("1 1.5 0.5 0.2 0.2", "line 2: box 1.5 0.5 0.2 0.2 is outside [0, 1]"),
        ("1 0.5 zero 0.2 0.2", "line 2: '1 0.5 zero 0.2 0.2' is not numbers"),
    ],
)
def test_bad_yolo_label_is_one_line_naming_file_and_line(world, tmp_path, row, fragment):
    root = _yolo_copy(world, tmp_path)
    label = root / "labels" / "val" / "000002.txt"
    first = label.read_text().splitlines()[0]
    label.write_text(f"{first}\n{row}\n")
    fails_cleanly(invoke("data", "preview", root / "data.yaml", "--out", tmp_path / "p.png"), f"{label} {fragment}")


def test_yolo_image_without_label_file_is_background(world, tmp_path):
    root = _yolo_copy(world, tmp_path)
    (root / "labels" / "val" / "000003.txt").unlink()
    data = read_split(root, split="val")
    ref = read_split(world / "val.json")
    image_id = next(i["id"] for i in data.coco["images"] if i["file_name"].endswith("000003.png"))
    assert not [a for a in data.coco["annotations"] if a["image_id"] == image_id]
    assert [a for a in ref.coco["annotations"] if a["image_id"] == image_id]  # it had boxes
    assert len(data.coco["images"]) == len(ref.coco["images"])  # and is still scored, as background


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda x: x.replace("<size><width>64</width><height>64</height><depth>3</depth></size>", ""), "no <size>"),
        (lambda x: x.replace("</name>", "</nam>", 1), "line 5: not well-formed XML (mismatched tag)"),
        (lambda x: x.replace("<xmax>", "<xmax>x", 1), "line 7: <xmax> is 'x"),
        (lambda x: x.replace("<name>", "<name>dog", 1), "line 4: object name 'dog"),
    ],
)
def test_bad_voc_xml_is_one_line_naming_file_and_line(world, tmp_path, edit, fragment):
    root = tmp_path / "voc"
    shutil.copytree(world / "voc", root)
    xml = root / "Annotations" / "val_000001.xml"
    xml.write_text(edit(xml.read_text()))
    fails_cleanly(invoke("data", "preview", root, "--out", tmp_path / "p.png"), f"{xml}", fragment)


def test_data_yaml_problems_are_named(world, tmp_path):
    root = _yolo_copy(world, tmp_path)
    (root / "data.yaml").write_text("train: images/train\nnames: [a, b]\n")
    with pytest.raises(DataError, match=r"data.yaml: no 'val:' entry \(it has train\)"):
        read_split(root, split="val")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\n")
    with pytest.raises(DataError, match="'names' is missing"):
        read_split(root, split="val")
    with pytest.raises(DataError, match=r"neither a data\.yaml"):
        detect_format(tmp_path)


def test_convert_round_trips(world, tmp_path):
    result = invoke("data", "convert", world / "voc", tmp_path / "coco", "--to", "coco")
    assert result.exit_code == 0, result.output
    back = read_split(tmp_path / "coco" / "val.json")
    np.testing.assert_allclose(np.array(_boxes(back.coco)), np.array(_boxes(read_split(world / "val.json").coco)), atol=1e-6)
    result = invoke("data", "convert", world / "val.json", tmp_path / "y", "--to", "yolo")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "y" / "data.yaml").is_file()
    assert read_split(tmp_path / "y", split="val").class_names == back.class_names


def test_recipe_split_shorthand_and_format():
    r = recipe_from_dict({"data": {"val": "d/data.yaml", "train": {"annotations": "d/voc", "format": "voc"}}})
    assert r.data.val.annotations == Path("d/data.yaml") and r.data.val.format == "auto" and r.data.val.images is None
    assert r.data.train.format == "voc"


def test_distill_runs_from_a_yolo_data_yaml(world, tmp_path):
    from sadc.distill.run import run_distill

    teacher = save_tiny_checkpoint(tmp_path / "teacher.pt")
    data = distill_recipe(world, tmp_path, teacher, steps=2)
    data["data"]["train"] = str(world / "yolo" / "data.yaml")
    run_dir = run_distill(recipe_from_dict(data))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert (run_dir / "last.pt").is_file() and json.loads(lines[-1])["step"] == 2
