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

Declarations beyond a forward and its own backward op (fields of FusedOp):

* an op without derivative (``backward`` None): no backward op; ``not_differentiable`` gives the reason
  an autograd registration raises with (ddfast::adjoint_step, which runs inside backward passes), else
  none is registered and torch.library's own error names the op (the k-means steps, which callers run
  under no_grad);
* an op whose backward runs another declared op (``backward_with``: sgd_step runs
  ``ddfast::adjoint_step``), instead of a ``<name>_backward`` op of its own;
* an explicit backend argument (``backend_argument``: a last ``str backend`` in the forward schema, ""
  to resolve from the caller's context): what an op that serves as another op's backward takes, so that
  it runs the backend that op's forward resolved;
* a backend entry point named otherwise than ``forward`` (``entry``), and one dispatch table shared by
  several ops (``dispatch_as``), as the three k-means steps share ``kmeans``'s (its backends,
  validation records and ``ddfast info`` line);
* a backward that reads only some of the inputs (``saved_inputs``: setup_context keeps those alive, not
  every input; sgd_step's reads grad and lr, as its hand-written registration did).
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
_TABLES: dict[str, tuple[tuple, OpDispatch]] = {}  # dispatch table name -> (package, backends, dtypes), table


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


def _no_context(ctx, inputs, output) -> None:
    """The setup_context of an op that is not differentiable: nothing to save."""


class _LastRun(threading.local):
    """Per thread: (the backend a forward kernel ran, a weak reference to its first output)."""

    record: tuple[str, weakref.ref] | None = None


class Saved:
    """What a backward formula reads: the forward's inputs and saved outputs as attributes (named as in
    the forward schema and ``saved_outputs``), ``inputs`` (all of them, in order), ``backend`` (the one
    the forward ran), ``needs`` (name of each input in ``grads_of`` -> whether its gradient is wanted),
    ``kernel(*args)`` (the backend's backward, called with the backward schema's arguments but
    ``backend``; with ``backward_with``, that op run on this backend, called with its arguments but
    ``backend``) and :meth:`reference_vjp`."""

    def __init__(self, op: "FusedOp", values: dict, backend: str, needs: dict[str, bool], kernel: Callable):
        values.update(backend=backend, needs=needs, kernel=kernel, _op=op)
        self.__dict__ = values  # taken over, not copied: a backward pass builds one Saved

    @property
    def inputs(self) -> list:
        return [getattr(self, name) for name in self._op.attribute_names]

    def reference_vjp(self, grad_out: torch.Tensor) -> tuple:
        """The gradients of ``grads_of`` (in order; None where not wanted) as a graph autograd can
        differentiate: the reference forward re-run on the saved inputs (ddfast.ops._higher_order)."""
        op = self._op
        grads = reference_vjp(op.reference.forward, self.inputs,
                              [self.needs.get(name, False) for name in op.input_names], grad_out)
        return tuple(grads[i] for i in op.grad_positions)


@dataclass(eq=False, kw_only=True)
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
      ``saved_inputs``: the tensor inputs to save instead of all, for an op without tensor-list
      arguments whose backward reads only those (it cannot call ``saved.reference_vjp``).
    * ``grads_of``: the inputs that get gradients, in the order ``backward`` returns them.
    * ``backward(saved, *grad_outputs)``: the gradients of ``grads_of`` (a tensor, or a list for a
      tensor-list input, where wanted), from a :class:`Saved`; it applies the shared higher-order rule,
      ``ddfast.ops._higher_order.input_gradients``, with ``saved.kernel`` and ``saved.reference_vjp``.
      None: the op has no derivative, hence no backward schema, fake, saved outputs or ``grads_of``;
      ``not_differentiable`` (the reason) registers an autograd formula that raises RuntimeError
      "ddfast.<name> is not differentiable: <reason>", else none is registered.
    * ``backward_with``: instead of ``backward_schema``, another declaration (with ``backend_argument``)
      whose op is this op's backward kernel (``backward_op`` is then that op; no ``<name>_backward``).
    * ``backend_argument``: the forward schema ends with ``str backend``: "" resolves the backend from the
      caller's context, a name runs that backend (BackendUnavailableError if it cannot). The backends
      and the fake get the other arguments. Only for an op without a backward of its own.
    * ``entry``: the backend modules' function the forward runs (``forward``; the backward's is
      ``backward``). ``dispatch_as``: the name of the dispatch table (OpDispatch: ``ddfast info``,
      gpu_validated.json records, ``backends_ran``), ``name`` by default; declarations with the same one
      share one table and must declare the same package, backends and dtypes (dsa's op is ``dsa_pass``, its
      table ``dsa``).
    * ``saved_as``: non-tensor arguments a :class:`Saved` holds under another name, argument -> attribute,
      for an argument named as one of Saved's own attributes (mmd's ``kernel``, read as ``kernel_name``).
    """

    name: str
    package: str
    backends: tuple[str, ...]
    forward_schema: str
    backward_schema: str | None = None
    fake_forward: Callable
    fake_backward: Callable | None = None
    saved_outputs: dict[str, int] = field(default_factory=dict)
    grads_of: tuple[str, ...] = ()
    saved_inputs: tuple[str, ...] | None = None
    backward: Callable | None = None
    results: int = 1
    dtypes: dict[str, frozenset] = field(default_factory=dict)
    backward_with: "FusedOp | None" = None
    not_differentiable: str | None = None
    backend_argument: bool = False
    entry: str = "forward"
    dispatch_as: str | None = None
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
        value_names = tuple(a.name for a, kind in zip(arguments, kinds) if kind is _VALUE)
        if not set(self.saved_as) <= set(value_names):
            raise ValueError(f"{self.name}: saved_as renames {sorted(set(self.saved_as) - set(value_names))}, which "
                             f"are not non-tensor arguments of {self.forward_schema}")
        self._value_names = tuple(self.saved_as.get(name, name) for name in value_names)
        self.attribute_names = tuple(self.saved_as.get(name, name) for name in self.input_names)  # in a Saved
        self._values_of = _picker([i for i, kind in enumerate(kinds) if kind is _VALUE])
        self._saved_outputs_of = _picker(list(self.saved_outputs.values()))
        # The results among the outputs (plain functions: torch.compile traces __call__ through them).
        if len(schema.returns) in (1, self.results):  # the output, or all of them
            self._results_of = lambda outputs: outputs
        elif self.results == 1:
            self._results_of = lambda outputs: outputs[0]
        else:
            self._results_of = lambda outputs: tuple(outputs[:self.results])
        self.grad_positions = tuple(self.input_names.index(name) for name in self.grads_of)
        self._grad_flags_of = _picker(list(self.grad_positions))
        # The arguments the backends get: all but an explicit backend argument.
        self._arity = len(arguments) - self.backend_argument
        clashes = _SAVED_ATTRIBUTES.intersection((*self.attribute_names[:self._arity], *self.saved_outputs))
        if clashes:
            raise ValueError(f"{self.name}: input or saved output names {sorted(clashes)} clash with Saved's "
                             f"attributes")
        self._check_backward(arguments)
        # The tensor inputs setup_context saves: all, or saved_inputs.
        self._saved_names = self._tensor_names if self.saved_inputs is None else tuple(self.saved_inputs)
        self._tensors_of = _picker([self.input_names.index(name) for name in self._saved_names])

        key = (self.package, self.backends, self.dtypes)
        table = self.dispatch_as or self.name
        known, dispatch = _TABLES.get(table, (key, None))
        if known != key:
            raise ValueError(f"{self.name}: the dispatch table {table!r} it shares was declared with another "
                             f"package, backends or dtypes: {known}")
        if dispatch is None:
            impls = {b: (LazyModule if b in LAZY else importlib.import_module)(f"{self.package}.{MODULE_OF[b]}")
                     for b in self.backends}
            dispatch = OpDispatch(table, impls=impls,
                                  cuda_preference=tuple(b for b in self.backends if b in GPU_BACKENDS),
                                  dtypes=self.dtypes)
            _TABLES[table] = (key, dispatch)
        self.dispatch = dispatch
        self.reference = reference = dispatch.impls["reference"]
        self._last_run = _LastRun()
        entry, arity = self.entry, self._arity
        self.op = torch.library.custom_op(f"ddfast::{self.name}",
                                          lambda *args: getattr(reference, entry)(*args[:arity]),
                                          mutates_args=(), schema=self.forward_schema)
        own_backward = self.backward_schema is not None
        if own_backward:
            self.backward_op = torch.library.custom_op(f"ddfast::{self.name}_backward",
                                                       lambda *args: reference.backward(*args[:-1]), mutates_args=(),
                                                       schema=_with_backend(self.backward_schema))
        else:  # the op of backward_with, or none
            self.backward_op = self.backward_with.op if self.backward_with else None
        for device in DEVICES:
            self.op.register_kernel(device)(self._forward_kernel)
            if own_backward:
                self.backward_op.register_kernel(device)(self._backward_kernel)
        self.op.register_fake((lambda *args: self.fake_forward(*args[:arity])) if self.backend_argument
                              else self.fake_forward)
        if own_backward:
            self.backward_op.register_fake(lambda *args: self.fake_backward(*args[:-1]))
        if self.backward is not None:
            self.op.register_autograd(self._custom_op_backward, setup_context=self._setup_context)
        elif self.not_differentiable is not None:
            self.op.register_autograd(self._raise_not_differentiable, setup_context=_no_context)
        self.eager = self._eager_function() if self._has_lists and self.backward is not None else None

    def _check_backward(self, arguments) -> None:
        """Refuse inconsistent backward and backend-argument fields (before anything is registered)."""
        backward_fields = (self.backward_schema, self.backward_with, self.fake_backward, self.saved_outputs,
                           self.grads_of, self.saved_inputs)
        if self.backward is None and any(backward_fields):
            problem = "an op without a backward declares no backward_schema, backward_with, fake_backward, " \
                      "saved_outputs, grads_of or saved_inputs"
        elif self.saved_inputs is not None and (self._has_lists or set(self.saved_inputs) - set(self._tensor_names)):
            problem = f"saved_inputs {self.saved_inputs} must name tensor inputs of an op without tensor-list " \
                      f"arguments"
        elif self.backward is not None and (self.backward_schema is None) == (self.backward_with is None):
            problem = "its backward runs its own backward op (backward_schema) or backward_with's op: exactly one"
        elif self.backward_with is not None and not self.backward_with.backend_argument:
            problem = f"backward_with ({self.backward_with.name}) must take a backend argument"
        elif self.backward is not None and (self.not_differentiable is not None or self.backend_argument):
            problem = "an op with a backward takes neither not_differentiable nor a backend argument"
        elif self.backend_argument and (arguments[-1].name, str(arguments[-1].type)) != ("backend", "str"):
            problem = f"backend_argument needs 'str backend' last in its forward schema, got {self.forward_schema}"
        else:
            return
        raise ValueError(f"{self.name}: {problem}")

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
            named.update(zip(self._saved_names, saved))  # one flag per tensor input
            needs = dict(zip(self.grads_of, self._grad_flags_of(flags)))
            at = len(self._saved_names)
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
        # An explicit backend argument is the backend of the forward pass whose backward this op runs.
        requested = (inputs[-1], "the forward pass") if self.backend_argument and inputs[-1] else None
        backend, impl = self.dispatch.resolve(*self._device_dtype(inputs), requested=requested)
        outputs = getattr(impl, self.entry)(*inputs[:self._arity])
        if self.backward is not None:  # for setup_context
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

    def _raise_not_differentiable(self, ctx, *grads):
        raise RuntimeError(f"ddfast.{self.name} is not differentiable: {self.not_differentiable}")

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
            outputs = getattr(impl, op.entry)(*inputs)
            ctx.save_for_backward(*tensors, *op._saved_outputs_of(outputs))
            ctx.template, ctx.backend = template, backend
            return op._results_of(outputs)

        def backward(ctx, *grads):
            other = op.backward_with
            kernel = op.dispatch.impls[ctx.backend].backward if other is None else \
                getattr(other.dispatch.impls[ctx.backend], other.entry)
            saved = op._saved(ctx, kernel, flat_flags=True)
            return tuple(op._input_gradients(saved, grads, ctx.template[1], flat=True))

        name = "Eager" + "".join(part.title() for part in self.name.split("_"))
        return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                       "backward": staticmethod(backward),
                                                       "__doc__": f"{self.name} in eager mode (FusedOp)."})
