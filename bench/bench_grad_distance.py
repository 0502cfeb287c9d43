"""Benchmark grad_distance and one whole gradient-matching step against DC's loop.

Cases:
  op_convnet3_x10   the op alone (forward + backward w.r.t. g_syn), ConvNet-3 gradients x 10 classes
  gm_step_convnet3  one DC outer step: per-class gradients (loop and vmap) + distance + backward
  resnet18          ResNet-18-sized gradients (11.2M parameters), 1 and 10 classes, with GB/s
  sweep_width       ConvNet-3 of width 16..512 x 10 classes: how the cost grows
Every ddfast backend that can run on the device is measured (GPU kernels also when not yet
validated: this is where they are measured). Results: bench/results/<device>.jsonl.

Usage: python bench/bench_grad_distance.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast import backends  # noqa: E402
from ddfast.models import ConvNet, get_network  # noqa: E402

from bench.baselines import dc_match  # noqa: E402
from bench.common import (backends_header, bench_main, copy_bandwidth_gbps, count_cuda_kernels, count_ops, kernel_time_ms,  # noqa: E402
                          peak_memory, time_ms)

OP = "grad_distance"


def op_backends(device: torch.device) -> list[str]:
    names = ["reference", "cpp"] if device.type == "cpu" else ["reference", "cuda", "triton"]
    return [n for n in names if backends.availability(n, device.type) is None]


def fused_backend(device: torch.device) -> str:
    """The backend the whole-step case uses: the fastest compiled one available."""
    available = op_backends(device)
    for name in (("cpp",) if device.type == "cpu" else ("cuda", "triton")):
        if name in available:
            return name
    return "reference"


def _gradients(shapes, classes, device, generator, requires_grad):
    lead = (classes,) if classes else ()
    out = [torch.randn((*lead, *s), generator=generator).to(device) for s in shapes]
    return [t.requires_grad_(requires_grad) for t in out]


def bench_op_pair(rec, device, quick, case, shapes, classes, extra=None, with_baseline=True):
    """forward+backward of ddfast per backend vs DC's class loop on the same gradients."""
    g = torch.Generator().manual_seed(0)
    g_syn = _gradients(shapes, classes, device, g, True)
    g_real = _gradients(shapes, classes, device, g, False)
    batched = classes > 0
    k = classes or 1
    syn_pc = [[t[c].detach().clone().requires_grad_() for t in g_syn] if batched else g_syn for c in range(k)]
    real_pc = [[t[c] for t in g_real] if batched else g_real for c in range(k)]
    leaves = [t for per_class in syn_pc for t in per_class]

    def baseline():
        return torch.autograd.grad(dc_match.class_loop_loss(syn_pc, real_pc), leaves, allow_unused=True)

    def baseline_forward():
        with torch.no_grad():
            return dc_match.class_loop_loss(syn_pc, real_pc)

    numel = sum(t.numel() for t in g_syn)
    elem = g_syn[0].element_size()
    fwd_bytes, step_bytes = 2 * numel * elem, 5 * numel * elem  # fwd reads 2; bwd reads 2, writes 1
    base_ms = time_ms(baseline, device, quick) if with_baseline else None
    base_fwd_ms = time_ms(baseline_forward, device, quick) if with_baseline else None
    base_ops = count_ops(baseline) if with_baseline else None
    rows = []
    for backend in op_backends(device):
        with ddfast.use_backend(backend):
            def step():
                return torch.autograd.grad(ddfast.grad_distance(g_syn, g_real, batched=batched).sum(), g_syn)

            def forward():
                with torch.no_grad():
                    return ddfast.grad_distance(g_syn, g_real, batched=batched)

            ms = time_ms(step, device, quick)
            fwd_ms = time_ms(forward, device, quick)
            kernel_ms, fwd_kernel_ms = kernel_time_ms(step), kernel_time_ms(forward)
            rows.append(rec.record(
                op=OP, case=case, backend=backend, baseline="dc_loop" if with_baseline else None, dtype="float32",
                params=numel // k, classes=k, median_ms=ms, forward_ms=fwd_ms, baseline_ms=base_ms,
                baseline_forward_ms=base_fwd_ms, speedup=base_ms / ms if base_ms else None,
                forward_speedup=base_fwd_ms / fwd_ms if base_fwd_ms else None,
                launches=count_ops(step), baseline_launches=base_ops,
                forward_launches=count_ops(forward), baseline_forward_launches=count_ops(baseline_forward)
                if with_baseline else None,
                cuda_kernels=count_cuda_kernels(step), baseline_cuda_kernels=count_cuda_kernels(baseline)
                if with_baseline else None, peak_mem_bytes=peak_memory(step, device), bytes=step_bytes,
                gbps=step_bytes / ms / 1e6, forward_gbps=fwd_bytes / fwd_ms / 1e6, kernel_ms=kernel_ms,
                forward_kernel_ms=fwd_kernel_ms, forward_kernel_gbps=fwd_bytes / fwd_kernel_ms / 1e6
                if fwd_kernel_ms else None, **(extra or {})))
            print(f"{case:18s} {backend:9s} fwd+bwd {ms:9.3f} ms  fwd {fwd_ms:8.3f} ms"
                  + (f"  | dc loop {base_ms:9.3f} / {base_fwd_ms:8.3f} ms  x{base_ms / ms:5.1f} / "
                     f"x{base_fwd_ms / fwd_ms:5.1f}" if base_ms else "")
                  + f"  {step_bytes / ms / 1e6:7.1f} GB/s", flush=True)
    return rows


def case_op_convnet3(rec, device, quick):
    shapes = [tuple(p.shape) for p in get_network("ConvNet", 3, 10, (32, 32)).parameters()]
    bench_op_pair(rec, device, quick, "op_convnet3_x10", shapes, 10)


def case_resnet18(rec, device, quick):
    shapes = [tuple(p.shape) for p in get_network("ResNet18", 3, 10, (32, 32)).parameters()]
    ceiling = copy_bandwidth_gbps(device) if device.type == "cuda" else None
    for classes in ((0,) if quick else (0, 10)):
        rows = bench_op_pair(rec, device, quick, f"resnet18_x{classes or 1}", shapes, classes,
                             extra={"copy_gbps": ceiling}, with_baseline=not quick)
        if ceiling:
            for row in rows:
                kernel = row["forward_kernel_gbps"] or 0
                print(f"  {row['backend']}: forward end to end {row['forward_gbps'] / ceiling:.0%} of copy bandwidth "
                      f"({ceiling:.0f} GB/s); forward kernels alone {kernel / ceiling:.0%}")


def case_sweep(rec, device, quick):
    widths = (16, 64, 256) if quick else (16, 32, 64, 128, 256, 512)
    for width in widths:
        shapes = [tuple(p.shape) for p in ConvNet(3, 10, net_width=width).parameters()]
        bench_op_pair(rec, device, quick, f"sweep_width{width}", shapes, 10, extra={"width": width})


def case_gm_step(rec, device, quick):
    """One outer step of DC's gradient matching on ConvNet-3 / CIFAR-10 shapes, IPC 10."""
    classes, ipc = 10, 10
    real_per_class = 256 if device.type == "cuda" else 64
    torch.manual_seed(0)
    net = get_network("ConvNet", 3, classes, (32, 32)).to(device)
    g = torch.Generator().manual_seed(1)
    x_real = torch.randn(classes, real_per_class, 3, 32, 32, generator=g).to(device)
    x_syn = torch.randn(classes, ipc, 3, 32, 32, generator=g).to(device).requires_grad_()

    def baseline():
        return torch.autograd.grad(dc_match.outer_step_loss(net, x_real, x_syn), x_syn)

    base_ms = time_ms(baseline, device, quick=True)
    fused = fused_backend(device)
    for strategy in ("loop", "vmap"):
        def step():
            with ddfast.use_backend(fused):
                g_real = ddfast.per_class_gradients(net, None, x_real, None, classes, create_graph=False,
                                                    strategy=strategy)
                g_syn = ddfast.per_class_gradients(net, None, x_syn, None, classes, strategy=strategy)
                loss = ddfast.grad_distance(g_syn, g_real, batched=True).sum()
            return torch.autograd.grad(loss, x_syn)

        ms = time_ms(step, device, quick=True)
        rec.record(op=OP, case="gm_step_convnet3", backend=fused, strategy=strategy, baseline="dc_loop",
                   dtype="float32", classes=classes, real_per_class=real_per_class, ipc=ipc, median_ms=ms,
                   baseline_ms=base_ms, speedup=base_ms / ms, launches=count_ops(step),
                   baseline_launches=count_ops(baseline), peak_mem_bytes=peak_memory(step, device),
                   baseline_peak_mem_bytes=peak_memory(baseline, device))
        print(f"gm_step_convnet3   {fused}+{strategy:4s} {ms:9.1f} ms  dc loop {base_ms:9.1f} ms  x{base_ms / ms:5.2f}",
              flush=True)


RUNNERS = {"op_convnet3_x10": case_op_convnet3, "gm_step_convnet3": case_gm_step, "resnet18": case_resnet18,
           "sweep_width": case_sweep}


def main(argv=None):
    bench_main(__doc__, RUNNERS, backends_header(OP, op_backends), argv)


if __name__ == "__main__":
    main()
