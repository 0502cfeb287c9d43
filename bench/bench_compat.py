"""Benchmark DC's own scripts with ddfast.compat.dc's drop-ins against the same scripts with DC's helpers.

The outer iterations of DC main.py (DC, and DSA with ``--dsa``) and main_DM.py are written in those scripts' shape
in bench/baselines/dc_scripts.py against DC's utils API; each case runs them once with the re-created DC helpers
(bench/baselines: eager network, DiffAugment re-creation, DC's match_loss loop, DC's epoch loop) and once with
``ddfast.compat.dc`` (get_network whose once-differentiated calls run compiled, the fused DiffAugment with DC's
draws, the fused match_loss, epoch), the change a DC user makes by replacing imports. ConvNet-3, 10 classes, random
data of CIFAR-10 shapes (3x32x32; quick: Fashion-MNIST shapes, 1x28x28), DC's settings (batch_real 256,
batch_train 256, lr_net 0.01, image SGD lr 0.1 momentum 0.5; loops (1, 1) at IPC 1 and (10, 50) at IPC 10).
The compile setting is the drop-in's default, ``auto`` (ddfast/compile_rules.json); the first iteration of each
side is the warm-up (the compat side's compilation, recorded as compile_s); then the two sides alternate, and the
speedup is the median of the per-pair ratios.

  dc_ipc1, dc_ipc10  DC main.py, no augmentation
  dsa_ipc10          DC main.py with --dsa (Siamese DiffAugment per class, per-image DiffAugment in epoch)
  dm_ipc10           main_DM.py (DSA on)
  mtt_steps20, mtt_steps40  distill.py's iteration at IPC 10 (syn_steps 20 / 40, batch_syn the whole set, DSA on,
                     expert_epochs 2): MTT's create_graph block vs ddfast.compat.mtt.match_trajectory (the exact
                     adjoint, the default memory budget); also the peak memory of one iteration (the CUDA
                     allocator's peak, or on the CPU the peak resident growth of a child process).
Results: bench/results/<device>.jsonl (op "compat").

Usage: python bench/bench_compat.py [--device cpu|cuda] [--quick]
       [--cases dc_ipc1,dc_ipc10,dsa_ipc10,dm_ipc10,mtt_steps20,mtt_steps40] [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddfast.compat import dc as compat  # noqa: E402
from ddfast.compiled import compile_report  # noqa: E402

from ddfast.compat import mtt as compat_mtt  # noqa: E402
from ddfast.compat.mtt import ReparamModule  # noqa: E402
from ddfast.models import ConvNet  # noqa: E402

from bench.baselines.reference_scripts import REFERENCE_UTILS, dc_iteration, dm_iteration, mtt_iteration  # noqa: E402
from bench.common import bench_main, peak_memory, peak_rss_child, synchronize  # noqa: E402

OP = "compat"
CLASSES = 10
LOOPS = {1: (1, 1), 10: (10, 50)}  # DC's get_loops
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def _setting(device, quick: bool, ipc: int, dsa: bool):
    shape = (1, 28, 28) if quick else (3, 32, 32)
    outer, inner = LOOPS[ipc]
    return types.SimpleNamespace(model="ConvNet", channel=shape[0], num_classes=CLASSES, im_size=shape[1:], ipc=ipc,
                                 device=str(device), batch_real=256, batch_train=256, lr_net=0.01, outer_loop=outer,
                                 inner_loop=inner, dis_metric="ours", dsa=dsa, dsa_strategy=STRATEGY,
                                 dsa_param=compat.ParamDiffAug(), dc_aug_param=None)


def _data(args, device):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(CLASSES * args.batch_real, args.channel, *args.im_size, generator=g).to(device)
    per_class = [np.arange(c * args.batch_real, (c + 1) * args.batch_real) for c in range(CLASSES)]

    def get_images(c, n):  # DC's get_images: a numpy permutation of the class's indices
        return images[np.random.permutation(per_class[c])[:n]]

    syn = torch.randn(CLASSES * args.ipc, args.channel, *args.im_size, generator=g).to(device).requires_grad_()
    labels = torch.arange(CLASSES, device=device).repeat_interleave(args.ipc)
    return get_images, syn, labels


def _timed(run, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def _compare(rec, device, quick, case: str, ipc: int, script: str, dsa: bool) -> None:
    args = _setting(device, quick, ipc, dsa)
    get_images, syn, labels = _data(args, device)
    optimizer = torch.optim.SGD([syn], lr=0.1, momentum=0.5)

    def iteration(utils, seed):
        if script == "dm":
            return lambda: dm_iteration(utils, args, get_images, syn, optimizer, seed)
        return lambda: dc_iteration(utils, args, get_images, syn, labels, optimizer, seed)

    repeats = 1 if quick else 3
    compile_report(reset=True)
    compat._CALLS.clear()  # fresh CompiledCalls: the report then names the paths this case compiled (Dynamo's cache
    # keeps graphs compiled by an earlier case, so their compilation is not paid twice)
    warm = {"reference": _timed(iteration(REFERENCE_UTILS, 0), device),
            "compat": _timed(iteration(compat, 0), device)}
    compile_s = sum(entry["compile_seconds"] for entry in compile_report().values())
    times = {"reference": [], "compat": []}
    for r in range(repeats):
        for side, utils in (("reference", REFERENCE_UTILS), ("compat", compat)):
            times[side].append(_timed(iteration(utils, 100 * (r + 1)), device))
    ratios = [a / b for a, b in zip(times["reference"], times["compat"])]
    report = compile_report()
    row = rec.record(op=OP, case=case, backend="ddfast.compat.dc", strategy=script,
                     size=f"{'fashion_mnist' if quick else 'cifar10'}-ipc{ipc}"
                          + (f"-loops{args.outer_loop}x{args.inner_loop}" if script == "dc" else ""),
                     reference_ms=1000 * statistics.median(times["reference"]),
                     compat_ms=1000 * statistics.median(times["compat"]), speedup=statistics.median(ratios),
                     repeats=repeats, warmup_s=warm, compile_s=compile_s,
                     compiled_paths=sorted(p for p, entry in report.items() if entry["compiled"]), dsa=dsa)
    print(f"{case}: DC helpers {row['reference_ms']:.0f} ms, ddfast.compat.dc {row['compat_ms']:.0f} ms per iteration "
          f"({row['speedup']:.2f}x; compiled {row['compiled_paths']}, {compile_s:.0f} s compiling)")


COMPAT_MTT = types.SimpleNamespace(match_trajectory=compat_mtt.match_trajectory)


def mtt_workload(side: str, steps: int, device: str, quick: bool):
    """One distill.py iteration (after a warm-up one) as a zero-argument callable, for ``side`` "reference" (MTT's
    block) or "compat" (match_trajectory); module level, so a child process can build it (peak memory)."""
    shape = (1, 28, 28) if quick else (3, 32, 32)
    torch.manual_seed(0)
    net = ConvNet(shape[0], CLASSES, im_size=shape[1:])
    trajectory = [[p.detach() + 0.01 * k * torch.randn_like(p) for p in net.parameters()] for k in range(3)]
    student = ReparamModule(net.to(device))
    args = types.SimpleNamespace(syn_steps=steps, batch_syn=CLASSES * 10, expert_epochs=2, dsa=True, no_aug=False,
                                 dsa_strategy=STRATEGY, dsa_param=compat.ParamDiffAug(), texture=False,
                                 distributed=False, device=device)
    images = torch.randn(CLASSES * 10, *shape, device=device, requires_grad=True)
    labels = torch.arange(CLASSES, device=device).repeat_interleave(10)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    opt_img, opt_lr = torch.optim.SGD([images], lr=1000.0, momentum=0.5), torch.optim.SGD([lr], lr=1e-5, momentum=0.5)
    utils = REFERENCE_UTILS if side == "reference" else COMPAT_MTT
    return lambda: mtt_iteration(utils, args, student, images, labels, lr, trajectory, opt_img, opt_lr)


def _compare_mtt(rec, device, quick, case: str, steps: int) -> None:
    repeats = 1 if quick else 3
    runs = {side: mtt_workload(side, steps, str(device), quick) for side in ("reference", "compat")}
    for run in runs.values():
        run()  # warm-up
    times = {"reference": [], "compat": []}
    for _ in range(repeats):
        for side, run in runs.items():
            times[side].append(_timed(run, device))
    memory = {}
    for side in runs:
        if device.type == "cuda":
            memory[side] = peak_memory(mtt_workload(side, steps, str(device), quick), device)
        else:
            memory[side] = peak_rss_child(mtt_workload, side, steps, "cpu", quick, warmup_args=(side, 1, "cpu", quick))
    row = rec.record(op=OP, case=case, backend="ddfast.compat.mtt", strategy="mtt",
                     size=f"{'fashion_mnist' if quick else 'cifar10'}-ipc10-steps{steps}",
                     reference_ms=1000 * statistics.median(times["reference"]),
                     compat_ms=1000 * statistics.median(times["compat"]),
                     speedup=statistics.median(a / b for a, b in zip(times["reference"], times["compat"])),
                     repeats=repeats, syn_steps=steps, peak_mem_bytes=memory["compat"],
                     baseline_peak_mem_bytes=memory["reference"], memory_ratio=memory["compat"] / memory["reference"])
    print(f"{case}: MTT's block {row['reference_ms']:.0f} ms, match_trajectory {row['compat_ms']:.0f} ms "
          f"({row['speedup']:.2f}x); peak memory {memory['compat'] / 2**20:.0f} vs {memory['reference'] / 2**20:.0f} "
          f"MiB ({row['memory_ratio']:.2f})")


RUNNERS = {"dc_ipc1": lambda rec, device, quick: _compare(rec, device, quick, "dc_ipc1", 1, "dc", False),
           "dc_ipc10": lambda rec, device, quick: _compare(rec, device, quick, "dc_ipc10", 10, "dc", False),
           "dsa_ipc10": lambda rec, device, quick: _compare(rec, device, quick, "dsa_ipc10", 10, "dc", True),
           "dm_ipc10": lambda rec, device, quick: _compare(rec, device, quick, "dm_ipc10", 10, "dm", True),
           "mtt_steps20": lambda rec, device, quick: _compare_mtt(rec, device, quick, "mtt_steps20", 20),
           "mtt_steps40": lambda rec, device, quick: _compare_mtt(rec, device, quick, "mtt_steps40", 40)}


if __name__ == "__main__":
    bench_main(__doc__, RUNNERS, lambda rec, device: f"compat drop-ins on {rec.common['device']}, "
                                                     f"torch {rec.common['torch']}")
