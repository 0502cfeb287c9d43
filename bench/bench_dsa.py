"""Benchmark ddfast.dsa against the structure of DC's DiffAugment (bench/baselines/dsa_reference.py).

Cases: ``forward`` and ``forward_backward`` (w.r.t. the images), batch 256, 32x32x3 and 64x64x3, fp32,
for each family alone and for DC's 'M' sequence color_crop_cutout_flip_scale_rotate (ddfast's default
two passes, and compose=True: one pass). Both sides draw their parameters inside the timed call (DC
reseeds the global RNG; ddfast samples a shared, Siamese set from a seeded generator), as a matching
step does. Every ddfast backend that runs on the device is measured.

Usage: python bench/bench_dsa.py [--device cpu|cuda] [--quick] [--cases a,b] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddfast  # noqa: E402
from ddfast import backends  # noqa: E402

from bench.baselines import dsa_reference  # noqa: E402
from bench.common import backends_header, bench_main, count_cuda_kernels, count_ops, peak_memory, time_ms  # noqa: E402

OP = "dsa"
BATCH = 256
DC = "color_crop_cutout_flip_scale_rotate"
STRATEGIES = {"M": (DC, False), "M_compose": (DC, True), **{f: (f, False) for f in DC.split("_")}}


def op_backends(device: torch.device) -> list[str]:
    names = ["reference", "cpp"] if device.type == "cpu" else ["reference", "triton"]
    return [n for n in names if backends.availability(n, device.type) is None]


def _cases(quick):
    sizes = (32,) if quick else (32, 64)
    strategies = ("M", "M_compose", "rotate") if quick else tuple(STRATEGIES)
    return [(s, name) for s in sizes for name in strategies]


def _measure(rec, device, quick, backward: bool):
    case = "forward_backward" if backward else "forward"
    for size, name in _cases(quick):
        strategy, compose = STRATEGIES[name]
        x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(size)).to(device)
        x.requires_grad_(backward)
        upstream = torch.randn_like(x)
        gen = torch.Generator(device=device)

        def run(y):
            return torch.autograd.grad(y, x, upstream) if backward else y

        def baseline():
            return run(dsa_reference.diff_augment(x, strategy, seed=1234, mode="M"))

        base_ms = time_ms(baseline, device, quick)
        base_ops, base_kernels, base_mem = count_ops(baseline), count_cuda_kernels(baseline), peak_memory(baseline,
                                                                                                         device)
        for backend in op_backends(device):
            def step():
                gen.manual_seed(1234)
                params = ddfast.dsa_sample(BATCH, strategy, gen, mode="M", shared=True)
                with ddfast.use_backend(backend):
                    return run(ddfast.dsa(x, params, compose=compose))

            ms = time_ms(step, device, quick)
            rec.record(op=OP, case=case, strategy=name, size=size, backend=backend, baseline="dsa_reference",
                       dtype="float32", batch=BATCH, median_ms=ms, baseline_ms=base_ms, speedup=base_ms / ms,
                       launches=count_ops(step), baseline_launches=base_ops, cuda_kernels=count_cuda_kernels(step),
                       baseline_cuda_kernels=base_kernels, peak_mem_bytes=peak_memory(step, device),
                       baseline_peak_mem_bytes=base_mem)
            print(f"{case:16s} {size}x{size}x3 {name:9s} {backend:9s} {ms:8.3f} ms | DC structure {base_ms:8.3f} ms "
                  f"x{base_ms / ms:5.1f}", flush=True)


RUNNERS = {"forward": lambda rec, device, quick: _measure(rec, device, quick, False),
           "forward_backward": lambda rec, device, quick: _measure(rec, device, quick, True)}


def main(argv=None):
    bench_main(__doc__, RUNNERS, backends_header(OP, op_backends), argv)


if __name__ == "__main__":
    main()
