"""Every bad input is one line and exit code 2 (a traceback only with --debug).

Everything goes through the CLI (typer's CliRunner, or a real subprocess where signals
and kills are the point) on the tiny synthetic world and tiny random detectors. The
cases are listed in docs/troubleshooting.md, grouped the same way.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sadc.artefacts.checkpoint import load_checkpoint
from sadc.errors import SadcError
from tests.helpers import (
    distill_recipe,
    fails_cleanly,
    invoke,
    save_detector,
    save_tiny_checkpoint,
    tiny,
    tiny_spec,
    write_recipe,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A random tiny detector on the synthetic world's classes and the tiny recipe's anchors."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt")


# ------------------------------------------------------------------------------ recipes

BAD_RECIPES = [
    # (what, recipe text or dict of overrides to the tiny recipe, fragment of the one line)
    ("malformed YAML", "train: [1, 2\n", "malformed YAML at line"),
    ("tab indentation", "train:\n\tsteps: 3\n", "found character '\\t'"),
    ("binary file", b"\xff\xfe\x00junk", "not a UTF-8 text file"),
    ("a list, not a mapping", "- 1\n- 2\n", "a recipe is a mapping"),
    ("unknown key", {"train": {"stpes": 3}}, "unknown key train.stpes (did you mean train.steps?)"),
    ("unknown section", {"trian": {}}, "unknown key trian (did you mean train?)"),
    ("wrong type", {"train": {"steps": "many"}}, "train.steps: Input should be a valid integer"),
    ("a value for a section", {"train": 3}, "train: must be a section of key: value lines"),
    ("negative lr", {"train": {"lr": -0.1}}, "train.lr: Input should be greater than 0 (got -0.1)"),
    ("zero batch", {"data": {"batch_size": 0}}, "data.batch_size: Input should be greater than 0 (got 0)"),
    ("probability above 1", {"data": {"augment": {"hflip": 1.5}}}, "data.augment.hflip"),
    ("input size not /32", {"model": {"student": {"input_size": [100, 128]}}}, "multiples of 32"),
    (
        "fcos with several anchor sizes",
        {"model": {"student": {"arch": "fcos", "fpn_channels": 64}}},
        "fcos has one point per location",
    ),
    ("unknown backbone", {"model": {"student": {"backbone": "resnet5"}}}, "backbone 'resnet5' is not registered"),
    ("negative anchor size", {"model": {"student": {"anchor_sizes": [[-8], [16], [32], [64], [128]]}}}, "every one > 0"),
    ("zero std", {"model": {"student": {"std": [0, 1, 1]}}}, "every std must be > 0"),
    ("unknown device", {"train": {"device": "gpu"}}, "train.device: 'gpu' is not a device"),
    ("run name '..'", {"name": ".."}, "'..' is not a run name"),
    ("milestone outside (0,1)", {"train": {"schedule": "step", "step_milestones": [0.5, 1.2]}}, "strictly between 0 and 1"),
    ("target teacher, no teacher", {"train": {"target": "teacher"}}, "train.target=teacher but model.teacher is not set"),
    ("topk < max detections", {"export": {"topk_candidates": 50}}, "export.topk_candidates 50 < export.max_detections 100"),
    ("opset too new", {"export": {"opset": 21}}, "export.opset: Input should be less than or equal to 20"),
    ("device typo", {"train": {"device": "gpu"}}, "train.device: 'gpu' is not a device; use auto, cpu, cuda, cuda:N or N"),
    (
        "positives with fcos",
        {
            "model": {"student": {"arch": "fcos", "fpn_channels": 64, "anchor_sizes": [[8], [16], [32], [64], [128]]}},
            "distill": {"anchors": "positives"},
        },
        "distill.anchors=positives needs IoU-matched anchors",
    ),
    (
        "positives normaliser with fcos",
        {
            "model": {"student": {"arch": "fcos", "fpn_channels": 64, "anchor_sizes": [[8], [16], [32], [64], [128]]}},
            "distill": {"normalizer": "positives"},
        },
        "distill.normalizer=positives needs IoU-matched anchors",
    ),
    (
        "class map: unknown student class",
        {"distill": {"class_map": {"circel": "circle"}}},
        "'circel', which is not in model.student.class_names (did you mean 'circle'?)",
    ),
    (
        "class map: unknown teacher class",
        {"model": {"teacher": {"backbone": "tiny", "class_names": ["a", "b"]}}, "distill": {"class_map": {"circle": "c"}}},
        "maps to teacher class 'c', which is not in model.teacher.class_names",
    ),
    (
        "unlabeled ratio rounds to 0",
        {"data": {"unlabeled": "u", "batch_size": 2}, "distill": {"unlabeled_ratio": 0.1}},
        "rounds to 0 unlabeled images per step",
    ),
    (
        "nothing to learn",
        {"data": {"train": None, "val": None, "unlabeled": "u"}, "distill": {"loss": "none", "pseudo_labels": False}},
        "leave nothing to learn",
    ),
]


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out.get(key) or {}, value) if isinstance(value, dict) and value and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.mark.parametrize(("what", "content", "fragment"), BAD_RECIPES, ids=[c[0] for c in BAD_RECIPES])
def test_bad_recipe_is_one_line_for_check_and_train(what, content, fragment, tiny_world, tmp_path):
    path = tmp_path / "r.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_recipe(path, content if isinstance(content, str) else _merge(tiny(tiny_world, tmp_path / "runs"), content))
    line = fails_cleanly(invoke("recipe", "check", path), fragment)
    assert str(path) in line  # names the file
    fails_cleanly(invoke("train", "--recipe", path), fragment)
    assert not (tmp_path / "runs").exists()  # refused before any work


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train.steps"], "override 'train.steps' is not of the form key.sub=value"),
        (["train.stpes=3"], "unknown key train.stpes (did you mean train.steps?)"),
        (["seed=1", "seed.x=2"], "seed is a value, not a section"),
        (["data.batch_size=-4"], "data.batch_size: Input should be greater than 0 (got -4)"),
    ],
)
def test_bad_overrides_are_one_line(args, fragment, tiny_world, tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny(tiny_world, tmp_path / "runs"))
    fails_cleanly(invoke("train", "--recipe", path, *args), fragment)


def test_missing_recipe_and_folder_recipe(tmp_path):
    fails_cleanly(invoke("train", "--recipe", tmp_path / "nope.yaml"), "nope.yaml: recipe not found")
    fails_cleanly(invoke("distill", "--recipe", tmp_path), "is a folder, not a recipe file")


# -------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("command", "key", "kind"),
    [
        ("train", "data.train.annotations", "file"),
        ("train", "data.train.images", "folder"),
        ("train", "data.val.annotations", "file"),
        ("train", "data.val.images", "folder"),
        ("distill", "data.unlabeled", "folder"),
        ("distill", "model.teacher.source", "file"),
        ("distill", "model.student.source", "file"),
    ],
)
def test_missing_recipe_paths_fail_before_any_work(command, key, kind, tiny_world, tmp_path, teacher):
    data = distill_recipe(tiny_world, tmp_path / "runs", teacher) if command == "distill" else tiny(tiny_world, tmp_path / "runs")
    if key == "data.val.images" or key == "data.val.annotations":
        data["data"]["val"] = {"annotations": str(tiny_world / "val.json"), "images": str(tiny_world / "val")}
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = str(tmp_path / "missing")
    path = write_recipe(tmp_path / "r.yaml", data)
    fails_cleanly(invoke(command, "--recipe", path), f"{key}: {kind} {tmp_path / 'missing'} not found")
    assert not (tmp_path / "runs").exists()
    fails_cleanly(invoke("recipe", "check", "--paths", path), key)
    assert invoke("recipe", "check", path).exit_code == 0  # without --paths, paths are not this machine's business


def test_train_notes_that_it_ignores_unlabeled_data(tiny_world, tmp_path):
    data = tiny(tiny_world, tmp_path, steps=1, warmup_steps=0)
    data["data"].update(unlabeled=str(tiny_world / "unlabeled"), val=None)
    result = invoke("train", "--recipe", write_recipe(tmp_path / "r.yaml", data))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the log line may wrap
    assert "data.unlabeled" in said and "is not trained on by `sadc train`" in said


# ----------------------------------------------------------------------------- COCO json


def _coco_case(world: Path, how: str) -> dict:
    data = json.loads((world / "train.json").read_text())
    ann, img = data["annotations"][0], data["images"][0]
    if how == "missing annotations":
        del data["annotations"]
    elif how == "negative box":
        ann["bbox"] = [4, 4, -3, 5]
    elif how == "zero-size box":
        ann["bbox"] = [4, 4, 0, 5]
    elif how == "box outside the image":
        ann["bbox"] = [500, 500, 5, 5]
    elif how == "unknown category":
        ann["category_id"] = 99
    elif how == "duplicate image id":
        data["images"][1]["id"] = img["id"]
    elif how == "image without size":
        del img["width"]
    elif how == "listed image absent":
        img["file_name"] = "gone.png"
    return data


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("missing annotations", "'annotations' is missing"),
        ("negative box", "has zero or negative width/height"),
        ("zero-size box", "has zero or negative width/height"),
        ("box outside the image", "lies outside image id"),
        ("unknown category", "has unknown category_id 99"),
        ("duplicate image id", "duplicate image id"),
        ("image without size", "needs positive integer 'width' and 'height'"),
        ("listed image absent", "1 of 48 listed images are not in"),
        ("not json", "not valid JSON (line 1"),
    ],
)
def test_bad_coco_json_through_train(how, fragment, tiny_world, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{images: [" if how == "not json" else json.dumps(_coco_case(tiny_world, how)))
    data = tiny(tiny_world, tmp_path / "runs")
    data["data"]["train"]["annotations"] = str(bad)
    line = fails_cleanly(invoke("train", "--recipe", write_recipe(tmp_path / "r.yaml", data)), fragment)
    assert "bad.json" in line


def test_bad_coco_json_through_bench_and_preview(tiny_world, tmp_path, teacher):
    bad = tmp_path / "val.json"
    bad.write_text(json.dumps({"images": [], "categories": []}))
    fails_cleanly(invoke("bench", teacher, "--data", bad, "--no-latency", "--out", tmp_path / "b"), "'annotations' is missing")
    fails_cleanly(invoke("data", "preview", bad, "--out", tmp_path / "p.png"), "'annotations' is missing")
    fails_cleanly(invoke("data", "preview", tmp_path / "none.json"), "none.json: not found; give a COCO json")


def test_data_error_in_a_loader_worker_is_one_line_and_keeps_the_steps_done(tiny_world, tmp_path):
    """A bad image size met mid-run, inside a DataLoader worker: one line, last.pt kept for --resume."""
    from sadc.data.loaders import InfiniteSampler

    data = json.loads((tiny_world / "train.json").read_text())
    order = iter(InfiniteSampler(len(data["images"]), seed=0))
    second_batch = [next(order) for _ in range(16)][8:]  # batch 8: these are read for step 2
    data["images"][second_batch[0]]["width"] = 65
    (tmp_path / "t.json").write_text(json.dumps(data))
    recipe = tiny(tiny_world, tmp_path / "runs", steps=5, warmup_steps=1)
    recipe["data"].update(workers=1, val=None)
    recipe["data"]["train"]["annotations"] = str(tmp_path / "t.json")
    result = invoke("train", "--recipe", write_recipe(tmp_path / "r.yaml", recipe))
    fails_cleanly(result, "says 65x64 for image id", "fix width/height in the json", "last.pt saved at step 1", "--resume")
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")["step"] == 1
    # The worker is stopped with the run, although the error (result.exc_info) still
    # references the loader: a worker ignores SIGTERM, so one left running would hang
    # multiprocessing's exit handler at the end of this process.
    assert not multiprocessing.active_children()


# --------------------------------------------------------------------------------- images


def adversarial_folder(root: Path) -> tuple[list[str], list[str]]:
    """An image folder as found in the wild; returns (readable names, unreadable names), relative to root."""
    rng = np.random.default_rng(0)

    def rgb(h: int, w: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    (root / "sub").mkdir(parents=True)
    rgb(48, 64).save(root / "plain.png")
    rgb(20, 4000).save(root / "wide.png")  # 200:1 aspect ratio
    rgb(1, 1).save(root / "pixel.png")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(root / "deep16.png")  # mode I;16
    rgb(32, 32).convert("CMYK").save(root / "cmyk.jpg")
    rgb(32, 32).convert("P").save(root / "palette.png", transparency=0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(root / "rgba.png")
    rgb(32, 32).convert("L").save(root / "gray.jpg")
    rgb(30, 50).save(root / "sub" / "nested.JPG")
    os.symlink(root, root / "sub" / "loop")  # a symlink loop: visited once
    (root / ".hidden.jpg").write_text("a macOS resource fork")  # hidden: ignored
    (root / "notes.txt").write_text("not an image")  # not an image suffix: ignored
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("I am not a JPEG")
    rgb(64, 64).save(root / "cut.jpg", quality=95)
    (root / "cut.jpg").write_bytes((root / "cut.jpg").read_bytes()[:1500])  # header fine, pixels cut short
    readable = [
        "cmyk.jpg",
        "deep16.png",
        "gray.jpg",
        "palette.png",
        "pixel.png",
        "plain.png",
        "rgba.png",
        "sub/nested.JPG",
        "wide.png",
    ]
    return readable, ["cut.jpg", "text.jpg", "zero.jpg"]


def test_predict_on_an_adversarial_folder_skips_and_lists_the_unreadable(teacher, tmp_path):
    readable, unreadable = adversarial_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = invoke("predict", teacher, tmp_path / "in", "--out", out, "--conf", "0.7")  # few boxes to draw: quick
    assert result.exit_code == 0, result.output
    assert "skipped 3 unreadable images" in result.output and "Traceback" not in result.output
    listed = sorted(Path(line.split("\t")[0]).name for line in (out / "skipped_images.txt").read_text().splitlines())
    assert listed == unreadable
    drawn = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.suffix.lower() != ".txt" and p.name != "detections.json"
    )
    assert drawn == readable
    rows = json.loads((out / "detections.json").read_text())
    assert {r["file_name"] for r in rows} <= set(readable)


def test_predict_with_nothing_readable_or_nothing_at_all(teacher, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"")
    (tmp_path / "bad" / "b.png").write_text("nope")
    fails_cleanly(invoke("predict", teacher, tmp_path / "bad", "--out", tmp_path / "o"), "none of the 2 images can be read")
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / "empty" / "self")
    fails_cleanly(invoke("predict", teacher, tmp_path / "empty", "--out", tmp_path / "o"), "no images found")
    (tmp_path / "file").write_text("x")
    fails_cleanly(invoke("predict", teacher, tmp_path / "bad", "--out", tmp_path / "file"), "choose a writable folder")


def test_distill_on_an_adversarial_unlabeled_folder(tiny_world, tmp_path, teacher):
    _readable, unreadable = adversarial_folder(tmp_path / "unl")
    data = distill_recipe(tiny_world, tmp_path / "runs", teacher, steps=3, warmup_steps=0)  # 12 draws: every file
    data["data"]["unlabeled"] = str(tmp_path / "unl")
    result = invoke("distill", "--recipe", write_recipe(tmp_path / "r.yaml", data), "train.log_every=1")
    assert result.exit_code == 0, result.output
    # cut.jpg decodes badly mid-run: one log line then (not a Python warning), and listed too
    flat = "".join(result.output.split())  # the log line wraps at the terminal's width
    assert re.search(r"WARNINGskippingunreadableimage:\S*/unl/cut\.jpg:cannotreadimage", flat), result.output
    assert "skipped 2 unreadable images" in result.output  # the two whose header is unreadable, known up front
    listed = sorted(
        {
            Path(line.split("\t")[0]).name
            for line in (tmp_path / "runs" / "student" / "skipped_images.txt").read_text().splitlines()
        }
    )
    assert listed == unreadable
    assert load_checkpoint(tmp_path / "runs" / "student" / "last.pt")["step"] == 3


@pytest.mark.parametrize("content", ["empty", "unreadable"])
def test_distill_with_no_usable_unlabeled_image(content, tiny_world, tmp_path, teacher):
    (tmp_path / "unl").mkdir()
    if content == "unreadable":
        (tmp_path / "unl" / "a.jpg").write_bytes(b"")
    data = distill_recipe(tiny_world, tmp_path / "runs", teacher)
    data["data"]["unlabeled"] = str(tmp_path / "unl")
    expected = "no images found" if content == "empty" else "none of the 1 image files can be read"
    fails_cleanly(invoke("distill", "--recipe", write_recipe(tmp_path / "r.yaml", data)), expected)


def test_pseudo_label_skips_and_lists_the_unreadable(teacher, tmp_path):
    adversarial_folder(tmp_path / "in")
    out = tmp_path / "p" / "pseudo.json"
    result = invoke("pseudo-label", teacher, tmp_path / "in", "--out", out, "--threshold", "0.3")
    assert result.exit_code == 0, result.output
    assert "skipped 3 unreadable images" in result.output
    assert len(json.loads(out.read_text())["images"]) == 9
    assert len((tmp_path / "p" / "pseudo.skipped.txt").read_text().splitlines()) == 3
    fails_cleanly(invoke("pseudo-label", teacher, tmp_path / "in", "--out", tmp_path / "p"), "a folder; pass the COCO json file")


# ----------------------------------------------------------------------- teacher/student


def _teacher_variant(folder: Path, **spec) -> Path:
    from sadc.models.detector import build_detector

    torch.manual_seed(0)
    return save_detector(folder / "teacher-variant.pt", build_detector(tiny_spec(**spec)))


SINGLE = [[8.0], [16.0], [32.0], [64.0], [128.0]]


@pytest.mark.parametrize(
    ("spec", "student", "fragment"),
    [
        ({"class_names": ["a", "b"]}, {}, "student class 'circle' has no teacher class 'circle'"),
        ({"anchor_ratios": [0.5, 1.0]}, {}, "teacher has 4 anchors per location, student 2"),
        ({"anchor_sizes": [[10.0, 12.0], *tiny_spec().anchor_sizes[1:]]}, {}, "anchor boxes differ"),
        (
            {"arch": "fcos", "fpn_channels": 64, "anchor_sizes": SINGLE},
            {"anchor_sizes": SINGLE},
            "teacher is fcos, student is retinanet",
        ),
    ],
    ids=["classes", "anchors per location", "anchor sizes", "architecture"],
)
def test_mismatched_teacher_and_student(spec, student, fragment, tiny_world, tmp_path):
    teacher_path = _teacher_variant(tmp_path, **spec)
    data = distill_recipe(tiny_world, tmp_path / "runs", teacher_path)
    data["model"]["student"].update(student)
    fails_cleanly(invoke("distill", "--recipe", write_recipe(tmp_path / "r.yaml", data)), fragment)


def test_distill_positives_with_an_fcos_student_from_a_checkpoint(tiny_world, tmp_path):
    """The recipe cannot see the arch of a student loaded from a file: refused before the first step."""
    fcos = _teacher_variant(tmp_path, arch="fcos", fpn_channels=64, anchor_sizes=SINGLE)
    data = distill_recipe(tiny_world, tmp_path / "runs", fcos)
    data["model"]["student"] = {"source": str(fcos)}
    data["distill"] = {"anchors": "positives"}
    fails_cleanly(
        invoke("distill", "--recipe", write_recipe(tmp_path / "r.yaml", data)), "distill.anchors=positives", "the student is fcos"
    )


# ---------------------------------------------------------------------------- artefacts


def _artefact(kind: str, folder: Path, teacher: Path, onnx_export: Path) -> Path:
    """A file that is not what the command needs, named like what it needs."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / {
        "onnx": "x.onnx",
        "random onnx": "x.onnx",
        "foreign sidecar": "x.onnx",
        "engine": "x.engine",
        "tflite": "x.tflite",
    }.get(kind, "x.pt")
    if kind == "junk":
        path.write_bytes(b"not a checkpoint at all")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "cut short":
        path.write_bytes(teacher.read_bytes()[: teacher.stat().st_size // 2])
    elif kind == "state dict":
        torch.save({"w": torch.zeros(2)}, path)
    elif kind == "pickled module":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind in ("future format", "future spec", "no weights"):
        ckpt = torch.load(teacher, weights_only=True)
        if kind == "future format":
            ckpt["format_version"] = 99
        elif kind == "future spec":
            ckpt["spec"]["backbone"] = "vit_gigantic"
        else:
            del ckpt["model"]
        torch.save(ckpt, path)
    elif kind == "onnx":
        shutil.copy(onnx_export, path)  # a real export, without its sidecar
    elif kind == "random onnx":
        path.write_bytes(b"\x08\x07random protobuf")
    elif kind == "foreign sidecar":
        path.write_bytes(b"\x08\x07random protobuf")
        shutil.copy(onnx_export.with_name(onnx_export.name + ".json"), path.with_name(path.name + ".json"))
    elif kind == "engine":
        path.write_bytes(b"serialized engine")
    elif kind == "tflite":
        path.write_bytes(b"TFL3")
    elif kind == "folder":
        path.mkdir()
    return path


NOT_FOUND = ("not found",) * 3
ARTEFACTS = {  # kind -> what the line says for (export / pseudo-label, distill's teacher source, bench / predict)
    "missing": NOT_FOUND,
    "junk": ("not a readable sadc checkpoint", "not a readable checkpoint or state-dict file", "not a readable sadc checkpoint"),
    "empty": ("empty file",) * 3,
    "cut short": ("cut short",) * 3,
    "state dict": ("a plain state dict, not a sadc checkpoint", "weights do not fit the architecture", "a plain state dict"),
    "pickled module": ("holds a pickled torch.nn.modules.linear.Linear",) * 3,
    "future format": ("format 99 is newer than this sadc understands",) * 3,
    "future spec": ("backbone 'vit_gigantic' is not registered",) * 3,
    "no weights": ("has no 'model' entry",) * 3,
    # a sadc export without its sidecar runs (its metadata_props hold the same): no error for bench / predict
    "onnx": ("an ONNX export, not a checkpoint",) * 2 + (None,),
    "random onnx": ("an ONNX export, not a checkpoint",) * 2 + ("x.onnx.json not found and the file holds no sadc metadata",),
    "foreign sidecar": ("an ONNX export, not a checkpoint",) * 2 + ("describes another file (sha256 differs)",),
    "engine": ("a TensorRT engine, not a checkpoint",) * 2 + ("x.engine.json not found: not a sadc export",),
    "tflite": ("not a readable sadc checkpoint", "not a readable checkpoint", "unknown artefact type '.tflite'"),
    "folder": ("checkpoint not found", "is not a file", "not a model file"),
}


@pytest.fixture(scope="module")
def onnx_export(teacher, tmp_path_factory) -> Path:
    from sadc.export.onnx import export_onnx

    return export_onnx(teacher, tmp_path_factory.mktemp("export") / "best.onnx", simplify=False)


@pytest.mark.parametrize("command", ["export", "pseudo-label", "distill", "bench", "predict"])
@pytest.mark.parametrize("kind", list(ARTEFACTS))
def test_artefact_that_is_not_what_the_command_needs(command, kind, tiny_world, tmp_path, teacher, onnx_export):
    path = tmp_path / "missing.pt" if kind == "missing" else _artefact(kind, tmp_path / "a", teacher, onnx_export)
    for_checkpoint, for_source, for_artefact = ARTEFACTS[kind]
    if command == "export":
        result = invoke("export", path, "--no-parity")
    elif command == "pseudo-label":
        result = invoke("pseudo-label", path, tiny_world / "unlabeled", "--out", tmp_path / "p.json")
    elif command == "distill":
        data = distill_recipe(tiny_world, tmp_path / "runs", path)
        result = invoke("distill", "--recipe", write_recipe(tmp_path / "r.yaml", data))
    elif command == "bench":
        result = invoke("bench", path, "--data", tiny_world / "val.json", "--no-latency", "--out", tmp_path / "b")
    else:
        result = invoke("predict", path, tiny_world / "val", "--out", tmp_path / "o")
    expected = {"export": for_checkpoint, "pseudo-label": for_checkpoint, "distill": for_source}.get(command, for_artefact)
    if expected is None:
        assert result.exit_code == 0, result.output
        return
    line = fails_cleanly(result, expected)
    assert str(path) in line  # names the file
    if command == "distill":
        assert "model.teacher.source" in line  # and the recipe key


def test_devices_that_do_not_exist_here(teacher, tiny_world, tmp_path):
    fails_cleanly(
        invoke("predict", teacher, tiny_world / "val", "--out", tmp_path / "o", "--device", "gpu"), "--device gpu: not a device"
    )
    fails_cleanly(invoke("bench", teacher, "--no-accuracy", "--device", "tpu"), "--device tpu: not a device")
    if not torch.cuda.is_available():
        fails_cleanly(
            invoke("predict", teacher, tiny_world / "val", "--out", tmp_path / "o", "--device", "cuda"),
            "no such CUDA device here",
        )
        fails_cleanly(
            invoke("pseudo-label", teacher, tiny_world / "unlabeled", "--out", tmp_path / "p.json", "--device", "cuda:1"),
            "--device cuda:1",
        )


# -------------------------------------------------------------------------- --debug, bugs


def _failing_commands(tmp_path: Path) -> dict[str, list]:
    (tmp_path / "file").write_text("x")
    return {
        "train": ["train", "--recipe", tmp_path / "none.yaml"],
        "distill": ["distill", "--recipe", tmp_path / "none.yaml"],
        "pseudo-label": ["pseudo-label", tmp_path / "none.pt", tmp_path, "--out", tmp_path / "p.json"],
        "export": ["export", tmp_path / "none.pt"],
        "bench": ["bench", tmp_path / "none.pt", "--no-accuracy"],
        "predict": ["predict", tmp_path / "none.pt", tmp_path, "--out", tmp_path / "o"],
        "data synth": ["data", "synth", tmp_path / "file" / "world", "--train", "1", "--val", "0", "--unlabeled", "0"],
        "data preview": ["data", "preview", tmp_path / "none.json"],
        "recipe show": ["recipe", "show", tmp_path / "none.yaml"],
        "recipe check": ["recipe", "check", tmp_path / "none.yaml"],
    }


@pytest.mark.parametrize(
    "name",
    [
        "train",
        "distill",
        "pseudo-label",
        "export",
        "bench",
        "predict",
        "data synth",
        "data preview",
        "recipe show",
        "recipe check",
    ],
)
def test_every_command_is_one_line_and_debug_shows_the_traceback(name, tmp_path):
    args = _failing_commands(tmp_path)[name]
    fails_cleanly(invoke(*args))
    result = invoke("--debug", *args)
    assert result.exit_code != 0 and isinstance(result.exception, (SadcError, OSError)), result.output


def test_an_unexpected_error_is_one_line_exit_1_and_debug_shows_it(monkeypatch):
    import sadc.cli.doctor as doctor

    monkeypatch.setattr(doctor, "cpu_model", lambda: (_ for _ in ()).throw(RuntimeError("boom\nsecond line")))
    line = fails_cleanly(invoke("doctor"), "unexpected RuntimeError: boom second line", "sadc --debug", code=1)
    assert line.count("boom") == 1
    result = invoke("--debug", "doctor")
    assert isinstance(result.exception, RuntimeError)
