"""The networks every later test and benchmark uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddfast.models import ConvNet, ResNet18, get_network


def _count(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params), len(params)


def test_convnet3_cifar_has_dc_parameter_count():
    assert _count(get_network("ConvNet", 3, 10, (32, 32))) == (320_010, 14)


def test_resnet18_cifar_stem():
    model = get_network("ResNet18", 3, 10, (32, 32))
    assert _count(model) == (11_173_962, 62)
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(get_network("ResNet18IN", 3, 10).bn1, nn.GroupNorm)


@pytest.mark.parametrize("size, depth", [((32, 32), 3), ((64, 64), 4), ((128, 128), 5), ((16, 16), 3)])
def test_convnet_depth_follows_resolution(size, depth):
    model = get_network("ConvNet", 3, 10, size)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth
    assert model(torch.randn(2, 3, *size)).shape == (2, 10)


def test_instancenorm_is_groupnorm_c_c():
    norms = [m for m in ConvNet(3, 10).modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 3 and all(m.num_groups == m.num_channels == 128 and m.affine for m in norms)


@pytest.mark.parametrize("name, norm_type", [("ConvNetBN", nn.BatchNorm2d), ("ConvNetLN", nn.LayerNorm),
                                             ("ConvNetGN", nn.GroupNorm)])
def test_convnet_norm_variants(name, norm_type):
    model = get_network(name, 3, 10, (32, 32))
    assert any(isinstance(m, norm_type) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convnet_no_norm_and_layernorm_parameter_shapes():
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in get_network("ConvNetNN", 3, 10).modules())
    ln = get_network("ConvNetLN", 3, 10, (32, 32))
    assert [tuple(p.shape) for p in ln.parameters()][2] == (128, 32, 32)  # 3-D: DC's distance_wb case


def test_mnist_grayscale_padding_and_digits_size():
    mnist = ConvNet(1, 10, im_size=(28, 28))
    assert mnist.features[0].padding == (3, 3) and mnist.num_feat == 128 * 4 * 4
    digits = ConvNet(1, 10, im_size=(16, 16))
    assert digits.features[0].padding == (1, 1) and digits(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_embed_is_the_classifier_input():
    model = ResNet18(3, 10)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model.classifier(model.embed(x)), model(x))


def test_unknown_network_and_options():
    with pytest.raises(ValueError, match="unknown network 'VGG99'"):
        get_network("VGG99", 3, 10)
    with pytest.raises(ValueError, match="net_norm must be one of"):
        ConvNet(3, 10, net_norm="weird")
    with pytest.raises(ValueError, match="too small"):
        ConvNet(3, 10, net_depth=5, im_size=(8, 8))
