"""ddfast under torch.distributed (gloo on CPU, 2 processes on 127.0.0.1): the sharded work gives the
single-process result, and a dead rank fails the job instead of hanging it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from ddfast import distributed
from ddfast.experts import expert_files, load_buffer
from ddfast.runner import buffer_run
from spawn_ranks import assert_ran, one_thread, run_ranks

BUFFER = dict(experts=3, epochs=1, model="ConvNetD1", batch_size=512, dsa_strategy="none", progress=False,
              device="cpu")


def _buffer_job(ctx, folder):
    return {"paths": buffer_run("digits", Path(folder) / "buffer", **BUFFER)}


def _die_job(ctx, folder):
    if ctx.rank == 1:
        os._exit(3)  # killed before the collective
    start = time.perf_counter()
    try:
        ctx.barrier()
        error = None
    except Exception as exc:  # noqa: BLE001 - the failure is what this job checks
        error = f"{type(exc).__name__}: {exc}"
    return {"error": error, "seconds": time.perf_counter() - start}


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


def test_timeout_from_the_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "-5")
    with pytest.raises(ValueError, match="DDFAST_DIST_TIMEOUT_S"):
        distributed.context()


def test_round_robin_shards():
    shards = [list(distributed.Context(rank=r, world=3).shard(7)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]


def test_sharded_buffer_equals_the_single_process_buffer(tmp_path):
    with one_thread():  # the ranks' thread count: the same CPU reduction order, so bitwise equality
        single = buffer_run("digits", tmp_path / "single", **BUFFER)
    reports = run_ranks(_buffer_job, tmp_path)
    assert_ran(reports)
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
    reports = run_ranks(_die_job, tmp_path, timeout=120)
    assert reports[1] is None  # it died without a report
    survivor = reports[0]
    assert survivor is not None and "crash" not in survivor, survivor
    assert survivor["error"] is not None and survivor["seconds"] < 60
