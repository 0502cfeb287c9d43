"""DC's evaluation pool: parameter counts derived by hand for DC's two input shapes, shapes of
outputs and embeddings, and the 16x16x1 digits shape every pool network must run on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddfast.models import EVAL_POOL, NETWORKS, get_network


def conv(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear(n_in, n_out):
    return n_in * n_out + n_out


def norm(c):  # GroupNorm(C, C) or BatchNorm2d: weight and bias
    return 2 * c


def mlp(c, h, w, k=10):
    return linear(c * h * w, 128) + linear(128, 128) + linear(128, k)


def lenet(c, flat, k=10):
    return conv(c, 6, 5) + conv(6, 16, 5) + linear(flat, 120) + linear(120, 84) + linear(84, k)


def alexnet(c, side, bn=False, k=10):
    convs = conv(c, 128, 5) + conv(128, 192, 5) + conv(192, 256, 3) + conv(256, 192, 3) + conv(192, 192, 3)
    norms = norm(128) + norm(192) + norm(256) + norm(192) + norm(192) if bn else 0
    return convs + norms + linear(192 * side * side, k)


def vgg11(c, k=10):
    widths = [c, 64, 128, 256, 256, 512, 512, 512, 512]
    return sum(conv(a, b, 3) + norm(b) for a, b in zip(widths, widths[1:])) + linear(512, k)


def resnet18(c, k=10):
    total = conv(c, 64, 3, bias=False) + norm(64)
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            total += conv(in_planes, planes, 3, False) + norm(planes) + conv(planes, planes, 3, False) + norm(planes)
            if block == 0 and (stride != 1 or in_planes != planes):
                total += conv(in_planes, planes, 1, False) + norm(planes)
            in_planes = planes
    return total + linear(512, k)


# DC's shapes: 32x32x3 and 28x28x1 (LeNet's flat features 16*5*5 for both: 32-4=28 -> 14 -> 10 -> 5, and
# 28 with padding 2 gives the same; AlexNet's 192*4*4: 32 -> 16 -> 8 -> 4, and 28 with padding 4 -> 32)
COUNTS = {
    ("MLP", 3, 32): mlp(3, 32, 32), ("MLP", 1, 28): mlp(1, 28, 28),
    ("LeNet", 3, 32): lenet(3, 16 * 5 * 5), ("LeNet", 1, 28): lenet(1, 16 * 5 * 5),
    ("AlexNet", 3, 32): alexnet(3, 4), ("AlexNet", 1, 28): alexnet(1, 4),
    ("AlexNetBN", 3, 32): alexnet(3, 4, bn=True), ("AlexNetBN", 1, 28): alexnet(1, 4, bn=True),
    ("VGG11", 3, 32): vgg11(3), ("VGG11", 1, 28): vgg11(1),
    ("VGG11BN", 3, 32): vgg11(3), ("VGG11BN", 1, 28): vgg11(1),
    ("ResNet18", 3, 32): resnet18(3), ("ResNet18", 1, 28): resnet18(1),
    # digits, 16x16x1: LeNet 16-4=12 -> 6 -> 2 -> 1 (no grayscale padding off DC's 28x28 case);
    # AlexNet 16 -> 8 -> 4 -> 2; VGG11 16 -> 8 -> 4 -> 2 -> 1 and its fifth pool left out
    ("MLP", 1, 16): mlp(1, 16, 16), ("LeNet", 1, 16): lenet(1, 16 * 1 * 1), ("AlexNet", 1, 16): alexnet(1, 2),
    ("VGG11", 1, 16): vgg11(1), ("ResNet18", 1, 16): resnet18(1),
}


def test_hand_counts_pin_known_values():
    # the formulas above, as numbers (CIFAR-10 shapes); the same totals came out of DC's own
    # networks.py when run once by hand (ConvNet's 320,010 is pinned in test_models.py)
    assert mlp(3, 32, 32) == 3072 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10 == 411_146
    assert lenet(3, 400) == 62_006 and alexnet(3, 4) == 1_872_202 and vgg11(3) == 9_231_114
    assert resnet18(3) == 11_173_962


@pytest.mark.parametrize("name, channels, side", sorted(COUNTS))
def test_parameter_counts(name, channels, side):
    model = get_network(name, channels, 10, (side, side))
    assert sum(p.numel() for p in model.parameters()) == COUNTS[(name, channels, side)]


@pytest.mark.parametrize("name", ["MLP", "LeNet", "AlexNet", "AlexNetBN", "VGG11", "VGG11BN", "ResNet18", "ResNet18IN",
                                  "ConvNet"])
@pytest.mark.parametrize("channels, side", [(3, 32), (1, 28), (1, 16)])
def test_forward_and_embed_shapes(name, channels, side):
    torch.manual_seed(0)
    model = get_network(name, channels, 7, (side, side)).eval()
    x = torch.randn(3, channels, side, side)
    logits, features = model(x), model.embed(x)
    assert logits.shape == (3, 7) and features.dim() == 2 and features.shape[0] == 3
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert features.shape[1] == last.in_features
    torch.testing.assert_close(last(features), logits)  # embed is the input of the last linear layer


def test_dc_layer_structure_details():
    assert get_network("LeNet", 1, 10, (28, 28)).features[0].padding == (2, 2)
    assert get_network("LeNet", 3, 10, (32, 32)).features[0].padding == (0, 0)
    assert get_network("AlexNet", 1, 10, (28, 28)).features[0].padding == (4, 4)
    vgg = get_network("VGG11", 1, 10, (28, 28))
    assert vgg.features[0].padding == (3, 3) and isinstance(vgg.features[1], nn.GroupNorm)
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.features) == 5
    assert isinstance(get_network("VGG11BN", 3, 10).features[1], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.MaxPool2d) for m in get_network("VGG11", 1, 10, (16, 16)).features) == 4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in get_network("AlexNet", 3, 10).modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in get_network("AlexNetBN", 3, 10).modules()) == 5


def test_pool_names_and_too_small_inputs():
    assert set(EVAL_POOL) <= set(NETWORKS) and EVAL_POOL[0] == "MLP"
    with pytest.raises(ValueError, match="too small for LeNet"):
        get_network("LeNet", 1, 10, (8, 8))
    with pytest.raises(ValueError, match="unknown network"):
        get_network("VGG13", 3, 10)
