"""ddfast.compat.mtt.ReparamModule behaves as MTT's (reparam_module.py): same outputs and gradients as
the wrapped module, MTT's flat layout, ``flat_param=`` calls, buffers, the inner-loop meta-gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ddfast.compat.mtt import ReparamModule
from ddfast.models import ConvNet

from conftest import seeded


def _mtt_layout(module: nn.Module) -> list[str]:
    """MTT's parameter order, transcribed from its constructor's description: modules in
    ``named_modules()`` order, each module's own parameters, a shared parameter only at its first place."""
    seen, names = set(), []
    for mn, m in module.named_modules():
        for n, p in m.named_parameters(recurse=False):
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                names.append(f"{mn}.{n}" if mn else n)
    return names


class _Tied(nn.Module):
    """A tied weight (one Parameter in two Linears), a BatchNorm (buffers), a parameter on the root
    module and one module registered under two names."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.emb = nn.Linear(6, 4, bias=False)
        self.bn = nn.BatchNorm1d(4)
        self.mix = nn.Linear(4, 4)
        self.mix2 = nn.Linear(4, 4, bias=False)
        self.mix2.weight = self.mix.weight
        self.head = nn.Linear(4, 3)
        self.head2 = self.head

    def forward(self, x):
        h = torch.tanh(self.bn(self.emb(x)))
        return self.head2(self.mix2(torch.tanh(self.mix(h))) * self.scale)


def _tiny_convnet(norm="instancenorm"):
    torch.manual_seed(0)
    return ConvNet(2, 5, net_width=6, net_depth=2, net_norm=norm, im_size=(8, 8))


def _load_flat(module: nn.Module, theta: torch.Tensor) -> nn.Module:
    """A copy of ``module`` whose parameters hold ``theta`` (MTT's order), for comparisons."""
    clone = copy.deepcopy(module)
    torch.nn.utils.vector_to_parameters(theta.detach().clone(), clone.parameters())
    return clone


@pytest.mark.parametrize("factory", [_tiny_convnet, lambda: _tiny_convnet("batchnorm"), _Tied])
def test_layout_is_mtts_and_named_parameters(factory):
    module = factory()
    net = ReparamModule(module)
    names = [n for n, _ in module.named_parameters()]
    assert list(net._param_names) == names == _mtt_layout(module)
    assert net.param_numel == sum(p.numel() for p in module.parameters())
    # distill.py's num_params = sum of numel over net.parameters() equals MTT's single flat_param's size
    assert sum(p.numel() for p in net.parameters()) == net.param_numel
    assert torch.equal(net.flat_param, torch.cat([p.detach().reshape(-1) for p in module.parameters()]))


@pytest.mark.parametrize("factory", [_tiny_convnet, lambda: _tiny_convnet("batchnorm"), _Tied])
def test_outputs_and_gradients_equal_the_module(factory):
    module = factory()
    net = ReparamModule(module)
    g = seeded(1)
    x = torch.randn(5, 2, 8, 8, generator=g) if isinstance(module, ConvNet) else torch.randn(5, 6, generator=g)
    theta = (net.flat_param.detach() + 0.1 * torch.randn(net.param_numel, generator=g)).requires_grad_(True)
    twin = _load_flat(module, theta)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, want = net(x1, flat_param=theta), twin(x2)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    w = torch.randn(out.shape, generator=g)
    (out * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(theta.grad, torch.cat([p.grad.reshape(-1) for p in twin.parameters()]),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    # no flat_param: the module's own parameters (MTT: its registered flat_param)
    torch.testing.assert_close(net(x), module(x), rtol=0, atol=0)


def test_tied_parameter_follows_theta():
    module = _Tied().eval()
    net = ReparamModule(module)
    assert "mix2.weight" not in net._param_names and "head2.weight" not in net._param_names
    x = torch.randn(3, 6, generator=seeded(6))
    theta = net.flat_param.detach().clone()
    w = net.unflatten(theta)["mix.weight"]
    w.zero_()  # both uses of the tied weight read it from theta: mix gives its bias, mix2 gives 0
    want = module.head.bias.detach().expand(3, 3)
    torch.testing.assert_close(net(x, flat_param=theta), want, rtol=0, atol=0)


def test_leading_unit_dimension_is_squeezed_and_others_rejected():
    module = _tiny_convnet()
    net = ReparamModule(module)
    x = torch.randn(2, 2, 8, 8, generator=seeded(2))
    theta = net.flat_param.detach() * 0.5
    torch.testing.assert_close(net(x, flat_param=theta[None]), net(x, flat_param=theta), rtol=0, atol=0)
    with pytest.raises(ValueError, match="flat_param must be a flat vector"):
        net(x, flat_param=theta[None].expand(2, -1))
    with pytest.raises(ValueError, match="flat_param must be a flat vector"):
        net(x, flat_param=theta[:-1])
    with pytest.raises(TypeError, match="flat_param must be a torch.Tensor"):
        net(x, flat_param=theta.tolist())


def test_buffers_replace_running_statistics():
    module = _tiny_convnet("batchnorm").eval()
    net = ReparamModule(module)
    g = seeded(3)
    x = torch.randn(3, 2, 8, 8, generator=g)
    names = [n for n, _ in module.named_buffers()]
    new = [torch.rand(b.shape, generator=g) + 0.5 if b.is_floating_point() else b.clone()
           for _, b in module.named_buffers()]
    twin = copy.deepcopy(module)
    twin.load_state_dict(dict(zip(names, new)), strict=False)
    theta = net.flat_param.detach()
    torch.testing.assert_close(net(x, flat_param=theta, buffers=new), twin(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net(x, buffers=new), twin(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="buffers has 1 tensors"):
        net(x, buffers=new[:1])
    with pytest.raises(TypeError, match=r"buffers\[0\] must be a torch.Tensor"):
        net(x, buffers=[1.0] + new[1:])


def test_mtt_inner_step_meta_gradient_matches_a_hand_written_mlp():
    """One MTT inner step through ReparamModule (theta_1 = theta_0 - lr * dCE/dtheta with create_graph,
    then MTT's normalised parameter loss) against the same computation written out for a 2-layer MLP in
    fp64: the loss and its gradients with respect to the images and the learnable lr agree."""
    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    net = ReparamModule(module)
    g = seeded(4)
    theta0 = torch.randn(net.param_numel, generator=g, dtype=torch.float64) * 0.5
    target = torch.randn(net.param_numel, generator=g, dtype=torch.float64) * 0.5
    y = torch.tensor([0, 2, 1, 2])
    x0 = torch.randn(4, 5, generator=g, dtype=torch.float64)

    def by_hand(x, lr):
        theta = theta0.clone().requires_grad_(True)
        w1, b1, w2, b2 = torch.split(theta, [35, 7, 21, 3])
        h = torch.tanh(x @ w1.view(7, 5).T + b1)
        logits = h @ w2.view(3, 7).T + b2
        ce = -(logits.log_softmax(1)[torch.arange(4), y]).mean()
        grad = torch.autograd.grad(ce, theta, create_graph=True)[0]
        theta1 = theta - lr * grad
        return ((theta1 - target) ** 2).sum() / ((theta0 - target) ** 2).sum()

    def with_reparam(x, lr):
        theta = theta0.clone().requires_grad_(True)
        ce = nn.functional.cross_entropy(net(x, flat_param=theta), y)
        grad = torch.autograd.grad(ce, theta, create_graph=True)[0]
        theta1 = theta - lr * grad
        return nn.functional.mse_loss(theta1, target, reduction="sum") / \
            nn.functional.mse_loss(theta0, target, reduction="sum")

    results = []
    for fn in (by_hand, with_reparam):
        x = x0.clone().requires_grad_(True)
        lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        loss = fn(x, lr)
        results.append((loss, *torch.autograd.grad(loss, (x, lr))))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_gradcheck_fp64():
    torch.manual_seed(5)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    net = ReparamModule(module)
    theta = torch.randn(net.param_numel, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, xx: net(xx, flat_param=t), (theta, x))


def test_module_mode_and_device_moves_follow_the_wrapper():
    module = _tiny_convnet("batchnorm")
    net = ReparamModule(module)
    net.eval()
    assert not module.training
    net.train()
    assert module.training
    net.double()
    assert net.flat_param.dtype == torch.float64
    assert all(b.dtype == torch.float64 for b in module.buffers() if b.is_floating_point())


def test_bad_modules_raise():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        ReparamModule(lambda x: x)
    with pytest.raises(ValueError, match="has no parameters"):
        ReparamModule(nn.ReLU())
    mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match="share one dtype"):
        ReparamModule(mixed)


# --- match_trajectory: distill.py's inner loop in one call -------------------------------------------------------

def _mtt_inner_loop(student_net, image_syn, label_syn, syn_lr, starting_params, target_params, args):
    """distill.py's block as its code documents it: minibatches from torch.randperm chunks (taken from the end),
    texture mode's rolled crops (two randint shifts per image and canvas sample), unseeded DiffAugment (the oracle
    of DC's draws), create_graph SGD steps, then param_loss / param_dist."""
    from dsa_cases import dc_diffaugment

    start = torch.cat([p.reshape(-1) for p in starting_params])
    target = torch.cat([p.reshape(-1) for p in target_params])
    params, chunks = [start.clone().requires_grad_(True)], []
    height, width = image_syn.shape[2] // args.canvas_size, image_syn.shape[3] // args.canvas_size
    for _ in range(args.syn_steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(len(image_syn)), args.batch_syn))
        index = chunks.pop()
        x, y = image_syn[index], label_syn[index]
        if args.texture:
            x = torch.cat([torch.stack([torch.roll(im, (torch.randint(height * args.canvas_size, (1,)),
                                                        torch.randint(width * args.canvas_size, (1,))), (1, 2))
                                        [:, :height, :width] for im in x]) for _ in range(args.canvas_samples)])
            y = torch.cat([y for _ in range(args.canvas_samples)])
        if args.dsa and not args.no_aug:
            x = dc_diffaugment(x, args.dsa_strategy, -1, args.dsa_param).to(image_syn.dtype)
        loss = nn.functional.cross_entropy(student_net(x, flat_param=params[-1]), y)
        grad = torch.autograd.grad(loss, params[-1], create_graph=True)[0]
        params.append(params[-1] - syn_lr * grad)
    return ((params[-1] - target) ** 2).sum() / ((start - target) ** 2).sum()


@pytest.mark.parametrize("texture", [False, True])
def test_match_trajectory_equals_mtts_inner_loop_and_leaves_the_rng_as_it(texture):
    from types import SimpleNamespace

    from ddfast.compat.dc import ParamDiffAug
    from ddfast.compat.mtt import match_trajectory

    from conftest import assert_close

    side = 16 if texture else 8
    args = SimpleNamespace(syn_steps=5, batch_syn=4, dsa=True, no_aug=False, dsa_param=ParamDiffAug(),
                           dsa_strategy="color_crop_cutout_flip_scale_rotate", texture=texture, canvas_size=2,
                           canvas_samples=2, distributed=False)
    torch.manual_seed(0)
    net = ReparamModule(ConvNet(3, 4, net_width=6, net_depth=1, im_size=(8, 8)).double())
    checkpoints = [[p.detach() + 0.05 * k * torch.randn_like(p) for p in net.module.parameters()] for k in range(3)]
    images = torch.randn(10, 3, side, side, dtype=torch.float64, generator=seeded(1))
    labels = torch.arange(10) % 4
    results = []
    for run in (_mtt_inner_loop, match_trajectory):
        image_syn = images.clone().requires_grad_()
        syn_lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(7)
        loss = run(net, image_syn, labels, syn_lr, checkpoints[0], checkpoints[2], args)
        state = torch.get_rng_state()
        loss.backward()
        results.append((loss.detach(), image_syn.grad, syn_lr.grad, state))
    (want, want_img, want_lr, want_state), (got, got_img, got_lr, got_state) = results
    assert torch.equal(got_state, want_state), "the global RNG is not where MTT's loop leaves it"
    assert got_img.abs().sum() > 0
    for g, w, what in ((got, want, "loss"), (got_img, want_img, "image gradient"), (got_lr, want_lr, "lr gradient")):
        # float32 tolerance: the DSA parameter table and param_match_loss's accumulation are float32
        assert_close(g.double(), w, torch.float32, what)


def test_match_trajectory_refuses_mtts_dataparallel_path():
    from types import SimpleNamespace

    from ddfast.compat.mtt import match_trajectory

    net = ReparamModule(ConvNet(3, 4, net_width=6, net_depth=1, im_size=(8, 8)))
    args = SimpleNamespace(syn_steps=2, batch_syn=2, dsa=False, no_aug=True, texture=False, distributed=True)
    with pytest.raises(ValueError, match="--distributed"):
        match_trajectory(net, torch.randn(4, 3, 8, 8), torch.arange(4), torch.tensor(0.01),
                         list(net.module.parameters()), list(net.module.parameters()), args)
