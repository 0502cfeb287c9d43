"""BNStatHooks: records the inputs of a model's BatchNorm layers for bn_stat_loss (SRe2L recover)."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class BNStatHooks:
    """Forward hooks on every ``nn.BatchNorm1d``/``nn.BatchNorm2d`` of ``model`` (in module order) that
    record each layer's input; :meth:`loss` is then :func:`ddfast.bn_stat_loss` over the recorded
    inputs and the layers' running statistics, with weights ``[first_weight, 1, 1, ...]``.

    This is SRe2L's recover loss: one ``BNFeatureHook`` per BatchNorm2d, the first weighted by
    ``first_bn_multiplier`` (10), in one fused call instead of one small graph per layer. Use the
    teacher in eval mode (running statistics fixed, as SRe2L does) and run its forward without
    ``torch.no_grad`` so the loss backpropagates to the input images::

        teacher.eval()
        with ddfast.BNStatHooks(teacher) as bn:
            logits = teacher(images)
            loss = F.cross_entropy(logits, labels) + 0.01 * bn.loss()
            loss.backward()

    A pre-hook on ``model`` clears the recorded inputs at the start of every forward of the model, so
    a second forward replaces them, and a layer that a forward skipped cannot leak a stale input.
    :meth:`remove` (or leaving the ``with`` block) removes all hooks. (A model in train mode updates its
    running statistics during the forward, so :meth:`loss` would compare with the updated ones.)
    """

    def __init__(self, model: nn.Module, first_weight: float = 10.0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(first_weight, bool) or not isinstance(first_weight, Real) or not math.isfinite(first_weight) \
                or first_weight < 0:
            raise ValueError(f"first_weight must be a finite number >= 0, got {first_weight!r}")
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, BN_TYPES)]
        if not self.layers:
            raise ValueError(f"model ({type(model).__name__}) has no nn.BatchNorm1d/nn.BatchNorm2d layers")
        for name, m in self.layers:
            if m.running_mean is None or m.running_var is None:
                raise ValueError(f"BatchNorm layer {name!r} has no running statistics (track_running_stats=False)")
        self.weights = [float(first_weight)] + [1.0] * (len(self.layers) - 1)
        self._inputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles = [model.register_forward_pre_hook(self._clear)]
        self._handles += [m.register_forward_hook(self._recorder(i)) for i, (_, m) in enumerate(self.layers)]

    def _clear(self, module, args):
        self._inputs = [None] * len(self.layers)

    def _recorder(self, index: int):
        def hook(module, args, output):
            self._inputs[index] = args[0]
        return hook

    @property
    def inputs(self) -> list[torch.Tensor | None]:
        """The recorded input of every BatchNorm layer (None where the last forward did not run it)."""
        return list(self._inputs)

    def loss(self) -> torch.Tensor:
        """The weighted BN-statistics loss of the last forward pass (a 0-d tensor, see bn_stat_loss)."""
        from . import bn_stat_loss

        if not self._handles:
            raise RuntimeError("BNStatHooks.loss(): the hooks were removed")
        missing = [name for (name, _), a in zip(self.layers, self._inputs) if a is None]
        if len(missing) == len(self.layers):
            raise RuntimeError("BNStatHooks.loss() called before a forward pass of the model: no BatchNorm input "
                               "was recorded")
        if missing:
            raise RuntimeError(f"BNStatHooks.loss(): the last forward pass did not run BatchNorm layer(s) {missing}")
        return bn_stat_loss(self._inputs, [m.running_mean for _, m in self.layers],
                            [m.running_var for _, m in self.layers], self.weights)

    def remove(self) -> None:
        """Removes every hook and drops the recorded inputs."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._inputs = [None] * len(self.layers)

    def __enter__(self) -> "BNStatHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
