"""Benchmark ddfast's methods under torch.distributed: the same run with 1 and with 2 ranks
(docs/DESIGN.md#scale-out-with-torchdistributed).

Each case runs through the real launcher (``python -m torch.distributed.run --nproc-per-node W``) on this machine,
gloo on the CPU (nccl when ``--device cuda``, where only world size 1 fits one GPU). The machine's cores are split
evenly between the ranks (``OMP_NUM_THREADS`` = cores / W), so the comparison is one process using every core
against W processes sharing them, i.e. what the sharding modes gain over intra-op threading at equal hardware.
Cases, ConvNet-3 on CIFAR-10 shapes (random data), 10 classes:
  dm      mode (b), class sharding: one DM iteration at IPC 10, 256 real images per class; median s / iteration.
  dsa     mode (b): one DSA matching step (outer_loop 1) at IPC 10, batch_real 256 (quick: 64); the network
          training between matchings (none at outer_loop 1) would be replicated on every rank.
  mtt     mode (c), split unroll: one MTT iteration, IPC 10, whole set per inner step, 20 (quick: 5) steps.
  sre2l   mode (a), recover batches per rank: SRe2L's recover of IPC 20 from a ResNet-18 teacher (two batches of
          100), 5 (quick: 2) steps per batch; whole recover time.
Results: bench/results/<device>.jsonl (op "distributed", strategy "<W> ranks").

Usage: python bench/bench_distributed.py [--device cpu|cuda] [--quick] [--cases dm,dsa,mtt,sre2l] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddfast import distributed  # noqa: E402
from ddfast.methods import METHODS, make_config  # noqa: E402

from bench.bench_methods import CLASSES, fake_cifar, trajectory_workload  # noqa: E402
from bench.common import bench_main, synchronize  # noqa: E402

OP = "distributed"
WORLDS = (1, 2)
RESULT = "BENCH-RESULT "  # the line rank 0 prints for the parent


def _setting(case: str, quick: bool) -> dict:
    if case == "dm":
        return {"ipc": 10, "batch_real": 256}
    if case == "dsa":
        return {"ipc": 10, "batch_real": 64 if quick else 256, "outer_loop": 1, "inner_loop": 1}
    if case == "mtt":
        return {"ipc": 10, "syn_steps": 5 if quick else 20}
    if case == "sre2l":
        return {"ipc": 20, "iterations": 2 if quick else 5}
    raise ValueError(f"unknown case {case!r}")


def _size(case: str, setting: dict) -> str:
    if case == "mtt":
        return f"ipc{setting['ipc']}-steps{setting['syn_steps']}"
    if case == "sre2l":
        return f"resnet18-ipc{setting['ipc']}-steps{setting['iterations']}"
    return f"ipc{setting['ipc']}-real{setting['batch_real']}"


def worker(case: str, quick: bool, device_type: str) -> None:
    """One rank of a case (started by torchrun); rank 0 prints the timing as a ``BENCH-RESULT`` JSON line."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ctx = distributed.context()
    device = ctx.device if ctx.distributed else torch.device(device_type)
    setting = _setting(case, quick)
    repeats = 2 if quick else 3
    marks = []
    seconds = None

    def mark(_it, _state):  # rank 0 only (run_loop); the ranks are in step through their collectives
        synchronize(device)
        marks.append(time.perf_counter())

    if case == "sre2l":
        from bench.bench_bn_stat_loss import teacher as resnet_teacher

        data, teacher = fake_cifar(device, setting["ipc"]), resnet_teacher(device)
        config = make_config("sre2l", "cifar10", init="real", **setting)
        ctx.barrier()
        start = time.perf_counter()
        METHODS["sre2l"].distill(data, config, teacher, device=device, progress=False, ctx=ctx)
        synchronize(device)
        seconds = time.perf_counter() - start
    elif case == "mtt":
        trajectory_workload("mtt", "ddfast", setting["syn_steps"], setting["ipc"], str(device),
                            iterations=repeats + 1, callback=mark)()
    else:
        data = fake_cifar(device, setting["batch_real"])
        config = make_config(case, "cifar10", iterations=repeats + 1, **setting)
        METHODS[case].distill(data, config, device=device, progress=False, callback=mark, ctx=ctx)
    if ctx.is_main:
        if marks:  # per iteration, the first left out as warm-up
            seconds = statistics.median(b - a for a, b in zip(marks, marks[1:]))
        print(RESULT + json.dumps({"seconds": seconds, "world": ctx.world, "backend": ctx.backend or "none",
                                   "threads": torch.get_num_threads()}), flush=True)
    distributed.destroy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(case: str, world: int, quick: bool, device) -> dict:
    """Run ``case`` with ``world`` ranks through torchrun; returns rank 0's result."""
    threads = max(1, (os.cpu_count() or 1) // world)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master-addr",
               "127.0.0.1", "--master-port", str(_free_port()), __file__, "--worker", case, "--device", device.type]
    command += ["--quick"] if quick else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{case} with {world} ranks failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT):])


def bench_case(case: str):
    def run(rec, device, quick):
        if device.type == "cuda" and torch.cuda.device_count() < 2:
            worlds = (1,)  # nccl needs a GPU per rank: only world size 1 here
        else:
            worlds = WORLDS
        setting = _setting(case, quick)
        results = {world: launch(case, world, quick, device) for world in worlds}
        for world, result in results.items():
            row = rec.record(op=OP, case=case, backend=result["backend"], strategy=f"{world} ranks",
                             size=_size(case, setting), median_ms=1000 * result["seconds"], world=world,
                             threads_per_rank=result["threads"],
                             speedup=results[1]["seconds"] / result["seconds"], **setting)
            print(f"{case:6s} {row['size']:28s} {world} rank(s) x {result['threads']} threads: "
                  f"{row['median_ms']:9.1f} ms  (x{row['speedup']:.2f} vs 1 rank)", flush=True)
    return run


def header(rec, device) -> str:
    return f"distributed: {rec.common['device']}, torch {rec.common['torch']}, ranks {WORLDS}, " \
           f"{CLASSES} classes"


if __name__ == "__main__":
    if "--worker" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", required=True)
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--quick", action="store_true")
        args = parser.parse_args()
        worker(args.worker, args.quick, args.device)
    else:
        bench_main(__doc__, {case: bench_case(case) for case in ("dm", "dsa", "mtt", "sre2l")}, header)
