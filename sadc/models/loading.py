"""load_detector: one entry point for every way a user names a detector.

- ``None`` source: build from the spec fields (random init, ImageNet backbone if asked)
- a sadc checkpoint (``.pt`` with a sadc header): spec and weights from the file
- ``torchvision:NAME``: torchvision's COCO detector, with its weights enum
- any other file: a state dict for the architecture the spec fields (or ``builder``) name
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from sadc.artefacts.checkpoint import check_checkpoint, torch_load
from sadc.errors import CheckpointError, SadcError, first_line
from sadc.models.detector import Detector, build_detector
from sadc.models.spec import DetectorSpec
from sadc.models.torchvision_zoo import PREFIX, build_torchvision_net, torchvision_spec

log = logging.getLogger(__name__)


def spec_from_fields(fields) -> DetectorSpec:
    """The DetectorSpec of a recipe's ModelSource (source/weights dropped).

    With a ``builder``, the builder's own architecture, and its classes unless the fields
    name them (``class_names`` set by the user): torchvision's COCO builders have 91 class
    slots, so a state dict saved from one has a 91-wide head, which the schema's default
    ``["object"]`` would not fit.
    """
    spec = DetectorSpec(**fields.model_dump(exclude={"source", "weights"}))
    if not spec.builder:
        return spec
    built = torchvision_spec(spec.builder, spec.input_size)
    if "class_names" in fields.model_fields_set:
        built = built.model_copy(update={"class_names": spec.class_names})
    return built


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
    _load_state(model, ckpt["model"], where, spec.anchors_per_location, "its spec names")
    return model


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from checkpoint, "
    r"the shape in current model is torch\.Size\((\[.*?\])\)"
)
_KEY_LIST = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)")


def mismatch_line(err: BaseException) -> str:
    """What a failed ``load_state_dict`` says does not fit, said shortly and never cut mid-word.

    A size mismatch becomes ``KEY: [file shape] in the file, [model shape] in the model
    (+N more)``; a missing/unexpected key list its count and first key; anything else its
    first line, shortened between words (:func:`sadc.errors.first_line`).
    """
    text = str(err)
    sizes = _SIZE_MISMATCH.findall(text)
    if sizes:
        key, file_shape, model_shape = sizes[0]
        more = f" (+{len(sizes) - 1} more)" if len(sizes) > 1 else ""
        return f"{key}: {file_shape} in the file, {model_shape} in the model{more}"
    keys = _KEY_LIST.search(text)
    if keys:
        names = re.findall(r'"([^"]+)"', keys.group(2))
        if names:
            return f"{len(names)} {keys.group(1).lower()} keys, e.g. {names[0]}"
    return first_line(err)


def _head_classes(state: dict, own: dict, anchors: int) -> tuple[int, int] | None:
    """(classes in the file, classes in the model) when only the classification heads' widths differ.

    The head's last conv has ``anchors x C`` output channels (FCOS: one point per location);
    when the box regression (``anchors x 4``) differs too, the anchors differ, not the classes.
    """
    cls = next((k for k in state if k.endswith("classification_head.cls_logits.weight") and k in own), None)
    if cls is None or not hasattr(state[cls], "shape"):
        return None
    box = cls.replace("classification_head.cls_logits", "regression_head.bbox_reg")
    if box in state and box in own and getattr(state[box], "shape", None) != own[box].shape:
        return None
    rows, own_rows = state[cls].shape[0], own[cls].shape[0]
    if rows == own_rows or rows % anchors:
        return None
    return rows // anchors, own_rows // anchors


def _load_state(model: nn.Module, state: dict, where: str, anchors: int = 1, classes_from: str = "the recipe names") -> None:
    """``model.load_state_dict(state)``, or one line naming what does not fit.

    ``anchors`` per location turn a head's width into a class count; ``classes_from`` says
    where the model's classes came from ("the recipe names", "torchvision:NAME has").
    """
    hint = "check arch/backbone/fpn_channels/class_names/anchors in the recipe"
    own = model.state_dict()
    head = _head_classes(state, own, anchors)
    if head is not None:
        theirs, ours = head
        raise SadcError(
            f"{where}: the file's head has {theirs} classes, {classes_from} {ours}; set class_names in the recipe's "
            f"model section to the file's {theirs} class names, in its order"
        )
    shapes = [
        (k, list(v.shape), list(own[k].shape))
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and v.shape != own[k].shape
    ]
    if shapes:
        key, file_shape, model_shape = shapes[0]
        more = f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""
        raise SadcError(
            f"{where}: weights do not fit the architecture ({key}: {file_shape} in the file, {model_shape} in the model{more}); {hint}"
        )
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # what the shape check above cannot see (a non-tensor value, ...)
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
    a state-dict file for ``spec``'s architecture (with ``spec.builder``, a torchvision
    state dict). A recipe's ModelSource passes ``spec_from_fields(fields), fields.source,
    weights=fields.weights``.
    """
    if source is None:
        model = build_detector(spec)
    elif source.startswith(PREFIX):
        spec = torchvision_spec(source, spec.input_size)
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
            model = build_detector(spec)
            target = model if not spec.builder else model.net  # torchvision state dicts have no "net." prefix
            own = spec.builder and list(spec.class_names) == list(torchvision_spec(spec.builder, spec.input_size).class_names)
            where = f"{spec.builder} has" if own else "the recipe names"
            _load_state(target, state, str(path), spec.anchors_per_location, where)
    return model.eval()
