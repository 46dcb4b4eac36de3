"""Recipes: pydantic models of a YAML recipe, dotted overrides and friendly errors.

``load_recipe(path, overrides)`` is the only entry point commands use. Every error a
user can cause is raised as :class:`RecipeError` with one line that names the file and
key, and says what would fix it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sadc.errors import SadcError
from sadc.models.spec import DetectorSpec


class RecipeError(SadcError):
    """A recipe or override is wrong; the message says where and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSource(DetectorSpec):
    """A detector: built from the spec fields, or loaded from ``source``.

    ``source`` is a sadc checkpoint (``runs/x/best.pt``), a torchvision builder
    (``torchvision:retinanet_resnet50_fpn_v2``) or a state-dict file for a torchvision
    architecture (``file.pth``, with ``arch``/``backbone`` giving the architecture).
    When a source is a checkpoint, the spec fields here are ignored: the checkpoint
    carries its own.
    """

    source: str | None = Field(None, description="Checkpoint, `torchvision:NAME` or state-dict file; none = build from the fields.")
    weights: str | None = Field(
        "DEFAULT", description="Weights enum member for `torchvision:` sources (DEFAULT, COCO_V1...); null = random."
    )


class ModelSection(_Section):
    teacher: ModelSource | None = Field(None, description="The teacher of `sadc distill` (frozen).")
    student: ModelSource = Field(default_factory=ModelSource, description="The model `sadc train`/`sadc distill` trains.")


class SplitSection(_Section):
    annotations: Path = Field(..., description="COCO-format json.")
    images: Path = Field(..., description="Folder the json's file_name entries are relative to.")


class AugmentSection(_Section):
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a horizontal flip.")
    scale_jitter: tuple[float, float] = Field(
        (0.75, 1.25), description="Range of the random scale applied before letterboxing (1,1 = off)."
    )

    @model_validator(mode="after")
    def _range(self) -> AugmentSection:
        lo, hi = self.scale_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter {list(self.scale_jitter)} must satisfy 0 < low <= high")
        return self


class DataSection(_Section):
    train: SplitSection | None = Field(None, description="Labeled training set.")
    val: SplitSection | None = Field(None, description="Labeled validation set (periodic mAP, best.pt).")
    unlabeled: Path | None = Field(None, description="Folder of unlabeled images (searched recursively).")
    batch_size: int = Field(16, gt=0, description="Images per step (per device under DDP).")
    workers: int = Field(2, ge=0, description="DataLoader worker processes.")
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Training augmentation.")


class TrainSection(_Section):
    target: Literal["student", "teacher"] = Field(
        "student", description="Which of model.student / model.teacher `sadc train` trains."
    )
    steps: int = Field(700, gt=0, description="Optimiser steps.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    schedule: Literal["cosine", "step", "constant"] = Field("cosine", description="Decay after warm-up.")
    warmup_steps: int = Field(50, ge=0)
    step_milestones: list[float] = Field(
        default_factory=lambda: [0.67, 0.89], description="`step` schedule: fractions of steps where lr drops 10x."
    )
    grad_clip: float | None = Field(10.0, gt=0, description="Max global grad norm; null = off.")
    amp: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="Mixed precision: auto = fp16 on CUDA, off on CPU."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    eval_every: int = Field(100, ge=0, description="Steps between val mAP evaluations (0 = only at the end).")
    log_every: int = Field(10, gt=0, description="Steps between metrics.jsonl lines.")
    save_every: int = Field(100, gt=0, description="Steps between last.pt saves (also saved at every evaluation).")
    max_bad_steps: int = Field(20, gt=0, description="Consecutive non-finite-loss steps before the run stops.")
    deterministic: bool = Field(False, description="Deterministic algorithms (slower; exact resume on CPU).")


class DistillSection(_Section):
    loss: Literal["adl", "kl", "none"] = Field("adl", description="Soft-target loss: ADL, plain sigmoid KL, or none.")
    weight: float = Field(1.0, ge=0, description="lambda: weight of the distillation term.")
    gamma: float = Field(2.0, ge=0, description="ADL focusing exponent.")
    beta: float = Field(1.0, ge=0, description="ADL weight of the teacher entropy (0 = hard-to-mimic only).")
    temperature: float = Field(1.0, gt=0)
    theta: float = Field(1.8, gt=0, description="Exponent of the adaptive normaliser sum(q^theta).")
    form: Literal["paper", "authors"] = Field("paper", description="ADL form: KL (paper) or alpha-BCE (authors' code).")
    alpha: float = Field(0.5, ge=0, le=1, description="alpha of the authors' form.")
    normalizer: Literal["adaptive", "positives"] = Field("adaptive")
    anchors: Literal["all", "positives"] = Field("all", description="Distil over all anchors or positives only.")
    pseudo_labels: bool = Field(True, description="Also train on the teacher's boxes on unlabeled images.")
    pseudo_threshold: float = Field(0.4, ge=0, le=1, description="Teacher score for a pseudo box.")
    unlabeled_ratio: float = Field(1.0, ge=0, description="Unlabeled images per labeled image.")
    skip_empty: bool = Field(False, description="Skip unlabeled images on which the teacher finds nothing.")
    class_map: dict[str, str] | None = Field(
        None, description="Student class -> teacher class name; null = same classes in the same order."
    )
    teacher_precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Teacher forward dtype (CUDA).")


class ExportSection(_Section):
    opset: int = Field(17, ge=17, description="ONNX opset.")
    max_detections: int = Field(100, gt=0, description="K: detections per image in the deploy graph.")
    topk_candidates: int = Field(1000, gt=0, description="Candidates kept before NMS.")
    iou_threshold: float = Field(0.5, gt=0, le=1)
    score_threshold: float = Field(0.05, ge=0, le=1)


class BenchSection(_Section):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8])
    warmup: int = Field(10, ge=0)
    iters: int = Field(50, gt=0)
    score_threshold: float = Field(0.05, ge=0, le=1, description="Score threshold for mAP detections.")
    max_detections: int = Field(100, gt=0)


class Recipe(_Section):
    """A whole run: what to build, what to feed it and how to train, export and bench it."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name; the run directory is output/name.")
    output: Path = Field(Path("runs"), description="Parent folder of run directories.")
    seed: int = Field(0, description="Seed for model init, sampling and augmentation.")
    model: ModelSection = Field(default_factory=ModelSection, description="Teacher and student detectors.")
    data: DataSection = Field(default_factory=DataSection, description="Labeled, val and unlabeled data; loaders.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation, schedule, eval, checkpoints.")
    distill: DistillSection = Field(default_factory=DistillSection, description="SAD: the ADL and pseudo-label settings.")
    export: ExportSection = Field(default_factory=ExportSection, description="ONNX deploy graph settings.")
    bench: BenchSection = Field(default_factory=BenchSection, description="Latency and accuracy settings.")

    @property
    def run_dir(self) -> Path:
        return self.output / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=200"`` -> (["train", "steps"], 200); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r} is not of the form key.sub=value (e.g. train.steps=200)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _known_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _field_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The pydantic model nested under ``key`` of ``model``, if any."""
    ann = model.model_fields[key].annotation
    for cand in getattr(ann, "__args__", ()) or (ann,):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _unknown_key_error(where: str, dotted: str, model: type[BaseModel], bad: str) -> RecipeError:
    known = _known_keys(model)
    close = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
    hint = f"did you mean {dotted.rsplit('.', 1)[0] + '.' if '.' in dotted else ''}{close[0]}?" if close else (
        "known keys: " + ", ".join(known)
    )
    return RecipeError(f"{where}: unknown key {dotted} ({hint})")


def _check_keys(data: Any, model: type[BaseModel], prefix: str, where: str) -> None:
    """Walk raw recipe data and reject unknown keys with a close-match suggestion."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in model.model_fields:
            raise _unknown_key_error(where, dotted, model, str(key))
        sub = _field_model(model, key)
        if sub is not None:
            _check_keys(value, sub, dotted + ".", where)


def _apply_override(data: dict, path: list[str], value: Any, text: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {text!r}: {part} is a value, not a section")
        node = child
    node[path[-1]] = value


def _format_validation_error(err: ValidationError, where: str) -> RecipeError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-")) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    return RecipeError(f"{where}: {loc}: {msg}{shown}{more}")


def recipe_from_dict(data: Any, where: str = "recipe", overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Validate raw recipe data (plus dotted overrides) into a :class:`Recipe`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a mapping of sections (model, data, train, ...), got {type(data).__name__}")
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy; never mutate the caller's dict
    _check_keys(data, Recipe, "", where)
    for text in overrides:
        path, value = parse_override(text)
        _check_keys(_nest(path, value), Recipe, "", f"override {text!r}")
        _apply_override(data, path, value, text)
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err, where) from None


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value if not isinstance(value, dict) else {}
    for part in reversed(path):
        out = {part: out}
    return out


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply ``key.sub=value`` overrides and validate.

    ``path=None`` starts from the defaults. Raises :class:`RecipeError` with one line.
    """
    if path is None:
        return recipe_from_dict({}, "defaults", overrides)
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe not found (see recipes/ for examples)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise RecipeError(f"{path}: malformed YAML{at}: {problem}") from None
    return recipe_from_dict(data, str(path), overrides)


def save_recipe(recipe: Recipe, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe.to_yaml())
