"""Post-processing settings: one type, one set of names, from the recipe to the sidecar.

:class:`PostProcess` is read by ``Detector.detect`` (eager), ``DeployModule`` (the
exported graph), the recipe's ``export`` section, every predictor and the export
sidecar, whose ``"thresholds"`` object is :meth:`PostProcess.to_json`. The CLI keeps
Ultralytics' flag names; :data:`FLAGS` maps each field to its flag so that errors name
what the user typed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from sadc.errors import SadcError

FLAGS = {
    "score_threshold": "--conf",
    "iou_threshold": "--iou",
    "max_detections": "--max-det",
    "topk_candidates": "--topk",
}
"""Field -> the ``sadc export`` flag that sets it."""


@dataclass(frozen=True)
class PostProcess:
    """From dense scores to detections: threshold, top-k, per-class NMS, keep K.

    - ``score_threshold``: candidates need a score > this (in [0, 1]; 1 keeps nothing);
    - ``iou_threshold``: a box is suppressed by a higher-scored box of its class with IoU > this (in (0, 1]);
    - ``max_detections``: K, detections kept per image (>= 1);
    - ``topk_candidates``: (anchor, class) scores kept before NMS (>= K).

    Invalid values raise :class:`SadcError` naming the flag (``--conf``, ``--iou``,
    ``--max-det``, ``--topk``) when the object is built.
    """

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100
    topk_candidates: int = 1000

    def __post_init__(self) -> None:
        if self.max_detections < 1:
            raise SadcError(f"--max-det {self.max_detections}: must be at least 1")
        if self.topk_candidates < self.max_detections:
            raise SadcError(
                f"--topk {self.topk_candidates} < --max-det {self.max_detections}: keep at least K candidates before NMS"
            )
        if not 0.0 < self.iou_threshold <= 1.0:
            raise SadcError(f"--iou {self.iou_threshold}: must be in (0, 1]")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise SadcError(f"--conf {self.score_threshold}: must be in [0, 1]")

    def to_json(self) -> dict[str, Any]:
        """The sidecar's ``"thresholds"`` object."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PostProcess:
        """Read a sidecar's ``"thresholds"`` (unknown keys ignored, missing ones default)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
