"""Benchmark plumbing: timing, launch counts, device facts, and
JSON-lines results in bench/results/<device-slug>.jsonl."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ddfast
from ddfast.info import cpu_name, device_name, versions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    model = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")
    return f"cpu-{model}-{torch.get_num_threads()}threads"


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("DDFAST_COMMIT", "unknown")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, quick: bool = False) -> float:
    """Median wall time of fn in ms: triton.testing.do_bench on CUDA, torch.utils.benchmark on CPU."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10 if quick else 50, rep=30 if quick else 200,
                                             return_mode="median"))
    from torch.utils.benchmark import Timer

    fn()  # warm-up (plan caches, allocator)
    measurement = Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2 if quick else 1.0)
    return measurement.median * 1e3


class OpCounter(TorchDispatchMode):
    """Counts the ATen (and ddfast) ops one call dispatches; on a GPU each is at least one launch."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    with OpCounter() as counter:
        fn()
    return sum(counter.counts.values())


def count_cuda_kernels(fn: Callable[[], object]) -> int | None:
    """Kernels launched by one call on CUDA (profiler), None elsewhere."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and "memcpy" not in e.name.lower() and "memset" not in e.name.lower())


def kernel_time_ms(fn: Callable[[], object], iterations: int = 5) -> float | None:
    """GPU time of the kernels one call launches (profiler; copies and memsets excluded), so that
    achieved bandwidth reflects the kernels and not the host-side overhead. None off CUDA."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iterations):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.time_range.elapsed_us() for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA
                   and "memcpy" not in e.name.lower() and "memset" not in e.name.lower())
    return total_us / iterations / 1e3


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def copy_bandwidth_gbps(device: torch.device, numel: int = 1 << 26) -> float:
    """Measured device copy bandwidth (bytes read + written) as the ceiling for memory-bound ops."""
    src = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / ms / 1e6


class Recorder:
    """Appends one JSON line per measurement to bench/results/<device-slug>.jsonl."""

    def __init__(self, device: torch.device, out_dir: Path | None = None, quick: bool = False):
        self.device = device
        self.path = (out_dir or RESULTS) / f"{device_slug(device)}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.common = {"device": device_name(device), "device_slug": device_slug(device), **versions(),
                       "ddfast_version": ddfast.__version__, "commit": git_commit(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "quick": quick}

    def record(self, **fields) -> dict:
        row = {**fields, **self.common}
        with self.path.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        return row


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_rss_child(queue, factory, args, warmup_args) -> None:
    try:
        if warmup_args is not None:  # page in library code and thread pools first: they are not the call's
            factory(*warmup_args)()
        work = factory(*args)  # inputs are built before the peak is reset: only the call is measured
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident size (VmHWM) to the current one
        base = _status_bytes("VmRSS")
        work()
        queue.put(("ok", _status_bytes("VmHWM") - base))
    except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def peak_rss_child(factory: Callable[..., Callable[[], object]], *args, warmup_args: tuple | None = None,
                   timeout: float = 1800.0) -> int:
    """Peak resident-memory growth (bytes) of one call, measured in a fresh child process (CPU memory
    has no allocator statistics like CUDA's). ``factory(*args)`` runs in the child (spawned, so it must
    be importable: a module-level function) and returns the zero-argument workload; the peak is reset
    after the factory returns, so inputs do not count, only what the call allocates on top of them.
    ``warmup_args`` (a small instance) run first: the first call of a library pages in code and starts
    thread pools, which would otherwise count as the call's memory."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after OpenMP has run is unsafe
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_rss_child, args=(queue, factory, args, warmup_args))
    proc.start()
    try:
        status, value = queue.get(timeout=timeout)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise RuntimeError(f"peak_rss_child: the child failed: {value}")
    return int(value)


def available_memory_bytes(device: torch.device) -> int:
    """Memory a workload may use: free GPU memory, or MemAvailable on the host."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_main(doc: str, runners: dict[str, Callable], header: Callable[["Recorder", torch.device], str],
               argv=None) -> None:
    """The command line of a bench/bench_<op>.py: ``--device cpu|cuda``, ``--quick``, ``--cases a,b``,
    ``--out DIR``. Runs the chosen cases (``runners``: name -> fn(recorder, device, quick)) in order;
    ``header(recorder, device)`` is the first line printed."""
    import argparse

    cases = tuple(runners)
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="shorter timings, fewer sizes (README quick start)")
    parser.add_argument("--cases", default=",".join(cases), help=f"comma-separated subset of {cases}")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    chosen = args.cases.split(",")
    for case in chosen:
        if case not in runners:
            parser.error(f"unknown case {case!r}; choose from {cases}")
    device = torch.device(args.device)
    rec = Recorder(device, args.out, quick=args.quick)
    print(header(rec, device))
    for case in chosen:
        runners[case](rec, device, args.quick)
        synchronize(device)
    print(f"results appended to {rec.path}")


def backends_header(op: str, op_backends: Callable[[torch.device], list]) -> Callable[["Recorder", torch.device], str]:
    """The usual first line of a bench run: op, device, torch version and the backends measured."""
    return lambda rec, device: (f"{op} on {rec.common['device']}, torch {rec.common['torch']}, "
                                f"backends {op_backends(device)}")
