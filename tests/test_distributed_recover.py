"""SRe2L/DELT recover under torch.distributed (docs/DESIGN.md#scale-out-with-torchdistributed, mode (a)): 2 gloo
ranks recover different batches (round robin) and both end with the single-process set, loss history and compute;
rank 0's round-end checkpoints resume in one process, and a one-process checkpoint from the middle of a batch
resumes on 2 ranks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bench.bench_bn_stat_loss import perturb_running_stats
from ddfast import distributed
from ddfast.data import load_dataset
from ddfast.methods import METHODS, make_config, sre2l
from ddfast.methods._common import Checkpointing
from ddfast.models import get_network
from spawn_ranks import assert_ran, one_thread, run_ranks

# ipc 5 in batches of 2 per class: batches of 20, 20 and 10 images, so rank 0 recovers batches 0 and 2 (the short
# one, through the head of its batch tensor) and rank 1 batch 1, then waits out the last round
SETTINGS = {"sre2l": dict(ipc=5, iterations=4, batch_size=20, jitter=1),
            "delt": dict(ipc=5, iterations=4, round_iterations=2, batch_size=20, jitter=1)}
STEPS = 4


def teacher() -> torch.nn.Module:
    """An untrained BN ConvNet with running statistics away from 0 and 1 (the BN term is then not trivial)."""
    torch.manual_seed(0)
    return perturb_running_stats(get_network("ConvNetD2BN", 1, 10, (8, 8))).eval()


def recover(method: str, checkpoint: Path, *, ctx=None, resume: bool = False, callback=None):
    config = make_config(method, "digits", **SETTINGS[method])
    return METHODS[method].distill(load_dataset("digits", im_size=8), config, teacher(),
                                   checkpoint=Checkpointing(checkpoint, every=1, resume=resume), progress=False,
                                   callback=callback, ctx=ctx)


def saved(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state"]


def _recover_job(ctx, folder, method, resume=False):
    folder = Path(folder)
    checkpoint = folder / f"{method}.ckpt"
    total = 3 * STEPS

    def keep_first_round(it, state):  # rank 0 only; before this round's checkpoint, so the file holds round 1's
        if it == total:
            shutil.copy(checkpoint, folder / f"{method}-round1.ckpt")

    syn = recover(method, checkpoint, ctx=ctx, resume=resume, callback=None if resume else keep_first_round)
    torch.save(syn.images, folder / f"{method}-rank{ctx.rank}.pt")
    return {"compute": syn.metadata["compute"], "iterations": syn.metadata["iterations"]}


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_ranks_recover_the_single_process_set_and_resume_in_one_process(tmp_path, method):
    with one_thread():
        single = recover(method, tmp_path / "single.ckpt")
    reports = run_ranks(_recover_job, tmp_path / "ranks", method)
    assert_ran(reports)
    for r, report in enumerate(reports):
        assert torch.equal(torch.load(tmp_path / "ranks" / f"{method}-rank{r}.pt"), single.images), f"rank {r}"
        assert report["compute"] == single.metadata["compute"]
        assert report["iterations"] == single.metadata["iterations"] == 3 * STEPS
    ours, reference = saved(tmp_path / "ranks" / f"{method}.ckpt"), saved(tmp_path / "single.ckpt")
    assert ours["history"] == reference["history"] and ours["series"] == reference["series"]  # batch order
    assert torch.equal(ours["tensors"]["images"], reference["tensors"]["images"])

    # rank 0's checkpoint after the first round (batches 0 and 1) resumes in one process: batch 2 is left
    partial = tmp_path / "ranks" / f"{method}-round1.ckpt"
    assert saved(partial)["iteration"] == 2 * STEPS
    with one_thread():
        resumed = recover(method, partial, resume=True)
    assert torch.equal(resumed.images, single.images)
    assert resumed.metadata["compute"] == single.metadata["compute"]
    assert saved(partial)["history"] == reference["history"]  # the resumed run's own checkpoint, at the end


def test_one_process_checkpoint_mid_batch_resumes_on_two_ranks(tmp_path):
    class Killed(Exception):
        pass

    def kill(it, state):
        if it == STEPS + 3:  # the checkpoint holds batch 0 and 2 of batch 1's steps
            raise Killed

    with one_thread():
        single = recover("delt", tmp_path / "single.ckpt")
        with pytest.raises(Killed):
            recover("delt", tmp_path / "ranks" / "delt.ckpt", callback=kill)
    assert saved(tmp_path / "ranks" / "delt.ckpt")["iteration"] == STEPS + 2
    # the 2 ranks restart batch 1 from its initial rows (rank 0) and recover batch 2 (rank 1) in one round
    reports = run_ranks(_recover_job, tmp_path / "ranks", "delt", True)
    assert_ran(reports)
    for r, report in enumerate(reports):
        assert torch.equal(torch.load(tmp_path / "ranks" / f"delt-rank{r}.pt"), single.images), f"rank {r}"
        assert report["compute"] == single.metadata["compute"]
    ours, reference = saved(tmp_path / "ranks" / "delt.ckpt"), saved(tmp_path / "single.ckpt")
    assert ours["history"] == reference["history"] and ours["series"] == reference["series"]


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="device"):  # nccl collectives need the set on this rank's GPU
        recover("sre2l", tmp_path / "a.ckpt",
                ctx=distributed.Context(rank=0, world=2, device=torch.device("cuda", 0), backend="nccl"))
    recover("sre2l", tmp_path / "sre2l.ckpt")
    shutil.copy(tmp_path / "sre2l.ckpt", tmp_path / "delt.ckpt")
    with pytest.raises(ValueError, match="written by method 'sre2l'"):
        recover("delt", tmp_path / "delt.ckpt", resume=True)
    changed = make_config("sre2l", "digits", **{**SETTINGS["sre2l"], "lr": 0.5})
    with pytest.raises(ValueError, match="same settings"):
        sre2l.distill(load_dataset("digits", im_size=8), changed, teacher(),
                      checkpoint=Checkpointing(tmp_path / "sre2l.ckpt", resume=True), progress=False)
