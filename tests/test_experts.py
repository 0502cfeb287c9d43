"""Expert trajectories: MTT's replay_buffer layout on disk (round trip, atomic writes, listing) and
train_experts (MTT buffer.py's SGD training; snapshots, determinism, hooks, bad inputs)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import ddfast
from ddfast.experts import (ExpertHooks, expert_files, flatten_snapshot, load_buffer, next_buffer_path, save_buffer,
                            train_experts)
from ddfast.models import ConvNet

from conftest import seeded


def _mtt_buffer(seed=0, experts=2, epochs=3):
    """A buffer as MTT's buffer.py builds it: trajectories of epochs + 1 lists of per-parameter tensors."""
    g = seeded(seed)
    shapes = [(4, 2, 3, 3), (4,), (5, 16), (5,)]
    return [[[torch.randn(s, generator=g) for s in shapes] for _ in range(epochs + 1)] for _ in range(experts)]


def _assert_same_buffer(got, want):
    assert type(got) is list and len(got) == len(want)
    for tg, tw in zip(got, want):
        assert type(tg) is list and len(tg) == len(tw)
        for sg, sw in zip(tg, tw):
            assert type(sg) is list and len(sg) == len(sw)
            for pg, pw in zip(sg, sw):
                assert pg.device.type == "cpu" and pg.dtype == pw.dtype and torch.equal(pg, pw)


# ---------------------------------------------------------------- the buffer files

def test_mtt_written_buffer_loads_and_round_trips(tmp_path):
    buffer = _mtt_buffer()
    torch.save(buffer, tmp_path / "replay_buffer_0.pt")  # exactly what buffer.py does
    loaded = load_buffer(tmp_path / "replay_buffer_0.pt")
    _assert_same_buffer(loaded, buffer)
    save_buffer(tmp_path / "replay_buffer_1.pt", loaded)
    # what MTT's distill.py reads back: a plain torch.load of nested lists
    _assert_same_buffer(torch.load(tmp_path / "replay_buffer_1.pt", weights_only=True), buffer)
    assert sorted(os.listdir(tmp_path)) == ["replay_buffer_0.pt", "replay_buffer_1.pt"]  # no temporary left


def test_save_buffer_converts_tuples_and_detaches(tmp_path):
    buffer = _mtt_buffer(1, experts=1, epochs=1)
    as_tuples = tuple(tuple(tuple(p.requires_grad_(True) * 1 for p in s) for s in t) for t in buffer)
    save_buffer(tmp_path / "b.pt", as_tuples)
    loaded = torch.load(tmp_path / "b.pt", weights_only=True)
    _assert_same_buffer(loaded, buffer)
    assert not loaded[0][0][0].requires_grad


def test_save_buffer_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "replay_buffer_0.pt"
    save_buffer(path, _mtt_buffer(0))
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_buffer(path, _mtt_buffer(1))
    with pytest.raises(RuntimeError, match="disk full"):
        save_buffer(tmp_path / "replay_buffer_1.pt", _mtt_buffer(1))
    assert sorted(os.listdir(tmp_path)) == ["replay_buffer_0.pt"]
    assert path.read_bytes() == before


def test_expert_files_numeric_order_and_next_path(tmp_path):
    assert expert_files(tmp_path) == []
    assert next_buffer_path(tmp_path) == os.path.join(tmp_path, "replay_buffer_0.pt")
    for n in (10, 2, 0, 1):
        (tmp_path / f"replay_buffer_{n}.pt").write_bytes(b"")
    for other in ("replay_buffer_x.pt", "replay_buffer_3.pt.tmp", ".replay_buffer_4.pt.abc.tmp", "buffer_5.pt"):
        (tmp_path / other).write_bytes(b"")
    (tmp_path / "replay_buffer_7.pt").mkdir()
    assert expert_files(tmp_path) == [os.path.join(tmp_path, f"replay_buffer_{n}.pt") for n in (0, 1, 2, 10)]
    assert next_buffer_path(tmp_path) == os.path.join(tmp_path, "replay_buffer_3.pt")


@pytest.mark.parametrize("mutate, error, match", [
    (lambda b: b[0], TypeError, r"\[0\]\[0\] must be a list of parameter tensors, got Tensor"),
    (lambda b: b[0][0][0], TypeError, "must be a list of trajectories, got Tensor"),
    (lambda b: [], ValueError, "has no trajectories"),
    (lambda b: [b[0], []], ValueError, r"\[1\] has no snapshots"),
    (lambda b: [b[0], [b[1][0], b[1][1][:3]]], ValueError, r"\[1\]\[1\] has 3 parameter tensors but .*\[0\]\[0\] has 4"),
    (lambda b: [b[0], [b[1][0], b[1][1][:2] + [torch.zeros(5, 15), b[1][1][3]]]], ValueError,
     r"\[1\]\[1\]\[2\] has shape \(5, 15\) but .*\[0\]\[0\]\[2\] has \(5, 16\)"),
    (lambda b: [[[torch.zeros(3, dtype=torch.int64)]]], TypeError, r"\[0\]\[0\]\[0\] has dtype torch.int64"),
    (lambda b: [[[1.0, 2.0]]], TypeError, r"\[0\]\[0\]\[0\] must be a torch.Tensor"),
    (lambda b: [[[]]], ValueError, r"\[0\]\[0\] has no parameter tensors"),
    (lambda b: {"a": b}, TypeError, "must be a list of trajectories"),
])
def test_bad_buffers_raise_on_load_and_save(tmp_path, mutate, error, match):
    bad = mutate(_mtt_buffer(2))
    path = tmp_path / "replay_buffer_0.pt"
    torch.save(bad, path)
    with pytest.raises(error, match=match) as info:
        load_buffer(path)
    assert "replay_buffer_0.pt" in str(info.value)
    with pytest.raises(error, match=match):
        save_buffer(tmp_path / "replay_buffer_1.pt", bad)
    assert not (tmp_path / "replay_buffer_1.pt").exists()


def test_load_buffer_refuses_pickled_code_and_names_the_file(tmp_path):
    path = tmp_path / "replay_buffer_0.pt"
    torch.save([[[torch.zeros(2)]], nn.Linear(2, 2)], path)  # a module is not weights-only content
    with pytest.raises(ValueError, match="could not load .*replay_buffer_0.pt.*weights_only=True"):
        load_buffer(path)
    with pytest.raises(FileNotFoundError):
        load_buffer(tmp_path / "missing.pt")


def test_flatten_snapshot_is_mtts_flat_vector():
    module = _tiny_net()
    snapshot = [torch.randn(p.shape, generator=seeded(3)) for p in module.parameters()]
    flat = flatten_snapshot(snapshot, module)
    assert torch.equal(flat, torch.cat([p.reshape(-1) for p in snapshot]))  # distill.py's torch.cat
    assert torch.equal(flatten_snapshot(snapshot, ddfast.FlatModel(module)), flat)
    with pytest.raises(ValueError, match="params has 3 tensors"):
        flatten_snapshot(snapshot[:3], module)


# ---------------------------------------------------------------- training

def _tiny_net():
    return ConvNet(1, 4, net_width=4, net_depth=2, im_size=(8, 8))


def _toy_data(n=24, seed=0):
    """A learnable toy problem: the class is which quadrant of the 8x8 image is brightest."""
    g = seeded(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        images[i, 0, 4 * r:4 * r + 4, 4 * col:4 * col + 4] += 1.5
    return images, labels


def _train(seed=0, **kwargs):
    images, labels = _toy_data()
    kwargs.setdefault("batch_size", 10)
    return train_experts(_tiny_net, images, labels, kwargs.pop("num_experts", 2), kwargs.pop("epochs", 2),
                         generator=seeded(seed), progress=False, **kwargs)


def test_snapshots_count_shapes_and_copies():
    trajectories = _train()
    shapes = [p.shape for p in _tiny_net().parameters()]
    assert len(trajectories) == 2
    for trajectory in trajectories:
        assert len(trajectory) == 3  # epochs + 1
        for snapshot in trajectory:
            assert [p.shape for p in snapshot] == shapes
            assert all(p.device.type == "cpu" and not p.requires_grad for p in snapshot)
        # each snapshot is its own copy (buffer.py's p.detach().cpu() would alias on the CPU)
        assert not torch.equal(trajectory[0][0], trajectory[1][0])
        assert not torch.equal(trajectory[1][0], trajectory[2][0])
    assert not torch.equal(trajectories[0][0][0], trajectories[1][0][0])  # fresh initialisation per expert


def test_deterministic_per_seed_and_global_rng_untouched():
    state = torch.get_rng_state()
    first, again, other = _train(0), _train(0), _train(1)
    assert torch.equal(torch.get_rng_state(), state)
    _assert_same_buffer(again, first)
    assert not torch.equal(other[0][0][0], first[0][0][0])


def test_one_full_batch_epoch_is_an_sgd_step_on_mean_cross_entropy():
    """1 expert, 1 epoch, batch >= N: theta_1 = theta_0 - lr * (g + weight_decay * theta_0) with g the
    gradient of the mean cross-entropy, written out for a linear softmax classifier in fp64."""
    g = seeded(7)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    lr, wd = 0.2, 0.05
    (w0, b0), (w1, b1) = train_experts(lambda: nn.Linear(5, 3).double(), x, y, 1, 1, lr=lr, momentum=0.9,
                                       weight_decay=wd, batch_size=8, generator=seeded(8), progress=False)[0]
    p = torch.softmax(x @ w0.T + b0, dim=1)
    residual = (p - nn.functional.one_hot(y, 3).double()) / 6  # d mean CE / d logits
    gw, gb = residual.T @ x, residual.sum(0)
    torch.testing.assert_close(w1, w0 - lr * (gw + wd * w0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b1, b0 - lr * (gb + wd * b0), rtol=1e-12, atol=1e-14)


def test_loss_decreases_on_a_learnable_problem():
    losses = []
    hooks = ExpertHooks(epoch_end=lambda expert, epoch, model, opt, loss: losses.append(loss))
    trajectories = _train(num_experts=1, epochs=6, lr=0.05, momentum=0.9, batch_size=8, hooks=hooks)
    assert len(losses) == 6 and losses[-1] < 0.6 * losses[0]
    images, labels = _toy_data()
    flat = ddfast.FlatModel(_tiny_net())

    def loss_at(snapshot):
        return float(nn.functional.cross_entropy(flat(flatten_snapshot(snapshot, flat), images), labels))

    assert loss_at(trajectories[0][-1]) < 0.6 * loss_at(trajectories[0][0])


def test_hooks_and_augment_are_called():
    calls = {"loss": 0, "optimizer": 0, "epochs": [], "augment": 0}
    gen_seen = []

    def loss(model, x, y, logits, raw):
        calls["loss"] += 1
        assert isinstance(model, nn.Module) and logits.shape == (x.shape[0], 4) and y.shape == (x.shape[0],)
        assert raw.shape == x.shape and not torch.equal(raw, x)  # the batch before augmentation
        return 2.0 * nn.functional.cross_entropy(logits, y)

    class TwoEvaluationSGD(torch.optim.SGD):
        """Evaluates the closure twice per step, as sharpness-aware optimisers do."""

        def step(self, closure):
            closure()
            return super().step(closure)

    def optimizer(params):
        calls["optimizer"] += 1
        assert all(isinstance(p, nn.Parameter) for p in params)
        return TwoEvaluationSGD(params, lr=0.01)

    def augment(x, generator):
        calls["augment"] += 1
        gen_seen.append(generator)
        return x + 0.01 * torch.randn(x.shape, generator=generator)

    hooks = ExpertHooks(loss=loss, optimizer=optimizer,
                        epoch_end=lambda e, ep, m, o, l: calls["epochs"].append((e, ep, type(o).__name__)))
    first = _train(3, hooks=hooks, augment=augment)
    batches = 3 * 2 * 2  # ceil(24 / 10) batches x epochs x experts
    assert calls["augment"] == batches and calls["loss"] == 2 * batches and calls["optimizer"] == 2
    assert calls["epochs"] == [(0, 0, "TwoEvaluationSGD"), (0, 1, "TwoEvaluationSGD"),
                               (1, 0, "TwoEvaluationSGD"), (1, 1, "TwoEvaluationSGD")]
    assert len({id(g) for g in gen_seen}) == 1 and isinstance(gen_seen[0], torch.Generator)
    _assert_same_buffer(_train(3, hooks=hooks, augment=augment), first)  # augmentation replays from the seed
    assert not torch.equal(_train(3)[0][1][0], first[0][1][0])  # the hooks changed the training


def test_progress_bar_runs(capsys):
    images, labels = _toy_data(8)
    out = train_experts(_tiny_net, images, labels, 1, 1, batch_size=8, generator=seeded(0), progress=True)
    assert len(out) == 1 and len(out[0]) == 2


_IMAGES, _LABELS = _toy_data(8)


@pytest.mark.parametrize("change, error, match", [
    ({"model_fn": 3}, TypeError, "model_fn must be a callable"),
    ({"model_fn": lambda: "net"}, TypeError, "model_fn must return an nn.Module"),
    ({"images": _IMAGES.long()}, TypeError, "images has dtype torch.int64"),
    ({"images": [1.0]}, TypeError, "images must be a torch.Tensor"),
    ({"images": _IMAGES[:0]}, ValueError, "images must be"),
    ({"labels": _LABELS.float()}, TypeError, "labels must have dtype torch.int64"),
    ({"labels": _LABELS[:5]}, ValueError, "labels must be 1-D with one label per row of images"),
    ({"labels": _LABELS[:, None]}, ValueError, "labels must be 1-D with one label per row of images"),
    ({"labels": _LABELS - 5}, ValueError, r"labels has label -\d outside"),
    ({"labels": _LABELS * 0 + 4}, ValueError, "labels has label 4 but the model gives 4 class scores"),
    ({"num_experts": 0}, ValueError, "num_experts must be at least 1"),
    ({"epochs": 2.0}, TypeError, "epochs must be an int"),
    ({"batch_size": 0}, ValueError, "batch_size must be at least 1"),
    ({"lr": 0.0}, ValueError, "lr must be positive"),
    ({"lr": float("nan")}, ValueError, "lr must be positive and finite"),
    ({"momentum": -0.1}, ValueError, "momentum must be non-negative"),
    ({"weight_decay": "0"}, TypeError, "weight_decay must be a real number"),
    ({"augment": 1}, TypeError, "augment must be callable"),
    ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ({"hooks": ExpertHooks(loss=1)}, TypeError, "hooks.loss must be callable"),
])
def test_bad_training_inputs_raise(change, error, match):
    kwargs = dict(model_fn=_tiny_net, images=_IMAGES, labels=_LABELS, num_experts=1, epochs=1,
                  generator=seeded(0), progress=False)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        train_experts(**kwargs)


def test_public_names():
    assert ddfast.train_experts is train_experts and ddfast.save_buffer is save_buffer
    assert ddfast.load_buffer is load_buffer and ddfast.ExpertHooks is ExpertHooks
    assert {"train_experts", "save_buffer", "load_buffer", "FlatModel"} <= set(ddfast.__all__)


@pytest.mark.gpu
def test_train_experts_on_cuda_keeps_cpu_snapshots_and_learns():
    """CPU data, CUDA training (buffer.py's arrangement): CPU snapshots of the right shapes, the loss falls,
    and ReparamModule on CUDA runs a snapshot with the module's outputs."""
    from ddfast.compat.mtt import ReparamModule

    losses = []
    hooks = ExpertHooks(epoch_end=lambda expert, epoch, model, opt, loss: losses.append(loss))
    trajectories = _train(num_experts=1, epochs=6, lr=0.05, momentum=0.9, batch_size=8, hooks=hooks, device="cuda")
    assert all(p.device.type == "cpu" for snapshot in trajectories[0] for p in snapshot)
    assert losses[-1] < 0.6 * losses[0]
    module = _tiny_net().cuda()
    net = ReparamModule(module)
    theta = flatten_snapshot(trajectories[0][-1], module).cuda()
    torch.nn.utils.vector_to_parameters(theta, module.parameters())
    images, _ = _toy_data()
    torch.testing.assert_close(net(images.cuda(), flat_param=theta), module(images.cuda()), rtol=1e-5, atol=1e-5)
