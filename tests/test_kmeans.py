"""kmeans / nearest_to_centroids, tiers 1-4 on CPU: the reference against brute-force fp64 formulas,
the C++ kernels against them, the whole k-means against scikit-learn's Lloyd from the same initial
centroids, class-batched against per-class calls, determinism, opcheck, torch.compile, bad inputs.
(No gradcheck: k-means outputs are indices and centroids that nothing differentiates.)"""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.ops.kmeans import _group, _init_kmeans_plus_plus, _init_random, reference
from ddfast.ops.kmeans._op import kmeans_assign_op, kmeans_nearest_op, kmeans_update_op

from conftest import assert_close, cpu_backends, seeded
from kmeans_cases import blobs, brute_distances, brute_update, check_assignment, check_nearest, make_rows

KMeans = pytest.importorskip("sklearn.cluster").KMeans

# (rows per class, feature dim, k): DREAM-like (several row blocks of the C++ kernel in one class, k = IPC)
# and odd shapes (a class of one row, k spanning two centroid tiles of the C++ kernel).
CASES = {"dream_ipc10": ([1100, 300, 700], 96, 10), "odd": ([1, 7, 5], 13, 1), "many_k": ([400, 300], 9, 300)}


def _grouped(x, labels, k_classes):
    order = torch.sort(labels, stable=True).indices
    offsets = torch.searchsorted(labels[order], torch.arange(k_classes + 1))
    return x[order].contiguous(), labels[order], offsets


def _centroids(num_classes, k, dim, acc, seed):
    return torch.randn(num_classes, k, dim, generator=seeded(seed), dtype=torch.float64).to(acc)


# Tier 1 and 2: the fused steps against brute force.
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_assign_and_update_match_brute_force(backend, case, dtype):
    sizes, dim, k = CASES[case]
    x, labels = make_rows(sizes, dim, dtype, seed=1)
    xs, ls, offsets = _grouped(x, labels, len(sizes))
    acc = reference.accumulate_dtype(dtype)
    cents = _centroids(len(sizes), min(k, min(sizes)) if case != "many_k" else k, dim, acc, seed=2)
    with ddfast.use_backend(backend):
        a, d = kmeans_assign_op(xs, cents, offsets, True)
        a_only, no_d = kmeans_assign_op(xs, cents, offsets, False)
        new, counts = kmeans_update_op(xs, a, offsets, cents)
    assert a.dtype == torch.int64 and d.dtype == acc and new.dtype == acc
    assert torch.equal(a_only, a) and no_d.shape == (0,) and no_d.dtype == acc  # the distance pass skipped
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    check_assignment(xs, ls, cents, a, d, rtol)
    if dtype == torch.float64:  # no near-ties at this precision: the exact argmin
        want = torch.cat([brute_distances(xs[ls == c], cents[c]).argmin(1) for c in range(len(sizes))])
        assert torch.equal(a, want)
    assert_close(new, brute_update(xs, ls, a, cents), acc if dtype != torch.float64 else dtype, "update")
    want_counts = torch.stack([torch.bincount(a[ls == c], minlength=cents.shape[1]) for c in range(len(sizes))])
    assert torch.equal(counts, want_counts)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_nearest_matches_brute_force(backend, dtype):
    sizes, dim, k = [1100, 40, 9], 33, 9
    x, labels = make_rows(sizes, dim, dtype, seed=3)
    cents = _centroids(3, k, dim, torch.float64, seed=4)
    with ddfast.use_backend(backend):
        index = ddfast.nearest_to_centroids(x, cents, labels=labels)
        plain = ddfast.nearest_to_centroids(x[labels == 0], cents[0])
    check_nearest(x, labels, cents, index, 1e-12 if dtype == torch.float64 else 1e-5)
    if dtype == torch.float64:
        want = torch.stack([(labels == c).nonzero()[:, 0][brute_distances(x[labels == c], cents[c]).argmin(0)]
                            for c in range(3)])
        assert torch.equal(index, want)
        assert torch.equal(plain, brute_distances(x[labels == 0], cents[0]).argmin(0))


@pytest.mark.parametrize("backend", cpu_backends())
def test_nearest_distinct_is_greedy_in_centroid_order(backend):
    x = torch.randn(60, 5, generator=seeded(5), dtype=torch.float64)
    labels = torch.arange(60) % 2
    cents = torch.zeros(2, 4, 5, dtype=torch.float64)  # identical centroids: all want the same row
    cents[:, :, 0] = torch.tensor([0.0, 0.01, 0.02, 0.03])
    with ddfast.use_backend(backend):
        index = ddfast.nearest_to_centroids(x, cents, labels=labels, distinct=True)
        shared = ddfast.nearest_to_centroids(x, cents, labels=labels)
    for c in range(2):
        rows = (labels == c).nonzero()[:, 0]
        taken = []
        for j in range(4):
            d = brute_distances(x[rows], cents[c, j:j + 1])[:, 0]
            d[[int((rows == t).nonzero()) for t in taken]] = float("inf")
            taken.append(int(rows[d.argmin()]))
        assert index[c].tolist() == taken
    assert len(set(index.flatten().tolist())) == 8
    assert len(set(shared[0].tolist())) == 1  # without distinct, DREAM's semantics: the same row


@pytest.mark.parametrize("backend", cpu_backends())
def test_ties_go_to_the_lowest_index(backend):
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    cents = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # two equal centroids
    with ddfast.use_backend(backend):
        a, _ = kmeans_assign_op(x, cents[None], torch.tensor([0, 4]), True)
        index = ddfast.nearest_to_centroids(x, cents)
    assert a.tolist() == [2, 0, 2, 0]  # row 1 is as far from 0 as from 1: centroid 0
    assert index.tolist() == [0, 0, 0]  # duplicate rows 0 and 2: the first copy


@pytest.mark.parametrize("backend", cpu_backends())
def test_empty_cluster_keeps_its_centroid_and_nan_propagates(backend):
    x = torch.randn(20, 3, generator=seeded(6), dtype=torch.float64)
    init = torch.stack([x[0], x[1], torch.full((3,), 100.0, dtype=torch.float64)])
    with ddfast.use_backend(backend):
        r = ddfast.kmeans(x, 3, iters=4, init=init)
        bad = x.clone()
        bad[5, 1] = float("nan")
        a, d = kmeans_assign_op(bad, init[None].clone(), torch.tensor([0, 20]), True)
    assert r.counts[2] == 0 and torch.equal(r.centroids[2], init[2])
    assert a[5] == 0 and torch.isnan(d[5]) and torch.isfinite(d[torch.arange(20) != 5]).all()


# The whole k-means against scikit-learn.
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("data", ["blobs", "noise"])
def test_kmeans_matches_sklearn_from_the_same_init(backend, data):
    k, iters = 6, 15
    if data == "blobs":
        x, _ = blobs([600], k, 12, seed=7)
    else:
        x = torch.randn(800, 12, generator=seeded(7), dtype=torch.float64)
    init = x[torch.randperm(x.shape[0], generator=seeded(8))[:k]].clone()
    with ddfast.use_backend(backend):
        r = ddfast.kmeans(x, k, iters=iters, init=init)
    km = KMeans(n_clusters=k, init=init.numpy(), n_init=1, max_iter=iters, algorithm="lloyd", tol=0.0).fit(x.numpy())
    assert abs(r.inertia.item() - km.inertia_) <= 1e-5 * km.inertia_
    assert r.iterations == iters and r.inertia.dtype == torch.float64
    if data == "blobs":
        assert torch.equal(r.assignments, torch.from_numpy(km.labels_).long())
        assert_close(r.centroids, torch.from_numpy(km.cluster_centers_), torch.float64, "centroids")


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_batched_equals_per_class_calls(backend, init):
    sizes, k = [300, 120, 200], 5
    x, labels = make_rows(sizes, 16, torch.float32, seed=9)
    with ddfast.use_backend(backend):
        seeds = ddfast.kmeans(x, k, iters=1, labels=labels, num_classes=3, init=init, generator=seeded(10))
        start = ddfast.kmeans(x, k, iters=1, labels=labels, num_classes=3, init=init, generator=seeded(10))
        init_c = torch.stack([x[labels == c][:k] for c in range(3)]).float()
        batched = ddfast.kmeans(x, k, iters=6, labels=labels, num_classes=3, init=init_c, tol=1e-3)
        singles = [ddfast.kmeans(x[labels == c], k, iters=6, init=init_c[c], tol=1e-3) for c in range(3)]
    assert torch.equal(start.centroids, seeds.centroids)  # same generator seed, same draws
    for c in range(3):
        assert torch.equal(batched.centroids[c], singles[c].centroids)
        assert torch.equal(batched.assignments[labels == c], singles[c].assignments)
        assert torch.equal(batched.counts[c], singles[c].counts)
        assert_close(batched.inertia[c], singles[c].inertia, torch.float32, "inertia")


@pytest.mark.parametrize("backend", cpu_backends())
def test_grouped_labels_take_the_no_copy_path_with_the_same_results(backend):
    # class-major labels skip the sort and gather; a shuffled copy of the same rows must agree row for row
    sizes, k = [90, 60, 75], 4
    x, labels = make_rows(sizes, 12, torch.float32, seed=3, shuffle=False)
    perm = torch.randperm(len(labels), generator=seeded(4))
    init_c = torch.stack([x[labels == c][:k] for c in range(3)])
    with ddfast.use_backend(backend):
        grouped = ddfast.kmeans(x, k, iters=5, labels=labels, num_classes=3, init=init_c)
        shuffled = ddfast.kmeans(x[perm], k, iters=5, labels=labels[perm], num_classes=3, init=init_c)
        near_grouped = ddfast.nearest_to_centroids(x, grouped.centroids, labels=labels)
        near_shuffled = ddfast.nearest_to_centroids(x[perm], grouped.centroids, labels=labels[perm])
    # within a class the rows are summed in another order, so the means agree to rounding
    assert_close(grouped.centroids, shuffled.centroids, torch.float32, "centroids")
    assert torch.equal(grouped.assignments[perm], shuffled.assignments)
    assert torch.equal(near_grouped, perm[near_shuffled])


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_initial_centroids_are_rows_of_their_class(backend, init):
    x, labels = make_rows([50, 8, 30], 6, torch.float64, seed=11)
    with ddfast.use_backend(backend):  # the seeding helpers directly: one Lloyd step would move them
        xs, _, offsets, sl = _group(x, labels, 3)
        seeds = (_init_random(xs, offsets, sl, 8, seeded(12)) if init == "random"
                 else _init_kmeans_plus_plus(xs, offsets, 8, seeded(12)))
    for c in range(3):
        rows = x[labels == c]
        d = brute_distances(seeds[c], rows)
        assert bool((d.min(1).values == 0).all()), f"class {c}: an initial centroid is not one of its rows"
        assert len({int(i) for i in d.argmin(1)}) == 8, f"class {c}: initial centroids repeat a row"


@pytest.mark.parametrize("backend", cpu_backends())
def test_deterministic_seeded_and_tol_stops_early(backend):
    x, labels = blobs([400, 300], 4, 8, seed=13, dtype=torch.float32)
    with ddfast.use_backend(backend):
        a = ddfast.kmeans(x, 4, iters=50, labels=labels, num_classes=2, generator=seeded(14), tol=1e-6)
        b = ddfast.kmeans(x, 4, iters=50, labels=labels, num_classes=2, generator=seeded(14), tol=1e-6)
        c = ddfast.kmeans(x, 4, iters=3, labels=labels, num_classes=2, generator=seeded(15))
    assert all(torch.equal(u, v) for u, v in zip(a[:4], b[:4])) and a.iterations == b.iterations
    assert a.iterations < 50 and c.iterations == 3
    assert not torch.equal(a.centroids, c.centroids) or a.iterations <= 3


def test_cpp_matches_reference_end_to_end():
    if "cpp" not in cpu_backends():
        pytest.fail("ddfast._C is not built")
    x, labels = make_rows([500, 260], 24, torch.float64, seed=16)
    results = {}
    for backend in ("reference", "cpp"):
        with ddfast.use_backend(backend):
            results[backend] = ddfast.kmeans(x, 7, iters=8, labels=labels, num_classes=2, generator=seeded(17))
    ref, cpp = results["reference"], results["cpp"]
    assert torch.equal(ref.assignments, cpp.assignments)
    assert_close(cpp.centroids, ref.centroids, torch.float64, "centroids")
    assert_close(cpp.inertia, ref.inertia, torch.float64, "inertia")


# Tier 3: opcheck and torch.compile.
def test_opcheck():
    x, labels = make_rows([7, 5], 6, torch.float32, seed=18)
    xs, _, offsets = _grouped(x, labels, 2)
    cents = _centroids(2, 3, 6, torch.float32, seed=19)
    a, _ = kmeans_assign_op(xs, cents, offsets, True)
    excluded = torch.zeros(12, dtype=torch.bool)
    excluded[2] = True
    for op, args in ((kmeans_assign_op, (xs, cents, offsets, True)), (kmeans_assign_op, (xs, cents, offsets, False)),
                     (kmeans_update_op, (xs, a, offsets, cents)), (kmeans_nearest_op, (xs, cents, offsets, excluded)),
                     (kmeans_nearest_op, (xs, cents, offsets, torch.zeros(0, dtype=torch.bool)))):
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


def test_torch_compile_fullgraph():
    x, labels = make_rows([40, 30], 8, torch.float32, seed=20)
    xs, _, offsets = _grouped(x, labels, 2)
    cents = _centroids(2, 4, 8, torch.float32, seed=21)

    def lloyd(xs, cents, offsets):
        for _ in range(2):
            a, _ = kmeans_assign_op(xs, cents, offsets, True)
            cents, _ = kmeans_update_op(xs, a, offsets, cents)
        return kmeans_assign_op(xs, cents, offsets, True)

    compiled = torch.compile(lloyd, fullgraph=True, backend="eager")
    got, want = compiled(xs, cents, offsets), lloyd(xs, cents, offsets)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


# Tier 4: bad inputs.
def test_bad_inputs_name_the_argument():
    x, labels = make_rows([6, 4], 3, torch.float32, seed=22)
    cases = [
        (lambda: ddfast.kmeans(x, 5, labels=labels, num_classes=2), ValueError, "class 1 has 4 rows"),
        (lambda: ddfast.kmeans(x, 11), ValueError, "x has 10 rows"),
        (lambda: ddfast.kmeans(x[0], 2), ValueError, "x must be 2-D"),
        (lambda: ddfast.kmeans(x.long(), 2), TypeError, "x has dtype"),
        (lambda: ddfast.kmeans(x, 0), ValueError, "k must be at least 1"),
        (lambda: ddfast.kmeans(x, 2, iters=0), ValueError, "iters must be at least 1"),
        (lambda: ddfast.kmeans(x, 2, iters=-3), ValueError, "iters must be at least 1"),
        (lambda: ddfast.kmeans(x, 2, iters=2.5), TypeError, "iters must be an int"),
        (lambda: ddfast.kmeans(x, 2, labels=labels, num_classes=1), ValueError, "labels has label 1 outside"),
        (lambda: ddfast.kmeans(x, 2, labels=labels - 1, num_classes=2), ValueError, "labels has label -1"),
        (lambda: ddfast.kmeans(x, 2, labels=labels), ValueError, "labels and num_classes"),
        (lambda: ddfast.kmeans(x, 2, labels=labels.int(), num_classes=2), TypeError, "labels must have dtype"),
        (lambda: ddfast.kmeans(x, 2, init="kmeans"), ValueError, "init must be one of"),
        (lambda: ddfast.kmeans(x, 2, init=torch.zeros(3, 3)), ValueError, r"init must have shape \(2, 3\)"),
        (lambda: ddfast.kmeans(x, 2, init=torch.zeros(2, 3, dtype=torch.long)), TypeError, "init has dtype"),
        (lambda: ddfast.kmeans(x, 2, generator=0), TypeError, "generator must be"),
        (lambda: ddfast.kmeans(x, 2, tol=-1.0), ValueError, "tol must be"),
        (lambda: ddfast.nearest_to_centroids(x, torch.zeros(2, 4)), ValueError, "centroids must be"),
        (lambda: ddfast.nearest_to_centroids(x, torch.zeros(2, 3), labels=labels), ValueError, "centroids must be"),
        (lambda: ddfast.nearest_to_centroids(x, torch.zeros(2, 5, 3), labels=labels, distinct=True), ValueError,
         "class 1 has 4 rows"),
        (lambda: ddfast.nearest_to_centroids(x, torch.zeros(1, 2, 3), labels=labels), ValueError,
         "labels has label 1 outside"),
        (lambda: ddfast.nearest_to_centroids(x, [[0.0, 0.0, 0.0]]), TypeError, "centroids must be a torch.Tensor"),
        (lambda: ddfast.nearest_to_centroids(x, torch.zeros(2, 3), distinct=1), TypeError, "distinct must be a bool"),
    ]
    for fn, error, message in cases:
        with pytest.raises(error, match=message):
            fn()


def test_outputs_carry_no_gradient():
    x = torch.randn(30, 4, generator=seeded(23), requires_grad=True)
    r = ddfast.kmeans(x, 3, iters=2, generator=seeded(24))
    index = ddfast.nearest_to_centroids(x, r.centroids)
    assert not r.centroids.requires_grad and not r.inertia.requires_grad and index.dtype == torch.int64
