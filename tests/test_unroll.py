"""FlatModel and ddfast.unroll (docs/semantics.md#unroll): the adjoint reverse sweep equals MTT's create_graph
unroll (autograd) to rounding in fp64, for SGD and momentum, hard and soft labels, with and without
augmentation, with intermediate outputs, a loss scale and a frozen part of the set (the AST and SeqMatch
configurations); the tesla mode equals TESLA's
released first-order formula computed independently; minibatches follow MTT's order; bad inputs. Under a
memory_budget the adjoint keeps the graphs of the last steps that fit (counted through the steps it replays) and
still equals autograd, in one process and across 2 ranks."""

from __future__ import annotations

import itertools
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ddfast
from ddfast.models import get_network
from ddfast.models.convnet import ConvNet
from ddfast.ops.unroll.plan import StepPlan, plan_steps
from ddfast.ops.unroll.unroll import DEFAULT_MEMORY_BUDGET, steps_kept

from conftest import relative_error, seeded
from spawn_ranks import assert_ran, run_ranks

EXACT = 1e-10  # the bound for adjoint vs autograd in fp64 (docs/DESIGN.md#unroll-the-exact-adjoint-of-the-inner-loop)


def _setup(seed=0):
    torch.manual_seed(seed)
    net = ConvNet(2, 4, net_width=6, net_depth=2, im_size=(8, 8)).double()  # GroupNorm, as DC's instancenorm
    fm = ddfast.FlatModel(net)
    g = seeded(seed + 1)
    theta0 = fm.flat_params()
    images = torch.randn(10, 2, 8, 8, generator=g, dtype=torch.float64)
    hard = torch.arange(10) % 4
    soft = torch.randn(10, 4, generator=g, dtype=torch.float64)
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=g, dtype=torch.float64)
    return fm, theta0, images, hard, soft, target


def flip_and_scale(x, generator):
    """A small random augmentation, differentiable in x, drawing from the generator it is handed."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    scale = 1 + 0.1 * torch.rand((), generator=generator, device=x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x) * scale


def _gradients(mode, momentum=0.0, soft=False, augment=None, keep=(), frozen=0, steps=5, batch_size=4, seed=0,
               loss_scale=1.0, **budget):
    fm, theta0, images, hard, soft_labels, target = _setup(seed)
    learn = images[frozen:].clone().requires_grad_()
    x = torch.cat([images[:frozen], learn]) if frozen else learn
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    labels = soft_labels.clone().requires_grad_() if soft else hard
    out = ddfast.unroll(fm, theta0, x, labels, lr, steps, batch_size=batch_size, momentum=momentum, augment=augment,
                        generator=seeded(3), return_steps=keep, mode=mode, loss_scale=loss_scale, **budget)
    theta, mids = out if keep else (out, [])
    loss = ((theta - target) ** 2).sum() / ((theta0 - target) ** 2).sum()
    for t in mids:
        loss = loss + 0.3 * ((t - target) ** 2).sum()
    return torch.autograd.grad(loss, [learn, lr] + ([labels] if soft else []))


def _relative(a, b):
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b))


# FlatModel.
def test_flat_model_round_trips_and_matches_the_module():
    net = get_network("ConvNet", 3, 10, (32, 32)).double()
    fm = ddfast.FlatModel(net)
    theta = fm.flat_params()
    assert theta.numel() == fm.num_params == 320_010
    assert fm.names == [n for n, _ in net.named_parameters()]
    params = fm.unflatten(theta)
    assert all(torch.equal(p, q) for p, q in zip(params, net.parameters()))
    assert torch.equal(fm.flatten(params), theta) and torch.equal(fm.flatten(fm.state_dict(theta)), theta)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(fm(theta, x), net(x))
    shifted = theta + 0.01
    net2 = get_network("ConvNet", 3, 10, (32, 32)).double()
    net2.load_state_dict(fm.state_dict(shifted), strict=False)
    assert torch.allclose(fm(shifted, x), net2(x), rtol=0, atol=1e-12)


def test_flat_model_gradient_reaches_the_vector():
    net = ConvNet(1, 3, net_width=4, net_depth=1, im_size=(4, 4)).double()
    fm = ddfast.FlatModel(net)
    theta = fm.flat_params().requires_grad_()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: fm(t, x), (theta,))


@pytest.mark.parametrize("bad, message", [
    (lambda fm: fm.unflatten(torch.zeros(5)), "theta must be a flat vector of"),
    (lambda fm: fm.flatten([torch.zeros(2)]), "params has 1 tensors"),
    (lambda fm: fm.flatten({"nope": torch.zeros(1)}), "params lacks parameters"),
])
def test_flat_model_bad_inputs(bad, message):
    fm = ddfast.FlatModel(ConvNet(1, 3, net_width=4, net_depth=1, im_size=(4, 4)))
    with pytest.raises(ValueError, match=message):
        bad(fm)


# Exactness: adjoint vs autograd in fp64.
@pytest.mark.parametrize("momentum, soft, augmented, keep", list(itertools.product(
    [0.0, 0.9], [False, True], [False, True], [(), (2, 5, 0)])))
def test_adjoint_equals_autograd(momentum, soft, augmented, keep):
    augment = flip_and_scale if augmented else None
    want = _gradients("autograd", momentum, soft, augment, keep)
    got = _gradients("adjoint", momentum, soft, augment, keep)
    assert _relative(got, want) <= EXACT


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_adjoint_equals_autograd_with_a_frozen_part_and_the_whole_set(momentum):
    want = _gradients("autograd", momentum, frozen=4, batch_size=None, steps=3)
    got = _gradients("adjoint", momentum, frozen=4, batch_size=None, steps=3)
    assert _relative(got, want) <= EXACT


# The configurations the trajectory-matching methods run (docs/methods.md#mtt, #seqmatch, #ast).
@pytest.mark.parametrize("config", [
    # AST: student momentum, balanced loss scale, intermediate matching, augmentation, minibatches
    dict(momentum=0.9, loss_scale=1 / 1.3652, keep=(2,), augment=flip_and_scale),
    dict(momentum=0.9, loss_scale=1.7227, keep=(1, 3), augment=flip_and_scale, batch_size=None),
    # SeqMatch: a frozen earlier subset in every minibatch with the learnable rows, augmentation
    dict(frozen=5, batch_size=5, augment=flip_and_scale),
    dict(frozen=5, batch_size=3, augment=flip_and_scale, momentum=0.9, keep=(2,)),
], ids=["ast-minibatch", "ast-whole-set", "seqmatch", "seqmatch-momentum-intermediate"])
def test_adjoint_equals_autograd_for_the_trajectory_methods(config):
    want = _gradients("autograd", **config)
    got = _gradients("adjoint", **config)
    assert _relative(got, want) <= EXACT


def test_loss_scale_multiplies_the_inner_gradient():
    """A scale s on the inner loss is a scale s on every step's gradient: with plain SGD, (lr, s) and (lr * s, 1)
    give the same forward."""
    fm, theta0, images, hard, _, _ = _setup()
    a = ddfast.unroll(fm, theta0, images, hard, 0.05, 4, loss_scale=2.0, generator=seeded(3))
    b = ddfast.unroll(fm, theta0, images, hard, 0.1, 4, generator=seeded(3))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_forward_is_the_same_in_every_mode_and_equals_a_plain_loop():
    fm, theta0, images, hard, _, _ = _setup()
    outs = [ddfast.unroll(fm, theta0, images, hard, 0.05, 4, batch_size=3, generator=seeded(7), mode=m)
            for m in ddfast.ops.unroll.MODES]
    plan = plan_steps(10, 4, 3, seeded(7))
    theta = theta0.clone()
    for batch in plan.batches:
        t = theta.clone().requires_grad_()
        loss = F.cross_entropy(fm(t, images[batch]), hard[batch])
        theta = theta - 0.05 * torch.autograd.grad(loss, t)[0]
    for out in outs:
        assert torch.allclose(out, theta, rtol=0, atol=1e-13)


# TESLA's released formula, written here independently.
def test_tesla_equals_the_released_first_order_formula():
    fm, theta0, images, hard, _, target = _setup()
    lr0, steps = 0.05, 4
    x = images.clone().requires_grad_()
    lr = torch.tensor(lr0, dtype=torch.float64, requires_grad=True)
    theta_n = ddfast.unroll(fm, theta0, x, hard, lr, steps, batch_size=4, generator=seeded(3), mode="tesla")
    denom = ((theta0 - target) ** 2).sum()
    got = torch.autograd.grad(((theta_n - target) ** 2).sum() / denom, [x, lr])

    plan = plan_steps(10, steps, 4, seeded(3))
    thetas, grads, theta = [], [], theta0.clone()
    for batch in plan.batches:  # forward: theta_n and g_n without any graph
        t = theta.clone().requires_grad_()
        g = torch.autograd.grad(F.cross_entropy(fm(t, images[batch]), hard[batch]), t)[0]
        thetas.append(theta)
        grads.append(g)
        theta = theta - lr0 * g
    residual = theta - target  # theta_N - theta*
    d_x = torch.zeros_like(images)
    for theta_n, batch in zip(thetas, plan.batches):  # dL/dX[b_n] = -(2 lr / D) (dg_n/dX)^T (theta_N - theta*)
        xn = images.clone().requires_grad_()
        t = theta_n.clone().requires_grad_()
        g = torch.autograd.grad(F.cross_entropy(fm(t, xn[batch]), hard[batch]), t, create_graph=True)[0]
        d_x += torch.autograd.grad(g, xn, grad_outputs=-(2 * lr0 / denom) * residual)[0]
    d_lr = -(2 / denom) * torch.dot(residual, torch.stack(grads).sum(0))
    assert _relative(got, (d_x, d_lr)) <= EXACT
    exact = _gradients("adjoint", steps=steps)
    assert _relative(got, exact) > 1e-6  # the same steps, but first order: not the exact gradient


def test_minibatches_follow_mtt_order():
    """MTT: a permutation split into chunks of batch_syn, popped from the end; a new one when empty."""
    gen = seeded(11)
    plan = plan_steps(10, 5, 4, seeded(11))
    torch.randint(0, 2**62, (5,), generator=gen)  # the per-step augmentation seeds come first
    chunks = list(torch.split(torch.randperm(10, generator=gen), 4))
    want = [chunks.pop() for _ in range(3)]
    chunks = list(torch.split(torch.randperm(10, generator=gen), 4))
    want += [chunks.pop() for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(plan.batches, want))
    assert plan_steps(10, 2, None, seeded(0)).batches == [None, None]


# Bad inputs.
@pytest.mark.parametrize("change, error, message", [
    ({"theta0": torch.zeros(7)}, ValueError, "theta0 must be a flat vector"),
    ({"steps": 0}, ValueError, "steps must be an int >= 1"),
    ({"batch_size": 11}, ValueError, r"batch_size must be None or an int in \[1, 10\]"),
    ({"lr": float("nan")}, ValueError, "lr must be finite"),
    ({"lr": torch.tensor(float("inf"))}, ValueError, "lr must be finite"),
    ({"lr": torch.ones(2)}, ValueError, "lr must be a 0-d floating-point tensor"),
    ({"momentum": -0.1}, ValueError, "momentum must be non-negative and finite"),
    ({"return_steps": (6,)}, ValueError, r"return_steps holds 6"),
    ({"mode": "exact"}, ValueError, "mode must be one of"),
    ({"mode": "tesla", "momentum": 0.9}, ValueError, "mode='tesla' is TESLA's formula for plain SGD"),
    ({"labels": torch.zeros(10, dtype=torch.int32)}, TypeError, "labels must be int64 class labels"),
    ({"labels": torch.zeros(9, dtype=torch.long)}, ValueError, "labels has 9 rows but images has 10"),
    ({"fm": "net"}, TypeError, "fm must be a ddfast.FlatModel"),
    ({"plan": ([None, None], [0, 1])}, TypeError, "plan must be a ddfast.ops.unroll.StepPlan"),
    ({"plan": StepPlan([None], [0])}, ValueError, "plan has 1 minibatches and 1 seeds for steps=2"),
    ({"plan": StepPlan([None, None], [0, 1]), "batch_size": 2}, ValueError, "batch_size and generator must be None"),
    ({"plan": StepPlan([None, torch.tensor([3, 10])], [0, 1])}, ValueError, r"plan.batches\[1\] must be None or"),
])
def test_bad_inputs(change, error, message):
    fm, theta0, images, hard, _, _ = _setup()
    args = {"fm": fm, "theta0": theta0, "images": images, "labels": hard, "lr": 0.01, "steps": 2, **change}
    positional = [args.pop(k) for k in ("fm", "theta0", "images", "labels", "lr", "steps")]
    with pytest.raises(error, match=message):
        ddfast.unroll(*positional, **args)


# memory_budget: the adjoint keeps the create_graph graphs of the last steps that fit, and replays the others.
def _step_bytes(rows: int) -> int:
    """Bytes one step's create_graph graph holds on ``rows`` images of _setup with soft labels and flip_and_scale:
    the distinct storages of the tensors it saved and still holds (the parameter vector, the set and the labels
    left out), measured here independently of the library."""
    fm, theta0, images, _, soft, _ = _setup()
    theta, x, labels = (t.clone().requires_grad_() for t in (theta0, images, soft))
    skip = {t.untyped_storage().data_ptr() for t in (theta, x, labels)}
    saved = []

    def pack(t):
        held = t.detach()
        saved.append(weakref.ref(held))
        return held

    rows = torch.arange(10)[:rows]  # a minibatch: a view of a permutation of the 10 images, as unroll's
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = fm(theta, flip_and_scale(x[rows], seeded(5)))
        loss = F.cross_entropy(logits, torch.softmax(labels[rows], dim=-1))
        g = torch.autograd.grad(loss, theta, create_graph=True)[0]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in (r() for r in saved)
                if t is not None}
    assert g.grad_fn is not None  # the graph is alive while the storages are read
    return sum(n for ptr, n in storages.items() if ptr not in skip)


BUDGETS = {  # name -> memory_budget, or a function of one 5-image step's bytes (batch_size 5: every step alike)
    "zero": 0, "zero-float": 0.0, "half": 0.5, "all": 1.0, "default": None,
    "two-steps-in-bytes": lambda b: 2 * b + b // 2, "below-one-step": lambda b: b // 2, "all-in-bytes": 10**12,
}


def _budget(name):
    budget = BUDGETS[name]
    return budget(_step_bytes(5)) if callable(budget) else budget


@pytest.mark.parametrize("name", sorted(BUDGETS))
@pytest.mark.parametrize("momentum, keep", [(0.0, ()), (0.9, (2, 5, 0)), (0.0, (1, 4)), (0.9, ())])
def test_memory_budget_gives_the_autograd_gradient(name, momentum, keep):
    """Images, lr and soft labels, augmented, in fp64: the stored graphs give what a replay gives."""
    config = dict(momentum=momentum, soft=True, augment=flip_and_scale, keep=keep, batch_size=5)
    want = _gradients("autograd", **config)
    got = _gradients("adjoint", **config, memory_budget=_budget(name))
    assert len(got) == 3 and _relative(got, want) <= EXACT


@pytest.mark.parametrize("budget", [0.5, 1.0, "bytes"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_memory_budget_with_a_frozen_part_hard_labels_and_uneven_minibatches(budget, momentum):
    budget = 3 * _step_bytes(4) if budget == "bytes" else budget  # batch_size 4 of 10: steps of 2, 4, 4, 2, 4 images
    config = dict(momentum=momentum, frozen=4, augment=flip_and_scale, keep=(3,), loss_scale=1.3)
    want = _gradients("autograd", **config)
    got = _gradients("adjoint", **config, memory_budget=budget)
    assert _relative(got, want) <= EXACT


class CountingAugment:
    """flip_and_scale that records which steps it ran for (by the seed of the generator it is handed); at the step
    whose seed is ``heavy`` it also runs an op that saves ``extra`` bytes more for the backward pass."""

    def __init__(self, heavy=None, extra=0):
        self.seeds, self.heavy, self.extra = [], heavy, extra

    def __call__(self, x, generator):
        self.seeds.append(generator.initial_seed())
        if generator.initial_seed() == self.heavy:  # x * ones saves the ones: extra bytes for the backward
            copies = self.extra // (x.numel() * x.element_size())
            x = (x.unsqueeze(0) * torch.ones(copies, *x.shape, dtype=x.dtype)).mean(0)
        return flip_and_scale(x, generator)


def _replayed(budget, steps=5, batch_size=5, mode="adjoint", soft=True, heavy=None, extra=0):
    """The steps the backward pass recomputes under ``budget`` (the forward runs every step once)."""
    fm, theta0, images, hard, soft_labels, _ = _setup()
    x = images.clone().requires_grad_()
    labels = soft_labels.clone().requires_grad_() if soft else hard
    order = plan_steps(10, steps, batch_size, seeded(3)).seeds
    augment = CountingAugment(None if heavy is None else order[heavy], extra)
    theta = ddfast.unroll(fm, theta0, x, labels, 0.05, steps, batch_size=batch_size, augment=augment,
                          generator=seeded(3), mode=mode, memory_budget=budget)
    assert augment.seeds == order  # the forward: every step once, in order
    augment.seeds.clear()
    theta.sum().backward()
    return [order.index(seed) for seed in augment.seeds]


def test_memory_budget_keeps_the_last_steps_that_fit():
    b = _step_bytes(5)
    assert _replayed(0) == _replayed(0.0) == _replayed(0.19) == [4, 3, 2, 1, 0]  # all replayed, last first
    assert _replayed(0.2) == _replayed(0.39) == [3, 2, 1, 0]  # floor(f N) last steps kept
    assert _replayed(0.5) == [2, 1, 0]
    assert _replayed(1.0) == _replayed(10**12) == []
    assert _replayed(None) == _replayed(DEFAULT_MEMORY_BUDGET)
    assert _replayed(b - 1) == [4, 3, 2, 1, 0]  # below one step: nothing kept
    assert _replayed(b) == _replayed(2 * b - 1) == [3, 2, 1, 0]
    assert _replayed(2 * b + b // 2) == [2, 1, 0]
    assert _replayed(3 * b) == [1, 0]
    assert _replayed(0.6, mode="tesla") == [1, 0]  # tesla takes the budget too
    assert _replayed(1.0, mode="tesla", soft=False) == []
    assert _replayed(0.6, steps=10) == [3, 2, 1, 0]


def test_memory_budget_in_bytes_is_a_cap():
    """batch_size 4 of 10 images: steps of 2, 4, 4, 2, 4 images, estimated from step 0 by rows. A step that saves
    more than estimated (a heavier augmentation at step 4) makes the earliest kept graph go: the stored graphs
    never hold more than the budget."""
    small, large = _step_bytes(2), _step_bytes(4)
    assert 1.5 * small < large <= 2 * small  # the estimate of a 4-image step from step 0 (2 images) holds
    assert _replayed(3 * small, batch_size=4) == [2, 1, 0]  # steps 3 and 4 kept
    assert _replayed(3 * small - 1, batch_size=4) == [3, 2, 1, 0]  # step 4 only
    assert _replayed(5 * small, batch_size=4) == [1, 0]
    assert _replayed(7 * small, batch_size=4) == [0]
    assert _replayed(large // 2, batch_size=4) == [4, 3, 2, 1, 0]
    b = _step_bytes(5)
    assert _replayed(2 * b + 64, heavy=4, extra=b // 2) == [3, 2, 1, 0]  # step 3 dropped: step 4 saved more
    assert _replayed(2 * b + 64, heavy=3, extra=b // 2) == [3, 2, 1, 0]  # step 3 saved more: dropped at step 4
    assert _replayed(b + 64, heavy=4, extra=b // 2) == [4, 3, 2, 1, 0]  # step 4 alone over: nothing kept
    assert _replayed(2 * b + 64, heavy=1, extra=b // 2) == [2, 1, 0]  # an unkept step's bytes do not count


def test_a_second_backward_replays_what_the_first_consumed():
    fm, theta0, images, hard, _, target = _setup()
    x = images.clone().requires_grad_()
    theta = ddfast.unroll(fm, theta0, x, hard, 0.05, 4, batch_size=4, generator=seeded(3), memory_budget=1.0)
    loss = ((theta - target) ** 2).sum()
    first = torch.autograd.grad(loss, x, retain_graph=True)[0]
    second = torch.autograd.grad(loss, x)[0]
    assert relative_error(second, first) <= EXACT


def test_steps_kept():
    assert steps_kept(0.0, [7] * 5) == 0 and steps_kept(1.0, [7] * 5) == 5
    assert steps_kept(0.5, [7] * 5) == 2 and steps_kept(0.2, [0] * 40) == 8 and steps_kept(0.1, [1] * 30) == 3
    assert steps_kept(0, [7] * 5) == 0 and steps_kept(20, [7] * 5) == 2 and steps_kept(21, [7] * 5) == 3
    assert steps_kept(6, [7] * 5) == 0 and steps_kept(10**9, [7] * 5) == 5 and steps_kept(5, [0] * 3) == 3
    # the longest run of last steps that fits
    assert steps_kept(9, [1, 1, 1, 9, 1]) == 1 and steps_kept(10, [1, 1, 1, 9, 1]) == 2
    assert steps_kept(10, [9, 1, 1, 1, 1]) == 4


@pytest.mark.parametrize("budget, error", [
    (-1, ValueError), (-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    (float("-inf"), ValueError), ("0.5", TypeError), (True, TypeError), (False, TypeError),
    (torch.tensor(0.5), TypeError), ([0.5], TypeError),
])
def test_bad_memory_budgets(budget, error):
    fm, theta0, images, hard, _, _ = _setup()
    with pytest.raises(error, match="memory_budget"):
        ddfast.unroll(fm, theta0, images, hard, 0.01, 2, memory_budget=budget)


def test_memory_budget_is_refused_with_autograd_and_taken_by_tesla():
    fm, theta0, images, hard, _, _ = _setup()
    with pytest.raises(ValueError, match="memory_budget.*mode='autograd'"):
        ddfast.unroll(fm, theta0, images, hard, 0.01, 2, mode="autograd", memory_budget=0.5)
    ddfast.unroll(fm, theta0, images, hard, 0.01, 2, mode="autograd", memory_budget=None)
    x = images.clone().requires_grad_()
    grads = []
    for budget in (0, 0.5, 1.0):
        theta = ddfast.unroll(fm, theta0, x, hard, 0.05, 4, batch_size=4, generator=seeded(3), mode="tesla",
                              memory_budget=budget)
        grads.append(torch.autograd.grad(theta.square().sum(), x)[0])
    assert all(relative_error(g, grads[0]) <= EXACT for g in grads[1:])


# one unroll across 2 ranks under a budget: the stored graph on each rank is its rows' term
SPLIT_BUDGETS = {"replay": 0, "half": 0.5, "all": 1.0, "bytes": 10**12}


def _split_case(budget, process_group=None, momentum=0.0):
    fm, theta0, images, _, soft, target = _setup()
    x = images.clone().requires_grad_()
    labels = soft.clone().requires_grad_()
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    theta, (mid,) = ddfast.unroll(fm, theta0, x, labels, lr, 4, batch_size=5, momentum=momentum,
                                  augment=flip_and_scale, generator=seeded(3), return_steps=(2,), memory_budget=budget,
                                  process_group=process_group)
    loss = ((theta - target) ** 2).sum() + 0.3 * ((mid - target) ** 2).sum()
    return [theta.detach(), *torch.autograd.grad(loss, [x, lr, labels])]


def _split_budget_job(ctx, folder):
    out = {f"{name}-{m}": _split_case(b, ctx.group, m) for name, b in SPLIT_BUDGETS.items() for m in (0.0, 0.9)}
    torch.save(out, Path(folder) / f"budget_rank{ctx.rank}.pt")


def test_memory_budget_across_ranks_equals_one_process(tmp_path):
    assert_ran(run_ranks(_split_budget_job, tmp_path))
    ranks = [torch.load(tmp_path / f"budget_rank{r}.pt") for r in range(2)]
    for momentum in (0.0, 0.9):
        want = _split_case(0, momentum=momentum)
        for name in SPLIT_BUDGETS:
            key = f"{name}-{momentum}"
            for a, b, w in zip(ranks[0][key], ranks[1][key], want):
                assert torch.equal(a, b), f"{key}: the ranks differ"
                assert relative_error(a, w) <= EXACT, key
