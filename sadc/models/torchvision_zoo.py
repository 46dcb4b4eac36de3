"""torchvision's pretrained COCO detectors as sadc detectors (teachers, mostly).

Weights come through torchvision's own weights enums (cached under the torch hub
directory); where they cannot be downloaded, loading fails with one line saying how to
get them onto the machine.
"""

from __future__ import annotations

import functools

import torchvision
from torch import nn

from sadc.errors import SadcError
from sadc.models.spec import DetectorSpec

# builder name -> (arch, backbone, fpn channels)
TORCHVISION_DETECTORS: dict[str, tuple[str, str, int]] = {
    "retinanet_resnet50_fpn": ("retinanet", "resnet50", 256),
    "retinanet_resnet50_fpn_v2": ("retinanet", "resnet50", 256),
    "fcos_resnet50_fpn": ("fcos", "resnet50", 256),
}
PREFIX = "torchvision:"


def _name(builder: str) -> str:
    name = builder.removeprefix(PREFIX)
    if name not in TORCHVISION_DETECTORS:
        raise SadcError(
            f"{builder}: not a supported torchvision detector (supported: "
            + ", ".join(PREFIX + n for n in TORCHVISION_DETECTORS)
            + ")"
        )
    return name


def _weights(name: str, weights: str | None):
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise SadcError(
            f"{PREFIX}{name}: unknown weights {weights!r} (choose from DEFAULT, {', '.join(enum.__members__)})"
        ) from None


def coco_class_names(name: str) -> list[str]:
    """The 91 COCO category slots of torchvision's detectors, made unique ("N/A" -> "N/A-12")."""
    cats = torchvision.models.get_model_weights(name).DEFAULT.meta["categories"]
    return [c if c != "N/A" else f"N/A-{i}" for i, c in enumerate(cats)]


@functools.cache
def _grid(name: str) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(anchor sizes per level, ratios, mean, std) of a builder: read off a random instance, once per
    process (building a ResNet-50 detector takes a second)."""
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    gen = net.anchor_generator
    sizes = tuple(tuple(map(float, s)) for s in gen.sizes)
    return sizes, tuple(map(float, gen.aspect_ratios[0])), tuple(net.transform.image_mean), tuple(net.transform.image_std)


def torchvision_spec(builder: str, input_size: tuple[int, int]) -> DetectorSpec:
    """The DetectorSpec of a torchvision detector at a fixed letterbox ``input_size`` (its 91 COCO class slots)."""
    name = _name(builder)
    arch, backbone, fpn = TORCHVISION_DETECTORS[name]
    sizes, ratios, mean, std = _grid(name)
    return DetectorSpec(
        arch=arch,
        backbone=backbone,
        fpn_channels=fpn,
        head_norm="group" if name.endswith("_v2") or arch == "fcos" else "none",
        anchor_sizes=[list(s) for s in sizes],
        anchor_ratios=list(ratios),
        class_names=coco_class_names(name),
        input_size=input_size,
        mean=mean,
        std=std,
        builder=PREFIX + name,
    )


def build_torchvision_net(spec: DetectorSpec, weights: str | None) -> nn.Module:
    """The torchvision model named by ``spec.builder``, with COCO ``weights`` or random."""
    name = _name(spec.builder or "")
    w = _weights(name, weights)
    kwargs = {"num_classes": spec.num_classes} if w is None else {}
    try:
        return torchvision.models.get_model(name, weights=w, weights_backbone=None, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise SadcError(
            f"{PREFIX}{name}: cannot get weights {weights} ({type(err).__name__}); on a machine with internet run "
            f"`python -c \"import torchvision; torchvision.models.get_model('{name}', weights='{weights}')\"` "
            "to fill the torch hub cache, or pass a state-dict file as the source"
        ) from None


def parse_input_size(text: str | int | tuple | list | None, source: str) -> tuple[int, int]:
    """``--input-size`` ``640`` or ``480,640`` (H,W) -> (H, W); one SadcError line when missing or bad."""
    if text is None or text == "":
        raise SadcError(f"{source}: pass --input-size N (or H,W): the letterbox size the torchvision detector runs at")
    parts = list(text) if isinstance(text, (tuple, list)) else str(text).replace("x", ",").split(",")
    try:
        size = [int(p) for p in parts if str(p).strip()]
    except ValueError:
        raise SadcError(f"--input-size {text}: an integer N or H,W, e.g. 640 or 480,640") from None
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or min(size) < 32:
        raise SadcError(f"--input-size {text}: an integer N or H,W, each at least 32, e.g. 640 or 480,640")
    return size[0], size[1]


def load_torchvision_detector(source: str, input_size: tuple[int, int]):
    """``torchvision:NAME`` at ``input_size`` -> (Detector in eval mode, weights note).

    COCO weights come from the torch hub cache or a download; where neither works the
    detector keeps random weights, logged in one line and returned in the note
    (``"DEFAULT"`` or ``"random (why)"``), so that commands can still run and say so.
    """
    import contextlib
    import io
    import logging

    from sadc.models.detector import Detector

    spec = torchvision_spec(source, (int(input_size[0]), int(input_size[1])))
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # torch.hub's "Downloading: ..." line; the outcome is logged below
            net, note = build_torchvision_net(spec, "DEFAULT"), "DEFAULT"
    except SadcError as err:
        reason = str(err).split(" (", 1)[-1].split(")", 1)[0] if " (" in str(err) else "no download"
        logging.getLogger(__name__).warning(
            "%s: no cached COCO weights and none can be downloaded (%s): random weights, so its mAP means nothing",
            spec.builder,
            reason,
        )
        net, note = build_torchvision_net(spec, None), f"random ({reason})"
    return Detector(spec, net).eval(), note
