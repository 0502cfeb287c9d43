"""Networks used by the DD methods, tests and benchmarks."""

from __future__ import annotations

import re

from torch import nn

from .convnet import ConvNet
from .resnet import ResNet18

__all__ = ["ConvNet", "ResNet18", "get_network", "NETWORKS", "default_depth"]

_CONVNET_NORMS = {"BN": "batchnorm", "LN": "layernorm", "GN": "groupnorm", "NN": "none", "IN": "instancenorm"}
NETWORKS = ("ConvNet", "ConvNetD1", "ConvNetD2", "ConvNetD3", "ConvNetD4", "ConvNetD5", "ConvNetBN", "ConvNetLN",
            "ConvNetGN", "ConvNetNN", "ResNet18", "ResNet18BN", "ResNet18IN")


def default_depth(im_size: tuple[int, int]) -> int:
    """DC/MTT's ConvNet depth by resolution: 3 up to 32 px, 4 for 64 px, 5 for 128 px."""
    side = max(im_size)
    return 3 if side <= 32 else 4 if side <= 64 else 5


def get_network(name: str, channels: int, num_classes: int, im_size: tuple[int, int] = (32, 32)) -> nn.Module:
    """Build a network by DC-style name.

    ConvNet: width 128, GroupNorm(C, C) ("instancenorm"), ReLU, average pooling, depth from
    ``im_size`` (:func:`default_depth`); ConvNetD<n> fixes the depth; ConvNetBN/LN/GN/NN change the
    norm. ResNet18 and ResNet18BN: CIFAR-stem ResNet-18 with BatchNorm; ResNet18IN: GroupNorm(C, C).
    (DC's own "ResNet18" means the instancenorm variant; here it is the BatchNorm one, as MTT uses.)
    """
    im_size = tuple(im_size)
    match = re.fullmatch(r"ConvNet(?:D(\d))?(BN|LN|GN|NN)?", name)
    if match:
        depth = int(match.group(1)) if match.group(1) else default_depth(im_size)
        norm = _CONVNET_NORMS[match.group(2)] if match.group(2) else "instancenorm"
        return ConvNet(channels, num_classes, net_depth=depth, net_norm=norm, im_size=im_size)
    if name in ("ResNet18", "ResNet18BN"):
        return ResNet18(channels, num_classes, norm="batchnorm")
    if name == "ResNet18IN":
        return ResNet18(channels, num_classes, norm="instancenorm")
    raise ValueError(f"unknown network {name!r}; choose one of {NETWORKS}")
