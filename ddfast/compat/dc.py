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
from functools import reduce

import torch

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
    Differentiable in ``x``, twice too. ``param=None`` raises AttributeError (DC reads ``param.batchmode``
    first); an unknown family raises :class:`UnknownAugmentationError` (a KeyError, as DC's), before any
    draw; an unknown ``aug_mode`` raises ValueError where DC calls ``exit()``. Not DC's: a strategy naming a
    family twice raises ValueError (ddfast.dsa applies each family once).
    """
    if param is None:
        raise AttributeError("DiffAugment needs param (DC's ParamDiffAug(), e.g. args.dsa_param); got None")
    param.batchmode = seed != -1
    param.latestseed = seed
    if strategy in ("None", "none") or not strategy:
        return x
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
    table = torch.tensor(IDENTITY, dtype=torch.float32, device=x.device).repeat(max(rows, 1), 1)
    for column, values in columns.items():
        table[:, column] = values[:rows]
    if x.shape[0] == 0:
        return x.contiguous()
    kind = "shared" if rows == 1 else "sample"
    return dsa(x, DSAParams(table, tuple(families), kind, config))
