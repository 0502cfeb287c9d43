"""Drop-in replacements for DC's helpers (VICO-UoE/DatasetCondensation, utils.py), with DC's contracts.

``from ddfast.compat.dc import match_loss, distance_wb`` in place of DC's own: same signatures, results,
dtypes, devices and requires_grad, computed by the fused :func:`ddfast.grad_distance`.
``from ddfast.compat.dc import DiffAugment, ParamDiffAug``: DC's differentiable Siamese augmentation with
DC's defaults and DC's random draws (torch's global RNG, in DC's order), applied by the fused
:func:`ddfast.dsa`. Where DC calls ``exit()`` these raise ValueError; where DC fails with KeyError or
AttributeError they raise that type (a subclass with a clearer message). docs/compat.md lists every point.
"""

from __future__ import annotations

import math
import threading
import time
from functools import reduce

import torch
import torch.nn.functional as F
from torch import nn

from ..compiled import CompiledCall, autocast_mode, compile_mode
from ..models import VGG, AlexNet, ConvNet, LeNet, MLP, ResNet18
from ..ops.dsa import dsa
from ..ops.dsa import params as P
from ..ops.dsa.params import FAMILIES, IDENTITY, DSAConfig, DSAParams
from ..ops.grad_distance import grad_distance


def distance_wb(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor:
    """DC's per-tensor 'ours' distance (real gradient first): rows of conv/3-D/2-D gradients, sum of
    1 - cos per row with eps 1e-6 on the norm product, in the gradients' dtype. A 1-D tensor gives DC's
    constant ``tensor(0.)`` (float32, no gradient)."""
    if gwr.dim() == 1:
        return torch.tensor(0, dtype=torch.float, device=gwr.device)
    return grad_distance([gws], [gwr], metric="ours").to(torch.result_type(gwr, gws))


def match_loss(gw_syn, gw_real, args) -> torch.Tensor:
    """DC's ``match_loss(gw_syn, gw_real, args)`` for ``args.dis_metric`` 'ours', 'mse', 'cos' (and IDC's 'l1',
    not DC's). 'ours': a float32 scalar on ``args.device`` (DC accumulates into ``tensor(0.0)``; 1-D tensors
    add DC's constant 0, so a list of them gives a constant); 'mse'/'cos'/'l1': on the gradients' device in
    their dtype. An unknown metric raises ValueError (DC calls ``exit()``)."""
    metric = args.dis_metric
    if metric == "ours":
        total = torch.tensor(0.0).to(args.device)
        pairs = [(s, r) for s, r in zip(gw_syn, gw_real) if r.dim() != 1]
        if not pairs:
            return total
        return total + grad_distance([s for s, _ in pairs], [r for _, r in pairs], metric="ours").to(total)
    if metric not in ("mse", "cos", "l1"):
        raise ValueError(f"args.dis_metric must be 'ours', 'mse', 'cos' or 'l1' (IDC's, not DC's), got {metric!r} "
                         f"(DC's match_loss calls exit() here)")
    dtype = reduce(torch.promote_types, (g.dtype for g in (*gw_syn, *gw_real)))
    return grad_distance(list(gw_syn), list(gw_real), metric=metric).to(dtype)


# --- DSA: DiffAugment and ParamDiffAug -----------------------------------------------------------------------

class UnknownAugmentationError(KeyError):
    """A strategy names a family DC's DiffAugment does not have (DC raises KeyError from its family table)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


class ParamDiffAug:
    """DC's ``ParamDiffAug``: the same attributes and defaults. :func:`DiffAugment` sets ``batchmode`` and
    ``latestseed`` on it as DC's does (``latestseed`` counts DC's reseeds; -1 after an unseeded call)."""

    def __init__(self):
        self.aug_mode = "S"  # 'M': every family in order; 'S': one family per call
        self.prob_flip = 0.5
        self.ratio_scale = 1.2
        self.ratio_rotate = 15.0
        self.ratio_crop_pad = 0.125
        self.ratio_cutout = 0.5  # the cutout square is 0.5 x 0.5 of the image
        self.ratio_noise = 0.05
        self.brightness = 1.0
        self.saturation = 2.0
        self.contrast = 0.5


class _DCDraws:
    """DC's random draws for one DiffAugment call, made with DC's calls in DC's order on torch's global RNG
    (same functions, shapes, dtypes and devices), so the drawn values and the generators' states afterwards
    are DC's. A seeded call reseeds the global RNG with ``param.latestseed`` and increments it before every
    draw (DC's ``set_seed_DiffAug``); an unseeded call (latestseed -1) never reseeds."""

    def __init__(self, x: torch.Tensor, param):
        self.x, self.param = x, param
        self.n, self.h, self.w = x.shape[0], x.shape[2], x.shape[3]

    def _reseed(self) -> None:
        if self.param.latestseed != -1:
            torch.random.manual_seed(self.param.latestseed)
            self.param.latestseed += 1

    def _rand(self, *shape, **where) -> torch.Tensor:
        self._reseed()
        return torch.rand(*shape, **where)

    def _randint(self, low: int, high: int) -> torch.Tensor:
        self._reseed()
        return torch.randint(low, high, size=[self.n, 1, 1], device=self.x.device)

    def choice(self, count: int) -> int:
        """'S' mode: the index of the one family this call applies."""
        self._reseed()
        return int(torch.randint(0, count, size=(1,)).item())

    def family(self, name: str) -> dict[int, torch.Tensor]:
        """One family's draws, as parameter-table columns ([N] float32 on x's device)."""
        p, n, x = self.param, self.n, self.x
        image = {"dtype": x.dtype, "device": x.device}
        if name == "color":
            b, s, c = (self._rand(n, 1, 1, 1, **image) for _ in range(3))
            cols = {P.BRIGHTNESS: (b - 0.5) * p.brightness, P.SATURATION: s * p.saturation, P.CONTRAST: c + p.contrast}
        elif name == "crop":
            sh, sw = int(self.h * p.ratio_crop_pad + 0.5), int(self.w * p.ratio_crop_pad + 0.5)
            th, tw = self._randint(-sh, sh + 1), self._randint(-sw, sw + 1)
            cols = {P.CROP_H: _uniform_of(th + sh, 2 * sh + 1), P.CROP_W: _uniform_of(tw + sw, 2 * sw + 1)}
        elif name == "cutout":
            ch, cw = int(self.h * p.ratio_cutout + 0.5), int(self.w * p.ratio_cutout + 0.5)
            oh, ow = self._randint(0, self.h + (1 - ch % 2)), self._randint(0, self.w + (1 - cw % 2))
            cols = {P.CUT_H: _uniform_of(oh, self.h + 1 - ch % 2), P.CUT_W: _uniform_of(ow, self.w + 1 - cw % 2),
                    P.CUT_ON: torch.ones(n, device=x.device)}
        elif name == "flip":
            cols = {P.FLIP: (self._rand(n, 1, 1, 1, device=x.device) < p.prob_flip)}
        elif name == "scale":
            lo = 1.0 / p.ratio_scale
            cols = {P.SCALE_X: self._rand(n) * (p.ratio_scale - lo) + lo,
                    P.SCALE_Y: self._rand(n) * (p.ratio_scale - lo) + lo}
        else:  # rotate
            cols = {P.ANGLE: (self._rand(n) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi}
        return {k: v.reshape(n).to(device=x.device, dtype=torch.float32) for k, v in cols.items()}


def _uniform_of(k: torch.Tensor, count: int) -> torch.Tensor:
    """The stored uniform that ddfast.dsa turns back into DC's integer k of ``count`` values (the bin's centre)."""
    return (k.to(torch.float32) + 0.5) / count


def DiffAugment(x: torch.Tensor, strategy: str = "", seed: int = -1, param=None) -> torch.Tensor:  # noqa: N802
    """DC's ``DiffAugment(x, strategy='', seed=-1, param=None)``, applied by the fused :func:`ddfast.dsa`.

    The contract is DC's: strategy '' (the default), 'none' or 'None' returns ``x`` itself; the parameters
    are drawn with DC's calls from torch's global RNG (``torch.manual_seed`` controls unseeded calls; a
    seeded call reseeds it with seed, seed + 1, ... before each draw and leaves it, and ``param.latestseed``,
    where DC's leaves them); a seeded call applies the first image's draws to the whole batch (Siamese: a
    real and a synthetic batch called with one seed get one augmentation), an unseeded call one set per
    image. ``param.aug_mode`` 'S' applies one family chosen at random, 'M' every family in strategy order.
    Differentiable in ``x``, twice too. Errors: see :func:`dc_draws`.
    """
    params = dc_draws(x, strategy, seed, param)
    return x if params is None else dsa(x, params)


def dc_draws(x: torch.Tensor, strategy: str = "", seed: int = -1, param=None) -> DSAParams | None:
    """The parameters DC's ``DiffAugment(x, strategy, seed, param)`` applies, drawn as it draws them (only x's
    shape, dtype and device are read), with ``param.batchmode`` and ``param.latestseed`` set as DC sets them; None
    where it returns ``x`` unchanged (no strategy, or no images). ``param=None`` raises AttributeError (DC reads
    ``param.batchmode`` first); an unknown family raises :class:`UnknownAugmentationError` (a KeyError, as DC's),
    before any draw; an unknown ``aug_mode`` raises ValueError where DC calls ``exit()``. Not DC's: a strategy
    naming a family twice raises ValueError (ddfast.dsa applies each family once)."""
    if param is None:
        raise AttributeError("DiffAugment needs param (DC's ParamDiffAug(), e.g. args.dsa_param); got None")
    param.batchmode = seed != -1
    param.latestseed = seed
    if strategy in ("None", "none") or not strategy or x.shape[0] == 0:
        return None
    families = strategy.split("_")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise UnknownAugmentationError(f"DiffAugment strategy {strategy!r} names unknown family "
                                       f"{', '.join(map(repr, unknown))}; DC's families are {FAMILIES}")
    if len(set(families)) != len(families):
        raise ValueError(f"DiffAugment strategy {strategy!r} names a family twice; ddfast applies each once")
    if param.aug_mode not in ("S", "M"):
        raise ValueError(f"unknown augmentation mode: param.aug_mode = {param.aug_mode!r} (DC accepts 'S' and "
                         f"'M'; DC's DiffAugment calls exit() here)")
    config = DSAConfig.of(param)
    draws = _DCDraws(x, param)
    if param.aug_mode == "S":
        families = [families[draws.choice(len(families))]]
    columns = {}
    for family in families:
        columns.update(draws.family(family))
    rows = 1 if param.batchmode else x.shape[0]  # seeded: DC copies the first image's draws to every image
    table = torch.tensor(IDENTITY, dtype=torch.float32, device=x.device).repeat(rows, 1)
    for column, values in columns.items():
        table[:, column] = values[:rows]
    return DSAParams(table, tuple(families), "shared" if rows == 1 else "sample", config)


# --- networks, training and evaluation: get_network, epoch, evaluate_synset, augment ------------------------
# Where a DC-structured run spends its time: the network. These keep DC's signatures and run the network calls
# that cannot be differentiated twice through ddfast.compiled (torch.compile where the device's measured rule
# says it is faster; DDFAST_COMPILE / ddfast.use_compile("off") turns it off).

_EXPECTED_CALLS = 10_000  # a drop-in cannot know the run's length: weigh compilation as for a long run


def _network_output(net, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` without the routing of :class:`CompiledCalls` (the function ddfast.compiled compiles)."""
    return net.eager_forward(x) if isinstance(net, CompiledCalls) else net(x)


def _network_embed(net, x: torch.Tensor) -> torch.Tensor:
    return net.eager_embed(x) if isinstance(net, CompiledCalls) else net.embed(x)


_CALLS: dict[tuple, CompiledCall] = {}


def _compiled(fn, path: str, net) -> CompiledCall:
    """One CompiledCall per (function, path, network class, settings): its compiled code takes the network as an
    argument, so every network of a class shares it (DC builds a fresh network per iteration)."""
    key = (fn, path, type(net), compile_mode(), autocast_mode())
    call = _CALLS.get(key)
    if call is None:
        call = _CALLS[key] = CompiledCall(fn, path, _EXPECTED_CALLS)
    return call


def _may_compile(net, x: torch.Tensor) -> bool:
    """A call may run compiled unless its output could be differentiated twice: Inductor has no double backward,
    and DC differentiates twice exactly where the input requires grad (the synthetic images' gradients)."""
    return not (torch.is_grad_enabled() and x.requires_grad) and not getattr(net, "_replicated", False)


def _grad_path(net, no_grad: str, grad: str) -> str:
    wants = torch.is_grad_enabled() and any(p.requires_grad for p in net.parameters())
    return grad if wants else no_grad


class _Routing(threading.local):
    active = False  # a routed call is running on this thread: the network's inner calls go straight through


_ROUTING = _Routing()


class CompiledCalls:
    """Mixin of the networks :func:`get_network` returns: ``forward`` and ``embed`` run compiled when the input
    does not require grad (real images, training on a detached set, evaluation), eagerly when it does (the
    synthetic images, whose gradients DC differentiates again). Calls made inside a routed call (ConvNet's
    forward calls its embed) go straight to the network's own method. The class keeps DC's name, layers and
    state-dict keys; ``eager_forward`` / ``eager_embed`` are the network's own methods."""

    def _route(self, x, own, fn, no_grad_path: str, grad_path: str):
        if torch.compiler.is_compiling() or _ROUTING.active or not _may_compile(self, x):
            return own(x)
        call = _compiled(fn, _grad_path(self, no_grad_path, grad_path), self)
        return _unrouted(lambda inputs: call(self, inputs), x)

    def forward(self, x):
        return self._route(x, super().forward, _network_output, "eval_forward", "train_step")

    def embed(self, x):
        return self._route(x, super().embed, _network_embed, "embed", "embed_grad")

    def eager_forward(self, x):
        return _unrouted(super().forward, x)

    def eager_embed(self, x):
        return _unrouted(super().embed, x)


def _unrouted(own, x):
    """``own(x)`` with routing off on this thread (the network's inner calls run eagerly too)."""
    if torch.compiler.is_compiling():
        return own(x)
    before, _ROUTING.active = _ROUTING.active, True
    try:
        return own(x)
    finally:
        _ROUTING.active = before


def _with_compiled_calls(net: nn.Module) -> nn.Module:
    """``net`` as an instance of its class with :class:`CompiledCalls` mixed in (a module-level class, so the
    network pickles)."""
    base = type(net)
    name = f"_Compiled{base.__name__}"
    cls = globals().get(name)
    if cls is None:  # DC's class name in repr; a unique qualified name for pickle
        cls = type(base.__name__, (CompiledCalls, base), {"__module__": __name__, "__qualname__": name})
        globals()[name] = cls
    net.__class__ = cls
    return net


_DC_CONVNETS = {  # DC's name -> ConvNet arguments other than DC's defaults (width 128, depth 3, relu,
    "ConvNet": {}, "ConvNetD1": {"net_depth": 1}, "ConvNetD2": {"net_depth": 2},  # instancenorm, avgpooling)
    "ConvNetD3": {"net_depth": 3}, "ConvNetD4": {"net_depth": 4}, "ConvNetW32": {"net_width": 32},
    "ConvNetW64": {"net_width": 64}, "ConvNetW128": {"net_width": 128}, "ConvNetW256": {"net_width": 256},
    "ConvNetAS": {"net_act": "sigmoid"}, "ConvNetAR": {"net_act": "relu"}, "ConvNetAL": {"net_act": "leakyrelu"},
    "ConvNetNN": {"net_norm": "none"}, "ConvNetBN": {"net_norm": "batchnorm"}, "ConvNetLN": {"net_norm": "layernorm"},
    "ConvNetIN": {"net_norm": "instancenorm"}, "ConvNetGN": {"net_norm": "groupnorm"},
    "ConvNetNP": {"net_pooling": "none"}, "ConvNetMP": {"net_pooling": "maxpooling"},
    "ConvNetAP": {"net_pooling": "avgpooling"}}
_DC_POOL = {"MLP": lambda c, k, s: MLP(c, k, s), "LeNet": lambda c, k, s: LeNet(c, k, s),
            "AlexNet": lambda c, k, s: AlexNet(c, k, s), "VGG11": lambda c, k, s: VGG("VGG11", c, k, s),
            "VGG11BN": lambda c, k, s: VGG("VGG11", c, k, s, norm="batchnorm"),
            "ResNet18": lambda c, k, s: ResNet18(c, k, norm="instancenorm")}


def get_network(model: str, channel: int, num_classes: int, im_size=(32, 32)) -> nn.Module:
    """DC's ``get_network(model, channel, num_classes, im_size=(32, 32))``: DC's names and layers (ConvNet: width 128,
    depth 3, instancenorm, ReLU, average pooling; the D/W/A/N/P variants; MLP, LeNet, AlexNet, VGG11, VGG11BN and
    DC's instancenorm ResNet18), DC's state-dict keys, on CUDA when there is one and wrapped in nn.DataParallel
    over several GPUs, as DC's. Like DC's it first reseeds torch's global RNG from the clock. Only the
    plain ConvNet gets ``im_size`` (DC passes it to no other); DC's pool networks assume 28x28 for one channel
    and 32x32 otherwise. The network runs its non-double-differentiated calls compiled (:class:`CompiledCalls`).
    An unknown name raises ValueError (DC calls ``exit()``); DC's ResNet18BN_AP is not provided."""
    torch.random.manual_seed(int(time.time() * 1000) % 100000)
    if model in _DC_CONVNETS:
        size = tuple(im_size) if model == "ConvNet" else (32, 32)
        net = ConvNet(channel, num_classes, im_size=size, **_DC_CONVNETS[model])
    elif model in _DC_POOL:
        net = _DC_POOL[model](channel, num_classes, (28, 28) if channel == 1 else (32, 32))
    else:
        raise ValueError(f"unknown model: {model!r} (ddfast.compat.dc provides {sorted((*_DC_CONVNETS, *_DC_POOL))}; "
                         f"DC's get_network calls exit() here)")
    net = _with_compiled_calls(net)
    gpus = torch.cuda.device_count()
    if gpus > 1:
        net._replicated = True  # DataParallel runs the replicas in threads: eager there
        net = nn.DataParallel(net)
    return net.to("cuda" if gpus > 0 else "cpu")


def epoch(mode: str, dataloader, net, optimizer, criterion, args, aug: bool):
    """DC's ``epoch(mode, dataloader, net, optimizer, criterion, args, aug)``: one pass over ``dataloader`` in
    train or eval mode (``args.device``), augmenting with :func:`DiffAugment` (``args.dsa``: ``args.dsa_strategy``,
    ``args.dsa_param``) or DC's :func:`augment` (``args.dc_aug_param``) when ``aug``; one optimiser step per batch
    in 'train' mode. Returns (mean loss, accuracy) over the samples. Any network's forward runs compiled here
    (its output is differentiated once)."""
    loss_avg, acc_avg, num_exp = 0.0, 0, 0
    net = net.to(args.device)
    criterion = criterion.to(args.device)
    net.train() if mode == "train" else net.eval()
    path = "train_step" if mode == "train" else "eval_forward"
    for datum in dataloader:
        img = datum[0].float().to(args.device)
        if aug:
            img = DiffAugment(img, args.dsa_strategy, param=args.dsa_param) if args.dsa \
                else augment(img, args.dc_aug_param, device=args.device)
        lab = datum[1].long().to(args.device)
        n_b = lab.shape[0]
        output = _compiled(_network_output, path, net)(net, img) if not isinstance(net, nn.DataParallel) \
            else net(img)
        loss = criterion(output, lab)
        loss_avg += loss.item() * n_b
        acc_avg += int((output.argmax(-1) == lab).sum().item())
        num_exp += n_b
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss_avg / num_exp, acc_avg / num_exp


class TensorDataset(torch.utils.data.Dataset):
    """DC's ``TensorDataset(images, labels)``: images detached as float, labels detached."""

    def __init__(self, images, labels):
        self.images = images.detach().float()
        self.labels = labels.detach()

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __len__(self):
        return self.images.shape[0]


def evaluate_synset(it_eval: int, net, images_train, labels_train, testloader, args):
    """DC's ``evaluate_synset``: SGD (``args.lr_net``, momentum 0.9, weight decay 5e-4) for
    ``args.epoch_eval_train`` + 1 epochs over a shuffled DataLoader of ``args.batch_train`` (torch's global RNG
    orders it, as in DC), the learning rate x 0.1 (a new optimiser) after epoch ``epoch_eval_train // 2 + 1``,
    training with augmentation (:func:`epoch` with aug=True), then the test pass. Prints DC's line and returns
    (net, train accuracy, test accuracy)."""
    net = net.to(args.device)
    images_train, labels_train = images_train.to(args.device), labels_train.to(args.device)
    lr, epochs = float(args.lr_net), int(args.epoch_eval_train)
    lr_schedule = [epochs // 2 + 1]
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    criterion = nn.CrossEntropyLoss().to(args.device)
    trainloader = torch.utils.data.DataLoader(TensorDataset(images_train, labels_train), batch_size=args.batch_train,
                                              shuffle=True, num_workers=0)
    start = time.time()
    for ep in range(epochs + 1):
        loss_train, acc_train = epoch("train", trainloader, net, optimizer, criterion, args, aug=True)
        if ep in lr_schedule:
            lr *= 0.1
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    time_train = time.time() - start
    loss_test, acc_test = epoch("test", testloader, net, optimizer, criterion, args, aug=False)
    stamp = time.strftime("[%Y-%m-%d %H:%M:%S]", time.localtime())
    print(f"{stamp} Evaluate_{it_eval:02d}: epoch = {epochs:04d} train time = {int(time_train)} s train loss = "
          f"{loss_train:.6f} train acc = {acc_train:.4f}, test acc = {acc_test:.4f}")
    return net, acc_train, acc_test


def augment(images: torch.Tensor, dc_aug_param, device) -> torch.Tensor:
    """DC's ``augment(images, dc_aug_param, device)``, the DC protocol's augmentation when DSA is off (``get_daparam``
    turns it on for MNIST, 'crop_scale_rotate', and for BatchNorm networks, 'crop_noise'). Per image, one family of
    ``dc_aug_param['strategy']`` picked by numpy's global RNG (``np.random.permutation``), in place:

    * crop: the image on a canvas padded by ``crop`` pixels filled with the batch's channel means, cut at an offset
      of ``np.random.permutation(2 * crop)[0]`` rows and columns;
    * scale: nearest-neighbour resize to ``int(u * H)`` x ``int(v * H)`` for u, v from ``np.random.uniform(1 - scale,
      1 + scale)``, centred on a zero canvas, centre crop;
    * rotate: ``scipy.ndimage.rotate`` by ``np.random.randint(-rotate, rotate)`` degrees (cubic spline, canvas grown,
      filled with the mean of the channel means), centre crop;
    * noise: plus ``noise`` times a standard normal draw from torch's RNG.

    Strategy 'none' or ``dc_aug_param`` None returns ``images`` unchanged; a family outside these four is skipped,
    as in DC. Not fused: the per-image draws come from numpy's and torch's global RNG in DC's order."""
    if dc_aug_param is None or dc_aug_param["strategy"] == "none":
        return images
    import numpy as np

    crop, scale, rotate, noise = (dc_aug_param[k] for k in ("crop", "scale", "rotate", "noise"))
    _, channels, height, width = images.shape
    mean = [float(torch.mean(images[:, c])) for c in range(channels)]
    families = dc_aug_param["strategy"].split("_")
    for i in range(images.shape[0]):
        choice = np.random.permutation(families)[0]
        if choice == "crop":
            canvas = torch.tensor(mean, dtype=torch.float, device=device).view(-1, 1, 1).repeat(
                1, height + 2 * crop, width + 2 * crop)
            canvas[:, crop:crop + height, crop:crop + width] = images[i]
            r, c = np.random.permutation(crop * 2)[0], np.random.permutation(crop * 2)[0]
            images[i] = canvas[:, r:r + height, c:c + width]
        elif choice == "scale":
            h = int(np.random.uniform(1 - scale, 1 + scale) * height)
            w = int(np.random.uniform(1 - scale, 1 + scale) * height)
            resized = F.interpolate(images[i:i + 1], [h, w])[0]
            side = max(h, w, height, width)
            canvas = torch.zeros(channels, side, side, dtype=torch.float, device=device)
            canvas[:, (side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = resized
            r, c = (side - height) // 2, (side - width) // 2
            images[i] = canvas[:, r:r + height, c:c + width]
        elif choice == "rotate":
            from scipy.ndimage import rotate as rotate_image

            turned = rotate_image(images[i].cpu().numpy(), angle=np.random.randint(-rotate, rotate), axes=(-2, -1),
                                  cval=np.mean(mean))
            r, c = (turned.shape[-2] - height) // 2, (turned.shape[-1] - width) // 2
            images[i] = torch.tensor(turned[:, r:r + height, c:c + width], dtype=torch.float, device=device)
        elif choice == "noise":
            images[i] = images[i] + noise * torch.randn(images.shape[1:], dtype=torch.float, device=device)
    return images
