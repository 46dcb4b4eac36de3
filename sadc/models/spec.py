"""DetectorSpec: everything needed to rebuild a detector from an artefact alone.

A spec is stored in every checkpoint and ONNX sidecar. It is a pydantic model so that
recipes embed it with validation for free, and so that ``spec.model_dump()`` is the
serialised form.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DetectorSpec(BaseModel):
    """Architecture and I/O contract of a single-stage detector.

    ``anchor_sizes`` has one tuple per pyramid level P3..P7 (strides 8..128), in input
    pixels; ``anchor_ratios`` (height / width) are shared by every level, so a level has
    ``len(sizes) * len(ratios)`` anchors per location. FCOS uses one point per location
    and ignores ratios; its ``anchor_sizes`` are the per-level point sizes.
    ``input_size`` is (height, width) of the letterboxed network input.
    ``mean``/``std`` apply to images scaled to [0, 1].
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan and inf are never a setting

    arch: Literal["retinanet", "fcos"] = Field("retinanet", description="Detector family.")
    backbone: str = Field("resnet18", description="Backbone name from the backbone registry.")
    fpn_channels: int = Field(64, gt=0, description="Channels of every FPN level and of the heads.")
    head_norm: Literal["group", "batch", "level_batch", "none"] = Field(
        "group",
        description=(
            "Normalisation in the head convs; GroupNorm trains from scratch far better than one BatchNorm "
            "shared by all levels (batch). level_batch: a BatchNorm per FPN level (EfficientDet's head), "
            "folded into the convs at export."
        ),
    )
    head_convs: int = Field(
        4, ge=1, le=4, description="3x3 convs in each head branch before its output conv (RetinaNet and FCOS: 4)."
    )
    anchor_sizes: list[list[float]] = Field(
        default_factory=lambda: [[16.0], [32.0], [64.0], [128.0], [256.0]],
        description="Anchor sizes (px) per pyramid level P3..P7.",
    )
    anchor_ratios: list[float] = Field(default_factory=lambda: [1.0], description="Anchor aspect ratios h/w.")
    class_names: list[str] = Field(default_factory=lambda: ["object"], description="Names of the C classes.")
    input_size: tuple[int, int] = Field((128, 128), description="Network input (height, width) in pixels.")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="Per-channel mean on [0,1] images.")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="Per-channel std on [0,1] images.")
    builder: str | None = Field(
        None,
        description="Set for torchvision-built detectors (e.g. torchvision:retinanet_resnet50_fpn_v2): rebuild "
        "with that builder instead of from the fields above, with its 91 COCO class slots unless class_names is set.",
    )
    pretrained_backbone: bool = Field(
        False, description="Start the backbone from ImageNet weights where they can be had (else random, logged)."
    )

    @field_validator("anchor_sizes")
    @classmethod
    def _five_levels(cls, v: list[list[float]]) -> list[list[float]]:
        if len(v) != 5 or any(len(level) == 0 for level in v):
            raise ValueError("needs 5 non-empty lists, one per pyramid level P3..P7")
        if any(size <= 0 for level in v for size in level):
            raise ValueError(f"{v}: anchor sizes are pixels, every one > 0")
        return v

    @field_validator("anchor_ratios")
    @classmethod
    def _positive_ratios(cls, v: list[float]) -> list[float]:
        if not v or any(r <= 0 for r in v):
            raise ValueError(f"{v}: give at least one ratio h/w, every one > 0")
        return v

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"{list(v)}: every std must be > 0 (images are divided by it)")
        return v

    @field_validator("input_size")
    @classmethod
    def _divisible(cls, v: tuple[int, int]) -> tuple[int, int]:
        if any(s < 32 or s % 32 for s in v):
            raise ValueError(f"{list(v)}: height and width must be multiples of 32, at least 32")
        return v

    @model_validator(mode="after")
    def _classes(self) -> DetectorSpec:
        if self.builder is None:
            from sadc.models.backbones import (
                list_backbones,  # the registry; imported late (torch)
            )

            known = list_backbones()
            if self.backbone not in known:
                close = difflib.get_close_matches(self.backbone, known, n=1)
                hint = f"did you mean {close[0]}?" if close else "known: " + ", ".join(known)
                raise ValueError(f"backbone {self.backbone!r} is not registered ({hint})")
        if not self.class_names:
            raise ValueError("class_names must name at least one class")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names has duplicates")
        if self.arch == "fcos" and any(len(level) != 1 for level in self.anchor_sizes):
            raise ValueError(
                f"fcos has one point per location: anchor_sizes needs one size per level, e.g. "
                f"[[8], [16], [32], [64], [128]], got {self.anchor_sizes}"
            )
        if self.arch == "fcos" and (self.fpn_channels % 32 or self.fpn_channels < 64):
            raise ValueError(
                f"fcos needs fpn_channels a multiple of 32, at least 64 (its head uses GroupNorm(32)), got {self.fpn_channels}"
            )
        return self

    @property
    def num_classes(self) -> int:
        """Width C of the classification head; label i means ``class_names[i]``."""
        return len(self.class_names)

    @property
    def anchors_per_location(self) -> int:
        if self.arch == "fcos":
            return 1
        return len(self.anchor_sizes[0]) * len(self.anchor_ratios)


def spec_from_sidecar(payload: dict) -> DetectorSpec:
    """The :class:`DetectorSpec` stored in an export's sidecar payload (one ExportError line if invalid)."""
    from pydantic import ValidationError

    from sadc.errors import ExportError

    try:
        return DetectorSpec(**payload["spec"])
    except ValidationError as err:
        raise ExportError(f"sidecar spec is not valid for this sadc ({err.errors()[0]['msg']}); re-export") from None
