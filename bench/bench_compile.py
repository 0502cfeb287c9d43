"""Benchmark the compiled network paths (ddfast.compiled): eager vs torch.compile (Inductor), and the seconds one
compilation takes, per path of ``ddfast.compiled.PATHS``:
  embed         ConvNet-3's embedding without grad, a per-class real batch of 256 (DM, DREAM+, LCS-GM)
  embed_grad    the embedding of 10 synthetic images (IPC 10, one class) forward and backward to the images
  train_step    forward, cross-entropy, backward of a batch of 256 (evaluation, DC/DSA's network training)
  eval_forward  the test pass, eval mode, no grad, a batch of 256
  class_gradients  one class's parameter gradient of 256 real images (the real side of DC/DSA, DREAM+, LCS-GM)
at CIFAR-10 shapes (3x32x32) and Fashion-MNIST shapes (1x28x28). Compilation is timed cold (dynamo reset,
Inductor's caches off) as a user's first run pays it. ``--write-rules`` then writes ddfast/compile_rules.json,
the rule ``compile: auto`` follows: per device type and path, the smaller speedup and the larger compilation time
over the two shapes of the newest records.
Results: bench/results/<device>.jsonl (op "compile").

Usage: python bench/bench_compile.py [--device cpu|cuda] [--quick] [--cases embed,...] [--out DIR]
       python bench/bench_compile.py --write-rules [--results DIR]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")  # cold compilations: what a first run pays
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddfast.compiled import PATHS, RULES_PATH, embed, forward  # noqa: E402
from ddfast.models import get_network  # noqa: E402
from ddfast.ops.per_class_gradients import class_loss  # noqa: E402

from bench.common import RESULTS, bench_main, synchronize, time_ms  # noqa: E402

OP = "compile"
SHAPES = {"cifar10": (3, 32, 32), "fashion_mnist": (1, 28, 28)}


def workload(path: str, shape, device, run):
    """A zero-argument call of ``path`` through ``run`` (``embed`` / ``forward`` or their compiled form)."""
    torch.manual_seed(0)
    net = get_network("ConvNet", shape[0], 10, shape[1:]).to(device)
    if path == "embed":
        x = torch.randn(256, *shape, device=device)
        for p in net.parameters():
            p.requires_grad_(False)

        def call():
            with torch.no_grad():
                return run(net, x)
    elif path == "embed_grad":
        x = torch.randn(10, *shape, device=device, requires_grad=True)
        for p in net.parameters():
            p.requires_grad_(False)

        def call():
            run(net, x).square().mean().backward()
    elif path == "train_step":
        x, y = torch.randn(256, *shape, device=device), torch.randint(0, 10, (256,), device=device)

        def call():
            net.zero_grad(set_to_none=True)
            F.cross_entropy(run(net, x), y).backward()
    elif path == "class_gradients":
        x, y = torch.randn(256, *shape, device=device), torch.full((256,), 3, device=device)
        params, buffers = dict(net.named_parameters()), dict(net.named_buffers())

        def call():
            return torch.autograd.grad(run(net, params, buffers, x, y), list(params.values()))
    else:
        x = torch.randn(256, *shape, device=device)
        net.eval()

        def call():
            with torch.no_grad():
                return run(net, x)
    return call


def bench_path(rec, device, quick, path: str):
    fn = embed if path.startswith("embed") else class_loss if path == "class_gradients" else forward
    for dataset, shape in SHAPES.items():
        torch._dynamo.reset()
        compiled = torch.compile(fn, dynamic=False)
        call = workload(path, shape, device, compiled)
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        compile_s = time.perf_counter() - start
        eager_ms = time_ms(workload(path, shape, device, fn), device, quick)
        compiled_ms = time_ms(call, device, quick)
        row = rec.record(op=OP, case=path, backend="inductor", strategy="torch.compile", size=dataset,
                         median_ms=compiled_ms, baseline="eager", baseline_ms=eager_ms, speedup=eager_ms / compiled_ms,
                         compile_s=compile_s)
        print(f"{path:12s} {dataset:14s} eager {eager_ms:8.1f} ms  compiled {compiled_ms:8.1f} ms  "
              f"x{row['speedup']:.2f}  compile {compile_s:.1f} s", flush=True)


def write_rules(results: Path = RESULTS) -> dict:
    """ddfast/compile_rules.json from the newest "compile" records of every device type."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench.report import load

    rules: dict[str, dict] = {}
    for slug, rows in sorted(load(results).get(OP, {}).items()):
        device_type = "cuda" if not slug.startswith("cpu-") else "cpu"
        for row in rows.values():
            entry = rules.setdefault(device_type, {}).get(row["case"])
            speedup, compile_s = row["speedup"], row["compile_s"]
            if entry is not None:
                speedup, compile_s = min(speedup, entry["speedup"]), max(compile_s, entry["compile_s"])
            rules[device_type][row["case"]] = {"speedup": round(speedup, 3), "compile_s": round(compile_s, 1),
                                               "measured_on": row["device"], "commit": row["commit"]}
    document = {"about": "compile: auto's rule per device type and path (ddfast.compiled); written by "
                         "bench/bench_compile.py --write-rules from bench/results", "rules": rules}
    RULES_PATH.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return document


if __name__ == "__main__":
    if "--write-rules" in sys.argv:
        argv = sys.argv[1:]
        folder = Path(argv[argv.index("--results") + 1]) if "--results" in argv else RESULTS
        print(json.dumps(write_rules(folder)["rules"], indent=1))
        raise SystemExit(0)
    bench_main(__doc__, {path: (lambda rec, device, quick, path=path: bench_path(rec, device, quick, path))
                         for path in PATHS},
               lambda rec, device: f"compiled network paths on {rec.common['device']}, torch {rec.common['torch']}")
