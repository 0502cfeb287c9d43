"""Benchmark ddfast.unroll's adjoint and tesla modes against MTT's create_graph unroll.

Cases (docs/semantics.md#unroll):
  mtt_convnet3  one MTT outer iteration (N student steps on batch_syn synthetic images, the matching
                loss, its gradient w.r.t. the images and the lr) on ConvNet-3 / CIFAR-10 shapes: time per
                iteration and peak memory (CPU: peak RSS growth of a child process; CUDA: max allocated)
                for N = 10, 20, 40 (MTT's autograd unroll), the adjoint (its default memory_budget) also at
                N = 80; and the cosine similarity of the tesla gradient with the exact one.
  mtt_convnet3_budget
                the same iteration at N = 40 (--quick: 10): MTT's autograd unroll, then the adjoint at each
                memory_budget of --budgets (default 0,0.1,0.2,0.25,0.5,1.0: fractions of all steps' graphs;
                an int is bytes), time and peak memory against the autograd row of the same run. Strategy
                "adjoint@<budget>", so every budget is its own row.
Results: bench/results/<device>.jsonl.

Usage: python bench/bench_unroll.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR] [--budgets LIST]
  --budgets LIST: the sweep's budgets; given without --cases, only the sweep runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast.ops.unroll.unroll import DEFAULT_MEMORY_BUDGET  # noqa: E402
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


def workload(mode: str, steps: int, device: str = "cpu", batch_syn: int = 50, memory_budget=None):
    """One outer iteration's gradient w.r.t. images and lr (module level: the memory child imports it)."""
    fm, start, target, images, labels, lr = make_problem(device, batch_syn)
    extra = {} if memory_budget is None else {"memory_budget": memory_budget}

    def run():
        if mode == "mtt_autograd":
            loss = mtt_unroll.unroll_and_match(fm, start, target, images, labels, lr, steps, batch_syn,
                                               torch.Generator().manual_seed(1))
        else:
            theta = ddfast.unroll(fm, start, images, labels, lr, steps, batch_size=batch_syn,
                                  generator=torch.Generator().manual_seed(1), mode=mode, **extra)
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
                   speedup=ref_ms / ms if ref_ms else None, tesla_cosine=cosine,
                   memory_budget=None if mode == "mtt_autograd" else DEFAULT_MEMORY_BUDGET)
        print(f"mtt N={steps:3d} {mode:13s} {ms:10.1f} ms  peak {mem / 2**20:9.1f} MiB"
              + (f"  | MTT autograd {ref_ms:10.1f} ms {ref_mem / 2**20:9.1f} MiB" if ref_ms and mode != "mtt_autograd"
                 else "") + (f"  cosine(tesla, exact) {cosine:.4f}" if cosine is not None else ""), flush=True)


BUDGETS = (0.0, 0.1, 0.2, 0.25, 0.5, 1.0)
QUICK_BUDGETS = (0.0, 0.2, 1.0)
SWEEP = {"budgets": None}  # --budgets, parsed by main()


def parse_budget(text: str):
    """'0.2' -> 0.2 (a fraction), '300000000' -> 300000000 (bytes), as ddfast.unroll takes them."""
    return float(text) if any(c in text for c in ".eEn") else int(text)


def case_budget(rec, device, quick):
    batch_syn = 100 if device.type == "cuda" else 50
    steps = 10 if quick else 40
    budgets = SWEEP["budgets"] or (QUICK_BUDGETS if quick else BUDGETS)
    ref_ms = ref_mem = None
    for budget in (None, *budgets):
        mode = "mtt_autograd" if budget is None else "adjoint"
        fn = workload(mode, steps, str(device), batch_syn, budget)
        ms = time_ms(fn, device, quick=True)
        if device.type == "cuda":
            mem = peak_memory(fn, device)
        else:
            mem = peak_rss_child(workload, mode, steps, "cpu", batch_syn, budget,
                                 warmup_args=(mode, 1, "cpu", batch_syn, budget))
        if budget is None:
            ref_ms, ref_mem = ms, mem
        strategy = mode if budget is None else f"adjoint@{budget}"
        rec.record(op=OP, case="mtt_convnet3_budget", backend="torch", strategy=strategy, size=steps, steps=steps,
                   batch_syn=batch_syn, median_ms=ms, peak_mem_bytes=mem, baseline="mtt_autograd",
                   baseline_ms=ref_ms, baseline_peak_mem_bytes=ref_mem, speedup=ref_ms / ms, memory_budget=budget,
                   time_ratio=ms / ref_ms, memory_ratio=mem / ref_mem if ref_mem else None)
        print(f"budget N={steps:3d} {strategy:16s} {ms:10.1f} ms  peak {mem / 2**20:9.1f} MiB  | time/autograd "
              f"{ms / ref_ms:5.3f}  memory/autograd {mem / ref_mem if ref_mem else float('nan'):6.3f}", flush=True)


RUNNERS = {"mtt_convnet3": case_mtt, "mtt_convnet3_budget": case_budget}


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--budgets", default=None)
    known, rest = parser.parse_known_args(argv)
    if known.budgets is not None:
        SWEEP["budgets"] = tuple(parse_budget(b.strip()) for b in known.budgets.split(",") if b.strip())
        if not any(a == "--cases" or a.startswith("--cases=") for a in rest):
            rest += ["--cases", "mtt_convnet3_budget"]
    bench_main(__doc__, RUNNERS, lambda rec, device: f"{OP} on {rec.common['device']}, torch {rec.common['torch']}",
               rest)


if __name__ == "__main__":
    main()
