"""The tensorised MMD that DD code bases write: full kernel matrices from torch.cdist, then means
(the form used for IDM-style multi-bandwidth Gaussian MMD and in most MMD-GAN code), written here from
the published formula (Gretton et al., JMLR 2012, biased estimator eq. 5), not copied.

Memory is O(N^2 + M^2 + N M): cdist's distance matrix, its square, one exp per bandwidth, and what
autograd saves for the backward, for each of the xx, yy and xy blocks."""

from __future__ import annotations

import torch


def gaussian_kernel_matrix(a: torch.Tensor, b: torch.Tensor, sigmas) -> torch.Tensor:
    d2 = torch.cdist(a, b).square()
    return sum(torch.exp(-d2 / (2 * s * s)) for s in sigmas)


def mmd_cdist(x: torch.Tensor, y: torch.Tensor, sigmas) -> torch.Tensor:
    """Biased multi-bandwidth Gaussian MMD^2 between the rows of x and y."""
    return (gaussian_kernel_matrix(x, x, sigmas).mean() + gaussian_kernel_matrix(y, y, sigmas).mean()
            - 2 * gaussian_kernel_matrix(x, y, sigmas).mean())


def class_loop(f_syn, y_syn, f_real, y_real, num_classes: int, sigmas) -> torch.Tensor:
    """DM/IDM's per-class loop: one tensorised MMD per class, summed."""
    return sum(mmd_cdist(f_syn[y_syn == c], f_real[y_real == c], sigmas) for c in range(num_classes))
