"""ResNet-18 with the CIFAR stem (3x3 conv1, stride 1, no max-pool), as in DC's and MTT's
ResNet18/ResNet18BN, written anew. BatchNorm by default; norm="instancenorm" gives DC's
GroupNorm(C, C) variant."""

from __future__ import annotations

from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    raise ValueError(f"norm must be 'batchnorm' or 'instancenorm', got {kind!r}")


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          _norm(norm, planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, channel: int, num_classes: int, norm: str = "batchnorm"):
        super().__init__()
        self.conv1 = nn.Conv2d(channel, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        blocks, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(nn.Sequential(BasicBlock(in_planes, planes, stride, norm), BasicBlock(planes, planes, 1, norm)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.pool(out).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))
