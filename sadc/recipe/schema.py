"""The recipe schema: pydantic models of every section, with their ranges and cross-field checks.

Validation errors raised here are turned into one-line :class:`RecipeError` messages by
:mod:`sadc.recipe.load`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from sadc.artefacts.postprocess import PostProcess
from sadc.devices import DEVICE_HELP, parse_device
from sadc.errors import SadcError
from sadc.models.spec import DetectorSpec


class RecipeError(SadcError):
    """A recipe or override is wrong; the message says where and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSource(DetectorSpec):
    """A detector: built from the spec fields, or loaded from ``source``.

    ``source`` is a sadc checkpoint (``runs/x/best.pt``), a torchvision builder
    (``torchvision:retinanet_resnet50_fpn_v2``) or a state-dict file for a torchvision
    architecture (``file.pth``, with ``builder`` naming the architecture).
    When a source is a checkpoint, the spec fields here are ignored: the checkpoint
    carries its own.
    """

    source: str | None = Field(
        None, description="Checkpoint, `torchvision:NAME` or state-dict file; none = build from the fields."
    )
    weights: str | None = Field(
        "DEFAULT", description="Weights enum member for `torchvision:` sources (DEFAULT, COCO_V1...); null = random."
    )


class ModelSection(_Section):
    teacher: ModelSource | None = Field(None, description="The teacher of `sadc distill` (frozen).")
    student: ModelSource = Field(default_factory=ModelSource, description="The model `sadc train`/`sadc distill` trains.")


class SplitSection(_Section):
    """A labeled split: ``data.val: PATH`` is short for ``data.val: {annotations: PATH}``."""

    annotations: Path = Field(..., description="COCO json, YOLO data.yaml (or its folder) or VOC folder (see docs/data.md).")
    images: Path | None = Field(
        None,
        description="COCO only: folder the json's file_name entries are relative to (default: the json's path without .json).",
    )
    format: Literal["auto", "coco", "yolo", "voc"] = Field("auto", description="Layout of annotations; auto = detected.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"annotations": data} if isinstance(data, (str, Path)) else data


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
    unlabeled: Literal["labeled"] | Path | list[Literal["labeled"] | Path] | None = Field(
        None,
        description="Folder of unlabeled images (searched recursively), or a list of folders; the entry `labeled` "
        "adds the labeled train images (with their ground truth), as the authors' unlabeled stream does.",
    )
    schedule: Literal["joint", "alternate"] = Field(
        "joint",
        description="joint: each step holds labeled + unlabeled images; alternate: whole labeled and whole unlabeled "
        "steps in turn (labeled first), as the authors' loader.",
    )
    batch_size: int = Field(16, gt=0, description="Images per step (per device under DDP).")
    workers: int = Field(
        2,
        ge=0,
        description="DataLoader worker processes per data stream; 0 loads in the training process (faster on 2 CPU cores).",
    )
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Training augmentation.")

    @property
    def unlabeled_sources(self) -> list[Path | str]:
        """data.unlabeled as a list: folders (Path) and the token ``"labeled"``; empty if unset."""
        if self.unlabeled is None:
            return []
        return list(self.unlabeled) if isinstance(self.unlabeled, list) else [self.unlabeled]


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
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps (a fifth of the run if not shorter than it).")
    step_milestones: list[float] = Field(
        default_factory=lambda: [0.67, 0.89], description="`step` schedule: fractions of steps where lr drops 10x."
    )
    grad_clip: float | None = Field(10.0, gt=0, description="Max global grad norm; null = off.")
    amp: Literal["auto", "off", "fp16", "bf16"] = Field("auto", description="Mixed precision: auto = fp16 on CUDA, off on CPU.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or N (= cuda:N).")
    channels_last: bool = Field(
        False, description="NHWC memory format for the trained model (and teacher): faster convs on some CPUs/GPUs."
    )
    batched_loss: bool = Field(
        False,
        description="RetinaNet's loss for the whole batch at once (sadc/models/retina_loss.py): the same math as "
        "torchvision's per-image loss, 6-8 % faster steps for the quickstart student on CPU, another floating-point "
        "path (benchmarks/RESULTS.md); recipes/quickstart.yaml uses it, its teacher's recipe does not.",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Exponential moving average of the weights (and BatchNorm statistics) with this decay per step, "
        "e.g. 0.99; evaluation and best.pt use the average. 0 = off.",
    )
    eval_every: int = Field(100, ge=0, description="Steps between val mAP evaluations (0 = only at the end).")
    log_every: int = Field(10, gt=0, description="Steps between metrics.jsonl lines.")
    save_every: int = Field(100, gt=0, description="Steps between last.pt saves (also saved at every evaluation).")
    max_bad_steps: int = Field(20, gt=0, description="Consecutive non-finite-loss steps before the run stops.")
    deterministic: bool = Field(False, description="Deterministic algorithms (slower; exact resume on CPU).")

    @field_validator("device", mode="before")
    @classmethod
    def _device_name(cls, v: Any) -> str:
        try:
            return parse_device(v)
        except SadcError:
            raise ValueError(f"{v!r} is not a device; use {DEVICE_HELP}") from None

    @field_validator("step_milestones")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in v):
            raise ValueError(f"{v}: milestones are fractions of train.steps, each strictly between 0 and 1 (e.g. [0.67, 0.89])")
        return v


class DistillSection(_Section):
    loss: Literal["adl", "kl", "none"] = Field("adl", description="Soft-target loss: ADL, plain sigmoid KL, or none.")
    weight: float = Field(1.0, ge=0, description="lambda: weight of the distillation term.")
    gamma: float = Field(2.0, ge=0, description="ADL focusing exponent.")
    beta: float = Field(1.0, ge=0, description="ADL weight of the teacher entropy (0 = hard-to-mimic only).")
    temperature: float = Field(1.0, gt=0, description="T dividing both logits; the loss is multiplied by T^2.")
    theta: float = Field(1.8, gt=0, description="Exponent of the adaptive normaliser sum(q^theta).")
    form: Literal["paper", "authors"] = Field("paper", description="ADL form: KL (paper) or alpha-BCE (authors' code).")
    alpha: float = Field(0.5, ge=0, le=1, description="alpha of the authors' form.")
    normalizer: Literal["adaptive", "positives"] = Field(
        "adaptive", description="Divide the ADL sum by sum(q^theta) (adaptive) or by the number of positive anchors."
    )
    anchors: Literal["not_ignored", "all", "positives"] = Field(
        "not_ignored",
        description="Anchors the ADL covers: not_ignored = all but RetinaNet's ignore band (IoU in [0.4, 0.5) with "
        "every ground-truth / pseudo box, as the authors' kernel), all, or positives only.",
    )
    pseudo_labels: bool = Field(True, description="Also train on the teacher's boxes on unlabeled images.")
    pseudo_threshold: float = Field(0.4, ge=0, le=1, description="Teacher score for a pseudo box.")
    unlabeled_ratio: float = Field(1.0, ge=0, description="Unlabeled images per labeled image in a step (data.schedule=joint).")
    skip_empty: bool = Field(
        False,
        description="Unlabeled images on which the teacher finds nothing contribute to no loss term (the authors "
        "drop them from training).",
    )
    class_map: dict[str, str] | None = Field(
        None, description="Student class -> teacher class name; null = same classes in the same order."
    )
    teacher_precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="Teacher forward dtype: fp16/bf16 autocast on CUDA, bf16 on CPU (fp16 runs fp32 there)."
    )


class ExportSection(_Section):
    opset: int = Field(17, ge=17, le=20, description="ONNX opset (17..20).")
    max_detections: int = Field(100, gt=0, description="K: detections per image in the deploy graph.")
    topk_candidates: int = Field(1000, gt=0, description="Candidates kept before NMS.")
    iou_threshold: float = Field(0.5, gt=0, le=1)
    score_threshold: float = Field(0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _enough_candidates(self) -> ExportSection:
        if self.topk_candidates < self.max_detections:
            raise ValueError(
                f"export.topk_candidates {self.topk_candidates} < export.max_detections {self.max_detections}: NMS cannot return "
                "more boxes than it is given; raise export.topk_candidates or lower export.max_detections"
            )
        return self

    def postprocess(self) -> PostProcess:
        """The thresholds as the one type every stage reads (same names as these keys)."""
        return PostProcess(
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            topk_candidates=self.topk_candidates,
        )


class Recipe(_Section):
    """A whole run: what to build, what to feed it and how to train, export and bench it."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name; the run directory is output/name.")
    output: Path = Field(Path("runs"), description="Parent folder of run directories.")
    seed: int = Field(0, ge=0, lt=2**63, description="Seed for model init, sampling and augmentation.")
    model: ModelSection = Field(default_factory=ModelSection, description="Teacher and student detectors.")
    data: DataSection = Field(default_factory=DataSection, description="Labeled, val and unlabeled data; loaders.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation, schedule, eval, checkpoints.")
    distill: DistillSection = Field(default_factory=DistillSection, description="SAD: the ADL and pseudo-label settings.")
    export: ExportSection = Field(default_factory=ExportSection, description="ONNX deploy graph settings.")

    @field_validator("name")
    @classmethod
    def _not_a_parent(cls, v: str) -> str:
        if v in (".", ".."):
            raise ValueError(f"{v!r} is not a run name; use letters, digits, _ . -")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        """Settings that are each valid but contradict one another (see docs/troubleshooting.md)."""
        train, distill, data, student, teacher = self.train, self.distill, self.data, self.model.student, self.model.teacher
        if train.target == "teacher" and teacher is None:
            raise ValueError(
                "train.target=teacher but model.teacher is not set; add a model.teacher section or set train.target=student"
            )
        if student.source is None and student.arch == "fcos":
            for key in ("anchors", "normalizer"):
                if getattr(distill, key) == "positives":
                    raise ValueError(
                        f"distill.{key}=positives needs IoU-matched anchors (arch retinanet), but model.student.arch "
                        f"is fcos; use distill.{key}={'all' if key == 'anchors' else 'adaptive'}"
                    )
        if distill.class_map:
            if student.source is None:
                _check_names(list(distill.class_map), student.class_names, "maps student class", "model.student.class_names")
            if teacher is not None and teacher.source is None:
                _check_names(
                    list(distill.class_map.values()), teacher.class_names, "maps to teacher class", "model.teacher.class_names"
                )
        if "labeled" in data.unlabeled_sources and data.train is None:
            raise ValueError("data.unlabeled lists `labeled` (the labeled train images) but data.train is not set")
        if data.schedule == "alternate" and (data.train is None or data.unlabeled is None):
            raise ValueError(
                "data.schedule=alternate alternates labeled and unlabeled steps: it needs data.train and "
                "data.unlabeled (or use data.schedule=joint)"
            )
        joint = data.schedule == "joint" and data.unlabeled is not None and data.train is not None
        if joint and distill.unlabeled_ratio > 0 and round(data.batch_size * distill.unlabeled_ratio) == 0:
            raise ValueError(
                f"distill.unlabeled_ratio {distill.unlabeled_ratio} x data.batch_size {data.batch_size} rounds to 0 "
                "unlabeled images per step; raise one of them (or set data.unlabeled=null)"
            )
        if data.train is None and data.unlabeled is not None and distill.loss == "none" and not distill.pseudo_labels:
            raise ValueError(
                "distill.loss=none and distill.pseudo_labels=false leave nothing to learn from data.unlabeled "
                "(and there is no data.train); enable one of them"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.output / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _check_names(given: list[str], names: list[str], what: str, where: str) -> None:
    unknown = [k for k in given if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"{where}: {names}"
        raise ValueError(f"distill.class_map {what} {unknown[0]!r}, which is not in {where} ({hint})")
