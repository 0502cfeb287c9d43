"""Benchmark the flat-vector ops of the trajectory-matching unroll against the plain torch expressions.

Cases (docs/semantics.md#flat-models-and-trajectory-matching):
  convnet3   ConvNet-3's 320,010 parameters (MTT on CIFAR-10), fp32, one call of each op:
             param_match_loss (forward + backward w.r.t. theta_n, vs MTT's two mse_loss sums and a
             division), sgd_step plain and momentum (forward + backward w.r.t. grad and lr, vs
             ``theta - lr * grad`` / ``mu * v + g`` through autograd), adjoint_step plain and momentum
             (vs the torch expressions of u, dlr and nu_next)
Records: op "flat_ops", case "convnet3", strategy = the op measured (also in field ``flat_op``),
ops dispatched per call, time, and the speedup over the torch expression. Every ddfast backend that
can run on the device is measured. Results: bench/results/<device>.jsonl.

Usage: python bench/bench_flat_ops.py [--device cpu|cuda] [--quick] [--cases convnet3] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast import backends  # noqa: E402

from bench.common import backends_header, bench_main, count_ops, time_ms  # noqa: E402

OP = "flat_ops"
CONVNET3 = 320_010
MOMENTUM = 0.9


def op_backends(device: torch.device) -> list[str]:
    names = ["reference", "cpp"] if device.type == "cpu" else ["reference", "cuda", "triton"]
    return [n for n in names if backends.availability(n, device.type) is None]


def _workloads(device: torch.device):
    """flat_op -> (ddfast call, torch-expression call); each returns what a caller would use."""
    g = torch.Generator().manual_seed(0)
    n, s, t, grad, v = (torch.randn(CONVNET3, generator=g).to(device) for _ in range(5))
    n.requires_grad_()
    grad.requires_grad_()
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    lr_const = lr.detach()

    def mtt_loss(n, s, t):  # MTT distill.py: param_loss / param_dist
        loss = torch.nn.functional.mse_loss(n, t, reduction="sum")
        return loss / torch.nn.functional.mse_loss(s, t, reduction="sum")

    def pml(fn):
        return lambda: torch.autograd.grad(fn(n, s, t), n)

    def sgd(fn):
        return lambda: torch.autograd.grad(fn(), (grad, lr), torch.ones_like(n))

    def momentum_expr():
        v1 = MOMENTUM * v + grad
        return n.detach() - lr * v1

    return {
        "param_match_loss": (pml(ddfast.param_match_loss), pml(mtt_loss)),
        "sgd_step": (sgd(lambda: ddfast.sgd_step(n.detach(), grad, lr)), sgd(lambda: n.detach() - lr * grad)),
        "sgd_step_momentum": (sgd(lambda: ddfast.sgd_step(n.detach(), grad, lr, v, MOMENTUM)[0]), sgd(momentum_expr)),
        "adjoint_step": (lambda: ddfast.adjoint_step(s, None, t, lr_const),
                         lambda: (-lr_const * s, -(s * t).sum())),
        "adjoint_step_momentum": (lambda: ddfast.adjoint_step(s, v, t, lr_const, MOMENTUM),
                                  lambda: (lambda u: (u, -(s * t).sum(), MOMENTUM * u))(v - lr_const * s)),
    }


def case_convnet3(rec, device, quick):
    workloads = _workloads(device)
    for backend in op_backends(device):
        for flat_op, (fused, expression) in workloads.items():
            with ddfast.use_backend(backend):
                ms = time_ms(fused, device, quick=quick)
                launches = count_ops(fused)
            base_ms = time_ms(expression, device, quick=quick)
            rec.record(op=OP, case="convnet3", size=CONVNET3, backend=backend, strategy=flat_op, flat_op=flat_op,
                       baseline="torch_expression", dtype="float32", median_ms=ms, baseline_ms=base_ms,
                       speedup=base_ms / ms, launches=launches, baseline_launches=count_ops(expression),
                       bytes_per_element=4)
            print(f"{flat_op:22s} {backend:9s} {ms:8.3f} ms | torch {base_ms:8.3f} ms x{base_ms / ms:5.2f}", flush=True)


RUNNERS = {"convnet3": case_convnet3}


def main(argv=None):
    bench_main(__doc__, RUNNERS, backends_header(OP, op_backends), argv)


if __name__ == "__main__":
    main()
