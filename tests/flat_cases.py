"""Shared inputs of the flat-vector op tests (param_match_loss, sgd_step, adjoint_step)."""

from __future__ import annotations

import torch

from conftest import seeded

CONVNET3 = 320_010  # parameters of ConvNet-3 on CIFAR-10 (MTT's flat vector)
CPU_SIZES = {"convnet3": CONVNET3, "one": 1, "seven": 7, "odd": 16_385 * 2 + 3}  # the last spans 3 C++ chunks
TINY_SIZES = {"one": 1, "seven": 7, "odd": 300}  # Triton under the interpreter (with BLOCK = 64 in the tests)


def vectors(count: int, numel: int, dtype: torch.dtype, seed: int = 0, device="cpu") -> list[torch.Tensor]:
    g = seeded(seed)
    return [torch.randn(numel, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for _ in range(count)]


def learning_rate(dtype: torch.dtype, device="cpu", value: float = 0.01) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=device)
