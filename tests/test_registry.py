"""The op registry (ddfast/ops/_registry.py): one backend resolution per forward, kept for its backward;
the eager path of a tensor-list op is the registry's autograd.Function, the custom op otherwise."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast import _ext, backends
from ddfast.backends import BackendUnavailableError
from ddfast.ops._registry import FusedOp
from ddfast.ops.adjoint_step._op import OP as ADJOINT_STEP
from ddfast.ops.bn_stat_loss._op import OP as BN_STAT_LOSS
from ddfast.ops.class_mean_distance._op import OP as CLASS_MEAN_DISTANCE
from ddfast.ops.dsa._op import OP as DSA_PASS
from ddfast.ops.dsa.plan import geometry, plan_passes
from ddfast.ops.grad_distance._op import OP as GRAD_DISTANCE
from ddfast.ops.kmeans import reference as kmeans_reference
from ddfast.ops.kmeans._op import ASSIGN as KMEANS_ASSIGN
from ddfast.ops.kmeans._op import NEAREST as KMEANS_NEAREST
from ddfast.ops.kmeans._op import UPDATE as KMEANS_UPDATE
from ddfast.ops.mmd._op import OP as MMD
from ddfast.ops.sgd_step._op import OP as SGD_STEP


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


def test_an_op_without_derivative_raises_its_reason():
    """``backward=None`` with ``not_differentiable``: no backward op, and an autograd formula that raises."""
    assert ADJOINT_STEP.backward_op is None and not hasattr(torch.ops.ddfast, "adjoint_step_backward")
    lam = torch.randn(5, requires_grad=True)
    u, _ = ddfast.adjoint_step(lam, None, torch.randn(5), 0.1)
    with pytest.raises(RuntimeError, match=r"^ddfast\.adjoint_step is not differentiable: it is the vector work of a "
                                           r"backward pass \(use sgd_step"):
        u.sum().backward()


def test_an_op_without_derivative_or_reason_has_no_autograd_formula():
    """The k-means steps: no backward op and no autograd registration (torch.library's own error)."""
    assert KMEANS_ASSIGN.backward_op is None and not hasattr(torch.ops.ddfast, "kmeans_assign_backward")
    x = torch.randn(6, 2, requires_grad=True)
    _, distance = KMEANS_ASSIGN.op(x, torch.randn(1, 2, 2), torch.tensor([0, 6]), True)
    with pytest.raises(RuntimeError, match="no autograd formula was registered"):
        distance.sum().backward()


def test_entry_names_the_backend_function(monkeypatch):
    seen, original = [], kmeans_reference.update
    monkeypatch.setattr(kmeans_reference, "update", lambda *args: seen.append(len(args)) or original(*args))
    x, centroids = torch.randn(6, 2), torch.randn(1, 2, 2)
    with ddfast.use_backend("reference"):
        new, counts = KMEANS_UPDATE(x, torch.tensor([0, 1, 0, 1, 1, 0]), torch.tensor([0, 6]), centroids)
    assert seen == [4] and counts.tolist() == [[3, 3]]


def test_declarations_sharing_a_dispatch_table():
    """The three k-means steps resolve, report and are validated as one table, ``kmeans``."""
    assert KMEANS_ASSIGN.dispatch is KMEANS_UPDATE.dispatch is KMEANS_NEAREST.dispatch
    names = [dispatch.op for dispatch in backends.registered_ops()]
    assert names.count("kmeans") == 1 and not [name for name in names if name.startswith("kmeans_")]
    backends.backends_ran(reset=True)
    with ddfast.use_backend("reference"):
        KMEANS_NEAREST(torch.randn(6, 2), torch.randn(1, 2, 2), torch.tensor([0, 6]), torch.zeros(0, dtype=torch.bool))
    assert backends.backends_ran(reset=True) == {"kmeans": ["reference"]}


@pytest.mark.skipif(not _ext.has_cpp(), reason="needs the cpp backend as the context's choice")
def test_a_backend_argument_runs_that_backend():
    lam, direction, lr = torch.randn(5), torch.randn(5), torch.tensor(0.1)
    backends.backends_ran(reset=True)
    with ddfast.use_backend("cpp"):
        ADJOINT_STEP.op(lam, None, direction, lr, 0.0, False, "reference")
        assert backends.backends_ran(reset=True) == {"adjoint_step": ["reference"]}
        ADJOINT_STEP.op(lam, None, direction, lr, 0.0, False, "")  # "": the caller's context
        assert backends.backends_ran(reset=True) == {"adjoint_step": ["cpp"]}
    with pytest.raises(BackendUnavailableError, match="'cuda' \\(requested by the forward pass\\) cannot run"):
        ADJOINT_STEP.op(lam, None, direction, lr, 0.0, False, "cuda")


def test_a_backward_with_another_op_runs_it_on_the_forward_backend(monkeypatch):
    """sgd_step has no backward op of its own: its backward runs ddfast::adjoint_step, handed the backend its
    forward resolved (here outside the use_backend block that chose it)."""
    assert SGD_STEP.backward_op is ADJOINT_STEP.op and not hasattr(torch.ops.ddfast, "sgd_step_backward")
    calls, original = [], backends.OpDispatch.resolve
    monkeypatch.setattr(backends.OpDispatch, "resolve", lambda self, device, dtype, requested=None:
                        calls.append((self.op, requested and requested[0])) or original(self, device, dtype, requested))
    grad = torch.randn(6, requires_grad=True)
    with ddfast.use_backend("reference"):
        theta = ddfast.sgd_step(torch.randn(6), grad, 0.5)
    theta.sum().backward()
    assert calls == [("sgd_step", None), ("adjoint_step", "reference")]
    assert torch.equal(grad.grad, torch.full((6,), -0.5))


def test_saved_inputs_limit_what_setup_context_keeps():
    """sgd_step's backward reads grad and lr (and v'), not theta or velocity: only those are kept alive."""
    theta, grad, lr = torch.randn(5), torch.randn(5, requires_grad=True), torch.tensor(0.1, requires_grad=True)
    velocity = torch.randn(5)
    for with_velocity in (False, True):
        out = ddfast.sgd_step(theta, grad, lr, velocity, 0.9) if with_velocity else ddfast.sgd_step(theta, grad, lr)
        first = out[0] if with_velocity else out
        saved = [t.data_ptr() for t in first.grad_fn.saved_tensors]
        assert saved[:2] == [grad.data_ptr(), lr.data_ptr()] and len(saved) == 3  # then v' (empty in plain SGD)
        assert theta.data_ptr() not in saved and velocity.data_ptr() not in saved


def _bare_backward(s, *grads):
    return ()


@pytest.mark.parametrize("fields, message", [
    ({"grads_of": ("a",)}, "an op without a backward declares no backward_schema"),
    ({"backward": _bare_backward, "backward_schema": "(Tensor g) -> Tensor", "backward_with": ADJOINT_STEP},
     "exactly one"),
    ({"backward": _bare_backward}, "exactly one"),
    ({"backward": _bare_backward, "backward_with": SGD_STEP}, r"\(sgd_step\) must take a backend argument"),
    ({"backward": _bare_backward, "backward_schema": "(Tensor g) -> Tensor", "not_differentiable": "no"},
     "neither not_differentiable nor a backend argument"),
    ({"backend_argument": True}, "needs 'str backend' last"),
    ({"saved_inputs": ("a",)}, "an op without a backward declares no"),
    ({"backward": _bare_backward, "backward_schema": "(Tensor g) -> Tensor", "saved_inputs": ("b",)},
     "must name tensor inputs"),
    ({"dispatch_as": "kmeans"}, "the dispatch table 'kmeans' it shares was declared with another package"),
])
def test_backward_and_dispatch_fields_the_registry_refuses(fields, message):
    """Checked before anything is registered."""
    with pytest.raises(ValueError, match=message):
        FusedOp(name="registry_test_refused", package="ddfast.ops.param_match_loss", backends=("reference",),
                forward_schema="(Tensor a) -> Tensor", fake_forward=None, **fields)
    assert not hasattr(torch.ops.ddfast, "registry_test_refused")
    assert "registry_test_refused" not in [dispatch.op for dispatch in backends.registered_ops()]


def test_saved_as_renames_only_non_tensor_arguments():
    with pytest.raises(ValueError, match=r"saved_as renames \['x'\], which are not non-tensor arguments"):
        FusedOp(name="registry_test_saved_as", package="ddfast.ops.class_mean_distance", backends=("reference",),
                forward_schema="(Tensor x, str kernel) -> Tensor", backward_schema="(Tensor g) -> Tensor",
                fake_forward=None, fake_backward=None, saved_outputs={}, grads_of=(), backward=None,
                saved_as={"x": "y"})
