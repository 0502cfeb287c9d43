"""Shared inputs and the independent brute-force formula for class_mean_distance tests."""

from __future__ import annotations

import torch

from conftest import seeded

# (num_classes, syn rows per class, real rows per class, feature dim); DM on CIFAR-10 with ConvNet-3
# has 10 classes, IPC 1/10/50 and 256 real images per class, 2,048 features.
REALISTIC = {"dm_ipc10": (10, 10, 64, 2048), "dm_ipc1": (10, 1, 32, 2048)}
ODD = {"odd": (3, 3, 5, 130), "one_row": (1, 1, 1, 1), "wide_k": (7, 2, 3, 65)}


def make_case(classes, syn_per_class, real_per_class, dim, dtype, seed=0, device="cpu", offset=0.0):
    """Shuffled rows with labels in every class (both sides)."""
    g = seeded(seed)
    y_syn = torch.arange(classes).repeat_interleave(syn_per_class)
    y_real = torch.arange(classes).repeat_interleave(real_per_class)
    y_syn = y_syn[torch.randperm(len(y_syn), generator=g)]
    y_real = y_real[torch.randperm(len(y_real), generator=g)]
    f_syn = torch.randn(len(y_syn), dim, generator=g, dtype=torch.float64) + offset
    f_real = torch.randn(len(y_real), dim, generator=g, dtype=torch.float64) + offset
    return (f_syn.to(dtype=dtype, device=device), y_syn.to(device), f_real.to(dtype=dtype, device=device),
            y_real.to(device))


def brute_force(f_syn, y_syn, f_real, y_real, num_classes):
    """DM's per-class loop in fp64: mean of each side's rows of class c, squared distance; 0 for a
    class without rows on both sides. Returns the [K] vector."""
    out = []
    for c in range(num_classes):
        s, r = f_syn[y_syn == c].double(), f_real[y_real == c].double()
        if len(s) == 0 or len(r) == 0:
            out.append(torch.zeros((), dtype=torch.float64, device=f_syn.device))
            continue
        out.append(((r.mean(0) - s.mean(0)) ** 2).sum())
    return torch.stack(out)
