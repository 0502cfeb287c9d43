"""One trajectory-matching unroll across ranks (docs/DESIGN.md#scale-out-with-torchdistributed, mode (c);
docs/semantics.md#unroll): with 2 gloo ranks every inner minibatch is split and the inner gradient summed, and each
rank returns the one-process theta_N and gradients of the images, the lr and soft labels (fp64: relative error <=
1e-10), for SGD and momentum, the adjoint and tesla modes, minibatches, per-image DSA, a loss scale, intermediate
outputs and a frozen part. MTT, AST and SeqMatch on 2 ranks give the one-process set up to the order of the sums;
rank 0 alone writes the checkpoints and a 2-rank checkpoint resumes in one process. What cannot be split is refused
with a clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import ddfast
from ddfast.data import load_dataset
from ddfast.methods import METHODS, make_config, seqmatch
from ddfast.methods import _common as common
from ddfast.methods._augment import per_sample
from ddfast.models.convnet import ConvNet

from conftest import relative_error, tiny_digits_buffer
from spawn_ranks import assert_ran, one_thread, run_ranks

EXACT = 1e-10  # fp64: the split sums the same terms in another order
DSA = per_sample("color_crop_cutout_flip_scale_rotate")

# 12 images: batch_size 5 gives minibatches of 2 (the last chunk, popped first), 5 and 5
UNROLL_CASES = {
    "adjoint-sgd-whole-set": dict(),
    "adjoint-sgd-minibatch-dsa": dict(batch_size=5, augment=True),
    "adjoint-momentum-soft-dsa-scaled-middle": dict(batch_size=5, augment=True, momentum=0.9, soft=True, keep=(2,),
                                                    loss_scale=1.3),
    "adjoint-momentum-whole-set-soft": dict(momentum=0.9, soft=True),
    "adjoint-frozen-part-dsa": dict(batch_size=5, augment=True, frozen=4),
    "adjoint-batchnorm-eval": dict(batch_size=5, augment=True, norm="batchnorm", eval=True),
    "tesla-minibatch-dsa": dict(mode="tesla", batch_size=5, augment=True),
    "tesla-whole-set-soft": dict(mode="tesla", soft=True),
}
REFUSED = {
    "autograd": (dict(mode="autograd"), "mode='autograd' keeps the whole create_graph unroll in one process"),
    "batchnorm": (dict(norm="batchnorm"), "BatchNorm layers .* normalise over the minibatch"),
    "small-minibatch": (dict(batch_size=11), "process_group has 2 ranks but the 12 images in chunks of "
                                             "batch_size=11 give a minibatch of 1"),
}


def unroll_case(case: dict, process_group=None) -> dict[str, torch.Tensor]:
    """theta_N and the gradients of a matching loss (MTT's, plus AST's intermediate terms) for one configuration."""
    torch.manual_seed(0)
    net = ConvNet(1, 4, net_width=6, net_depth=2, net_norm=case.get("norm", "instancenorm"), im_size=(8, 8)).double()
    net.train(not case.get("eval", False))
    fm = ddfast.FlatModel(net)
    g = torch.Generator().manual_seed(1)
    theta0 = fm.flat_params()
    images = torch.randn(12, 1, 8, 8, generator=g, dtype=torch.float64)
    soft = torch.randn(12, 4, generator=g, dtype=torch.float64)
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=g, dtype=torch.float64)
    frozen = case.get("frozen", 0)
    learn = images[frozen:].clone().requires_grad_()
    x = torch.cat([images[:frozen], learn]) if frozen else learn
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    labels = soft.requires_grad_() if case.get("soft") else torch.arange(12) % 4
    keep = case.get("keep", ())
    out = ddfast.unroll(fm, theta0, x, labels, lr, 4, batch_size=case.get("batch_size"),
                        momentum=case.get("momentum", 0.0), augment=DSA if case.get("augment") else None,
                        generator=torch.Generator().manual_seed(3), return_steps=keep,
                        loss_scale=case.get("loss_scale", 1.0), mode=case.get("mode", "adjoint"),
                        process_group=process_group)
    theta, middles = out if keep else (out, [])
    loss = ddfast.param_match_loss(theta, theta0, target)
    for middle in middles:
        loss = loss + ddfast.param_match_loss(middle, theta0, target)
    wrt = {"images": learn, "lr": lr, **({"labels": labels} if case.get("soft") else {})}
    return {"theta": theta.detach(), **dict(zip(wrt, torch.autograd.grad(loss, list(wrt.values()))))}


def _unroll_job(ctx, folder):
    torch.save({name: unroll_case(case, ctx.group) for name, case in UNROLL_CASES.items()},
               Path(folder) / f"unroll_rank{ctx.rank}.pt")
    refused = {}
    for name, (case, _) in REFUSED.items():
        try:
            unroll_case(case, ctx.group)
            refused[name] = None
        except ValueError as exc:
            refused[name] = str(exc)
    return {"refused": refused}


@pytest.fixture(scope="module")
def split_unrolls(tmp_path_factory):
    """Both ranks' results of every configuration, and the errors they raised (one 2-rank job for them all)."""
    folder = tmp_path_factory.mktemp("unroll")
    reports = run_ranks(_unroll_job, folder)
    assert_ran(reports)
    return [torch.load(folder / f"unroll_rank{r}.pt") for r in range(2)], [r["refused"] for r in reports]


@pytest.mark.parametrize("name", sorted(UNROLL_CASES))
def test_split_unroll_equals_one_process(split_unrolls, name):
    ranks, _ = split_unrolls
    want = unroll_case(UNROLL_CASES[name])
    for key, value in want.items():
        # every rank returns the same tensors (each is a sum over the ranks) ...
        assert torch.equal(ranks[0][name][key], ranks[1][name][key]), f"{name} {key}: the ranks differ"
        # ... the one-process value up to the order of the sums
        error = relative_error(ranks[0][name][key], value)
        assert error <= EXACT, f"{name} {key}: relative error {error:.2e}"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_split_unroll_refuses_what_it_cannot_split(split_unrolls, name):
    _, refused = split_unrolls
    message = REFUSED[name][1]
    for rank in range(2):
        assert refused[rank][name] is not None, f"rank {rank} ran {name}"
        assert re.search(message, refused[rank][name]), refused[rank][name]


def test_process_group_must_be_a_process_group():
    with pytest.raises(TypeError, match="process_group must be a torch.distributed ProcessGroup"):
        unroll_case({}, process_group="world")


# ----------------------------------------------------------------------------------------- the methods

# digits at 8x8, ConvNetD2 (instance norm); MTT and AST with minibatches of 8 of the 20 images (8, 8, then 4)
SETTINGS = {
    "mtt": dict(ipc=2, iterations=3, model="ConvNetD2", syn_steps=4, expert_epochs=2, max_start_epoch=2,
                lr_img=10.0, lr_teacher=0.01, batch_syn=8),
    "ast": dict(ipc=2, iterations=2, model="ConvNetD2", syn_steps=4, expert_epochs=2, max_start_epoch=2,
                lr_img=10.0, lr_teacher=0.003, batch_syn=8),  # every AST component on
    "seqmatch": dict(ipc=2, iterations=1, num_subsets=2, intervals=((0, 4), (0, 3)), model="ConvNetD2", syn_steps=3,
                     expert_epochs=2, lr_img=10.0, experts=3, buffer_epochs=2, pretrain_epochs=2, lr_teacher=0.01),
}
RESUMED = 4  # the 2-rank MTT checkpoint (3 iterations) goes on to this many in one process
# fp32: each outer step moves the images by lr_img (10) x a gradient whose last bits depend on the order of the sums
# over ranks (and the lr by lr_lr x its gradient). Measured: images differ by at most 1e-6 (SeqMatch; MTT 2.4e-7)
# while they move by 0.07-0.3 (|images| <= 2); the lr by 1e-9 of ~0.003-0.01. The bounds leave a margin of 10.
IMAGES_TOLERANCE = dict(rtol=1e-5, atol=1e-5)
LR_TOLERANCE = dict(rtol=1e-6, atol=1e-8)


def distill(method: str, buffer, checkpoint: Path | None = None, ctx=None, resume=False, callback=None, **overrides):
    config = make_config(method, "digits", **{**SETTINGS[method], **overrides})
    checkpoint = None if checkpoint is None else common.Checkpointing(checkpoint, every=1, resume=resume)
    return METHODS[method].distill(load_dataset("digits", im_size=8), config, buffer, checkpoint=checkpoint,
                                   progress=False, callback=callback, ctx=ctx)


def subset_experts(ctx=None) -> list:
    """SeqMatch's experts for subset 2 after a first subset of 10 real images."""
    real = common.RealData.of(load_dataset("digits", im_size=8))
    config = make_config("seqmatch", "digits", **SETTINGS["seqmatch"])
    return seqmatch.subset_experts(real, real.images[:10], real.labels[:10], [(10, 0.01)], config, 1, False, ctx)


def _methods_job(ctx, folder, buffer):
    folder = Path(folder)
    writes = []
    saves = {module: module.save_checked for module in (common, seqmatch)}
    for module, save in saves.items():  # record which rank writes checkpoints and expert files
        module.save_checked = lambda obj, path, save=save: writes.append(Path(path).name) or save(obj, path)
    try:
        for method in SETTINGS:
            syn = distill(method, buffer, folder / f"{method}.ckpt", ctx)
            torch.save(_learned(syn), folder / f"{method}_rank{ctx.rank}.pt")
    finally:
        for module, save in saves.items():
            module.save_checked = save
    torch.save(subset_experts(ctx), folder / f"experts_rank{ctx.rank}.pt")
    return {"writes": writes}


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    return tiny_digits_buffer(tmp_path_factory.mktemp("buffer"), load_dataset("digits", im_size=8))


@pytest.fixture(scope="module")
def split_methods(tmp_path_factory, buffer):
    folder = tmp_path_factory.mktemp("methods")
    reports = run_ranks(_methods_job, folder, str(buffer))
    assert_ran(reports)
    return folder, reports


def _learned(syn) -> dict[str, torch.Tensor]:
    return {"images": syn.images, "lr": syn.lr}


def _assert_same_set(got: dict, want: dict, what: str) -> None:
    torch.testing.assert_close(got["images"], want["images"], **IMAGES_TOLERANCE, msg=lambda m: f"{what} images: {m}")
    torch.testing.assert_close(got["lr"], want["lr"], **LR_TOLERANCE, msg=lambda m: f"{what} lr: {m}")


@pytest.mark.parametrize("method", ["ast", "seqmatch"])
def test_split_method_equals_one_process(tmp_path, buffer, split_methods, method):
    folder, _ = split_methods
    with one_thread():
        want = distill(method, buffer, tmp_path / f"{method}.ckpt")
    start = distill(method, buffer, iterations=0)
    assert not torch.allclose(want.images, start.images), "the reference run must move the set"
    ranks = [torch.load(folder / f"{method}_rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["images"], ranks[1]["images"]) and torch.equal(ranks[0]["lr"], ranks[1]["lr"])
    _assert_same_set(ranks[0], _learned(want), method)


def test_split_subset_experts_are_one_process_experts(split_methods):
    """SeqMatch's experts for a later subset: the ranks train experts 0, 2 and 1 and exchange them; every rank holds
    the one-process list bit for bit (at the same thread count)."""
    folder, _ = split_methods
    with one_thread():
        want = subset_experts()
    for rank in range(2):
        got = torch.load(folder / f"experts_rank{rank}.pt")
        assert len(got) == len(want) == SETTINGS["seqmatch"]["experts"]
        for e, (ours, theirs) in enumerate(zip(got, want)):
            assert len(ours) == len(theirs) == SETTINGS["seqmatch"]["buffer_epochs"] + 1
            assert all(torch.equal(a, b) for sa, sb in zip(ours, theirs) for a, b in zip(sa, sb)), f"expert {e}"


def test_split_mtt_equals_one_process_and_its_checkpoint_resumes_in_one_process(tmp_path, buffer, split_methods):
    folder, reports = split_methods
    at_three = {}  # the straight run's state after the iterations the ranks ran

    def keep_third(it, state):
        if it == SETTINGS["mtt"]["iterations"]:
            at_three.update(images=state.tensors["images"].detach().cpu().clone(),
                            lr=state.tensors["lr"].detach().cpu().clone())

    with one_thread():
        straight = distill("mtt", buffer, callback=keep_third, iterations=RESUMED)
    ranks = [torch.load(folder / f"mtt_rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["images"], ranks[1]["images"]) and torch.equal(ranks[0]["lr"], ranks[1]["lr"])
    _assert_same_set(ranks[0], at_three, "mtt after 3 iterations")
    # rank 0 alone wrote every checkpoint and expert file; the state is every rank's, so one process goes on
    assert reports[1]["writes"] == []
    assert set(reports[0]["writes"]) == {"mtt.ckpt", "ast.ckpt", "seqmatch_s1.ckpt", "seqmatch_experts.ckpt",
                                         "seqmatch.ckpt"}
    copy = tmp_path / "mtt.ckpt"
    copy.write_bytes((folder / "mtt.ckpt").read_bytes())
    with one_thread():
        resumed = distill("mtt", buffer, copy, resume=True, iterations=RESUMED)
    _assert_same_set(_learned(resumed), _learned(straight), "mtt resumed in one process")
