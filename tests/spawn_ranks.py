"""Run a function in W spawned ranks of a gloo process group on 127.0.0.1, as torchrun would start them.

``run_ranks(target, folder, *args)`` starts the ranks with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), one CPU thread each, and calls ``target(ctx, folder, *args)`` in each with its
:class:`ddfast.distributed.Context`; ``target`` (a module-level function, so the spawned process can import it)
returns a JSON-able dict, written as ``folder/rank<r>.json``. A rank that raised reports ``{"crash": traceback}``;
one that died reports None. A rank still running after ``timeout`` seconds fails the test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch

from ddfast import distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, target, folder: str, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    report = {"rank": rank}
    try:
        ctx = distributed.context(timeout_s=30)
        report["world"] = ctx.world
        report.update(target(ctx, folder, *args) or {})
    except Exception:  # noqa: BLE001 - the test reads the traceback
        report["crash"] = traceback.format_exc()
    finally:
        distributed.destroy()
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(report))


def run_ranks(target, folder: Path, *args, world: int = 2, timeout: float = 300) -> list[dict | None]:
    """Start ``world`` ranks of ``target(ctx, folder, *args)`` and return their reports, in rank order."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, target, str(folder), args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} still running after {timeout} s"
    reports = []
    for r in range(world):
        path = folder / f"rank{r}.json"
        reports.append(json.loads(path.read_text()) if path.exists() else None)
    return reports


def assert_ran(reports: list[dict | None], world: int = 2) -> None:
    """Every rank reported, none crashed, and each saw ``world`` ranks."""
    for r, report in enumerate(reports):
        assert report is not None, f"rank {r} died without a report"
        assert "crash" not in report, f"rank {r} crashed:\n{report['crash']}"
        assert report["world"] == world, report


@contextmanager
def one_thread():
    """The ranks run one CPU thread each; a single-process reference inside this block does too, so its CPU sums
    run in the same order and results can be compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
