"""Data-parallel matching under torch.distributed (docs/DESIGN.md#scale-out-with-torchdistributed, mode (b)):
DC/DSA, DM, DREAM+ and label-cycle GM with their classes split over 2 gloo ranks give the single-process set,
checkpoints come from rank 0 only and resume in a job of another size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddfast import distributed
from ddfast.data import load_dataset
from ddfast.methods import METHODS, make_config
from ddfast.methods._common import Checkpointing
from ddfast.runner import distill_run
from ddfast.synthetic import SyntheticSet

from spawn_ranks import assert_ran, free_port, one_thread, run_ranks

# tiny runs of every class-sharded method on digits (seconds each at one thread)
SETTINGS = {
    "dc": dict(ipc=2, iterations=2, outer_loop=2, inner_loop=1, batch_real=8, model="ConvNetD1"),
    "dsa": dict(ipc=2, iterations=2, outer_loop=2, inner_loop=1, batch_real=8, model="ConvNetD1"),
    "dm": dict(ipc=2, iterations=3, batch_real=16, model="ConvNetD1"),
    "dream": dict(ipc=2, iterations=1, inner_steps=3, interval=2, batch_real=4, kmeans_iters=5, net_samples=64,
                  pretrain_epochs=1, model="ConvNetD1"),
    # early exit after 2 of 4 rounds (tol 10: any window "plateaus"), decided on the loss summed over the ranks
    "lcs_gm": dict(ipc=2, iterations=4, batch_real=8, pretrain_epochs=1, model="ConvNetD1", early_exit_window=1,
                   early_exit_tol=10.0),
}


def distill(method: str, folder, ctx=None, iterations: int | None = None, resume: bool = False, **overrides):
    data = load_dataset("digits")
    settings = {**SETTINGS[method], **overrides}
    if iterations is not None:
        settings["iterations"] = iterations
    config = make_config(method, "digits", **settings)
    checkpoint = Checkpointing(Path(folder) / f"{method}.ckpt", every=1, resume=resume)
    return METHODS[method].distill(data, config, device="cpu", checkpoint=checkpoint, progress=False, ctx=ctx)


def _distill_job(ctx, folder, method, iterations=None, resume=False, overrides=None):
    syn = distill(method, folder, ctx, iterations, resume, **(overrides or {}))
    torch.save(syn.images, Path(folder) / f"{method}_rank{ctx.rank}.pt")
    return {"history": torch.load(Path(folder) / f"{method}.ckpt", weights_only=True)["state"]["history"]
            if ctx.is_main else None, "iterations": syn.metadata["iterations"]}


def _unshared_folder_job(ctx, folder):
    """Each rank resumes from a folder of its own, and only rank 0's holds a checkpoint."""
    distill("dm", Path(folder) / f"own{ctx.rank}", ctx, iterations=4, resume=True)


def single_process(method, folder, **kwargs):
    """The reference: one process at one CPU thread (the ranks' thread count, so the same reduction order)."""
    with one_thread():
        return distill(method, folder, **kwargs)


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_class_sharded_run_equals_the_single_process_run(tmp_path, method):
    reference = single_process(method, tmp_path / "single")
    start = single_process(method, tmp_path / "start", iterations=0)
    assert not torch.allclose(reference.images, start.images), "the reference run must move the set"
    history = torch.load(tmp_path / "single" / f"{method}.ckpt", weights_only=True)["state"]["history"]
    reports = run_ranks(_distill_job, tmp_path / "ranks", method)
    assert_ran(reports)
    for rank in range(2):
        images = torch.load(tmp_path / "ranks" / f"{method}_rank{rank}.pt")
        # each synthetic row's gradient comes from the one rank that owns its class: bit for bit
        assert torch.equal(images, reference.images), f"{method} rank {rank}: max diff " \
            f"{(images - reference.images).abs().max():.3g}"
    # the loss is summed over the ranks: the same up to the order of the sum
    assert reports[0]["history"] == pytest.approx(history, rel=1e-5)
    assert reports[0]["iterations"] == reports[1]["iterations"] == reference.metadata["iterations"]
    if method == "lcs_gm":
        assert reference.metadata["stopped_early"] and reference.metadata["iterations"] == 2


def test_checkpoint_from_two_ranks_resumes_in_one_process(tmp_path):
    """Rank 0 alone writes the checkpoint; the state is the same on every rank, so a job of another size goes on
    from it: 2 ranks for 2 iterations, then 1 process to 4, equals 4 iterations in one process."""
    reports = run_ranks(_distill_job, tmp_path, "dm", 2)
    assert_ran(reports)
    assert len(reports[0]["history"]) == 2 and reports[1]["history"] is None
    assert sorted(p.name for p in tmp_path.glob("*.ckpt*")) == ["dm.ckpt"]
    resumed = single_process("dm", tmp_path, iterations=4, resume=True)
    uninterrupted = single_process("dm", tmp_path / "whole", iterations=4)
    assert torch.equal(resumed.images, uninterrupted.images)


def _run_job(ctx, folder):
    settings = {k: v for k, v in SETTINGS["dm"].items() if k not in ("ipc", "iterations")}
    results = distill_run("dm", "digits", 2, Path(folder) / "run", iterations=2, device="cpu", eval_runs=1,
                          eval_epochs=2, settings=settings, progress=False)
    return {"results": results}


def test_distill_run_under_two_ranks_writes_one_folder_from_rank_0(tmp_path):
    reports = run_ranks(_run_job, tmp_path)
    assert_ran(reports)
    results, other = reports[0]["results"], reports[1]["results"]
    assert other is None and results["iterations"] == 2 and results["distilled"]["runs"] == 1
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["distilled"] == results["distilled"]
    reference = single_process("dm", tmp_path / "single", iterations=2)
    assert torch.equal(SyntheticSet.load(tmp_path / "run" / "set.pt").images, reference.images)


def test_the_cli_under_torchrun(tmp_path):
    """The launcher path users run: torchrun starts 2 ranks of `ddfast distill`; one table, one folder."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "ddfast", "distill", "--method", "dc", "--dataset", "digits",
               "--ipc", "2", "--iterations", "2", "--eval-runs", "1", "--eval-epochs", "2", "--set", "model=ConvNetD1",
               "--set", "outer_loop=2", "--set", "inner_loop=1", "--quiet", "--device", "cpu", "--out",
               str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("| dc | digits | 2 | 2 |") == 1, done.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["iterations"] == 2


def test_checkpoint_from_one_process_resumes_on_two_ranks(tmp_path):
    single_process("dm", tmp_path, iterations=2)
    reports = run_ranks(_distill_job, tmp_path, "dm", 4, True)
    assert_ran(reports)
    assert len(reports[0]["history"]) == 4
    uninterrupted = single_process("dm", tmp_path / "whole", iterations=4)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"dm_rank{rank}.pt"), uninterrupted.images)


def test_ranks_resuming_from_different_checkpoints_fail_clearly(tmp_path):
    single_process("dm", tmp_path / "own0", iterations=2)
    reports = run_ranks(_unshared_folder_job, tmp_path)
    for report in reports:
        assert report is not None and "file system all ranks share" in report.get("crash", ""), report


def _teacherless_job(ctx, folder):
    distill_run("sre2l", "digits", 2, Path(folder) / "run", iterations=2, device="cpu", progress=False,
                teacher=Path(folder) / "missing.pt")


def test_a_missing_teacher_under_several_ranks_is_a_clear_error(tmp_path):
    reports = run_ranks(_teacherless_job, tmp_path)
    for report in reports:
        assert report is not None and "ddfast teacher --dataset digits" in report.get("crash", ""), report
    assert not (tmp_path / "missing.pt").exists()


def test_batchnorm_network_is_refused_under_several_ranks(tmp_path):
    reports = run_ranks(_distill_job, tmp_path, "dm", None, False, {"model": "ConvNetBN"})
    for report in reports:
        assert report is not None and "normalises over every class's images" in report.get("crash", ""), report


def test_more_ranks_than_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="11 ranks but 10 classes"):
        distributed.Context(rank=0, world=11).classes(10)
    assert distributed.Context(rank=1, world=3).classes(10) == [1, 4, 7]
