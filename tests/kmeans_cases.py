"""Shared inputs and independent brute-force formulas for the k-means tests."""

from __future__ import annotations

import torch

from conftest import seeded


def make_rows(sizes, dim, dtype, seed=0, device="cpu", shuffle=True):
    """Rows of len(sizes) classes (sizes[c] rows each), labels shuffled; fp64 values cast to dtype."""
    g = seeded(seed)
    labels = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    if shuffle:
        labels = labels[torch.randperm(len(labels), generator=g)]
    x = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return x.to(dtype=dtype, device=device), labels.to(device)


def blobs(sizes, k, dim, seed=0, spread=0.05, dtype=torch.float64):
    """Well-separated clusters: each class has k centres far apart, rows near them."""
    g = seeded(seed)
    xs, ys = [], []
    for c, n in enumerate(sizes):
        centres = torch.randn(k, dim, generator=g, dtype=torch.float64) * 10
        which = torch.arange(n) % k
        xs.append(centres[which] + spread * torch.randn(n, dim, generator=g, dtype=torch.float64))
        ys.append(torch.full((n,), c))
    return torch.cat(xs).to(dtype), torch.cat(ys)


def brute_distances(x, cents):
    """[n, m] squared distances in fp64 as sum((x - c)^2), no expansion (in row chunks: bounded memory)."""
    x, cents = x.double(), cents.double()
    chunk = max(1, (1 << 24) // max(1, cents.numel()))
    return torch.cat([((x[i:i + chunk, None, :] - cents[None, :, :]) ** 2).sum(-1)
                      for i in range(0, x.shape[0], chunk)]) if x.shape[0] else x.new_zeros(0, cents.shape[0])


def check_assignment(x, labels, cents, assignment, distance, rtol):
    """Every row's centroid is (within rtol of the class's largest distance) a nearest one of its class,
    and its distance is that minimum. Exact argmin equality is only asked for in fp64 tests."""
    x, cents = x.cpu(), cents.cpu()
    labels = torch.zeros(x.shape[0], dtype=torch.int64) if labels is None else labels.cpu()
    cents = cents.reshape(-1, cents.shape[-2], cents.shape[-1])
    for c in range(cents.shape[0]):
        rows = (labels == c).nonzero()[:, 0]
        if rows.numel() == 0:
            continue
        d = brute_distances(x[rows], cents[c])
        scale = float(d.max())
        got = d.gather(1, assignment.cpu()[rows][:, None])[:, 0]
        best = d.min(1).values
        assert float((got - best).max()) <= rtol * scale, f"class {c}: a row is not at a nearest centroid"
        err = float((distance.cpu()[rows].double() - best).abs().max())
        assert err <= rtol * scale, f"class {c}: distance error {err:.3e} > {rtol:.1e} x {scale:.3e}"


def brute_update(x, labels, assignment, prev):
    """Means of the rows assigned to each centroid of each class (fp64); empty clusters keep prev."""
    out = prev.double().clone().reshape(-1, prev.shape[-2], prev.shape[-1])
    labels = torch.zeros(x.shape[0], dtype=torch.int64) if labels is None else labels.cpu()
    for c in range(out.shape[0]):
        for j in range(out.shape[1]):
            sel = (labels == c) & (assignment.cpu() == j)
            if sel.any():
                out[c, j] = x.cpu()[sel].double().mean(0)
    return out.reshape(prev.shape)


def check_nearest(x, labels, cents, index, rtol):
    """Every centroid's row belongs to its class and is (within rtol) a nearest row of it."""
    x, cents = x.cpu(), cents.cpu()
    labels = torch.zeros(x.shape[0], dtype=torch.int64) if labels is None else labels.cpu()
    cents = cents.reshape(-1, cents.shape[-2], cents.shape[-1])
    index = index.cpu().reshape(cents.shape[0], -1)
    for c in range(cents.shape[0]):
        rows = (labels == c).nonzero()[:, 0]
        d = brute_distances(x[rows], cents[c])  # [rows, k]
        assert bool((labels[index[c]] == c).all()), f"class {c}: a centroid picked a row of another class"
        got = brute_distances(x[index[c]], cents[c]).diagonal()
        assert float((got - d.min(0).values).max()) <= rtol * float(d.max()), f"class {c}: not a nearest row"
