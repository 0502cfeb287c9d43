"""DC's cross-architecture evaluation pool (VICO-UoE/DatasetCondensation, networks.py), written anew:
MLP, LeNet, AlexNet (and AlexNetBN), VGG11 (GroupNorm(C, C) "instancenorm") and VGG11BN.

Layer structure, layer names and parameter order follow DC, so the parameter counts match DC's on
its two input shapes, 32x32x3 and 28x28x1. DC hard-codes the flattened feature size for those two
shapes (and gives single-channel inputs extra padding in the first layer so that 28x28 maps behave
like 32x32 ones). Here:

* the flattened feature size is computed from ``im_size`` (adaptive sizing), so every network
  builds for any input at least as large as its receptive chain allows (16x16x1 digits included);
* DC's grayscale first-layer padding is applied exactly in DC's MNIST case, a 28x28 single-channel
  input (the rule ddfast's ConvNet uses); any other shape gets the RGB padding;
* VGG's 2x2 max-pools are left out once the map is already 1 pixel wide along a side (VGG11 on
  16x16 keeps 4 of its 5 pools; on 32x32 and 28x28x1 nothing changes);
* DC's identity ``AvgPool2d(1, 1)`` at the end of VGG's features is not added (no parameters).

Every network has ``embed(x)``: the input of its last linear layer, flattened (DM's embedding;
ConvNet and ResNet18 follow the same convention). ``forward(x) == last_linear(embed(x))``. DC defines
``embed`` for AlexNet, VGG, ConvNet and ResNet as the flattened features; for MLP and LeNet, which
DC gives none, it is the ReLU output of the penultimate linear layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

VGG_CONFIGS = {"VGG11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")}


def _conv_out(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _check_size(h: int, w: int, name: str, im_size) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"im_size {tuple(im_size)} is too small for {name}")


def _is_dc_grayscale(channel: int, im_size) -> bool:
    return channel == 1 and tuple(im_size) == (28, 28)


class MLP(nn.Module):
    """DC's MLP: flatten -> Linear(C*H*W, 128) -> ReLU -> Linear(128, 128) -> ReLU -> Linear(128, K)."""

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32)):
        super().__init__()
        self.fc_1 = nn.Linear(channel * im_size[0] * im_size[1], 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)

    def embed(self, x):
        out = F.relu(self.fc_1(x.flatten(1)))
        return F.relu(self.fc_2(out))

    def forward(self, x):
        return self.fc_3(self.embed(x))


class LeNet(nn.Module):
    """DC's LeNet: conv5(6) -> ReLU -> maxpool2 -> conv5(16) -> ReLU -> maxpool2 -> 120 -> 84 -> K.
    First conv padding 2 for 28x28x1 (DC's MNIST case), else 0."""

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32)):
        super().__init__()
        pad = 2 if _is_dc_grayscale(channel, im_size) else 0
        self.features = nn.Sequential(
            nn.Conv2d(channel, 6, kernel_size=5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        h, w = (_conv_out(s, 5, pad) // 2 for s in im_size)
        h, w = _conv_out(h, 5, 0) // 2, _conv_out(w, 5, 0) // 2
        _check_size(h, w, "LeNet", im_size)
        self.num_feat = 16 * h * w
        self.fc_1 = nn.Linear(self.num_feat, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def embed(self, x):
        out = self.features(x).flatten(1)
        return F.relu(self.fc_2(F.relu(self.fc_1(out))))

    def forward(self, x):
        return self.fc_3(self.embed(x))


class AlexNet(nn.Module):
    """DC's AlexNet (``norm="batchnorm"``: DC's AlexNetBN, a BatchNorm2d after each conv):
    conv5(128) pool, conv5(192) pool, conv3(256), conv3(192), conv3(192) pool, one linear layer.
    First conv padding 4 for 28x28x1 (DC's MNIST case), else 2."""

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32), norm: str = "none"):
        super().__init__()
        if norm not in ("none", "batchnorm"):
            raise ValueError(f"norm must be 'none' or 'batchnorm', got {norm!r}")
        pad = 4 if _is_dc_grayscale(channel, im_size) else 2
        # (out channels, kernel, padding, pool after)
        plan = ((128, 5, pad, True), (192, 5, 2, True), (256, 3, 1, False), (192, 3, 1, False), (192, 3, 1, True))
        layers: list[nn.Module] = []
        c, h, w = channel, im_size[0], im_size[1]
        for out, kernel, padding, pool in plan:
            layers.append(nn.Conv2d(c, out, kernel_size=kernel, padding=padding))
            if norm == "batchnorm":
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            c, h, w = out, _conv_out(h, kernel, padding), _conv_out(w, kernel, padding)
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            _check_size(h, w, "AlexNet", im_size)
        self.features = nn.Sequential(*layers)
        self.num_feat = c * h * w
        self.fc = nn.Linear(self.num_feat, num_classes)

    def embed(self, x):
        return self.features(x).flatten(1)

    def forward(self, x):
        return self.fc(self.embed(x))


class VGG(nn.Module):
    """DC's VGG: per config entry conv3x3 -> norm -> ReLU, or a 2x2 max-pool ("M"); one linear layer
    on the flattened features. ``norm="instancenorm"`` (DC's VGG11: GroupNorm(C, C)) or
    ``"batchnorm"`` (DC's VGG11BN). First conv padding 3 for 28x28x1 (DC's MNIST case), else 1."""

    def __init__(self, config: str, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32),
                 norm: str = "instancenorm"):
        super().__init__()
        if norm not in ("instancenorm", "batchnorm"):
            raise ValueError(f"norm must be 'instancenorm' or 'batchnorm', got {norm!r}")
        layers: list[nn.Module] = []
        c, h, w = channel, im_size[0], im_size[1]
        for i, entry in enumerate(VGG_CONFIGS[config]):
            if entry == "M":
                if h >= 2 and w >= 2:
                    layers.append(nn.MaxPool2d(2, 2))
                    h, w = h // 2, w // 2
                continue
            padding = 3 if i == 0 and _is_dc_grayscale(channel, im_size) else 1
            layers += [nn.Conv2d(c, entry, kernel_size=3, padding=padding),
                       nn.GroupNorm(entry, entry, affine=True) if norm == "instancenorm" else nn.BatchNorm2d(entry),
                       nn.ReLU(inplace=True)]
            c, h, w = entry, _conv_out(h, 3, padding), _conv_out(w, 3, padding)
        _check_size(h, w, config, im_size)
        self.features = nn.Sequential(*layers)
        self.num_feat = c * h * w
        self.classifier = nn.Linear(self.num_feat, num_classes)

    def embed(self, x):
        return self.features(x).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))
