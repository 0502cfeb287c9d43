"""The trajectory-matching seed methods (docs/methods.md#seqmatch, docs/methods.md#ast): AST's components
(smooth-expert hooks, balanced loss, weight perturbation, representative initialisation, intermediate matching),
SeqMatch's subsets, frozen earlier subsets, subset experts and the sequential protocol, and both from the CLI, on
small digits."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddfast
from ddfast.data import load_dataset
from ddfast.eval import evaluate, train_sequentially
from ddfast.experts import train_experts
from ddfast.methods import METHODS, ast, make_config, mtt, seqmatch
from ddfast.methods import _common as common
from ddfast.models import get_network
from ddfast.ops.unroll import FlatModel

from conftest import tiny_digits_buffer

TINY = dict(model="ConvNetD2", syn_steps=4, expert_epochs=2, lr_img=10.0)


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", im_size=8)


@pytest.fixture(scope="module")
def buffer8(tmp_path_factory, digits8):
    return tiny_digits_buffer(tmp_path_factory.mktemp("buffer"), digits8)


def _run(method, data, buffer, ipc, iterations, **settings):
    config = make_config(method, data.name, ipc=ipc, iterations=iterations, **settings)
    return METHODS[method].distill(data, config, buffer, progress=False)


# ----------------------------------------------------------------------------------------------- AST

def test_clipping_loss_schedule():
    recipe = ast.SmoothExperts()
    assert [round(ast.clip_factor(e, recipe), 10) for e in range(12)] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
                                                                           0.9, 0.95, 1.0, 1.0]


def test_balanced_scale_follows_the_released_formula():
    # max_start_epoch 20: h = 10; t >= h multiplies by log_5(t - h + 8), t < h divides by log_5(h - t + 8)
    assert mtt.balanced_scale(10, 20) == pytest.approx(math.log(8, 5))
    assert mtt.balanced_scale(19, 20) == pytest.approx(math.log(17, 5))
    assert mtt.balanced_scale(0, 20) == pytest.approx(1 / math.log(18, 5))
    assert mtt.balanced_scale(2, 5) == pytest.approx(math.log(8, 5))  # h = 5 // 2 = 2
    assert mtt.balanced_scale(1, 5) == pytest.approx(1 / math.log(9, 5))


def test_input_gradient_penalty_on_a_linear_model_and_its_double_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).double()
    raw = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    penalty = ast.input_gradient_penalty(model, raw)
    # d sum(logits) / dx = the column sums of W, the same for every sample; norm over channels per pixel
    grad = model[1].weight.sum(0).reshape(2, 3, 3)
    want = ((grad.norm(dim=0) - 1) ** 2).mean()
    torch.testing.assert_close(penalty, want)
    (d_weight,) = torch.autograd.grad(penalty, model[1].weight)
    (d_want,) = torch.autograd.grad(want, model[1].weight)
    torch.testing.assert_close(d_weight, d_want)
    assert d_weight.abs().sum() > 0


def test_smooth_expert_hooks_clip_per_epoch_restart_per_expert_and_decay_the_lr():
    hooks = ast.smooth_expert_hooks(2, ast.SmoothExperts(penalty=0.0))  # 2 epochs: decay after epoch 2 // 2 + 1
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    first, second = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    opt = torch.optim.SGD(first.parameters(), lr=1.0, momentum=0.9)
    ce = F.cross_entropy(first(x), y)
    loss = hooks.loss(first, x, y, first(x), x)
    torch.testing.assert_close(loss, 0.5 * ce)
    loss.backward()
    opt.step()
    hooks.epoch_end(0, 0, first, opt, 0.0)
    torch.testing.assert_close(hooks.loss(first, x, y, first(x), x), 0.55 * F.cross_entropy(first(x), y))
    hooks.epoch_end(0, 1, first, opt, 0.0)
    assert opt.param_groups[0]["lr"] == 1.0 and opt.state  # AST decays after epoch epochs // 2 + 1, not before
    hooks.epoch_end(0, 2, first, opt, 0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.6) and not opt.state  # a fresh optimiser's momentum
    fifty = ast.smooth_expert_hooks(50)  # buffer.py's 50 epochs: lr_schedule [26]
    opt = torch.optim.SGD(first.parameters(), lr=1.0)
    fifty.epoch_end(0, 25, first, opt, 0.0)
    assert opt.param_groups[0]["lr"] == 1.0
    fifty.epoch_end(0, 26, first, opt, 0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.6)
    ce2 = F.cross_entropy(second(x), y)
    torch.testing.assert_close(hooks.loss(second, x, y, second(x), x), 0.5 * ce2)  # a new expert restarts


def test_smooth_experts_train_with_the_penalty(digits8):
    hooks = ast.smooth_expert_hooks(2)
    trajectories = train_experts(lambda: get_network("ConvNetD2", 1, 10, (8, 8)), digits8.train_images[:64],
                                 digits8.train_labels[:64], 1, 2, lr=0.003, momentum=0.9, weight_decay=1e-3,
                                 generator=torch.Generator().manual_seed(0), hooks=hooks, progress=False)
    plain = train_experts(lambda: get_network("ConvNetD2", 1, 10, (8, 8)), digits8.train_images[:64],
                          digits8.train_labels[:64], 1, 2, lr=0.003, momentum=0.9, weight_decay=1e-3,
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(trajectories[0][0][0], plain[0][0][0])  # same initialisation
    assert not torch.equal(trajectories[0][2][0], plain[0][2][0])  # different training
    assert all(torch.isfinite(p).all() for p in trajectories[0][-1])


def test_weight_perturbation_touches_conv_weights_only_by_a_normalised_direction():
    net = get_network("ConvNetD2", 1, 10, (8, 8))
    fm = FlatModel(net)
    theta = fm.flat_params()
    out = mtt.perturb_weights(theta, fm, 0.5, torch.Generator().manual_seed(0))
    for before, after in zip(fm.unflatten(theta), fm.unflatten(out)):
        if before.dim() == 4:
            ratio = (after - before) / before  # = alpha * D / ||D||
            assert ratio.norm().item() == pytest.approx(0.5, rel=1e-4)
        else:
            assert torch.equal(before, after)
    again = mtt.perturb_weights(theta, fm, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_representative_init_takes_distinct_real_images_of_each_class(digits8, buffer8):
    real = common.RealData.of(digits8)
    trajectories = mtt.load_experts(buffer8)
    images = ast.representative_images(real, trajectories, 3, "ConvNetD2", seed=0)
    assert images.shape == (30, 1, 8, 8)
    flat_real = real.images.flatten(1)
    for row, image in enumerate(images):
        match = (flat_real == image.flatten()).all(1).nonzero().flatten()
        assert len(match) >= 1 and int(real.labels[match[0]]) == row // 3
    assert len({tuple(im.flatten().tolist()) for im in images}) == 30
    assert torch.equal(images, ast.representative_images(real, trajectories, 3, "ConvNetD2", seed=0))
    with pytest.raises(ValueError, match="ipc <= the smallest class"):
        ast.representative_images(real, trajectories, 10_000, "ConvNetD2", seed=0)


@pytest.mark.parametrize("memory_budget", [None, 0.0, 0.5, 1.0, 10 ** 12])
def test_ast_adjoint_equals_autograd_with_every_component_on(digits8, buffer8, memory_budget):
    settings = dict(TINY, max_start_epoch=2, lr_teacher=0.003)
    adjoint = _run("ast", digits8, buffer8, 1, 2, memory_budget=memory_budget, **settings)
    autograd = _run("ast", digits8, buffer8, 1, 2, mode="autograd", **settings)
    torch.testing.assert_close(adjoint.images, autograd.images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adjoint.lr, autograd.lr, rtol=1e-4, atol=1e-7)


def test_ast_with_every_component_off_is_mtt(digits8, buffer8):
    settings = dict(TINY, max_start_epoch=2, lr_teacher=0.01, lr_lr=1e-5)  # MTT's digits lrs on both
    off = dict(init="real", student_momentum=0.0, balanced=False, intermediate=False, perturb=0.0)
    a = _run("ast", digits8, buffer8, 1, 2, **settings, **off)
    m = _run("mtt", digits8, buffer8, 1, 2, **settings)
    assert torch.equal(a.images, m.images) and torch.equal(a.lr, m.lr)


@pytest.mark.parametrize("component", [dict(student_momentum=0.9), dict(balanced=True), dict(intermediate=True),
                                       dict(perturb=1.0)])
def test_each_ast_component_changes_the_run(digits8, buffer8, component):
    settings = dict(TINY, max_start_epoch=2, init="real", student_momentum=0.0, balanced=False, intermediate=False,
                    perturb=0.0, lr_teacher=0.003)
    base = _run("ast", digits8, buffer8, 1, 2, **settings)
    changed = _run("ast", digits8, buffer8, 1, 2, **{**settings, **component})
    assert not torch.equal(base.images, changed.images)


# ------------------------------------------------------------------------------------------ SeqMatch

def test_subset_sizes():
    assert seqmatch.subset_sizes(50, 3) == [17, 17, 16]  # seqmatch-mtt's run.sh
    assert seqmatch.subset_sizes(10, 2) == [5, 5] and seqmatch.subset_sizes(7, 1) == [7]
    with pytest.raises(ValueError, match="num_subsets must be in"):
        seqmatch.subset_sizes(1, 2)


SEQ = dict(model="ConvNetD2", syn_steps=3, expert_epochs=2, lr_img=10.0, experts=1, buffer_epochs=2,
           pretrain_epochs=2, lr_teacher=0.01)


def test_seqmatch_with_one_subset_is_mtt(digits8, buffer8):
    seq = _run("seqmatch", digits8, buffer8, 2, 2, num_subsets=1, intervals=((0, 4),), **SEQ)
    m = _run("mtt", digits8, buffer8, 2, 2, model="ConvNetD2", syn_steps=3, expert_epochs=2, lr_img=10.0,
             max_start_epoch=2, lr_teacher=0.01)
    assert torch.equal(seq.images, m.images) and torch.equal(seq.lr, m.lr)
    assert seq.metadata["sequential"]["rows"] == [20]


def test_seqmatch_keeps_earlier_subsets_frozen_and_stores_the_stages(digits8, buffer8):
    first = _run("seqmatch", digits8, buffer8, 1, 2, num_subsets=1, intervals=((0, 4),), **SEQ)
    both = _run("seqmatch", digits8, buffer8, 2, 2, num_subsets=2, intervals=((0, 4), (0, 3)), **SEQ)
    assert torch.equal(both.images[:10], first.images)  # S1 is distilled as alone, then frozen
    assert both.images.shape == (20, 1, 8, 8)
    assert torch.equal(both.labels, torch.arange(10).repeat(2))  # stored subset by subset
    seq = both.metadata["sequential"]
    assert seq["rows"] == [10, 20] and seq["sizes"] == [1, 1] and seq["lrs"][0] == pytest.approx(float(first.lr))
    assert both.metadata["iterations"] == 4 and float(both.lr) == pytest.approx(seq["lrs"][1])


@pytest.mark.parametrize("memory_budget", [0.0, 1.0])
def test_seqmatch_adjoint_equals_autograd_with_the_frozen_subset(digits8, buffer8, memory_budget):
    settings = dict(SEQ, num_subsets=2, intervals=((0, 4), (0, 3)))
    adjoint = _run("seqmatch", digits8, buffer8, 2, 1, memory_budget=memory_budget, **settings)
    autograd = _run("seqmatch", digits8, buffer8, 2, 1, mode="autograd", **settings)
    torch.testing.assert_close(adjoint.images, autograd.images, rtol=1e-4, atol=1e-5)


def test_memory_budget_keeps_bytes_as_an_integer_and_a_fraction_as_a_float():
    from ddfast.usage import check_settings

    assert check_settings("mtt", {"memory_budget": "1000000"}) == {"memory_budget": 1000000}
    assert type(make_config("seqmatch", "digits", memory_budget=10 ** 9).memory_budget) is int
    assert type(make_config("ast", "digits", memory_budget=1).memory_budget) is int  # 1 byte, not all steps
    assert check_settings("mtt", {"memory_budget": "0.25"}) == {"memory_budget": 0.25}
    with pytest.raises(ddfast.UsageError, match="memory_budget"):
        check_settings("mtt", {"memory_budget": "lots"})


@pytest.mark.parametrize("method", ["mtt", "ast", "seqmatch"])
def test_the_memory_budget_setting_reaches_the_unroll(digits8, buffer8, method):
    settings = dict(SEQ, num_subsets=1, intervals=((0, 4),)) if method == "seqmatch" else dict(TINY, max_start_epoch=2)
    with pytest.raises(ValueError, match="memory_budget"):
        _run(method, digits8, buffer8, 1, 1, memory_budget=-0.5, **settings)
    with pytest.raises(ValueError, match="memory_budget"):  # autograd keeps every graph: a budget is a mistake
        _run(method, digits8, buffer8, 1, 1, memory_budget=0.5, mode="autograd", **settings)


def test_subset_experts_start_from_the_sequentially_trained_network(digits8):
    real = common.RealData.of(digits8)
    config = make_config("seqmatch", "digits", ipc=2, **SEQ)
    images, labels = real.images[:20], real.labels[:20]
    trajectories = seqmatch.subset_experts(real, images, labels, [(10, 0.01), (20, 0.01)], config, 1, False)
    assert len(trajectories) == 1 and len(trajectories[0]) == config.buffer_epochs + 1
    fresh = train_experts(lambda: get_network("ConvNetD2", 1, 10, (8, 8)), real.images, real.labels, 1, 1,
                          generator=common.generator(config.seed, "experts", 1), progress=False)
    assert not torch.equal(trajectories[0][0][0], fresh[0][0][0])  # snapshot 0 is after the synthetic stages


def test_train_sequentially_uses_each_prefix_and_its_lr():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 4, 4)
    y = torch.arange(8) % 2
    poisoned = torch.cat([x[:4], torch.full((4, 1, 4, 4), float("nan"))])
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    train_sequentially(net, poisoned, y, [(4, 0.1)], epochs=2, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(p).all() for p in net.parameters())  # stage 1 never saw rows 4..7
    a, b = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    b.load_state_dict(a.state_dict())
    train_sequentially(a, x, y, [(4, 0.1)], epochs=2, generator=torch.Generator().manual_seed(0))
    train_sequentially(b, x, y, [(4, 0.1), (8, 0.0)], epochs=2, generator=torch.Generator().manual_seed(0))
    # stage 2 at lr 0 changes nothing (the weight decay is scaled by the lr too)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_evaluate_rejects_bad_sequential_metadata(digits8):
    syn = ddfast.eval.random_real_set(digits8, 1, torch.Generator().manual_seed(0))
    syn.metadata["sequential"] = {"rows": [5, 9], "lrs": [0.01, 0.01]}
    with pytest.raises(ValueError, match="sequential"):
        evaluate(syn, digits8, "ConvNetD2", runs=1, epochs=1, progress=False)


def test_seqmatch_resume_continues_exactly(tmp_path, digits8, buffer8):
    """Killed during S2 and resumed with the same settings: S1 comes from its checkpoint, S2's experts from
    their file, S2 continues; more iterations: S1 continues and S2 starts afresh. Both equal a straight run."""
    settings = dict(SEQ, num_subsets=2, intervals=((0, 4), (0, 3)))
    config = make_config("seqmatch", "digits", ipc=2, iterations=2, **settings)
    straight = METHODS["seqmatch"].distill(digits8, config, buffer8, progress=False)

    def killed_in_s2(it, state):
        if it == 3:  # global iteration 3 = S2's first
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        METHODS["seqmatch"].distill(digits8, config, buffer8, progress=False, callback=killed_in_s2,
                                    checkpoint=common.Checkpointing(tmp_path / "ck.pt", every=1))
    assert (tmp_path / "ck_s1.pt").exists() and (tmp_path / "ck_experts.pt").exists()
    assert not (tmp_path / "ck.pt").exists()  # S2's first iteration was never checkpointed
    trained = []
    original = seqmatch.subset_experts
    try:
        seqmatch.subset_experts = lambda *args: trained.append(args) or original(*args)
        resumed = METHODS["seqmatch"].distill(digits8, config, buffer8, progress=False,
                                              checkpoint=common.Checkpointing(tmp_path / "ck.pt", resume=True))
    finally:
        seqmatch.subset_experts = original
    assert not trained  # the saved experts were used
    assert torch.equal(resumed.images, straight.images) and torch.equal(resumed.lr, straight.lr)

    short = make_config("seqmatch", "digits", ipc=2, iterations=1, **settings)
    ck = common.Checkpointing(tmp_path / "more.pt", every=1)
    METHODS["seqmatch"].distill(digits8, short, buffer8, checkpoint=ck, progress=False)
    longer = METHODS["seqmatch"].distill(digits8, config, buffer8, progress=False,
                                         checkpoint=common.Checkpointing(tmp_path / "more.pt", resume=True))
    assert torch.equal(longer.images, straight.images) and torch.equal(longer.lr, straight.lr)


def test_seqmatch_resume_refuses_other_expert_settings(tmp_path, digits8, buffer8):
    settings = dict(SEQ, num_subsets=2, intervals=((0, 4), (0, 3)))
    ck = common.Checkpointing(tmp_path / "ck.pt", every=1)
    METHODS["seqmatch"].distill(digits8, make_config("seqmatch", "digits", ipc=2, iterations=1, **settings), buffer8,
                                checkpoint=ck, progress=False)
    other = make_config("seqmatch", "digits", ipc=2, iterations=1, **dict(settings, pretrain_epochs=3))
    with pytest.raises(ValueError, match="same settings"):
        METHODS["seqmatch"].distill(digits8, other, buffer8, progress=False,
                                    checkpoint=common.Checkpointing(tmp_path / "ck.pt", resume=True))


def test_seqmatch_rejects_mismatched_intervals(digits8, buffer8):
    with pytest.raises(ValueError, match="one \\(lo, hi\\) per subset"):
        _run("seqmatch", digits8, buffer8, 2, 1, **dict(SEQ, num_subsets=2, intervals=((0, 4),)))


# ----------------------------------------------------------------------------------------------- CLI

def _cli(*argv):
    from ddfast.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(argv))
    assert done.value.code == 0


def test_cli_ast_buffer_then_ast_and_seqmatch(tmp_path):
    _cli("buffer", "--recipe", "ast", "--out", str(tmp_path / "buf"), "--experts", "1", "--epochs", "3",
         "--model", "ConvNetD2", "--quiet", "--device", "cpu", "--dsa-strategy", "none")
    trajectory = ddfast.load_buffer(tmp_path / "buf" / "replay_buffer_0.pt")[0]
    assert len(trajectory) == 4
    common_args = ["--quiet", "--buffer", str(tmp_path / "buf"), "--set", "model='ConvNetD2'", "--set", "syn_steps=2",
                   "--set", "dsa_strategy='none'", "--eval-runs", "1", "--eval-epochs", "1", "--device", "cpu"]
    _cli("distill", "--method", "ast", "--ipc", "1", "--iterations", "1", "--out", str(tmp_path / "ast"),
         "--set", "max_start_epoch=1", "--set", "balanced=False", *common_args)
    results = json.loads((tmp_path / "ast" / "results.json").read_text())
    assert results["method"] == "ast" and results["config"]["balanced"] is False
    _cli("distill", "--method", "seqmatch", "--ipc", "2", "--iterations", "1", "--out", str(tmp_path / "seq"),
         "--set", "intervals=((0, 3), (0, 3))", "--set", "experts=1", "--set", "buffer_epochs=2",
         "--set", "pretrain_epochs=1", *common_args)
    syn = ddfast.SyntheticSet.load(tmp_path / "seq" / "set.pt")
    assert syn.metadata["sequential"]["rows"] == [10, 20] and syn.lr is not None


def test_the_bench_reference_unroll_computes_what_ddfast_computes():
    """bench/baselines' re-creation of AST's distill.py body (momentum, balanced scale, a middle target) gives
    ddfast's loss, so the bench compares like with like."""
    from bench.baselines import mtt_unroll
    from conftest import seeded

    torch.manual_seed(0)
    fm = FlatModel(get_network("ConvNetD2", 1, 4, (8, 8)).double())
    theta0 = fm.flat_params()
    images = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    labels = torch.arange(10) % 4
    middle_target, target = (theta0 + 0.01 * torch.randn_like(theta0) for _ in range(2))
    gen = seeded(3)
    torch.randint(0, 2 ** 62, (4,), generator=gen)  # ddfast draws the per-step seeds before the batches
    ref = mtt_unroll.unroll_and_match(fm, theta0, target, images, labels, 0.05, 4, 4, gen, momentum=0.9,
                                      loss_scale=1.3, middle=[(2, middle_target)])
    theta, (mid,) = ddfast.unroll(fm, theta0, images, labels, 0.05, 4, batch_size=4, momentum=0.9, loss_scale=1.3,
                                  return_steps=[2], generator=seeded(3))
    ours = ddfast.param_match_loss(theta, theta0, target) + ddfast.param_match_loss(mid, theta0, middle_target)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=0)
