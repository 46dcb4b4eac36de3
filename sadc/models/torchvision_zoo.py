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
