"""DC's ConvNet family (VICO-UoE/DatasetCondensation, networks.py), written anew.

depth x [conv3x3(width) -> norm -> activation -> 2x2 pooling], then one linear layer. DC's
"instancenorm" is GroupNorm(C, C, affine=True); ConvNet-3 on 32x32x3 with 10 classes has 320,010
parameters in 14 tensors. Grayscale 28x28 inputs get padding 3 in the first conv (DC's MNIST case,
28 -> 32); other sizes use padding 1 throughout, with the feature size computed from the input.
"""

from __future__ import annotations

from torch import nn

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
POOLINGS = ("avgpooling", "maxpooling", "none")


def _norm(kind: str, shape: tuple[int, int, int]) -> nn.Module:
    channels = shape[0]
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "layernorm":
        return nn.LayerNorm(list(shape), elementwise_affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    raise ValueError(f"net_norm must be one of {NORMS}, got {kind!r}")


def _activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    raise ValueError(f"net_act must be one of {ACTIVATIONS}, got {kind!r}")


class ConvNet(nn.Module):
    def __init__(self, channel: int, num_classes: int, net_width: int = 128, net_depth: int = 3,
                 net_act: str = "relu", net_norm: str = "instancenorm", net_pooling: str = "avgpooling",
                 im_size: tuple[int, int] = (32, 32)):
        super().__init__()
        if net_pooling not in POOLINGS:
            raise ValueError(f"net_pooling must be one of {POOLINGS}, got {net_pooling!r}")
        layers: list[nn.Module] = []
        channels, height, width = channel, im_size[0], im_size[1]
        for depth in range(net_depth):
            padding = 3 if channel == 1 and depth == 0 and tuple(im_size) == (28, 28) else 1
            layers.append(nn.Conv2d(channels, net_width, kernel_size=3, padding=padding))
            channels, height, width = net_width, height + 2 * padding - 2, width + 2 * padding - 2
            if net_norm != "none":
                layers.append(_norm(net_norm, (channels, height, width)))
            layers.append(_activation(net_act))
            if net_pooling != "none":
                layers.append(nn.AvgPool2d(2, 2) if net_pooling == "avgpooling" else nn.MaxPool2d(2, 2))
                height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise ValueError(f"im_size {tuple(im_size)} is too small for net_depth={net_depth}")
        self.features = nn.Sequential(*layers)
        self.num_feat = channels * height * width
        self.classifier = nn.Linear(self.num_feat, num_classes)

    def embed(self, x):
        """Flattened features before the classifier (DM's embedding)."""
        return self.features(x).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))
