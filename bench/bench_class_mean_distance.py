"""Benchmark class_mean_distance and one whole DM step against DM's per-class loop.

Cases (docs/methods.md#dm):
  op_dm             the op alone (forward + backward w.r.t. the synthetic features): ConvNet-3's 2,048
                    features, CIFAR-10 (10 classes x 256 real), IPC 1/10/50, vs DM's mean-and-distance loop
  dm_step_convnet3  one DM outer step on ConvNet-3 / CIFAR-10 shapes, network included: DM's class loop
                    (an embedding forward pair per class) vs ddfast's batched step (one forward over all
                    real and one over all synthetic images, then class_mean_distance) and chunked steps
                    (forwards over groups of classes, one class_mean_distance)
Every ddfast backend that can run on the device is measured. Results: bench/results/<device>.jsonl.

Usage: python bench/bench_class_mean_distance.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast import backends  # noqa: E402
from ddfast.models import get_network  # noqa: E402

from bench.baselines import dm_loop  # noqa: E402
from bench.common import backends_header, bench_main, count_cuda_kernels, count_ops, peak_memory, time_ms  # noqa: E402

OP = "class_mean_distance"
CLASSES, FEATURES = 10, 2048


def op_backends(device: torch.device) -> list[str]:
    names = ["reference", "cpp"] if device.type == "cpu" else ["reference", "triton"]
    return [n for n in names if backends.availability(n, device.type) is None]


def fused_backend(device: torch.device) -> str:
    for name in (("cpp",) if device.type == "cpu" else ("triton",)):
        if name in op_backends(device):
            return name
    return "reference"


def case_op_dm(rec, device, quick):
    real_per_class = 256
    for ipc in ((10,) if quick else (1, 10, 50)):
        g = torch.Generator().manual_seed(ipc)
        f_syn = torch.randn(CLASSES * ipc, FEATURES, generator=g).to(device).requires_grad_()
        f_real = torch.randn(CLASSES * real_per_class, FEATURES, generator=g).to(device)
        y_syn = torch.arange(CLASSES, device=device).repeat_interleave(ipc)
        y_real = torch.arange(CLASSES, device=device).repeat_interleave(real_per_class)
        syn_pc = [f_syn[c * ipc:(c + 1) * ipc].detach().clone().requires_grad_() for c in range(CLASSES)]
        real_pc = [f_real[c * real_per_class:(c + 1) * real_per_class] for c in range(CLASSES)]

        def baseline():
            return torch.autograd.grad(dm_loop.class_mean_loss(syn_pc, real_pc), syn_pc)

        base_ms = time_ms(baseline, device, quick)
        base_ops, base_kernels = count_ops(baseline), count_cuda_kernels(baseline)
        for backend in op_backends(device):
            def step():
                with ddfast.use_backend(backend):
                    return torch.autograd.grad(ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, CLASSES),
                                               f_syn)

            ms = time_ms(step, device, quick)
            rec.record(op=OP, case="op_dm", size=ipc, backend=backend, baseline="dm_loop", dtype="float32",
                       classes=CLASSES, ipc=ipc, real_per_class=real_per_class, features=FEATURES, median_ms=ms,
                       baseline_ms=base_ms, speedup=base_ms / ms, launches=count_ops(step),
                       baseline_launches=base_ops, cuda_kernels=count_cuda_kernels(step),
                       baseline_cuda_kernels=base_kernels)
            print(f"op_dm ipc {ipc:3d} {backend:9s} fwd+bwd {ms:8.3f} ms | DM loop {base_ms:8.3f} ms "
                  f"x{base_ms / ms:5.1f}", flush=True)


def _embed_in_chunks(embed, x, chunk: int):
    """Features of [K, n, C, H, W] images, ``chunk`` classes per forward, as one [K * n, D] matrix."""
    flat = x.reshape(-1, *x.shape[2:])
    step = chunk * x.shape[1]
    return torch.cat([embed(flat[i:i + step]) for i in range(0, flat.shape[0], step)])


def case_dm_step(rec, device, quick):
    """One DM outer step (distance and backward into the synthetic images), network included."""
    real_per_class = 256 if device.type == "cuda" else (32 if quick else 128)
    torch.manual_seed(0)
    net = get_network("ConvNet", 3, CLASSES, (32, 32)).to(device)
    for p in net.parameters():  # DM freezes the randomly initialised network
        p.requires_grad_(False)
    backend = fused_backend(device)
    strategies = {"batched": CLASSES, "chunked5": 5, "chunked2": 2, "per_class_forward": 1}
    for ipc in ((10,) if quick else (1, 10, 50)):
        g = torch.Generator().manual_seed(ipc)
        x_real = torch.randn(CLASSES, real_per_class, 3, 32, 32, generator=g).to(device)
        x_syn = torch.randn(CLASSES, ipc, 3, 32, 32, generator=g).to(device).requires_grad_()
        y_syn = torch.arange(CLASSES, device=device).repeat_interleave(ipc)
        y_real = torch.arange(CLASSES, device=device).repeat_interleave(real_per_class)

        def baseline():
            return torch.autograd.grad(dm_loop.step_loss(net.embed, x_real, x_syn), x_syn)

        base_ms = time_ms(baseline, device, quick=True)
        base_ops, base_mem = count_ops(baseline), peak_memory(baseline, device)
        for strategy, chunk in strategies.items():
            def step():
                with torch.no_grad():
                    f_real = _embed_in_chunks(net.embed, x_real, chunk)
                f_syn = _embed_in_chunks(net.embed, x_syn, chunk)
                with ddfast.use_backend(backend):
                    loss = ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, CLASSES)
                return torch.autograd.grad(loss, x_syn)

            ms = time_ms(step, device, quick=True)
            rec.record(op=OP, case="dm_step_convnet3", size=ipc, backend=backend, strategy=strategy,
                       baseline="dm_loop", dtype="float32", classes=CLASSES, ipc=ipc, real_per_class=real_per_class,
                       classes_per_forward=chunk, median_ms=ms, baseline_ms=base_ms, speedup=base_ms / ms,
                       launches=count_ops(step), baseline_launches=base_ops, peak_mem_bytes=peak_memory(step, device),
                       baseline_peak_mem_bytes=base_mem)
            print(f"dm_step ipc {ipc:3d} {backend}+{strategy:18s} {ms:9.1f} ms | DM loop {base_ms:9.1f} ms "
                  f"x{base_ms / ms:5.2f}", flush=True)


RUNNERS = {"op_dm": case_op_dm, "dm_step_convnet3": case_dm_step}


def main(argv=None):
    bench_main(__doc__, RUNNERS, backends_header(OP, op_backends), argv)


if __name__ == "__main__":
    main()
