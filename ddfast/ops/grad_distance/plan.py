"""Work plan shared by the fused grad_distance kernels (cpp, cuda, triton).

The per-tensor, per-class reference loop becomes one flat list of work items, each a contiguous
range of one tensor's storage:

* metric ``ours``: one item per row of every weighted tensor with ndim >= 2 (DC's distance_wb rows);
  its partial sums (<gr,gs>, ||gr||^2, ||gs||^2) are the saved statistics of that row;
* metrics ``mse``, ``cos``, ``l1``: pieces of at most ``CHUNK`` elements of every tensor;
* tensors that do not contribute (weight 0; 1-D tensors under ``ours``) get inactive items so the
  backward kernel still writes their zero gradients.

Items are ordered by class, so the partials of class k are the contiguous range
``part_ptr[k]:part_ptr[k+1]``, which the finalize step reduces in a fixed order (deterministic).
A plan depends only on shapes, class count, metric and weights, and is cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .._dtypes import accumulate_dtype  # noqa: F401 - the kernels' accumulate dtype (triton.py imports it here)
from .._plan import DeviceTables

METRICS = ("ours", "mse", "cos", "l1")
METRIC_CODES = {name: code for code, name in enumerate(METRICS)}
EPS = 1e-6  # DC's distance_wb: added to the product of norms
CHUNK = 8192  # elements per item outside 'ours' rows
ITEM_FIELDS = 5  # tensor, class, start, length, slot


def rows_and_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """DC's distance_wb row split: [out, in, kh, kw] -> [out, in*kh*kw]; [C, h, w] -> [C, h*w]."""
    rows = shape[0]
    cols = 1
    for size in shape[1:]:
        cols *= size
    return rows, cols


def is_row_tensor(shape, weight: float, metric: str) -> bool:
    return metric == "ours" and len(shape) >= 2 and weight != 0


def stats_numel(shapes, num_classes, metric: str, weights) -> int:
    """Length of the statistics saved for backward (works on symbolic sizes too)."""
    if metric == "ours":
        rows = sum(shape[0] for shape, w in zip(shapes, weights) if is_row_tensor(shape, w, metric))
        return 3 * num_classes * rows
    if metric == "cos":
        return 3 * num_classes
    return 0


@dataclass(frozen=True)
class Plan(DeviceTables):
    TABLES = ("items", "item_weight", "part_ptr", "part_weight")  # on(device): these four
    items: torch.Tensor  # int64 [W, ITEM_FIELDS]
    item_weight: torch.Tensor  # float64 [W]; 0 marks an inactive item
    part_ptr: torch.Tensor  # int64 [K + 1]
    part_weight: torch.Tensor  # float64 [P]
    num_parts: int

    @property
    def num_items(self) -> int:
        return self.items.shape[0]


def _pieces(tensor: int, klass: int, base: int, numel: int, chunk: int) -> np.ndarray:
    starts = np.arange(0, numel, chunk, dtype=np.int64)
    out = np.empty((starts.size, ITEM_FIELDS), dtype=np.int64)
    out[:, 0], out[:, 1], out[:, 2] = tensor, klass, base + starts
    out[:, 3] = np.minimum(chunk, numel - starts)
    out[:, 4] = -1
    return out


def tensor_shapes(tensors, batched: bool) -> tuple[tuple[int, ...], ...]:
    """Per-tensor shapes without the class dimension."""
    return tuple(tuple(t.shape[1:] if batched else t.shape) for t in tensors)


def plan_for(g_syn, metric: str, weights, batched: bool) -> "Plan":
    return build_plan(tensor_shapes(g_syn, batched), g_syn[0].shape[0] if batched else 1, metric, tuple(weights))


@functools.lru_cache(maxsize=128)
def build_plan(shapes: tuple[tuple[int, ...], ...], num_classes: int, metric: str,
               weights: tuple[float, ...]) -> Plan:
    blocks, block_weights, part_weight, part_ptr = [], [], [], [0]
    num_items = 0
    for klass in range(num_classes):
        for tensor, (shape, weight) in enumerate(zip(shapes, weights)):
            numel = int(np.prod(shape, dtype=np.int64))
            base = klass * numel
            if is_row_tensor(shape, weight, metric):
                rows, cols = rows_and_cols(shape)
                block = np.empty((rows, ITEM_FIELDS), dtype=np.int64)
                block[:, 0], block[:, 1] = tensor, klass
                block[:, 2] = base + np.arange(rows, dtype=np.int64) * cols
                block[:, 3] = cols
                block[:, 4] = len(part_weight) + np.arange(rows)
                part_weight.extend([weight] * rows)
                weight_of_items = weight
            elif numel:
                block = _pieces(tensor, klass, base, numel, CHUNK)
                weight_of_items = 0.0 if metric == "ours" else weight
                if metric != "ours":  # one partial row per piece
                    block[:, 4] = num_items + np.arange(block.shape[0])
                    part_weight.extend([weight_of_items] * block.shape[0])
            else:
                continue
            blocks.append(block)
            block_weights.append(np.full(block.shape[0], weight_of_items, dtype=np.float64))
            num_items += block.shape[0]
        part_ptr.append(len(part_weight))
    items = np.concatenate(blocks) if blocks else np.zeros((0, ITEM_FIELDS), dtype=np.int64)
    item_weight = np.concatenate(block_weights) if block_weights else np.zeros(0)
    return Plan(
        items=torch.from_numpy(np.ascontiguousarray(items)),
        item_weight=torch.from_numpy(item_weight.astype(np.float64)),
        part_ptr=torch.tensor(part_ptr, dtype=torch.int64),
        part_weight=torch.tensor(part_weight, dtype=torch.float64),
        num_parts=len(part_weight),
    )
