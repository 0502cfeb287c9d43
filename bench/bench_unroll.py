"""Benchmark ddfast.unroll's adjoint and tesla modes against MTT's create_graph unroll.

Cases (issue: trajectory matching engine):
  mtt_convnet3  one MTT outer iteration (N student steps on batch_syn synthetic images, the matching
                loss, its gradient w.r.t. the images and the lr) on ConvNet-3 / CIFAR-10 shapes: time per
                iteration and peak memory (CPU: peak RSS growth of a child process; CUDA: max allocated)
                for N = 10, 20, 40 (MTT's autograd unroll), the adjoint also at N = 80; and the cosine
                similarity of the tesla gradient with the exact one.
Results: bench/results/<device>.jsonl.

Usage: python bench/bench_unroll.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast.models import get_network  # noqa: E402

from bench.baselines import mtt_unroll  # noqa: E402
from bench.common import bench_main, peak_memory, peak_rss_child, time_ms  # noqa: E402

OP = "unroll"
CLASSES, IPC = 10, 10


def make_problem(device: str, batch_syn: int, seed: int = 0):
    """ConvNet-3 student, an expert start and target, IPC 10 CIFAR-10-shaped synthetic images."""
    torch.manual_seed(seed)
    net = get_network("ConvNet", 3, CLASSES, (32, 32)).to(device)
    fm = ddfast.FlatModel(net)
    g = torch.Generator().manual_seed(seed)
    start = fm.flat_params()
    target = start + 0.01 * torch.randn(start.shape, generator=g).to(device)
    images = torch.randn(CLASSES * IPC, 3, 32, 32, generator=g).to(device).requires_grad_()
    labels = torch.arange(CLASSES, device=device).repeat_interleave(IPC)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    return fm, start, target, images, labels, lr


def workload(mode: str, steps: int, device: str = "cpu", batch_syn: int = 50):
    """One outer iteration's gradient w.r.t. images and lr (module level: the memory child imports it)."""
    fm, start, target, images, labels, lr = make_problem(device, batch_syn)

    def run():
        if mode == "mtt_autograd":
            loss = mtt_unroll.unroll_and_match(fm, start, target, images, labels, lr, steps, batch_syn,
                                               torch.Generator().manual_seed(1))
        else:
            theta = ddfast.unroll(fm, start, images, labels, lr, steps, batch_size=batch_syn,
                                  generator=torch.Generator().manual_seed(1), mode=mode)
            loss = ((theta - target) ** 2).sum() / ((start - target) ** 2).sum()
        return torch.autograd.grad(loss, (images, lr))
    return run


def case_mtt(rec, device, quick):
    batch_syn = 100 if device.type == "cuda" else 50
    sizes = (5, 10) if quick else (10, 20, 40)
    plan = [("mtt_autograd", n) for n in sizes] + [("adjoint", n) for n in sizes + ((80,) if not quick else ())]
    plan += [("tesla", n) for n in sizes]
    base = {}
    for mode, steps in plan:
        fn = workload(mode, steps, str(device), batch_syn)
        ms = time_ms(fn, device, quick=True)
        if device.type == "cuda":
            mem = peak_memory(fn, device)
        else:
            mem = peak_rss_child(workload, mode, steps, "cpu", batch_syn, warmup_args=(mode, 1, "cpu", batch_syn))
        cosine = None
        if mode == "tesla":
            exact = workload("adjoint", steps, str(device), batch_syn)()[0]
            approx = fn()[0]
            cosine = float(torch.nn.functional.cosine_similarity(exact.flatten(), approx.flatten(), dim=0))
        if mode == "mtt_autograd":
            base[steps] = (ms, mem)
        ref_ms, ref_mem = base.get(steps, (None, None))
        rec.record(op=OP, case="mtt_convnet3", backend="torch", strategy=mode, size=steps, steps=steps,
                   batch_syn=batch_syn, median_ms=ms, peak_mem_bytes=mem, baseline="mtt_autograd",
                   baseline_ms=ref_ms, baseline_peak_mem_bytes=ref_mem,
                   speedup=ref_ms / ms if ref_ms else None, tesla_cosine=cosine)
        print(f"mtt N={steps:3d} {mode:13s} {ms:10.1f} ms  peak {mem / 2**20:9.1f} MiB"
              + (f"  | MTT autograd {ref_ms:10.1f} ms {ref_mem / 2**20:9.1f} MiB" if ref_ms and mode != "mtt_autograd"
                 else "") + (f"  cosine(tesla, exact) {cosine:.4f}" if cosine is not None else ""), flush=True)


RUNNERS = {"mtt_convnet3": case_mtt}


def main(argv=None):
    bench_main(__doc__, RUNNERS, lambda rec, device: f"{OP} on {rec.common['device']}, torch {rec.common['torch']}",
               argv)


if __name__ == "__main__":
    main()
