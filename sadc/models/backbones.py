"""Backbone registry: name -> builder of a 5-level feature pyramid (P3..P7).

Every builder returns a module mapping images [N, 3, H, W] to an ordered dict of five
feature maps with ``fpn_channels`` channels at strides 8, 16, 32, 64, 128. P6/P7 come
from P5 (RetinaNet v2 / FCOS style, ``LastLevelP6P7(C, C)``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

log = logging.getLogger(__name__)

BackboneBuilder = Callable[[int, bool], nn.Module]
_BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator adding a builder ``(fpn_channels, pretrained) -> module`` under ``name``."""

    def wrap(fn: BackboneBuilder) -> BackboneBuilder:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = fn
        return fn

    return wrap


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def build_backbone(name: str, fpn_channels: int, pretrained: bool = False) -> nn.Module:
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r} (known: {', '.join(list_backbones())})")
    return _BACKBONES[name](fpn_channels, pretrained)


def _imagenet_weights(weights_enum, name: str, pretrained: bool):
    """ImageNet weights when asked for and reachable; else None, with a log line saying which."""
    if not pretrained:
        log.debug("backbone %s: random init", name)
        return None
    weights = weights_enum.DEFAULT
    try:
        weights.get_state_dict(progress=False)  # cached in torch hub dir, or downloaded
    except Exception as err:  # no internet, proxy, corrupt cache: fall back, loudly
        log.warning("backbone %s: ImageNet weights unavailable (%s); using random init", name, type(err).__name__)
        return None
    log.info("backbone %s: ImageNet weights %s", name, weights)
    return weights


def _resnet(name: str):
    import torchvision.models as tvm

    fn = getattr(tvm, name)
    weights_enum = tvm.get_model_weights(name)

    def build(fpn_channels: int, pretrained: bool) -> nn.Module:
        weights = _imagenet_weights(weights_enum, name, pretrained)
        # Pretrained BN statistics are kept frozen, as torchvision's detectors do; from
        # scratch, BN must learn them.
        norm = FrozenBatchNorm2d if weights is not None else nn.BatchNorm2d
        net = fn(weights=weights, norm_layer=norm)
        c5 = net.inplanes  # 512 (basic blocks) or 2048 (bottlenecks)
        return BackboneWithFPN(
            net,
            return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
            in_channels_list=[c5 // 4, c5 // 2, c5],
            out_channels=fpn_channels,
            extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
        )

    return build


# ResNeXt-101: the authors' second teacher is X-101-64x4d (their configs/focal_distillation/
# retinanet_X-101-64x4d-FPN_1x_teacher.yaml); 32x8d is torchvision's other ResNeXt-101.
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d", "resnext101_64x4d"):
    register_backbone(_name)(_resnet(_name))


class _StagesFPN(nn.Module):
    """A sequential trunk tapped at the ends of its stride-8/16/32 stages, plus an FPN."""

    def __init__(self, trunk: nn.Sequential, taps: list[int], in_channels: list[int], fpn_channels: int):
        super().__init__()
        self.trunk = trunk
        self.taps = taps
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
        self.out_channels = fpn_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, block in enumerate(self.trunk):
            x = block(x)
            if i in self.taps:
                feats[str(len(feats))] = x
            if i == self.taps[-1]:
                break
        return self.fpn(feats)


def _stage_taps(trunk: nn.Sequential) -> tuple[list[int], list[int]]:
    """Indices of the last block at strides 8, 16, 32 and their channels, by a probe forward."""
    strides: list[tuple[int, int]] = []
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for block in trunk:
            x = block(x)
            strides.append((64 // x.shape[-1], x.shape[1]))
    taps, chans = [], []
    for want in (8, 16, 32):
        idx = max(i for i, (s, _) in enumerate(strides) if s == want)
        taps.append(idx)
        chans.append(strides[idx][1])
    return taps, chans


def _staged(name: str, trunk_of: Callable[[Any], nn.Sequential]) -> BackboneBuilder:
    """A torchvision classifier ``name`` as a sequential trunk (``trunk_of(net)``), tapped at
    the ends of its stride-8/16/32 stages, plus an FPN."""

    def build(fpn_channels: int, pretrained: bool) -> nn.Module:
        import torchvision.models as tvm

        weights = _imagenet_weights(tvm.get_model_weights(name), name, pretrained)
        norm = FrozenBatchNorm2d if weights is not None else nn.BatchNorm2d
        trunk = trunk_of(tvm.get_model(name, weights=weights, norm_layer=norm))
        taps, chans = _stage_taps(trunk)
        return _StagesFPN(trunk, taps, chans, fpn_channels)

    return build


register_backbone("mobilenet_v3_large")(_staged("mobilenet_v3_large", lambda net: net.features))
register_backbone("mobilenet_v3_small")(_staged("mobilenet_v3_small", lambda net: net.features))
register_backbone("regnet_x_400mf")(_staged("regnet_x_400mf", lambda net: nn.Sequential(net.stem, *net.trunk_output)))


def _narrow_resnet(blocks: list[int], widths: list[int]) -> BackboneBuilder:
    """A ResNet of torchvision's BasicBlocks with fewer channels (and/or blocks) per stage.

    ResNet-18's layout is blocks [2, 2, 2, 2] at widths [64, 128, 256, 512]; torchvision's
    builders fix the widths, so the trunk is assembled here from its stem and blocks. No
    ImageNet weights exist for these shapes (``pretrained`` is refused by the caller's log).
    """

    def build(fpn_channels: int, pretrained: bool) -> nn.Module:
        from torchvision.models.resnet import BasicBlock, conv1x1

        if pretrained:
            log.warning("backbone: no ImageNet weights for a narrow ResNet %s/%s; using random init", blocks, widths)
        stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        stages, cin = [], widths[0]
        for i, (n, cout) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2
            down = None if stride == 1 and cin == cout else nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
            layers = [BasicBlock(cin, cout, stride, down)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        return _StagesFPN(nn.Sequential(stem, *stages), taps=[2, 3, 4], in_channels=widths[1:], fpn_channels=fpn_channels)

    return build


# ResNet-18's layout at half its channels, and with one block per stage (a "ResNet-10").
register_backbone("resnet18_half")(_narrow_resnet([2, 2, 2, 2], [32, 64, 128, 256]))
register_backbone("resnet10_half")(_narrow_resnet([1, 1, 1, 1], [32, 64, 128, 256]))
register_backbone("resnet10")(_narrow_resnet([1, 1, 1, 1], [64, 128, 256, 512]))


def _conv_gn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True))


@register_backbone("tiny")
def _tiny(fpn_channels: int, pretrained: bool) -> nn.Module:
    """Five stride-2 conv blocks (8..64 channels): for tests and sanity checks, not accuracy."""
    del pretrained  # nothing to load
    widths = [8, 16, 32, 48, 64]
    trunk = nn.Sequential(*[_conv_gn(cin, cout, 2) for cin, cout in zip([3, *widths[:-1]], widths, strict=True)])
    return _StagesFPN(trunk, taps=[2, 3, 4], in_channels=widths[2:], fpn_channels=fpn_channels)
