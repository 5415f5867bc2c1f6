"""The backend interface of :mod:`interprettensor.engine.backend` on PyTorch: ``torch.autograd.grad``
and eager execution.

PyTorch runs the engine eagerly: :func:`compile` returns the function run under ``torch.no_grad``
(operations are recorded only inside :func:`vjp` and :func:`pullback`). :func:`scan` is a loop over
time steps, the one place where PyTorch has no batched primitive (Keras' own ``ops.scan`` loops the
same way on this backend).

``torch.compile`` is not used for the pass as a whole: on the explainer's pass (a 10-convolution CNN,
batch 8) Dynamo breaks the graph at every ``torch.autograd.grad`` (one per layer) and at the engine's
Python records, recompiles each layer's relevance function per shape until it hits its recompilation
limit, and its first call took over 500 s on the shared 2-core machine (results equal to eager's), and
later calls, still recompiling and guarding, took 54 s against eager's 2.8 s (32x32 inputs). It is used
where it pays: :func:`fused` compiles the engine's small element-wise functions (the stabilised
divisions ``R / stab(z)``) with Inductor for large activations, where eagerly each of their operations
is one pass over memory (on an 8x112x112x64 tensor the generalised gamma's division took 0.94 s op by
op and 0.06 s compiled).

Eagerly, the forward pass that :func:`vjp` records would be computed in full, although the
transpose of a convolution or matrix product never reads its output (on TensorFlow and JAX the
compiler prunes it): LRP would pay one convolution more per layer than gradient x input. Inside
:func:`vjp`, :class:`_DeadForward` allocates those outputs without computing them, and computes one
only if a later operation of the same forward reads it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ._concrete import conv as _concrete_conv
from ._concrete import error_message, spec  # noqa: F401 - the interface

#: whether float64 tensors compute in float64 (Keras promotes float64 to float32 on JAX and PyTorch)
FLOAT64 = False

#: what a call raises on bad data (an index beyond an embedding table)
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (IndexError, RuntimeError)


def compile(fn: Callable, signature: Sequence[Any], jit: bool = False,  # noqa: A001 - the interface's name
            variables: Sequence[Any] = ()) -> Callable:
    """``fn`` run eagerly (variables are read at every call), recording operations only inside
    :func:`vjp` and :func:`pullback` (everything else under ``torch.no_grad``)."""
    def call(*args: Any) -> Any:
        with torch.no_grad():
            return fn(*args)

    call.__wrapped__ = fn
    return call


#: per-sample size from which the engine's element-wise kernels run fused (:func:`fused`). Inductor
#: compiles each kernel once for all shapes (dynamic shapes), so the threshold is lower than
#: TensorFlow's per-shape XLA kernels': BERT-base's activations (128 tokens x 768, 98 304 elements per
#: sample) are fused; with 2^19 they ran op by op, and AttnLRP on a 2-layer BERT-base (batch 8) took
#: 1.9x its gradient x input, fused 1.1x (same values, bitwise, on this CPU)
FUSED_MIN_ELEMENTS = 2 ** 16

#: whether a compiled pass frees a value once nothing left to run reads it
#: (eagerly, the forward pass's records hold their values until walked)
FREES_UNREAD = False

#: ``False`` once Inductor failed to compile a fused kernel (no C++ compiler, an unsupported platform):
#: the element-wise functions then run op by op, as before the first try
_INDUCTOR_USABLE = [True]


def fused(fn: Callable) -> Callable:
    """``fn``, a small element-wise computation, compiled by ``torch.compile`` (Inductor: one loop
    over the elements instead of one pass over memory per operation; shapes dynamic, so a new shape
    does not recompile) for large activations, where eagerly its operations are memory-bound (see
    :func:`use_fused`). Compiled at its first call (seconds, cached on disk by Inductor for later
    processes). Where Inductor cannot compile (no C++ compiler) it warns once and runs ``fn`` eagerly."""
    compiled: list = []

    def call(*args: Any) -> Any:
        if not _INDUCTOR_USABLE[0]:
            return fn(*args)
        if not compiled:
            from torch._dynamo.exc import BackendCompilerFailed
            from torch._inductor.exc import InductorError

            compiled.append((torch.compile(fn, dynamic=True, fullgraph=True), (BackendCompilerFailed, InductorError)))
        kernel, failures = compiled[0]
        try:
            return kernel(*args)
        except failures as e:
            _INDUCTOR_USABLE[0] = False
            import warnings

            warnings.warn(f"interprettensor: torch.compile could not compile the fused element-wise kernels "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); they run op by op "
                          f"(slower on large activations, same results)", RuntimeWarning, stacklevel=2)
            return fn(*args)

    call.__wrapped__ = fn
    return call


def use_fused(z: Any, min_elements: int) -> bool:
    """Whether a :func:`fused` kernel pays on ``z``: where every sample has at least ``min_elements``
    elements (Inductor's first compile costs seconds) and Inductor works here."""
    return _INDUCTOR_USABLE[0] and len(z.shape) > 1 and z[0].numel() >= min_elements


def _watched(inputs: Sequence[Any]) -> list:
    """Fresh leaves that record the operations on them (one per occurrence of a repeated tensor)."""
    out = []
    for x in inputs:
        x = torch.as_tensor(x)
        out.append(x.detach().requires_grad_(True) if x.is_floating_point() else x.detach())
    return out


def distinct(inputs: Sequence[Any]) -> list:
    return _watched(inputs)


def _grads(out: Any, xs: Sequence[Any], cotangent: Any, retain: bool) -> list:
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    cots = list(cotangent) if isinstance(cotangent, (list, tuple)) else [cotangent]
    pairs = [(o, torch.as_tensor(c).to(o.dtype)) for o, c in zip(outs, cots) if o.requires_grad]
    wanted = [x for x in xs if x.requires_grad]
    grads = (torch.autograd.grad([o for o, _ in pairs], wanted, [c for _, c in pairs], retain_graph=retain,
                                 allow_unused=True) if pairs and wanted else [None] * len(wanted))
    it = iter(grads)
    result = []
    for x in xs:
        g = next(it) if x.requires_grad else None
        result.append(torch.zeros_like(x) if g is None else g)
    return result


_aten = torch.ops.aten
#: operations whose vector-Jacobian product never reads their output (only their inputs)
_UNREAD_OUTPUT = frozenset({_aten.convolution.default, _aten.mm.default, _aten.bmm.default})
#: operations not marked as views that return a view of a contiguous input (``matmul`` of a 3-D tensor
#: reshapes ``mm``'s output with it); checked by the storage of what they return
_ALIASING = frozenset({_aten._unsafe_view.default})


class _DeadForward(TorchDispatchMode):
    """Below autograd (which records the operations as usual), the outputs of :data:`_UNREAD_OUTPUT`'s
    operations are allocated with the shape and strides that the operation gives (from its meta
    kernel) but not computed. An operation that reads one (or a view of one: views share its storage)
    computes it first, in place, from the recorded inputs; so every value read, in the forward or by
    the backward pass, is exact, and an output that only the backward pass needs is never computed."""

    def __init__(self) -> None:
        super().__init__()
        #: storage address -> (operation, args, kwargs, the allocated output) for outputs not computed yet
        self.pending: dict[int, tuple] = {}

    def _compute(self, leaves: Sequence[Any]) -> None:
        for t in leaves:
            if isinstance(t, torch.Tensor) and self.pending:
                entry = self.pending.pop(t.untyped_storage().data_ptr(), None)
                if entry is not None:
                    func, args, kwargs, out = entry
                    out.copy_(func(*args, **kwargs))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        leaves = tree_flatten((args, kwargs))[0]
        if func in _UNREAD_OUTPUT:
            self._compute(leaves)
            meta = func(*[_meta(a) for a in args], **{k: _meta(v) for k, v in kwargs.items()})
            out = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device=leaves[0].device)
            self.pending[out.untyped_storage().data_ptr()] = (func, args, kwargs, out)
            return out
        lazy = self.pending and any(isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in self.pending
                                    for t in leaves)
        if lazy and (func.is_view or func in _ALIASING):
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor) and out.untyped_storage().data_ptr() in self.pending:
                return out  # a view of an output not computed yet: computed when read
        if lazy:
            self._compute(leaves)
        return func(*args, **kwargs)


def _meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    return x


def vjp(fn: Callable[[list], Any], primals: Sequence[Any], cotangent: Any) -> list:
    """``J^T cotangent`` of ``fn(primals)`` for each primal (``torch.autograd.grad``; zeros where
    ``fn`` does not depend on a primal, one share per occurrence of a repeated tensor). The forward
    pass computes only what the backward pass reads (:class:`_DeadForward`)."""
    with torch.enable_grad():
        xs = _watched(primals)
        with _DeadForward():
            out = fn(xs)
        return [g.detach() for g in _grads(out, xs, cotangent, retain=False)]


def pullback(fn: Callable[[list], Any], primals: Sequence[Any]) -> tuple[list, Any, Callable[[int, Any], Any]]:
    with torch.enable_grad():
        xs = _watched(primals)
        out = fn(xs)

    def back(i: int, cotangent: Any) -> Any:
        with torch.enable_grad():
            return _grads(out, [xs[i]], cotangent, retain=True)[0].detach()

    return [x.detach() for x in xs], _detached(out), back


def _detached(out: Any) -> Any:
    if isinstance(out, (list, tuple)):
        return type(out)(o.detach() for o in out)
    return out.detach()


def after(deps: Sequence[Any], fn: Callable[[], Any]) -> Any:
    return fn()


def recompute(deps: Sequence[Any], inputs: Sequence[Any], fn: Callable[[list], Any]) -> Any:
    """``fn(inputs)``: eagerly, the recomputation runs when called (after ``deps``), and the forward
    pass's records were freed when the engine let go of them."""
    return fn(list(inputs))


def stop_gradient(x: Any) -> Any:
    return x.detach()


def scan(fn: Callable[[Any, Any], Any], elems: Any, initializer: Any, reverse: bool = False) -> Any:
    """``fn(acc, elem) -> acc`` over the leading axis, every accumulator stacked (``tf.scan``'s
    contract), as a loop over the steps."""
    from keras import tree

    flat = tree.flatten(elems)
    n = flat[0].shape[0]
    order = range(n - 1, -1, -1) if reverse else range(n)
    acc, accs = initializer, [None] * n
    for t in order:
        acc = fn(acc, tree.pack_sequence_as(elems, [e[t] for e in flat]))
        accs[t] = acc
    return tree.map_structure(lambda *steps: torch.stack(steps), *accs)


def max_pool_winner(x: Any, y: Any, R: Any, pool_size: Sequence[int], strides: Sequence[int], padding: str,
                    data_format: str = "channels_last") -> Any:
    """Winner-takes-all relevance through a 2-D max pooling (see the TensorFlow module): the
    vector-Jacobian product of ``keras.ops.max_pool`` (``max_pool2d`` routes each window to the
    first maximum in row-major order)."""
    from keras import ops

    return vjp(lambda xs: ops.max_pool(xs[0], tuple(pool_size), tuple(strides), padding, data_format), [x], R)[0]


#: rank -> (the permutation of a channels-last input to PyTorch's channels-first shape, and back; the
#: kernel's ``(spatial..., in, out)`` to ``(out, in, spatial...)``)
_CONV_AXES = {4: ((0, 3, 1, 2), (0, 2, 3, 1), (3, 2, 0, 1)), 5: ((0, 4, 1, 2, 3), (0, 2, 3, 4, 1), (4, 3, 0, 1, 2))}
_CONV = {4: torch.nn.functional.conv2d, 5: torch.nn.functional.conv3d}


def conv(x: Any, kernel: Any, strides: Sequence[int], padding: str, dilation_rate: Sequence[int],
         data_format: str) -> Any:
    """``keras.ops.conv`` without its layout copies: on a channels-last 2-D or 3-D input, Keras' PyTorch
    backend copies the input to channels-first (``permute(...).contiguous()``) and back to PyTorch's
    channels-last memory format (``.contiguous(memory_format=channels_last)``) at every call, and its
    backward pass copies the gradient back twice. Here the input's channels-first view (a permutation of
    its axes, no copy) of a contiguous channels-last input already has the channels-last strides that
    PyTorch's convolution reads, so the convolution, its output (permuted back: a view) and its input
    gradient need no copy (an input with other strides, a broadcast box bound, is copied once). The
    same convolution kernel runs on the same memory layout (the kernel, as in Keras, copied to it), so
    the values are Keras'. Other cases (channels
    first, 1-D, ``'same'`` padding that is not symmetric) call ``keras.ops.conv``."""
    from keras import ops

    x, kernel = ops.convert_to_tensor(x), ops.convert_to_tensor(kernel)
    rank = x.ndim
    if data_format != "channels_last" or rank not in _CONV_AXES or kernel.ndim != rank:
        return _concrete_conv(x, kernel, strides, padding, dilation_rate, data_format)
    spatial = rank - 2
    to_first, to_last, kernel_axes = _CONV_AXES[rank]
    strides = _per_axis(strides, spatial)
    dilation = _per_axis(dilation_rate, spatial)
    k = kernel.permute(kernel_axes)
    if padding == "valid":
        pad = [0] * spatial
    elif padding == "same":
        pad = []
        for size, ks, st, dil in zip(x.shape[1:-1], k.shape[2:], strides, dilation):
            effective = (ks - 1) * dil + 1
            total = effective - 1 if st == 1 else max(0, (-(-size // st) - 1) * st + effective - size)
            if total % 2:  # asymmetric: Keras pads the input explicitly
                return _concrete_conv(x, kernel, strides, padding, dilation_rate, data_format)
            pad.append(total // 2)
    else:
        return _concrete_conv(x, kernel, strides, padding, dilation_rate, data_format)
    if x.shape[-1] % k.shape[1]:
        raise ValueError(f"conv: the input's {x.shape[-1]} channels are not a multiple of the kernel's "
                         f"{k.shape[1]} input channels (input shape {tuple(x.shape)}, kernel shape "
                         f"{tuple(kernel.shape)})")
    layout = torch.channels_last if rank == 4 else torch.channels_last_3d
    # PyTorch picks the convolution's algorithm by the memory format: Keras' (channels last) for both
    xf, k = x.permute(to_first).contiguous(memory_format=layout), k.contiguous(memory_format=layout)
    out = _CONV[rank](xf, k, stride=strides, padding=pad, dilation=dilation, groups=x.shape[-1] // k.shape[1])
    return out.permute(to_last)


def _per_axis(v: Any, n: int) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v),) * n


def is_symbolic(x: Any) -> bool:
    """PyTorch runs eagerly: every tensor can be read on the host."""
    return False


def runtime_error(message: str) -> BaseException:
    """An error of :data:`RUNTIME_ERRORS`' kind for a check made on the host."""
    return RuntimeError(message)


def snapshot(variable: Any) -> Any:
    """``variable``'s value now, unchanged by later assignments to it: a copy (an assignment writes
    into the variable's tensor)."""
    return variable.value.detach().clone()


def assign(variable: Any, value: Any) -> None:
    """``variable`` set to ``value`` (a tensor of its shape and dtype), copied into its tensor."""
    variable.assign(value)


def take_rows(value: Any, order: Any) -> Any:
    """``value[order]``: the rows (first axis) of ``value`` in the order of the int32 indices ``order``."""
    with torch.no_grad():
        return torch.index_select(value, 0, order)
