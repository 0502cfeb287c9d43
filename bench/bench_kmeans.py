"""Benchmark the class-batched k-means (DREAM+'s representative sampling) against a per-class torch loop
and scikit-learn.

Cases (docs/semantics.md#kmeans):
  batched   K classes x N rows x D features (DREAM+ on CIFAR-10: 10 x 5000 x 2048 embeddings, k = IPC),
            the same initial centroids for every contender and a fixed number of Lloyd iterations (no early
            stop): ddfast.kmeans(labels=...) (each available backend) vs a per-class torch loop
            (cdist + argmin + index_add per class and iteration, the form of DREAM's fast_pytorch_kmeans
            helper) and, on CPU, scikit-learn's KMeans(algorithm="lloyd", n_init=1) per class. Then the
            selection ddfast.nearest_to_centroids vs the per-class cdist + argmin over rows.
--quick uses 10 x 1000 x 512 (the full size takes minutes on a 2-core CPU). Results go to
bench/results/<device>.jsonl.

Usage: python bench/bench_kmeans.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast import backends  # noqa: E402

from bench.common import backends_header, bench_main, count_ops, peak_memory, time_ms  # noqa: E402

OP = "kmeans"
ITERS = 10


def op_backends(device: torch.device) -> list[str]:
    names = ["reference", "cpp"] if device.type == "cpu" else ["reference", "triton"]
    return [n for n in names if backends.availability(n, device.type) is None]


def torch_loop_kmeans(x_per_class, init, iters):
    """Per class and iteration: cdist, argmin, index_add sums, bincount, means (empty clusters keep theirs)."""
    out = []
    for x, c in zip(x_per_class, init):
        k = c.shape[0]
        for _ in range(iters):
            a = torch.cdist(x, c).argmin(1)
            sums = torch.zeros_like(c).index_add_(0, a, x)
            n = torch.bincount(a, minlength=k)
            c = torch.where(n[:, None] > 0, sums / n.clamp(min=1)[:, None], c)
        out.append(c)
    return torch.stack(out)


def torch_loop_nearest(x_per_class, centroids):
    return torch.stack([torch.cdist(c, x).argmin(1) for x, c in zip(x_per_class, centroids)])


def case_batched(rec, device, quick):
    classes, rows, dim = (10, 1000, 512) if quick else (10, 5000, 2048)
    g = torch.Generator().manual_seed(0)
    for k in ((10,) if quick else (10, 50)):
        x = torch.randn(classes * rows, dim, generator=g).to(device)
        labels = torch.arange(classes, device=device).repeat_interleave(rows)
        init = torch.stack([x[c * rows:(c + 1) * rows][:k] for c in range(classes)]).clone()
        x_pc = [x[c * rows:(c + 1) * rows] for c in range(classes)]
        size = f"{classes}x{rows}x{dim},k={k}"
        base_ms = time_ms(lambda: torch_loop_kmeans(x_pc, init, ITERS), device, quick=True)
        base_ops = count_ops(lambda: torch_loop_kmeans(x_pc, init, ITERS))
        base_mem = peak_memory(lambda: torch_loop_kmeans(x_pc, init, ITERS), device)
        sk_ms = None
        if device.type == "cpu":
            from sklearn.cluster import KMeans

            x_np, init_np = [t.numpy() for t in x_pc], init.numpy()

            def sklearn_loop():
                for xc, ic in zip(x_np, init_np):
                    KMeans(n_clusters=k, init=ic, n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd").fit(xc)

            sk_ms = time_ms(sklearn_loop, device, quick=True)
            rec.record(op=OP, case="batched", size=size, backend="sklearn", baseline="torch_loop", dtype="float32",
                       classes=classes, rows=rows, features=dim, k=k, iters=ITERS, median_ms=sk_ms,
                       baseline_ms=base_ms, speedup=base_ms / sk_ms)
            print(f"kmeans {size} sklearn   {sk_ms:9.1f} ms | torch loop {base_ms:9.1f} ms", flush=True)
        for backend in op_backends(device):
            def run():
                with ddfast.use_backend(backend):
                    return ddfast.kmeans(x, k, iters=ITERS, init=init, labels=labels, num_classes=classes)

            ms = time_ms(run, device, quick=True)
            rec.record(op=OP, case="batched", size=size, backend=backend, baseline="torch_loop", dtype="float32",
                       classes=classes, rows=rows, features=dim, k=k, iters=ITERS, median_ms=ms, baseline_ms=base_ms,
                       speedup=base_ms / ms, sklearn_ms=sk_ms, launches=count_ops(run), baseline_launches=base_ops,
                       peak_mem_bytes=peak_memory(run, device), baseline_peak_mem_bytes=base_mem)
            print(f"kmeans {size} {backend:9s} {ms:9.1f} ms | torch loop {base_ms:9.1f} ms x{base_ms / ms:5.2f}"
                  + (f" | sklearn {sk_ms:9.1f} ms" if sk_ms else ""), flush=True)

        with ddfast.use_backend(op_backends(device)[-1]):
            cents = ddfast.kmeans(x, k, iters=2, init=init, labels=labels, num_classes=classes).centroids
        near_base = time_ms(lambda: torch_loop_nearest(x_pc, cents), device, quick=True)
        for backend in op_backends(device):
            def pick():
                with ddfast.use_backend(backend):
                    return ddfast.nearest_to_centroids(x, cents, labels=labels)

            ms = time_ms(pick, device, quick=True)
            rec.record(op=OP, case="nearest", size=size, backend=backend, baseline="torch_loop", dtype="float32",
                       classes=classes, rows=rows, features=dim, k=k, median_ms=ms, baseline_ms=near_base,
                       speedup=near_base / ms)
            print(f"nearest {size} {backend:9s} {ms:9.2f} ms | torch loop {near_base:9.2f} ms "
                  f"x{near_base / ms:5.2f}", flush=True)


RUNNERS = {"batched": case_batched}


def main(argv=None):
    bench_main(__doc__, RUNNERS, backends_header(OP, op_backends), argv)


if __name__ == "__main__":
    main()
