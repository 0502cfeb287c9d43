"""kmeans' Triton kernels. Tier 5 (CPU tensors under TRITON_INTERPRET=1, CUDA tensors on a GPU): tiny odd
shapes - feature counts that are not multiples of the tile, several row tiles in one class, k spanning two
centroid tiles, a class of one row, excluded rows. GPU tier (``gpu`` marker): DREAM+ shapes (10 classes x
5000 x 2048, k = IPC) in fp32/fp16/bf16, determinism, opcheck on CUDA."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.ops.kmeans._op import kmeans_assign_op, kmeans_nearest_op, kmeans_update_op

from conftest import HAS_CUDA, assert_close, seeded
from kmeans_cases import blobs, brute_update, check_assignment, check_nearest, make_rows

pytestmark = [pytest.mark.triton, pytest.mark.validates("kmeans", "triton")]
DEVICE = "cuda" if HAS_CUDA else "cpu"
# (rows per class, feature dim, k)
TINY = {"odd": ([70, 1, 9], 37, 1), "two_tiles": ([40, 35], 5, 33), "k3": ([66, 3, 20], 130, 3)}


def _grouped(x, labels, num_classes):
    order = torch.sort(labels, stable=True).indices
    offsets = torch.searchsorted(labels[order], torch.arange(num_classes + 1, device=labels.device))
    return x[order].contiguous(), labels[order], offsets


def _steps(backend, xs, cents, offsets, excluded):
    with ddfast.use_backend(backend):
        a, d = kmeans_assign_op(xs, cents, offsets, True)
        a_only, no_d = kmeans_assign_op(xs, cents, offsets, False)
        new, counts = kmeans_update_op(xs, a, offsets, cents)
        index, nd = kmeans_nearest_op(xs, cents, offsets, excluded)
    assert torch.equal(a_only, a) and no_d.numel() == 0  # without the distance pass, the same assignment
    return a, d, new, counts, index, nd


def _check_steps(sizes, dim, k, dtype, device, seed, rtol):
    x, labels = make_rows(sizes, dim, dtype, seed=seed, device=device)
    xs, ls, offsets = _grouped(x, labels, len(sizes))
    cents = torch.randn(len(sizes), k, dim, generator=seeded(seed + 1), dtype=torch.float64).float().to(device)
    excluded = torch.rand(xs.shape[0], generator=seeded(seed + 2)).to(device) < 0.3
    excluded[offsets[:-1]] = False  # every class keeps an eligible row
    a, d, new, counts, index, nd = _steps("triton", xs, cents, offsets, excluded)
    assert a.dtype == torch.int64 and d.dtype == torch.float32 and new.dtype == torch.float32
    check_assignment(xs, ls, cents, a, d, rtol)
    assert_close(new, brute_update(xs, ls, a, cents), dtype if dtype != torch.float32 else torch.float32, "update")
    want_counts = torch.stack([torch.bincount(a[ls == c], minlength=k) for c in range(len(sizes))])
    assert torch.equal(counts, want_counts)
    keep = ~excluded
    sub_labels = ls[keep]
    check_nearest(xs[keep], sub_labels, cents, torch.searchsorted(keep.nonzero()[:, 0], index), rtol)
    ref = _steps("reference", xs, cents, offsets, excluded)
    assert_close(nd, ref[5], torch.float32 if dtype == torch.float32 else dtype, "nearest distance")


@pytest.mark.parametrize("case", TINY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_steps_match_brute_force(case, dtype):
    sizes, dim, k = TINY[case]
    _check_steps(sizes, dim, k, dtype, DEVICE, seed=30, rtol=1e-5)


def test_triton_kmeans_and_nearest_end_to_end():
    x, labels = blobs([70, 40], 3, 9, seed=31, dtype=torch.float32)
    x, labels = x.to(DEVICE), labels.to(DEVICE)
    results = {}
    for backend in ("reference", "triton"):
        with ddfast.use_backend(backend):
            r = ddfast.kmeans(x, 3, iters=3, labels=labels, num_classes=2, generator=seeded(32))
            picks = ddfast.nearest_to_centroids(x, r.centroids, labels=labels, distinct=True)
            results[backend] = (r, picks)
    (ref, ref_picks), (tri, tri_picks) = results["reference"], results["triton"]
    assert torch.equal(tri.assignments, ref.assignments) and torch.equal(tri.counts, ref.counts)
    assert_close(tri.centroids, ref.centroids, torch.float32, "centroids")
    assert_close(tri.inertia, ref.inertia, torch.float32, "inertia")
    assert torch.equal(tri_picks, ref_picks)


def test_triton_rejects_fp64():
    x = torch.randn(5, 3, dtype=torch.float64, device=DEVICE)
    with ddfast.use_backend("triton"), pytest.raises(ddfast.BackendUnavailableError, match="torch.float64"):
        ddfast.kmeans(x, 2)


# GPU tier: DREAM+ on CIFAR-10 embeds 5000 images per class into 2048 features and clusters them.
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [10, 50])
def test_gpu_dream_shapes(dtype, k):
    _check_steps([5000] * 10, 2048, k, dtype, "cuda", seed=33, rtol=1e-5)


@pytest.mark.gpu
def test_gpu_odd_shapes_and_many_centroids():
    _check_steps([4097, 1, 333], 515, 70, torch.float32, "cuda", seed=34, rtol=1e-5)


@pytest.mark.gpu
def test_gpu_kmeans_matches_cpu_reference_and_is_deterministic():
    x, labels = blobs([2000] * 4, 10, 256, seed=35, dtype=torch.float32)
    with ddfast.use_backend("reference"):
        init = ddfast.kmeans(x, 10, iters=1, labels=labels, num_classes=4, generator=seeded(36)).centroids
        want = ddfast.kmeans(x, 10, iters=10, labels=labels, num_classes=4, init=init)
    with ddfast.use_backend("triton"):
        a = ddfast.kmeans(x.cuda(), 10, iters=10, labels=labels.cuda(), num_classes=4, init=init.cuda())
        b = ddfast.kmeans(x.cuda(), 10, iters=10, labels=labels.cuda(), num_classes=4, init=init.cuda())
    assert all(torch.equal(u, v) for u, v in zip(a[:4], b[:4]))
    assert torch.equal(a.assignments.cpu(), want.assignments)
    assert_close(a.centroids, want.centroids, torch.float32, "centroids")


@pytest.mark.gpu
def test_gpu_opcheck():
    x, labels = make_rows([70, 9], 40, torch.float32, seed=37, device="cuda")
    xs, _, offsets = _grouped(x, labels, 2)
    cents = torch.randn(2, 5, 40, generator=seeded(38)).cuda()
    with ddfast.use_backend("triton"):
        a, _ = kmeans_assign_op(xs, cents, offsets, True)
        for op, args in ((kmeans_assign_op, (xs, cents, offsets, True)), (kmeans_update_op, (xs, a, offsets, cents)),
                         (kmeans_nearest_op, (xs, cents, offsets, torch.zeros(79, dtype=torch.bool, device="cuda")))):
            result = torch.library.opcheck(op, args)
            assert set(result.values()) == {"SUCCESS"}, (op, result)
