"""Higher-order gradients of every differentiable fused op, on every CPU backend: a gradient of a gradient is
the reference's (never None), checked by torch.autograd.gradgradcheck in fp64, and first-order passes still run
the backend's kernels. kmeans has no gradient and adjoint_step none at all: both say so."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.ops._higher_order import DoubleBackwardError, input_gradients
from ddfast.ops.adjoint_step import adjoint_step
from ddfast.ops.bn_stat_loss._op import bn_stat_loss_op
from ddfast.ops.grad_distance._op import grad_distance_op

from conftest import seeded

BACKENDS = ["reference", "cpp"]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=seeded(seed), dtype=torch.float64)


def _labels(n, k):
    return torch.arange(n) % k


def _grad_distance(metric):
    def fn(a, b, c, d):
        return ddfast.grad_distance([a, b], [c, d], metric, batched=True)
    return fn, [_randn(2, 3, 4, seed=1), _randn(2, 5, seed=2), _randn(2, 3, 4, seed=3), _randn(2, 5, seed=4)]


def _grad_distance_custom_op():
    """The custom op itself (what torch.compile traces), outside compile: its autograd registration."""
    def fn(a, b, c, d):
        return grad_distance_op([a, b], [c, d], "ours", [1.0, 1.0], True)[0]
    return fn, _grad_distance("ours")[1]


def _bn_stat_loss(through_custom_op=False):
    def fn(a, b, mean, var):
        if through_custom_op:
            return bn_stat_loss_op([a, b], [mean, mean[:2]], [var, var[:2]], [1.0, 0.5])[0]
        return ddfast.bn_stat_loss([a, b], [mean, mean[:2]], [var, var[:2]], [1.0, 0.5])
    return fn, [_randn(4, 3, 2, 2, seed=1), _randn(4, 2, seed=2), _randn(3, seed=3), _randn(3, seed=4).abs() + 0.5]


def _class_mean_distance():
    y_syn, y_real = _labels(4, 2), _labels(6, 2)
    return (lambda f_syn, f_real: ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, 2),
            [_randn(4, 3, seed=1), _randn(6, 3, seed=2)])


def _mmd(kernel):
    sigmas = [1.0, 2.0] if kernel == "gaussian" else None
    return lambda x, y: ddfast.mmd(x, y, kernel, sigmas), [_randn(4, 3, seed=1), _randn(5, 3, seed=2)]


def _class_mmd():
    y_syn, y_real = _labels(4, 2), _labels(6, 2)
    return (lambda f_syn, f_real: ddfast.class_mmd(f_syn, y_syn, f_real, y_real, 2, sigmas=[1.0]),
            [_randn(4, 3, seed=1), _randn(6, 3, seed=2)])


def _dsa():
    params = ddfast.dsa_sample(2, "color_crop_scale_rotate", seeded(7), mode="M", shared=False)
    return lambda x: ddfast.dsa(x, params) ** 2, [_randn(2, 3, 6, 6, seed=1)]


def _param_match_loss():
    return ddfast.param_match_loss, [_randn(7, seed=1), _randn(7, seed=2), _randn(7, seed=3)]


def _sgd_step():
    return (lambda grad, lr, theta, v: torch.cat(ddfast.sgd_step(theta, grad, lr, v, momentum=0.5)) ** 2,
            [_randn(5, seed=2), torch.tensor(0.1, dtype=torch.float64), _randn(5, seed=1), _randn(5, seed=3)])


CASES = {"grad_distance_ours": lambda: _grad_distance("ours"), "grad_distance_cos": lambda: _grad_distance("cos"),
         "grad_distance_mse": lambda: _grad_distance("mse"), "grad_distance_custom_op": _grad_distance_custom_op,
         "bn_stat_loss": _bn_stat_loss, "bn_stat_loss_custom_op": lambda: _bn_stat_loss(through_custom_op=True),
         "class_mean_distance": _class_mean_distance, "mmd_gaussian": lambda: _mmd("gaussian"),
         "mmd_linear": lambda: _mmd("linear"), "class_mmd": _class_mmd, "dsa": _dsa,
         "param_match_loss": _param_match_loss, "sgd_step": _sgd_step}


def _leaves(inputs):
    return [t.detach().clone().requires_grad_() for t in inputs]


def _gradient_of_gradient(fn, inputs):
    """d/d inputs of sum(d fn(inputs).sum() / d inputs[0] * 1)."""
    (first,) = torch.autograd.grad(fn(*inputs).sum(), inputs[0], create_graph=True)
    return torch.autograd.grad(first.square().sum(), inputs, allow_unused=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_of_a_gradient_is_the_reference_one(case, backend):
    fn, inputs = CASES[case]()
    with ddfast.use_backend("reference"):
        expected = _gradient_of_gradient(fn, _leaves(inputs))
    with ddfast.use_backend(backend):
        got = _gradient_of_gradient(fn, _leaves(inputs))
    assert got[0] is not None, f"{case} on {backend}: the gradient of a gradient came back as None"
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if g is not None:
            torch.testing.assert_close(g, e)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradgradcheck(case, backend):
    fn, inputs = CASES[case]()
    with ddfast.use_backend(backend):
        assert torch.autograd.gradgradcheck(fn, _leaves(inputs), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_op_takes_the_shared_rule_and_first_order_runs_the_kernel(monkeypatch, case):
    """Each op's backward asks ddfast.ops._higher_order whether autograd records it: no in a first-order pass
    (the backend's kernel runs), yes under create_graph (the reference re-run)."""
    import ddfast.ops._higher_order as higher_order

    answers = []
    decide = higher_order.records_graph
    monkeypatch.setattr(higher_order, "records_graph", lambda *read: answers.append(decide(*read)) or answers[-1])
    fn, inputs = CASES[case]()
    leaves = _leaves(inputs)
    with ddfast.use_backend("cpp"):
        fn(*leaves).sum().backward()
        assert answers and not any(answers), case
        answers.clear()
        torch.autograd.grad(fn(*leaves).sum(), leaves[0], create_graph=True)
        assert answers and all(answers), case


def test_an_op_without_a_differentiable_backward_names_itself():
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(DoubleBackwardError, match="fused_thing does not support double backward on backend cpp"):
        with torch.enable_grad():
            input_gradients("fused_thing", "cpp", [x], kernel=lambda: None, differentiable=None)


def test_adjoint_step_refuses_differentiation_by_name():
    lam = _randn(4).requires_grad_()
    u, _ = adjoint_step(lam, None, _randn(4, seed=1), torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="adjoint_step is not differentiable"):
        u.sum().backward()


def test_kmeans_results_have_no_gradient_history():
    x = _randn(8, 2).requires_grad_()
    result = ddfast.kmeans(x, 2, iters=2, generator=seeded(0))
    assert not result.centroids.requires_grad
