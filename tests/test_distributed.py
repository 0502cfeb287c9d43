"""ddfast under torch.distributed (gloo on CPU, 2 processes on 127.0.0.1): the sharded work gives the
single-process result, and a dead rank fails the job instead of hanging it."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
import traceback
from pathlib import Path

import pytest
import torch

from ddfast import distributed
from ddfast.experts import expert_files, load_buffer
from ddfast.runner import buffer_run

BUFFER = dict(experts=3, epochs=1, model="ConvNetD1", batch_size=512, dsa_strategy="none", progress=False,
              device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, job: str, folder: str) -> None:
    """One rank: the launcher's environment (as torchrun sets it), the job, a JSON report in ``folder``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    report = {"rank": rank}
    try:
        ctx = distributed.context(timeout_s=30)
        report["world"] = ctx.world
        if job == "buffer":
            report["paths"] = buffer_run("digits", Path(folder) / "buffer", **BUFFER)
        elif job == "die":
            if rank == 1:
                os._exit(3)  # killed before the collective
            start = time.perf_counter()
            try:
                ctx.barrier()
                report["error"] = None
            except Exception as exc:  # noqa: BLE001 - the failure is what this job checks
                report["error"] = f"{type(exc).__name__}: {exc}"
            report["seconds"] = time.perf_counter() - start
    except Exception:  # noqa: BLE001
        report["crash"] = traceback.format_exc()
    finally:
        distributed.destroy()
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(report))


def run_ranks(job: str, folder: Path, world: int = 2, timeout: float = 240) -> list[dict]:
    """Start ``world`` spawned ranks of ``job`` and return their reports (None for a rank that wrote none)."""
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, job, str(folder))) for r in range(world)]
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


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.context()
    assert (ctx.rank, ctx.world, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    assert list(ctx.shard(5)) == [0, 1, 2, 3, 4]
    t = torch.ones(3)
    assert ctx.all_reduce_(t) is t and torch.equal(t, torch.ones(3))
    ctx.barrier()


def test_launcher_environment_without_rendezvous_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.context()


def test_round_robin_shards():
    shards = [list(distributed.Context(rank=r, world=3).shard(7)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]


def test_sharded_buffer_equals_the_single_process_buffer(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each: the same CPU reduction order, so bitwise equality
    try:
        single = buffer_run("digits", tmp_path / "single", **BUFFER)
    finally:
        torch.set_num_threads(threads)
    reports = run_ranks("buffer", tmp_path)
    for report in reports:
        assert report is not None and "crash" not in report, report
        assert report["world"] == 2
    paths = reports[0]["paths"]
    assert reports[1]["paths"] == paths and [Path(p).name for p in paths] == [Path(p).name for p in single]
    assert expert_files(tmp_path / "buffer") == paths  # the shard files are gone
    assert not any(p.name.startswith(".shards") for p in (tmp_path / "buffer").iterdir())
    for ours, theirs in zip(paths, single):
        a, b = load_buffer(ours), load_buffer(theirs)
        assert len(a) == len(b) == 3
        for ta, tb in zip(a, b):
            for sa, sb in zip(ta, tb):
                for pa, pb in zip(sa, sb):
                    assert torch.equal(pa, pb)


def test_a_dead_rank_fails_the_job_instead_of_hanging(tmp_path):
    reports = run_ranks("die", tmp_path, timeout=120)
    assert reports[1] is None  # it died without a report
    survivor = reports[0]
    assert survivor is not None and "crash" not in survivor, survivor
    assert survivor["error"] is not None and survivor["seconds"] < 60
