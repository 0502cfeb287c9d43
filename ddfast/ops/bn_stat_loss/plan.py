"""Work plan shared by the fused bn_stat_loss kernels (cpp, triton).

Activation ``l`` is viewed as [B, C, S] (S = H*W, the length L of a [B, C, L] input, or 1 for
[B, C]); channel ``c``'s data is B runs of S contiguous elements, ``C*S`` apart. Each channel is
cut into ``chunks`` pieces of whole runs, about ``CHUNK`` elements each (one run when a run alone
is longer), and every piece is one work item (layer, channel, first run, run count). Items are
ordered layer, channel, piece: item ``item_base[l] + c * chunks[l] + j`` is piece j of channel c,
so a channel's partial sums are a fixed, contiguous range that the finalize step reduces in order
(deterministic, no atomics). A plan depends only on the shapes and the weights, and is cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .._dtypes import accumulate_dtype  # noqa: F401 - re-exported: triton.py and the op import it from here
from .._plan import DeviceTables

CHUNK = 8192  # target elements per work item
ITEM_FIELDS = 4  # layer, channel, first run, number of runs
LAYER_FIELDS = 6  # C, S, B, first item, pieces per channel, first channel (offset into the statistics)


def bcs(shape) -> tuple[int, int, int]:
    """[B, C], [B, C, L] or [B, C, H, W] as (B, C, S)."""
    s = 1
    for size in shape[2:]:
        s *= size
    return shape[0], shape[1], s


def stats_numel(shapes) -> int:
    """Length of the statistics saved for backward: batch mean and variance of every channel, then
    ||mean - running_mean|| and ||var - running_var|| of every layer (works on symbolic sizes too)."""
    return 2 * sum(shape[1] for shape in shapes) + 2 * len(shapes)


def pieces_per_channel(b: int, s: int) -> tuple[int, int]:
    """(runs per piece, pieces per channel) for a channel of b runs of s elements."""
    runs = max(1, min(b, CHUNK // s))
    return runs, -(-b // runs)


@dataclass(frozen=True)
class Plan(DeviceTables):
    TABLES = ("layers", "items", "weights")  # on(device): (layers, items, weights)
    layers: torch.Tensor  # int64 [L, LAYER_FIELDS]
    items: torch.Tensor  # int64 [W, ITEM_FIELDS]
    weights: torch.Tensor  # float64 [L]
    num_channels: int

    @property
    def num_items(self) -> int:
        return self.items.shape[0]

    @property
    def num_layers(self) -> int:
        return self.layers.shape[0]


@functools.lru_cache(maxsize=64)
def _plan(shapes: tuple[tuple[int, int, int], ...], weights: tuple[float, ...]) -> Plan:
    layers, items, first_item, first_channel = [], [], 0, 0
    for layer, (b, c, s) in enumerate(shapes):
        runs, pieces = pieces_per_channel(b, s)
        layers.append((c, s, b, first_item, pieces, first_channel))
        channel = torch.arange(c, dtype=torch.int64).repeat_interleave(pieces)
        start = torch.arange(pieces, dtype=torch.int64).repeat(c) * runs
        items.append(torch.stack([torch.full_like(channel, layer), channel, start, (b - start).clamp(max=runs)], 1))
        first_item += c * pieces
        first_channel += c
    return Plan(torch.tensor(layers, dtype=torch.int64).reshape(-1, LAYER_FIELDS), torch.cat(items).contiguous(),
                torch.tensor(weights, dtype=torch.float64), first_channel)


def plan_for(activations, weights) -> Plan:
    return _plan(tuple(bcs(a.shape) for a in activations), tuple(weights))
