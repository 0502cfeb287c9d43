"""Benchmark the fused MMD against the tensorised torch.cdist form DD code writes.

Cases:
  sweep       ddfast.mmd (gaussian, 3 bandwidths, biased), forward + backward w.r.t. both sides, N = M
              rows of D = 2048 features: CPU 256..8192 and the fused path also at 16384, CUDA up to
              65536; time and peak memory (CPU: peak RSS of a child process; CUDA: max allocated) of
              the fused backend and of bench/baselines/mmd_cdist.py. The baseline is recorded as
              skipped (with the reason) where its N x M matrices would not fit in memory.
  dm_classes  class_mmd over CIFAR-10-like DM embeddings (10 classes, IPC 10/50 synthetic and 256 real
              rows per class, D = 2048) against the per-class loop of the tensorised form, gradient
              w.r.t. the synthetic features as in DM; also the ATen ops one call dispatches.
pykeops is measured when importable (it is not installed on the CI machine: then nothing is recorded).
Results: bench/results/<device>.jsonl.

Usage: python bench/bench_mmd.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR]
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast import backends  # noqa: E402

from bench.baselines.mmd_cdist import class_loop, mmd_cdist  # noqa: E402
from bench.common import (available_memory_bytes, bench_main, count_ops, peak_memory, peak_rss_child,  # noqa: E402
                          time_ms)

OP = "mmd"
FEATURES = 2048
# Peak bytes per N^2 of the cdist form's forward + backward at N = M, fp32, 3 bandwidths: measured
# about 166 on the CPU at N = 2048 (xx, yy and xy blocks, ~14 N x N matrices alive per block); 176
# leaves a margin for the skip decision.
CDIST_BYTES_PER_PAIR = 176


def sigmas(d: int) -> list[float]:
    """Bandwidths at the scale of the squared distances of standardised features (~2 d)."""
    return [s * math.sqrt(d) for s in (0.5, 1.0, 2.0)]


def fused_backend(device: torch.device) -> str:
    if device.type == "cpu":
        return "cpp" if backends.availability("cpp", "cpu") is None else "reference"
    return "triton" if backends.availability("triton", "cuda") is None else "reference"


def _inputs(n: int, d: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(device).requires_grad_()
    y = (1.2 * torch.randn(n, d, generator=g) + 0.3).to(device).requires_grad_()
    return x, y


def fused_workload(backend: str, n: int, d: int, device: str):
    """Forward + backward of ddfast.mmd (a factory: also run in the peak-RSS child process)."""
    x, y = _inputs(n, d, device)
    sig = sigmas(d)

    def work():
        with ddfast.use_backend(backend):
            return torch.autograd.grad(ddfast.mmd(x, y, "gaussian", sig), (x, y))

    return work


def cdist_workload(n: int, d: int, device: str):
    x, y = _inputs(n, d, device)
    sig = sigmas(d)
    return lambda: torch.autograd.grad(mmd_cdist(x, y, sig), (x, y))


def keops_workload(n: int, d: int, device: str):
    """The same loss with pykeops' LazyTensors (kernel sums reduced on the fly)."""
    from pykeops.torch import LazyTensor

    x, y = _inputs(n, d, device)
    sig = sigmas(d)

    def block(a, b):
        d2 = ((LazyTensor(a[:, None, :]) - LazyTensor(b[None, :, :])) ** 2).sum(-1)
        return sum((-d2 / (2 * s * s)).exp().sum(1).sum() for s in sig) / (a.shape[0] * b.shape[0])

    return lambda: torch.autograd.grad(block(x, x) + block(y, y) - 2 * block(x, y), (x, y))


def measure(factory, args, device: torch.device, quick: bool) -> tuple[float, int | None]:
    """(median ms, peak memory bytes) of one workload."""
    work = factory(*args)
    ms = time_ms(work, device, quick)
    if device.type == "cuda":
        mem = peak_memory(work, device)
    else:
        del work
        mem = peak_rss_child(factory, *args, warmup_args=(*args[:-3], 64, *args[-2:]))
    return ms, mem


def bench_sweep(rec, device, quick):
    d = FEATURES
    if device.type == "cpu":
        sizes = [256, 1024, 2048] if quick else [256, 512, 1024, 2048, 4096, 8192, 16384]
    else:
        sizes = [1024, 4096, 16384] if quick else [256, 1024, 4096, 8192, 16384, 32768, 65536]
    backend = fused_backend(device)
    have_keops = importlib.util.find_spec("pykeops") is not None
    for n in sizes:
        args = (n, d, device.type)
        need = CDIST_BYTES_PER_PAIR * n * n
        avail = available_memory_bytes(device)
        base_ms = base_mem = None
        base_skipped = None
        if need > 0.7 * avail:
            base_skipped = (f"the tensorised form needs about {need / 2**30:.0f} GiB for its N x M matrices; "
                            f"{avail / 2**30:.0f} GiB available")
        else:
            base_ms, base_mem = measure(cdist_workload, args, device, quick)
        ms, mem = measure(fused_workload, (backend, *args), device, quick)
        rows = [(backend, ms, mem)]
        if have_keops and device.type == "cuda":
            rows.append(("pykeops", *measure(keops_workload, args, device, quick)))
        for name, t, m in rows:
            rec.record(op=OP, case="sweep", backend=name, strategy=None, size=n, features=d, kernel="gaussian",
                       sigmas=sigmas(d), estimator="biased", median_ms=t, peak_mem_bytes=m,
                       baseline="torch.cdist tensorised (bench/baselines/mmd_cdist.py)", baseline_ms=base_ms,
                       baseline_peak_mem_bytes=base_mem, baseline_skipped=base_skipped,
                       speedup=base_ms / t if base_ms else None)
            print(f"sweep N=M={n:6d} {name:9s} {t:10.2f} ms  peak {m / 2**20 if m is not None else float('nan'):9.1f}"
                  f" MiB | cdist {base_ms if base_ms else float('nan'):10.2f} ms  peak "
                  f"{base_mem / 2**20 if base_mem else float('nan'):9.1f} MiB"
                  + (f" ({base_skipped})" if base_skipped else ""))


def bench_dm_classes(rec, device, quick):
    k, real_per_class, d = 10, 256, FEATURES
    sig = sigmas(d)
    backend = fused_backend(device)
    for ipc in ([10] if quick else [10, 50]):
        g = torch.Generator().manual_seed(1)
        y_syn = torch.arange(k).repeat_interleave(ipc).to(device)
        y_real = torch.arange(k).repeat_interleave(real_per_class)[torch.randperm(k * real_per_class, generator=g)]
        y_real = y_real.to(device)
        f_syn = torch.randn(k * ipc, d, generator=g).to(device).requires_grad_()
        f_real = (torch.randn(k * real_per_class, d, generator=g) + 0.2).to(device)

        def fused():
            with ddfast.use_backend(backend):
                return torch.autograd.grad(ddfast.class_mmd(f_syn, y_syn, f_real, y_real, k, "gaussian", sig), f_syn)

        def baseline():
            return torch.autograd.grad(class_loop(f_syn, y_syn, f_real, y_real, k, sig), f_syn)

        ms, base_ms = time_ms(fused, device, quick), time_ms(baseline, device, quick)
        r = rec.record(op=OP, case="dm_classes", backend=backend, strategy=None, size=ipc, classes=k,
                       real_per_class=real_per_class, features=d, kernel="gaussian", sigmas=sig, estimator="biased",
                       median_ms=ms, baseline="per-class loop of the torch.cdist form", baseline_ms=base_ms,
                       speedup=base_ms / ms, launches=count_ops(fused), baseline_launches=count_ops(baseline),
                       peak_mem_bytes=peak_memory(fused, device), baseline_peak_mem_bytes=peak_memory(baseline, device))
        print(f"dm_classes IPC {ipc:3d} {backend}: {ms:.2f} ms vs class loop {base_ms:.2f} ms "
              f"({r['speedup']:.1f}x); ops {r['launches']} vs {r['baseline_launches']}")


RUNNERS = {"sweep": bench_sweep, "dm_classes": bench_dm_classes}


def main(argv=None):
    bench_main(__doc__, RUNNERS, lambda rec, device: (
        f"mmd on {rec.common['device']}, torch {rec.common['torch']}, fused backend {fused_backend(device)}, "
        f"pykeops {'importable' if importlib.util.find_spec('pykeops') else 'not installed (not measured)'}"), argv)


if __name__ == "__main__":
    main()
