"""One declaration per fused op: :class:`FusedOp` owns an op's custom-op wiring and backend dispatch
(docs/DESIGN.md, "Adding an op").

An op declares, in its ``_op.py``, its name, its backends, the schemas of its forward and backward ops,
their fake (shape) functions, the forward outputs its backward reads, and its backward formula. FusedOp
registers ``ddfast::<name>`` and ``ddfast::<name>_backward`` with torch.library (cpu and cuda kernels that
run the selected backend, the reference as the default kernel, fake and autograd registrations) and
builds the op's dispatch table (:class:`ddfast.backends.OpDispatch`). Calling the FusedOp runs the op:
the custom op under torch.compile, which needs its fake and autograd registrations; outside it, for an
op with tensor-list arguments, an autograd.Function built from the same declaration, because
torch.library's autograd wrapper flattens tensor lists with pytree (about 1 ms of host time per
forward+backward on CPU for ConvNet-3's 14 tensors, against 0.15 ms); else the custom op.

Backends are modules of the op's package with one interface, ``forward(*inputs)`` and
``backward(*args)`` (the arguments of the two schemas): ``reference`` in reference.py (the
specification, also each op's default kernel), ``cpp`` and ``cuda`` in compiled.py, ``triton`` in
triton.py (imported on first use: Triton is optional).

The backend is resolved once per forward and kept for its backward: by the eager autograd.Function's
forward, or by the custom op's kernel, which hands the name to setup_context with its output: it
records (backend, weak reference to its first output) in a per-thread slot, and setup_context takes the
name when its output is that very tensor. (A custom op cannot return a string, and an extra ``backend``
input would change the op's schema and cost host time in torch.library's autograd wrapper, which walks
the schema once per argument: about 3 us per forward on CPU.) The backward passes the name to the
backward op, whose kernel runs that backend without resolving again (autograd runs CUDA backward passes
on its own threads, where use_backend() does not reach). Under torch.compile the kernel resolves at run
time, while setup_context, traced once with the fake kernel, finds no record and resolves for the
backward graph.
"""

from __future__ import annotations

import importlib
import operator
import threading
import weakref
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable

import torch

from ..backends import GPU_BACKENDS, BackendUnavailableError, OpDispatch
from ._higher_order import reference_vjp
from ._lazy import LazyModule

MODULE_OF = {"reference": "reference", "cpp": "compiled", "cuda": "compiled", "triton": "triton"}
LAZY = frozenset({"triton"})
DEVICES = ("cpu", "cuda")
_VALUE, _TENSOR, _LIST = "value", "tensor", "list"  # argument kinds
_SAVED_ATTRIBUTES = frozenset({"inputs", "backend", "needs", "kernel", "reference_vjp", "_op"})


def _kind(arg: torch._C.Argument) -> str:
    name = str(arg.type)
    return _LIST if name == "List[Tensor]" else _TENSOR if name in ("Tensor", "Optional[Tensor]") else _VALUE


def _with_backend(schema: str) -> str:
    """``schema`` ("(...) -> (...)") with ``str backend`` appended to its arguments."""
    arguments, arrow, returns = schema.partition(" -> ")
    if not (arrow and arguments.startswith("(") and arguments.endswith(")")):
        raise ValueError(f"expected a schema '(arguments) -> returns', got {schema!r}")
    return f"{arguments[:-1]}, str backend) -> {returns}"


def _picker(positions: list[int]) -> Callable:
    """A function returning the tuple of a sequence's items at ``positions``."""
    if len(positions) == 1:
        return lambda sequence: (sequence[positions[0]],)
    return operator.itemgetter(*positions) if positions else lambda sequence: ()


class _LastRun(threading.local):
    """Per thread: (the backend a forward kernel ran, a weak reference to its first output)."""

    record: tuple[str, weakref.ref] | None = None


class Saved:
    """What a backward formula reads: the forward's inputs and saved outputs as attributes (named as in
    the forward schema and ``saved_outputs``), ``inputs`` (all of them, in order), ``backend`` (the one
    the forward ran), ``needs`` (name of each input in ``grads_of`` -> whether its gradient is wanted),
    ``kernel(*args)`` (the backend's backward, called with the backward schema's arguments but
    ``backend``) and :meth:`reference_vjp`."""

    def __init__(self, op: "FusedOp", values: dict, backend: str, needs: dict[str, bool], kernel: Callable):
        values.update(backend=backend, needs=needs, kernel=kernel, _op=op)
        self.__dict__ = values  # taken over, not copied: a backward pass builds one Saved

    @property
    def inputs(self) -> list:
        return [getattr(self, name) for name in self._op._saved_names]

    def reference_vjp(self, grad_out: torch.Tensor) -> tuple:
        """The gradients of ``grads_of`` (in order; None where not wanted) as a graph autograd can
        differentiate: the reference forward re-run on the saved inputs (ddfast.ops._higher_order)."""
        op = self._op
        grads = reference_vjp(op.reference.forward, self.inputs,
                              [self.needs.get(name, False) for name in op.input_names], grad_out)
        return tuple(grads[i] for i in op.grad_positions)


@dataclass(eq=False)
class FusedOp:
    """The declaration of one fused op; constructing it registers the op (module docstring).

    * ``name``: the op, ``ddfast::<name>``; ``package``: its package (``__package__``), which holds the
      backend modules.
    * ``backends``: the backends it has, its GPU backends in the order ``auto`` tries them on CUDA;
      ``dtypes`` optionally limits a backend to some dtypes.
    * ``forward_schema`` / ``backward_schema``: the arguments and returns of the forward and backward
      ops; the backward op gets a last argument, ``backend``, added here. The forward's tensor arguments
      are all tensors or all tensor lists; ``auto`` dispatches on the device and dtype of the first (the
      first tensor of a list).
    * ``fake_forward`` / ``fake_backward``: the outputs' shapes and dtypes, given the schemas' arguments
      (without ``backend``).
    * ``results``: how many leading outputs are the op's results, which calling it returns (the tensor
      itself where 1); the outputs after them are statistics for the backward, which only the custom op
      returns.
    * ``saved_outputs``: name -> index of each forward output the backward reads (setup_context saves
      them and every input: the double backward re-runs the reference forward on the inputs).
    * ``grads_of``: the inputs that get gradients, in the order ``backward`` returns them.
    * ``backward(saved, *grad_outputs)``: the gradients of ``grads_of`` (a tensor, or a list for a
      tensor-list input, where wanted), from a :class:`Saved`; it applies the shared higher-order rule,
      ``ddfast.ops._higher_order.input_gradients``, with ``saved.kernel`` and ``saved.reference_vjp``.
    * ``dispatch_name``: the name of its dispatch table where it is not ``name``: the name
      ``backends_ran``, ``ddfast info`` and gpu_validated.json know its backends by, and the package whose
      triton.py is hashed (dsa's op is ``dsa_pass``).
    * ``saved_as``: non-tensor arguments a :class:`Saved` holds under another name, argument -> attribute,
      for an argument named as one of Saved's own attributes (mmd's ``kernel``, read as ``kernel_name``).
    """

    name: str
    package: str
    backends: tuple[str, ...]
    forward_schema: str
    backward_schema: str
    fake_forward: Callable
    fake_backward: Callable
    saved_outputs: dict[str, int]
    grads_of: tuple[str, ...]
    backward: Callable
    results: int = 1
    dtypes: dict[str, frozenset] = field(default_factory=dict)
    dispatch_name: str = ""
    saved_as: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        schema = torch._C.parse_schema(f"ddfast::{self.name}{self.forward_schema}")
        arguments = schema.arguments
        self.input_names = tuple(a.name for a in arguments)
        kinds = [_kind(a) for a in arguments]
        # The tensor inputs, what setup_context saves: all tensors, or all tensor lists (the op "has lists").
        tensor_kinds = {kind for kind in kinds if kind is not _VALUE}
        if len(tensor_kinds) != 1:
            raise ValueError(f"{self.name}: the forward's tensor arguments must be all tensors or all tensor lists, "
                             f"got {self.forward_schema}")
        self._has_lists = _LIST in tensor_kinds
        self._tensor_positions = tuple(i for i, kind in enumerate(kinds) if kind is not _VALUE)
        self._tensor_names = tuple(self.input_names[i] for i in self._tensor_positions)
        self._tensors_of = _picker(list(self._tensor_positions))
        value_names = tuple(a.name for a, kind in zip(arguments, kinds) if kind is _VALUE)
        if not set(self.saved_as) <= set(value_names):
            raise ValueError(f"{self.name}: saved_as renames {sorted(set(self.saved_as) - set(value_names))}, which "
                             f"are not non-tensor arguments of {self.forward_schema}")
        self._value_names = tuple(self.saved_as.get(name, name) for name in value_names)
        self._saved_names = tuple(self.saved_as.get(name, name) for name in self.input_names)
        self._values_of = _picker([i for i, kind in enumerate(kinds) if kind is _VALUE])
        self._saved_outputs_of = _picker(list(self.saved_outputs.values()))
        # The results among the outputs (plain functions: torch.compile traces __call__ through them).
        if len(schema.returns) == 1:
            self._results_of = lambda outputs: outputs
        elif self.results == 1:
            self._results_of = lambda outputs: outputs[0]
        else:
            self._results_of = lambda outputs: tuple(outputs[:self.results])
        self.grad_positions = tuple(self.input_names.index(name) for name in self.grads_of)
        self._grad_flags_of = _picker(list(self.grad_positions))
        clashes = _SAVED_ATTRIBUTES.intersection((*self._saved_names, *self.saved_outputs))
        if clashes:
            raise ValueError(f"{self.name}: input or saved output names {sorted(clashes)} clash with Saved's "
                             f"attributes")

        impls = {b: (LazyModule if b in LAZY else importlib.import_module)(f"{self.package}.{MODULE_OF[b]}")
                 for b in self.backends}
        self.reference = reference = impls["reference"]
        self.dispatch = OpDispatch(self.dispatch_name or self.name, impls=impls,
                                   cuda_preference=tuple(b for b in self.backends if b in GPU_BACKENDS),
                                   dtypes=self.dtypes)
        self._last_run = _LastRun()
        self.op = torch.library.custom_op(f"ddfast::{self.name}", lambda *args: reference.forward(*args),
                                          mutates_args=(), schema=self.forward_schema)
        self.backward_op = torch.library.custom_op(f"ddfast::{self.name}_backward",
                                                   lambda *args: reference.backward(*args[:-1]), mutates_args=(),
                                                   schema=_with_backend(self.backward_schema))
        for device in DEVICES:
            self.op.register_kernel(device)(self._forward_kernel)
            self.backward_op.register_kernel(device)(self._backward_kernel)
        self.op.register_fake(self.fake_forward)
        self.backward_op.register_fake(lambda *args: self.fake_backward(*args[:-1]))
        self.op.register_autograd(self._custom_op_backward, setup_context=self._setup_context)
        self.eager = self._eager_function() if self._has_lists else None

    def __call__(self, *inputs):
        """Run the op on the forward schema's arguments; returns its results."""
        if self.eager is None or torch.compiler.is_compiling():
            return self._results_of(self.op._opoverload(*inputs))
        flat, template = self._pack(inputs)
        return self.eager.apply(inputs, template, *flat)

    # setup_context saves the inputs' tensors, flat, then the saved outputs; the context keeps a template:
    # (the non-tensor inputs, the length of each tensor list).
    def _device_dtype(self, inputs) -> tuple[torch.device, torch.dtype]:
        first = inputs[self._tensor_positions[0]]
        if self._has_lists:
            first = first[0]
        return first.device, first.dtype

    def _pack(self, inputs) -> tuple[list, tuple]:
        """(the inputs' tensors, flat; the template)."""
        tensors = self._tensors_of(inputs)
        if not self._has_lists:
            return tensors, (self._values_of(inputs), ())
        return list(chain.from_iterable(tensors)), (self._values_of(inputs), list(map(len, tensors)))

    def _saved(self, ctx, kernel: Callable, flat_flags: bool) -> Saved:
        """The Saved of a backward pass, from ``ctx.template``, ``ctx.saved_tensors`` and
        ``ctx.needs_input_grad``: one flag per input (a list's: one per tensor), or with ``flat_flags`` (the
        eager Function) one per saved tensor, after its two non-tensor arguments."""
        saved, flags = ctx.saved_tensors, ctx.needs_input_grad
        values, lengths = ctx.template
        named = dict(zip(self._value_names, values))
        if not self._has_lists:
            named.update(zip(self._tensor_names, saved))  # one saved tensor and one flag per tensor input
            needs = dict(zip(self.grads_of, self._grad_flags_of(flags)))
            at = len(self._tensor_names)
        else:
            needs, at = {}, 0
            for i, name, size in zip(self._tensor_positions, self._tensor_names, lengths):
                named[name] = list(saved[at:at + size])
                if name in self.grads_of:
                    needs[name] = any(flags[2 + at:2 + at + size] if flat_flags else flags[i])
                at += size
        named.update(zip(self.saved_outputs, saved[at:]))
        return Saved(self, named, ctx.backend, needs, kernel)

    def _input_gradients(self, saved: Saved, grads, lengths, flat: bool) -> list:
        """The backward formula's gradients, one per input: None where not wanted, for a list input a list
        ([None] * n where not wanted); or with ``flat`` (the eager Function) two Nones for its non-tensor
        arguments, then one per tensor as saved."""
        got, needs = self.backward(saved, *grads), saved.needs
        if not self._has_lists:
            result = [None] * len(self.input_names)
            for name, i, grad in zip(self.grads_of, self.grad_positions, got):
                if needs[name]:
                    result[i] = grad
            return result
        got = dict(zip(self.grads_of, got))
        result = [None, None] if flat else [None] * len(self.input_names)
        for i, name, size in zip(self._tensor_positions, self._tensor_names, lengths):
            grads = (got[name] if needs.get(name) else None) or [None] * size
            if flat:
                result += grads
            else:
                result[i] = grads
        return result

    def _impl(self, backend: str):
        impl = self.dispatch.impls.get(backend)
        if impl is None:
            raise BackendUnavailableError(f"{self.name}: backend {backend!r} is not implemented for this op; it has "
                                          f"{sorted(self.dispatch.impls)}")
        return impl

    # The custom ops' kernels and autograd registration.
    def _forward_kernel(self, *inputs):
        backend, impl = self.dispatch.resolve(*self._device_dtype(inputs))
        outputs = impl.forward(*inputs)
        first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        self._last_run.record = (backend, weakref.ref(first))
        return outputs

    def _backward_kernel(self, *args):
        return self._impl(args[-1]).backward(*args[:-1])

    def _setup_context(self, ctx, inputs, output):
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        record, self._last_run.record = self._last_run.record, None
        if record is not None and record[1]() is outputs[0]:
            backend = record[0]  # what the kernel that made this output ran
        else:  # traced with the fake kernel (torch.compile), or another device's default kernel
            backend, _ = self.dispatch.resolve(*self._device_dtype(inputs))
        flat, ctx.template = self._pack(inputs)
        ctx.save_for_backward(*flat, *self._saved_outputs_of(outputs))
        ctx.backend = backend

    def _custom_op_backward(self, ctx, *grads):
        backend = ctx.backend
        backward_op = self.backward_op._opoverload
        saved = self._saved(ctx, lambda *args: backward_op(*args, backend), flat_flags=False)
        return tuple(self._input_gradients(saved, grads, ctx.template[1], flat=False))

    def _eager_function(self) -> type[torch.autograd.Function]:
        """The eager path of an op with tensor-list arguments: the same kernels through a plain
        autograd.Function, called as ``apply(inputs, template, *tensors)`` (``tensors``: the inputs' tensors,
        flat, which autograd tracks). It returns the results only: no gradients of statistics to materialize."""
        op = self

        def forward(ctx, inputs, template, *tensors):
            backend, impl = op.dispatch.resolve(*op._device_dtype(inputs))
            outputs = impl.forward(*inputs)
            ctx.save_for_backward(*tensors, *op._saved_outputs_of(outputs))
            ctx.template, ctx.backend = template, backend
            return op._results_of(outputs)

        def backward(ctx, *grads):
            saved = op._saved(ctx, op.dispatch.impls[ctx.backend].backward, flat_flags=True)
            return tuple(op._input_gradients(saved, grads, ctx.template[1], flat=True))

        name = "Eager" + "".join(part.title() for part in self.name.split("_"))
        return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                       "backward": staticmethod(backward),
                                                       "__doc__": f"{self.name} in eager mode (FusedOp)."})
