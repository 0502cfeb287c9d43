"""Where one iteration of each DD method spends its time: torch.profiler over one iteration (after one warm-up) of
the method's own loop, on random data of CIFAR-10 or Fashion-MNIST shapes with bench/bench_methods.py's
settings, eager or compiled. Each op's self CPU time goes to one of three shares: the network (convolutions,
pooling, normalisation, activations, the linear layer and the loss, forward and backward, and compiled graphs of
them), ddfast's fused ops (``ddfast::``), and the rest, whose top lines are printed: what is neither the network
nor a fused op is what an iteration could still lose.

Usage: python scripts/profile_methods.py [--methods dc,dsa,lcs_gm,dm,dream,mtt,ast,seqmatch,sre2l]
       [--datasets cifar10,fashion_mnist] [--compile off|on] [--rows 8]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddfast.compiled import use_compile  # noqa: E402
from ddfast.methods import METHODS, make_config  # noqa: E402

from bench import bench_methods as bm  # noqa: E402

NETWORK = re.compile(r"conv|pool|norm|relu|clamp_min|threshold|addmm|\bmm\b|linear|matmul|cross_entropy|softmax|"
                     r"nll_loss|CompiledFxGraph|Compiled Region|mkldnn", re.IGNORECASE)
# bench_methods' per-iteration settings of each method (the trajectory methods run through its workload)
SETTINGS = {"dc": {"ipc": 1, "batch_real": 64}, "dsa": {"ipc": 1, "batch_real": 64},
            "lcs_gm": {"ipc": 10, "batch_real": 64, "pretrain_epochs": 1}, "dm": {"ipc": 10, "batch_real": 64},
            "dream": {"ipc": 10, "batch_real": 64, "inner_steps": 10, "interval": 10, "net_samples": 256,
                      "pretrain_epochs": 1}}
REAL_PER_CLASS = {"dream": 200}


def share(name: str) -> str:
    if name.startswith("ddfast::"):
        return "fused ops"
    return "network" if NETWORK.search(name) else "rest"


def profiled_iteration(method: str, dataset: str):
    """Runs two iterations of ``method``, profiling the second; returns the profiler."""
    prof = profile(activities=[ProfilerActivity.CPU])

    def mark(it, _state):
        if it == 1:
            prof.start()
        elif it == 2:
            prof.stop()
    device = torch.device("cpu")
    if method in bm.TRAJECTORY_CASES:
        bm.trajectory_workload(method, "ddfast", 5, 10, "cpu", dataset, iterations=2, callback=mark)()
        return prof
    extra = ()
    if method == "sre2l":
        data, teacher = bm._recover_setup(device)
        extra, settings = (teacher,), {"ipc": 10}
    else:
        settings = SETTINGS[method]
        data = bm.fake_data(device, REAL_PER_CLASS.get(method, settings["batch_real"]), dataset)
    config = make_config(method, data.name, iterations=2, **settings)
    METHODS[method].distill(data, config, *extra, device=device, progress=False, callback=mark)
    return prof


def report(method: str, dataset: str, prof, rows: int) -> None:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    by_share = {}
    for e in events:
        by_share[share(e.key)] = by_share.get(share(e.key), 0) + e.self_cpu_time_total
    shares = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(by_share.items(), key=lambda kv: -kv[1]))
    print(f"== {method} {dataset}: {total / 1e6:.2f} s self CPU time; {shares}")
    rest = sorted((e for e in events if share(e.key) == "rest"), key=lambda e: -e.self_cpu_time_total)
    for e in rest[:rows]:
        print(f"   {e.key:44s} {100 * e.self_cpu_time_total / total:5.1f}%  {e.self_cpu_time_total / 1e3:9.1f} ms "
              f"{e.count:6d} calls")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="dc,dsa,lcs_gm,dm,dream,mtt,ast,seqmatch,sre2l")
    parser.add_argument("--datasets", default="cifar10,fashion_mnist")
    parser.add_argument("--compile", default="off", choices=("off", "on"))
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args()
    for method in args.methods.split(","):
        for dataset in args.datasets.split(","):
            if method == "sre2l" and dataset != "cifar10":
                continue  # its ResNet-18 teacher is CIFAR-10's
            with use_compile(args.compile):
                prof = profiled_iteration(method, dataset)
            report(method, dataset, prof, args.rows)


if __name__ == "__main__":
    main()
