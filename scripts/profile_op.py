"""Profile one forward+backward of grad_distance per backend (torch.profiler): where the time and
the kernel launches go. Usage: python scripts/profile_op.py [--model ConvNet|ResNet18] [--classes K]"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import ddfast
from ddfast import backends
from ddfast.models import get_network


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ConvNet")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = [tuple(p.shape) for p in get_network(args.model, 3, 10, (32, 32)).parameters()]
    g_syn = [torch.randn(args.classes, *s, device=device).requires_grad_() for s in shapes]
    g_real = [torch.randn(args.classes, *s, device=device) for s in shapes]
    names = [n for n in ("reference", "cpp", "cuda", "triton") if backends.availability(n, device) is None]
    for name in names:
        with ddfast.use_backend(name):
            def step():
                return torch.autograd.grad(ddfast.grad_distance(g_syn, g_real, batched=True).sum(), g_syn)

            for _ in range(3):
                step()
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
            with profile(activities=activities) as prof:
                step()
                if device == "cuda":
                    torch.cuda.synchronize()
        sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
        print(f"==== {name}: {args.model} x {args.classes} classes")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
