"""Benchmark bn_stat_loss and one whole SRe2L recover step against SRe2L's per-layer hook loop.

Cases:
  op_resnet18      the loss alone, forward + backward w.r.t. the inputs of ResNet-18's 20 BatchNorm
                   layers, captured once for a CIFAR batch (100 images, 32x32; 32 with --quick on CPU)
  recover_resnet18 one recover step: teacher forward with hooks + cross-entropy + 0.01 * BN loss +
                   backward into the images (SRe2L/DELT), to show how much of the step the loss is
Every ddfast backend that can run on the device is measured (the Triton kernels also when not yet
validated: this is where they are measured). Results: bench/results/<device>.jsonl.

Usage: python bench/bench_bn_stat_loss.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast import backends  # noqa: E402
from ddfast.models import get_network  # noqa: E402

from bench.baselines import sre2l_bn_loop  # noqa: E402
from bench.common import backends_header, bench_main, count_cuda_kernels, count_ops, peak_memory, time_ms  # noqa: E402

OP = "bn_stat_loss"
LAMBDA_BN = 0.01  # SRe2L/DELT r_bn


def op_backends(device: torch.device) -> list[str]:
    names = ["reference", "cpp"] if device.type == "cpu" else ["reference", "triton"]
    return [n for n in names if backends.availability(n, device.type) is None]


def fused_backend(device: torch.device) -> str:
    available = op_backends(device)
    for name in (("cpp",) if device.type == "cpu" else ("triton",)):
        if name in available:
            return name
    return "reference"


def perturb_running_stats(net: nn.Module) -> nn.Module:
    """Running statistics of every BatchNorm2d drawn away from the defaults 0 and 1 (global RNG), so a BN-statistics
    loss on an untrained network is not trivial; returns ``net``."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def teacher(device: torch.device) -> nn.Module:
    """ResNet-18 (CIFAR stem) in eval mode, with running statistics away from the defaults 0 and 1."""
    torch.manual_seed(0)
    return perturb_running_stats(get_network("ResNet18", 3, 10, (32, 32))).to(device).eval()


def batch_size(device: torch.device, quick: bool) -> int:
    return 32 if quick and device.type == "cpu" else 100


def case_op(rec, device, quick):
    net = teacher(device)
    batch = batch_size(device, quick)
    images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    with ddfast.BNStatHooks(net) as bn, torch.no_grad():
        net(images)
        acts = [a.detach().clone().requires_grad_() for a in bn.inputs]
        layers = [m for _, m in bn.layers]
    means = [m.running_mean for m in layers]
    variances = [m.running_var for m in layers]
    weights = [10.0] + [1.0] * (len(acts) - 1)
    numel = sum(a.numel() for a in acts)

    def baseline():
        return torch.autograd.grad(sre2l_bn_loop.loop_loss(acts, means, variances), acts)

    def baseline_forward():
        with torch.no_grad():
            return sre2l_bn_loop.loop_loss(acts, means, variances)

    base_ms, base_fwd_ms = time_ms(baseline, device, quick), time_ms(baseline_forward, device, quick)
    base_ops, base_fwd_ops = count_ops(baseline), count_ops(baseline_forward)
    step_bytes = 3 * numel * acts[0].element_size()  # forward reads once; backward reads and writes
    for backend in op_backends(device):
        with ddfast.use_backend(backend):
            def step():
                return torch.autograd.grad(ddfast.bn_stat_loss(acts, means, variances, weights), acts)

            def forward():
                with torch.no_grad():
                    return ddfast.bn_stat_loss(acts, means, variances, weights)

            ms, fwd_ms = time_ms(step, device, quick), time_ms(forward, device, quick)
            rec.record(op=OP, case="op_resnet18", backend=backend, baseline="sre2l_hook_loop", dtype="float32",
                       size=batch, layers=len(acts), elements=numel, median_ms=ms, forward_ms=fwd_ms,
                       baseline_ms=base_ms, baseline_forward_ms=base_fwd_ms, speedup=base_ms / ms,
                       forward_speedup=base_fwd_ms / fwd_ms, launches=count_ops(step), baseline_launches=base_ops,
                       forward_launches=count_ops(forward), baseline_forward_launches=base_fwd_ops,
                       cuda_kernels=count_cuda_kernels(step), baseline_cuda_kernels=count_cuda_kernels(baseline),
                       peak_mem_bytes=peak_memory(step, device), baseline_peak_mem_bytes=peak_memory(baseline, device),
                       gbps=step_bytes / ms / 1e6)
            print(f"op_resnet18 b{batch:<4d} {backend:9s} fwd+bwd {ms:8.3f} ms  fwd {fwd_ms:8.3f} ms | SRe2L loop "
                  f"{base_ms:8.3f} / {base_fwd_ms:8.3f} ms  x{base_ms / ms:5.1f} / x{base_fwd_ms / fwd_ms:5.1f}", flush=True)


def case_recover(rec, device, quick):
    """One SRe2L recover step on ResNet-18: forward with BN hooks, CE + 0.01 * BN loss, backward to the images."""
    net = teacher(device)
    batch = batch_size(device, quick)
    g = torch.Generator().manual_seed(2)
    images = torch.randn(batch, 3, 32, 32, generator=g).to(device).requires_grad_()
    labels = torch.randint(0, 10, (batch,), generator=g).to(device)
    hooks = sre2l_bn_loop.install(net)

    def baseline():
        loss = F.cross_entropy(net(images), labels) + LAMBDA_BN * sre2l_bn_loop.hooks_loss(hooks)
        return torch.autograd.grad(loss, images)

    def model_only():
        return torch.autograd.grad(F.cross_entropy(net(images), labels), images)

    base_ms = time_ms(baseline, device, quick)
    base_ops = count_ops(baseline)
    base_mem = peak_memory(baseline, device)
    for h in hooks:
        h.close()
    ce_ms = time_ms(model_only, device, quick)  # the step without any BN loss: the floor
    backend = fused_backend(device)
    with ddfast.use_backend(backend), ddfast.BNStatHooks(net) as bn:
        def step():
            loss = F.cross_entropy(net(images), labels) + LAMBDA_BN * bn.loss()
            return torch.autograd.grad(loss, images)

        ms = time_ms(step, device, quick)
        rec.record(op=OP, case="recover_resnet18", backend=backend, baseline="sre2l_hook_loop", dtype="float32",
                   size=batch, median_ms=ms, baseline_ms=base_ms, speedup=base_ms / ms, ce_only_ms=ce_ms,
                   loss_share=(ms - ce_ms) / ms, baseline_loss_share=(base_ms - ce_ms) / base_ms,
                   launches=count_ops(step), baseline_launches=base_ops, peak_mem_bytes=peak_memory(step, device),
                   baseline_peak_mem_bytes=base_mem)
    print(f"recover_resnet18 b{batch:<4d} {backend:9s} step {ms:9.2f} ms | SRe2L hooks {base_ms:9.2f} ms  "
          f"x{base_ms / ms:5.2f} | without BN loss {ce_ms:9.2f} ms", flush=True)


RUNNERS = {"op_resnet18": case_op, "recover_resnet18": case_recover}


def main(argv=None):
    bench_main(__doc__, RUNNERS, backends_header(OP, op_backends), argv)


if __name__ == "__main__":
    main()
