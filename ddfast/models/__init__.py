"""Networks used by the DD methods, tests and benchmarks."""

from __future__ import annotations

import re

from torch import nn

from .convnet import ConvNet
from .pool import MLP, VGG, AlexNet, LeNet
from .resnet import ResNet18

__all__ = ["AlexNet", "ConvNet", "EVAL_POOL", "LeNet", "MLP", "ResNet18", "VGG", "get_network", "NETWORKS",
           "default_depth"]

_CONVNET_NORMS = {"BN": "batchnorm", "LN": "layernorm", "GN": "groupnorm", "NN": "none", "IN": "instancenorm"}
NETWORKS = ("ConvNet", "ConvNetD1", "ConvNetD2", "ConvNetD3", "ConvNetD4", "ConvNetD5", "ConvNetBN", "ConvNetLN",
            "ConvNetGN", "ConvNetNN", "ResNet18", "ResNet18BN", "ResNet18IN", "MLP", "LeNet", "AlexNet", "AlexNetBN",
            "VGG11", "VGG11BN")
# DC's cross-architecture pool (get_eval_pool mode 'M'); ResNet18 is the BatchNorm one here (see get_network)
EVAL_POOL = ("MLP", "ConvNet", "LeNet", "AlexNet", "VGG11", "ResNet18")


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

    DC's evaluation pool (:mod:`ddfast.models.pool`): MLP, LeNet, AlexNet, AlexNetBN, VGG11
    (GroupNorm(C, C)) and VGG11BN, with DC's layers; their feature sizes follow ``im_size``, so they
    build for 32x32x3, 28x28x1 (DC's counts) and 16x16x1 (digits) alike. Every network has
    ``embed(x)``, the flattened input of its last linear layer.
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
    if name == "MLP":
        return MLP(channels, num_classes, im_size)
    if name == "LeNet":
        return LeNet(channels, num_classes, im_size)
    if name in ("AlexNet", "AlexNetBN"):
        return AlexNet(channels, num_classes, im_size, norm="batchnorm" if name == "AlexNetBN" else "none")
    if name in ("VGG11", "VGG11BN"):
        return VGG("VGG11", channels, num_classes, im_size, norm="batchnorm" if name == "VGG11BN" else "instancenorm")
    raise ValueError(f"unknown network {name!r}; choose one of {NETWORKS}")
