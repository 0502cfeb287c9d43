"""The op registry (ddfast/ops/_registry.py): one backend resolution per forward, kept for its backward;
the eager path of a tensor-list op is the registry's autograd.Function, the custom op otherwise."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast import backends
from ddfast.ops._registry import FusedOp
from ddfast.ops.bn_stat_loss._op import OP as BN_STAT_LOSS
from ddfast.ops.class_mean_distance._op import OP as CLASS_MEAN_DISTANCE
from ddfast.ops.dsa._op import OP as DSA_PASS
from ddfast.ops.dsa.plan import geometry, plan_passes
from ddfast.ops.grad_distance._op import OP as GRAD_DISTANCE
from ddfast.ops.mmd._op import OP as MMD


def _calls():
    g_syn, g_real = [torch.randn(3, 4, requires_grad=True)], [torch.randn(3, 4)]
    f_syn, labels = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 0, 1])
    images = torch.randn(2, 3, 8, 8, requires_grad=True)
    params = ddfast.dsa_sample(2, "rotate", torch.Generator().manual_seed(0))
    acts, means, variances = [torch.randn(4, 3, requires_grad=True)], [torch.zeros(3)], [torch.ones(3)]
    return {
        "grad_distance": lambda: ddfast.grad_distance(g_syn, g_real),
        "grad_distance custom op": lambda: GRAD_DISTANCE.op(g_syn, g_real, "ours", [1.0], False)[0],
        "class_mean_distance": lambda: ddfast.class_mean_distance(f_syn, labels, f_syn.detach(), labels, 2),
        "class_mean_distance custom op": lambda: CLASS_MEAN_DISTANCE.op(f_syn, labels, f_syn.detach(), labels, 2,
                                                                        False)[0],
        "mmd": lambda: ddfast.mmd(f_syn, f_syn.detach() + 1, sigmas=[1.0]),
        "class_mmd": lambda: ddfast.class_mmd(f_syn, labels, f_syn.detach(), labels, 2, sigmas=[1.0]),
        "mmd custom op": lambda: MMD.op(f_syn, f_syn.detach() + 1, None, None, "gaussian", [1.0], "biased"),
        "dsa (one pass)": lambda: ddfast.dsa(images, params).sum(),
        "dsa_pass custom op": lambda: DSA_PASS.op(images, params.table, None, [*plan_passes(params.families, False)[0]],
                                                  geometry(8, 8, params.config)).sum(),
        "bn_stat_loss": lambda: ddfast.bn_stat_loss(acts, means, variances),
        "bn_stat_loss custom op": lambda: BN_STAT_LOSS.op(acts, means, variances, [1.0])[0],
    }


@pytest.mark.parametrize("call", list(_calls()))
def test_backend_resolved_once_per_forward_and_backward(monkeypatch, call):
    resolved = []
    original = backends.OpDispatch.resolve
    monkeypatch.setattr(backends.OpDispatch, "resolve", lambda self, *a, **k: resolved.append(self.op) or
                        original(self, *a, **k))
    _calls()[call]().backward()
    assert len(resolved) == 1


def test_eager_path_of_a_tensor_list_op_is_the_registry_function():
    assert GRAD_DISTANCE.eager is not None and BN_STAT_LOSS.eager is not None
    assert CLASS_MEAN_DISTANCE.eager is None and MMD.eager is None and DSA_PASS.eager is None
    calls = _calls()
    assert type(calls["grad_distance"]().grad_fn).__name__ == "EagerGradDistanceBackward"
    assert type(calls["bn_stat_loss"]().grad_fn).__name__ == "EagerBnStatLossBackward"
    assert "ddfast_class_mean_distance" in type(calls["class_mean_distance"]().grad_fn).__name__
    assert "ddfast_mmd" in type(calls["mmd"]().grad_fn).__name__


def test_dispatch_table_keeps_the_name_of_the_op_package():
    """dsa's op is dsa_pass; backends_ran, ddfast info and gpu_validated.json know its backends as dsa."""
    assert DSA_PASS.dispatch.op == "dsa" and MMD.dispatch.op == "mmd" and BN_STAT_LOSS.dispatch.op == "bn_stat_loss"
    backends.backends_ran(reset=True)
    _calls()["dsa (one pass)"]().backward()
    assert list(backends.backends_ran(reset=True)) == ["dsa"]


def test_a_stale_record_is_not_taken_for_another_output():
    """The kernel hands its backend to setup_context with its first output: an output of an earlier
    call (here under another backend, without autograd) must not decide the backward's backend."""
    f_syn, labels = torch.randn(4, 5), torch.tensor([0, 1, 0, 1])
    with ddfast.use_backend("reference"), torch.no_grad():
        kept = CLASS_MEAN_DISTANCE.op(f_syn, labels, f_syn, labels, 2, False)  # noqa: F841 - alive on purpose
    assert CLASS_MEAN_DISTANCE._last_run.record[0] == "reference"

    class Ctx:
        def save_for_backward(self, *tensors):
            pass

    ctx = Ctx()
    CLASS_MEAN_DISTANCE._setup_context(ctx, (f_syn, labels, f_syn, labels, 2, False),
                                       (torch.zeros(()), torch.zeros(2, 5), torch.zeros(2, 2)))
    assert ctx.backend == CLASS_MEAN_DISTANCE.dispatch.resolve(f_syn.device, f_syn.dtype)[0]


@pytest.mark.parametrize("schema, message", [("(Tensor backend) -> (Tensor, Tensor)", "clash with Saved's attributes"),
                                             ("(Tensor a, Tensor[] b) -> Tensor", "all tensors or all tensor lists")])
def test_declarations_the_registry_refuses(schema, message):
    """Checked before anything is registered."""
    with pytest.raises(ValueError, match=message):
        FusedOp(name="registry_test_refused", package="ddfast.ops.class_mean_distance", backends=("reference",),
                forward_schema=schema, backward_schema="(Tensor g) -> Tensor", fake_forward=None,
                fake_backward=None, saved_outputs={}, grads_of=(), backward=None)
    assert not hasattr(torch.ops.ddfast, "registry_test_refused")


def test_saved_as_renames_only_non_tensor_arguments():
    with pytest.raises(ValueError, match=r"saved_as renames \['x'\], which are not non-tensor arguments"):
        FusedOp(name="registry_test_saved_as", package="ddfast.ops.class_mean_distance", backends=("reference",),
                forward_schema="(Tensor x, str kernel) -> Tensor", backward_schema="(Tensor g) -> Tensor",
                fake_forward=None, fake_backward=None, saved_outputs={}, grads_of=(), backward=None,
                saved_as={"x": "y"})
