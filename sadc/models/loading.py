"""load_detector: one entry point for every way a user names a detector.

- ``None`` source: build from the spec fields (random init, ImageNet backbone if asked)
- a sadc checkpoint (``.pt`` with a sadc header): spec and weights from the file
- ``torchvision:NAME``: torchvision's COCO detector, with its weights enum
- any other file: a state dict for the architecture the spec fields (or ``builder``) name
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from pydantic import ValidationError

from sadc.artefacts.checkpoint import check_checkpoint, torch_load
from sadc.errors import CheckpointError, SadcError
from sadc.models.detector import Detector, build_detector
from sadc.models.spec import DetectorSpec
from sadc.models.torchvision_zoo import PREFIX, build_torchvision_net, torchvision_spec

log = logging.getLogger(__name__)


def spec_from_fields(fields) -> DetectorSpec:
    """A DetectorSpec from a recipe's ModelSource (drops source/weights)."""
    return DetectorSpec(**fields.model_dump(exclude={"source", "weights"}))


def checkpoint_spec(ckpt: dict, where: str = "checkpoint") -> DetectorSpec:
    """The validated :class:`DetectorSpec` of a loaded checkpoint; CheckpointError naming the bad key."""
    try:
        return DetectorSpec(**ckpt["spec"])
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(["spec", *(str(p) for p in first["loc"])])
        raise CheckpointError(
            f"{where}: its spec is not valid for this sadc ({key}: {first['msg'].removeprefix('Value error, ')}); "
            f"written by sadc {ckpt.get('sadc_version', '?')}: use that version, or retrain"
        ) from None


def detector_from_checkpoint(ckpt: dict, where: str = "checkpoint") -> Detector:
    spec = checkpoint_spec(ckpt, where)
    model = build_detector(spec.model_copy(update={"pretrained_backbone": False}))
    _load_state(model, ckpt["model"], where)
    return model


def mismatch_line(err: BaseException) -> str:
    """What a failed ``load_state_dict`` says does not fit: its first "size mismatch" line, else its
    first line (the exception's type when it says nothing), at most 160 characters."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    return next((ln.strip() for ln in lines if "size mismatch" in ln), lines[0])[:160]


def _load_state(model: Detector, state: dict, where: str) -> None:
    hint = "check arch/backbone/fpn_channels/class_names/anchors in the recipe"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches are raised even when not strict
        raise SadcError(f"{where}: weights do not fit the architecture ({mismatch_line(err)}); {hint}") from None
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:3])
        unexpected = ", ".join(result.unexpected_keys[:3])
        raise SadcError(
            f"{where}: weights do not fit the architecture ({len(result.missing_keys)} missing e.g. [{missing}], "
            f"{len(result.unexpected_keys)} unexpected e.g. [{unexpected}]); {hint}"
        )


def load_detector(spec: DetectorSpec, source: str | None = None, *, weights: str | None = "DEFAULT") -> Detector:
    """Build (``source`` None) or load the detector ``spec`` describes; returned in eval mode.

    ``source``: a sadc checkpoint (its own spec wins), ``torchvision:NAME`` (``spec``
    gives the input size; ``weights`` names the weights enum member, None = random) or
    a state-dict file for ``spec``'s architecture. A recipe's ModelSource passes
    ``spec_from_fields(fields), fields.source, weights=fields.weights``.
    """
    if source is None:
        model = build_detector(spec)
    elif source.startswith(PREFIX):
        spec = torchvision_spec(source, tuple(spec.input_size))
        model = Detector(spec, build_torchvision_net(spec, weights))
        log.info("teacher %s with weights %s", source, weights)
    else:
        path = Path(source)
        if not path.is_file():
            raise SadcError(f"{path}: model source not found (a sadc checkpoint, a state-dict file or torchvision:NAME)")
        state = torch_load(path, what="checkpoint or state-dict file")
        if isinstance(state, dict) and "format" in state:
            model = detector_from_checkpoint(check_checkpoint(state, path), str(path))  # read once, not twice
        else:
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]  # common {"model": state_dict} wrapping
            if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
                raise SadcError(f"{path}: neither a sadc checkpoint nor a state dict (no tensors in it)")
            if spec.builder:
                spec = torchvision_spec(spec.builder, tuple(spec.input_size)).model_copy(
                    update={"class_names": spec.class_names}
                )
            model = build_detector(spec)
            target = model if not spec.builder else model.net
            _load_state(target, state, str(path))  # torchvision state dicts have no "net." prefix
    return model.eval()
