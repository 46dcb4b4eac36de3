"""docs/troubleshooting.md and the code agree: every recipe error the page lists is produced.

The page's Recipes table is parsed; each documented line (placeholders such as ``R``,
``N``, ``...`` and ``'x'`` match anything) must be produced by the reproduction listed
here, and every reproduction must belong to a documented line. A row for an error the
code no longer raises (as ``train.warmup_steps W >= train.steps S`` was: the warm-up is
shortened instead) fails here, and so does a new row without a reproduction.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sadc.recipe import RecipeError, load_recipe

PAGE = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
PLACEHOLDER = re.compile(r"\s*(?:\.\.\.|'[a-z]'|\b[A-Z][A-Z0-9]?\b)\s*")

# 9**7 numbers once its aliases are expanded
BOMB = "[&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]" + "".join(f", &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)) + "]"
FCOS = {"arch": "fcos", "fpn_channels": 64, "anchor_sizes": [[8], [16], [32], [64], [128]]}

# documented line -> (recipe file text, overrides)
REPRODUCTIONS: dict[str, tuple[str | bytes, list[str]]] = {
    "R.yaml: malformed YAML at line L, column C: ...": ("train: [1, 2\n", []),
    "R.yaml: not a UTF-8 text file": (b"\xff\xfe\x00junk", []),
    "nested too deeply": ("a: " + "[" * 5000 + "]" * 5000 + "\n", []),
    "R.yaml: duplicate key train at lines A and B": ("train: {steps: 3}\ndata: {}\ntrain: {lr: 0.1}\n", []),
    "R.yaml: ... expands to more than 100,000 values (through YAML aliases ...)": (f"train:\n  steps: {BOMB}\n", []),
    "refers to itself": ("train:\n  step_milestones: &a [0.5, *a]\n", []),
    "R.yaml: a recipe is a mapping of sections ...": ("- 1\n- 2\n", []),
    "R.yaml: unknown key train.stpes (did you mean train.steps?)": ("train: {stpes: 3}\n", []),
    "R.yaml: train.steps: Input should be a valid integer ... (got 'many')": ("train: {steps: many}\n", []),
    "R.yaml: train: must be a section of key: value lines": ("train: 3\n", []),
    "R.yaml: train.lr: Input should be a finite number (got inf)": ("train: {lr: .inf}\n", []),
    "R.yaml: train.lr: Input should be greater than 0 (got -0.1)": ("train: {lr: -0.1}\n", []),
    "model.student.input_size: ... multiples of 32": ("model: {student: {input_size: [100, 128]}}\n", []),
    "backbone 'x' is not registered (did you mean ...)": ("model: {student: {backbone: resnet5}}\n", []),
    "fcos has one point per location: anchor_sizes needs one size per level": (
        "model: {student: {arch: fcos, anchor_sizes: [[8, 12], [16, 24], [32, 48], [64, 96], [128, 192]]}}\n",
        [],
    ),
    "train.device: 'gpu' is not a device": ("train: {device: gpu}\n", []),
    "train.step_milestones: ... strictly between 0 and 1": ("train: {step_milestones: [0.5, 1.2]}\n", []),
    "train.target=teacher but model.teacher is not set": ("train: {target: teacher}\n", []),
    "distill.anchors=positives needs IoU-matched anchors (arch retinanet)": (
        "",
        [f"model.student.{k}={v}" for k, v in FCOS.items()] + ["distill.anchors=positives"],
    ),
    "distill.class_map maps student class 'x', which is not in model.student.class_names": (
        "distill: {class_map: {x: object}}\n",
        [],
    ),
    "distill.unlabeled_ratio R x data.batch_size B rounds to 0 unlabeled images per step": (
        "data: {train: {annotations: a.json, images: i}, unlabeled: u, batch_size: 2}\ndistill: {unlabeled_ratio: 0.1}\n",
        [],
    ),
    "distill.loss=none and distill.pseudo_labels=false leave nothing to learn": (
        "data: {unlabeled: u}\ndistill: {loss: none, pseudo_labels: false}\n",
        [],
    ),
    "export.topk_candidates K1 < export.max_detections K2": ("export: {topk_candidates: 50}\n", []),
    "data.schedule=alternate alternates labeled and unlabeled steps: it needs data.train and data.unlabeled": (
        "data: {unlabeled: u, schedule: alternate}\n",
        [],
    ),
    "data.unlabeled lists `labeled` (the labeled train images) but data.train is not set": (
        "data: {unlabeled: [labeled, u]}\n",
        [],
    ),
    "override 'x' is not of the form key.sub=value": ("", ["x"]),
}


CODE = re.compile(r"``(.+?)``|`([^`]+)`")


def documented_recipe_lines() -> list[str]:
    """The printed lines of the Recipes table's first column: cells that are only code spans (`a` / `b`).

    Rows whose first cell also holds prose (a note, a symptom in metrics.jsonl) are not lines sadc prints.
    """
    text = PAGE.read_text()
    table = text.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    lines = []
    for row in table.splitlines():
        cell = row.split(" | ")[0].removeprefix("| ")
        if not cell.startswith("`") or CODE.sub("", cell).replace("/", "").strip():
            continue
        lines += [a or b for a, b in CODE.findall(cell)]
    return lines


def as_pattern(line: str) -> re.Pattern:
    parts = PLACEHOLDER.split(line)
    return re.compile(".*".join(re.escape(p) for p in parts))


def test_every_documented_recipe_error_has_a_reproduction_and_no_more():
    assert sorted(documented_recipe_lines()) == sorted(REPRODUCTIONS)


def test_the_page_no_longer_lists_an_error_the_code_does_not_raise():
    """The warm-up longer than the run is shortened to a fifth of it (docs/recipes.md), not refused."""
    assert "warmup_steps" not in " ".join(documented_recipe_lines())
    recipe = load_recipe(None, ["train.steps=20", "train.warmup_steps=50"])
    from sadc.engine.trainer import lr_factor

    assert lr_factor(3, recipe.train) == pytest.approx(1.0)  # warm-up of 20 // 5 = 4 steps


@pytest.mark.parametrize("line", sorted(REPRODUCTIONS))
def test_a_documented_recipe_error_is_produced(line, tmp_path):
    text, overrides = REPRODUCTIONS[line]
    path = tmp_path / "R.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    assert as_pattern(line).search(message), (line, message)
