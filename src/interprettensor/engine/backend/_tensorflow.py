"""The backend interface of :mod:`interprettensor.engine.backend` on TensorFlow: gradient tapes,
control dependencies, ``tf.scan`` and max pooling's gradient kernel."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

from ._concrete import conv  # noqa: F401 - the interface: keras.ops.conv, as on JAX

#: whether float64 tensors compute in float64 (Keras promotes float64 to float32 on JAX and PyTorch)
FLOAT64 = True

#: per-sample size from which the engine's element-wise kernels run as one fused XLA kernel: XLA compiles
#: each kernel per shape on its first call, which costs more than the fusion saves on small tensors
FUSED_MIN_ELEMENTS = 2 ** 19

#: whether a compiled pass frees a value once nothing left to run reads it
#: (a graph's executor frees a tensor once its last reader has run)
FREES_UNREAD = True

#: what a compiled call raises on bad data (an index beyond a table, a failed runtime check)
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (tf.errors.InvalidArgumentError,)


def error_message(e: BaseException) -> str:
    """The message of one of :data:`RUNTIME_ERRORS`."""
    return getattr(e, "message", None) or str(e)


def spec(shape: Sequence[int | None] | None, dtype: Any) -> tf.TensorSpec:
    """The signature of one argument of a :func:`compile`\ d function (``None``: any size; a shape of
    ``None``: any rank)."""
    return tf.TensorSpec(shape, dtype)


def compile(fn: Callable, signature: Sequence[Any], jit: bool = False,  # noqa: A001 - the interface's name
            variables: Sequence[Any] = ()) -> Callable:
    """``fn`` compiled for arguments of ``signature`` (nested :func:`spec`\ s): traced once, Python
    side effects of ``fn`` run at that trace only (a ``signature`` of ``None``: traced once per
    call's shapes); ``jit``: compiled with XLA as a whole.
    ``variables``: the Keras variables ``fn`` reads (``tf.function`` reads variables by reference at
    every call, so TensorFlow needs no list; JAX passes them in as arguments)."""
    return tf.function(fn, input_signature=signature, jit_compile=jit, autograph=False)


def fused(fn: Callable) -> Callable:
    """``fn``, a small element-wise computation, compiled into one fused kernel (XLA), for large
    activations where its element-wise ops are memory-bound (see :func:`use_fused`)."""
    return tf.function(fn, jit_compile=True, autograph=False)


def use_fused(z: tf.Tensor, min_elements: int) -> bool:
    """Whether a :func:`fused` kernel pays on ``z``: not while functions run eagerly, and only where
    every sample's shape is known and has at least ``min_elements`` elements."""
    per_sample = z.shape[1:]
    return (not tf.config.functions_run_eagerly() and per_sample.is_fully_defined()
            and per_sample.num_elements() >= min_elements)


def distinct(inputs: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """The inputs, with repeated tensors replaced by copies: a gradient taken with respect to a list
    that holds one tensor twice gives both entries the full gradient."""
    seen: set = set()
    out = []
    for x in inputs:
        out.append(tf.identity(x) if id(x) in seen else x)
        seen.add(id(x))
    return out


def vjp(fn: Callable[[list], Any], primals: Sequence[tf.Tensor], cotangent: Any) -> list[tf.Tensor]:
    """``J^T cotangent`` of ``fn(primals)`` for each primal (zeros where ``fn`` does not depend on it;
    a tensor given twice gets its share per occurrence). ``cotangent`` is shaped like ``fn``'s output
    (a list for several outputs). Inside a ``tf.function`` the forward ops that only the tape needs
    are pruned: the cost is the backward pass."""
    with tf.GradientTape() as tape:
        xs = distinct(primals)
        tape.watch([x for x in xs if x.dtype.is_floating])  # masks and indices carry no gradient
        out = fn(xs)
    return tape.gradient(out, xs, output_gradients=cotangent, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def pullback(fn: Callable[[list], Any], primals: Sequence[tf.Tensor]) -> tuple[list, Any, Callable[[int, Any], tf.Tensor]]:
    """One forward pass of ``fn`` on (distinct copies of) ``primals``: ``(the primals as watched, the
    output, back)`` where ``back(i, cotangent)`` is ``J_i^T cotangent`` for primal ``i``, callable
    once per primal."""
    tape = tf.GradientTape(persistent=True)
    with tape:
        xs = distinct(primals)
        tape.watch([x for x in xs if x.dtype.is_floating])  # masks and indices carry no gradient
        out = fn(xs)

    def back(i: int, cotangent: Any) -> tf.Tensor:
        return tape.gradient(out, xs[i], output_gradients=cotangent, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return xs, out, back


def after(deps: Sequence[Any], fn: Callable[[], Any]) -> Any:
    """``fn()``, scheduled once ``deps`` have been computed (values do not depend on it)."""
    with tf.control_dependencies(list(deps)):
        return fn()


def recompute(deps: Sequence[Any], inputs: Sequence[tf.Tensor], fn: Callable[[list], Any]) -> Any:
    """``fn(inputs)`` computed anew once ``deps`` exist: the inputs pass through identities that depend
    on ``deps``, so the graph optimiser cannot merge the recomputation with the forward pass's same
    operations (and keep those alive), nor schedule it before the backward pass reaches it."""
    with tf.control_dependencies(list(deps)):
        xs = [tf.identity(x) for x in inputs]
    return fn(xs)


def stop_gradient(x: tf.Tensor) -> tf.Tensor:
    return tf.stop_gradient(x)


def scan(fn: Callable[[Any, Any], Any], elems: Any, initializer: Any, reverse: bool = False) -> Any:
    """``fn(acc, elem) -> acc`` over the leading axis of (the nested) ``elems``, starting from
    ``initializer``; every accumulator, stacked along a new leading axis (``reverse``: from the last
    element to the first, stacked in the order of ``elems``)."""
    return tf.scan(fn, elems, initializer=initializer, reverse=reverse)


def is_symbolic(x: Any) -> bool:
    """Whether ``x`` is a placeholder of a computation being traced (inside a :func:`compile`\ d
    function, a ``tf.function`` or ``tf.distribute.Strategy.run``), whose values the host cannot read;
    ``False`` for an eager tensor, a NumPy array or a Python number."""
    return bool(tf.is_symbolic_tensor(x))


def runtime_error(message: str) -> BaseException:
    """An error of :data:`RUNTIME_ERRORS`' kind that carries ``message`` (:func:`error_message` reads
    it back): what a check made on the host, in place of one inside a compiled call, raises so that
    callers catch it as they catch the compiled call's own errors on bad data."""
    return tf.errors.InvalidArgumentError(None, None, message)


def max_pool_winner(x: tf.Tensor, y: tf.Tensor, R: tf.Tensor, pool_size: Sequence[int], strides: Sequence[int],
                    padding: str, data_format: str = "channels_last") -> tf.Tensor:
    """Winner-takes-all relevance through the 2-D max pooling ``y = max_pool(x)``: the vector-Jacobian
    product of max pooling with cotangent ``R``.

    ``x`` is (N, H, W, C) for ``data_format='channels_last'``, (N, C, H, W) for ``'channels_first'``;
    ``y`` is its max pooling over windows of ``pool_size`` (rows, columns) moved by ``strides``, with
    Keras' ``padding`` (``'valid'``: only whole windows; ``'same'``: ``ceil(H / stride)`` windows per
    axis, the padding split with the smaller half before the data, and padded positions never win);
    ``R`` is shaped like ``y``; ``x``, ``y`` and ``R`` share one floating dtype.

    Returns a tensor shaped and typed like ``x``: the relevance ``R`` of each window goes, whole, to
    the one input of the window that holds the window's maximum; an input that wins several
    (overlapping) windows gets the sum of their relevances; every other input gets zero. Ties: of
    several inputs equal to a window's maximum, the first in the window's row-major order (the
    smallest row, then the smallest column) wins, as the argmax that the vector-Jacobian products of
    max pooling route to (PyTorch's ``max_pool2d`` indices, JAX's ``select_and_scatter_add`` with
    ``>=``). Only values equal to the maximum can win: a value close to it gets nothing.

    TensorFlow: one ``MaxPoolGrad`` kernel, which reads ``y`` instead of pooling again (its CPU kernel
    finds each window's first maximum in row-major order; ``'channels_first'`` is transposed to
    channels-last around it).
    """
    channels_first = data_format == "channels_first"
    if channels_first:
        x, y, R = (tf.transpose(a, [0, 2, 3, 1]) for a in (x, y, R))
    out = tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y, grad=R, ksize=[1, *pool_size, 1],
                                 strides=[1, *strides, 1], padding=padding.upper())
    return tf.transpose(out, [0, 3, 1, 2]) if channels_first else out


def _plain(variable: Any) -> Any:
    """The ``tf.Variable`` behind a Keras variable, or None where it is not one plain variable (a
    distributed variable, whose replicas are assigned through ``Variable.assign``)."""
    v = variable.value
    return v if isinstance(v, tf.Variable) and not isinstance(v, tf.distribute.DistributedValues) else None


def snapshot(variable: Any) -> tf.Tensor:
    """``variable``'s value now, unchanged by later assignments to it: a read (no copy; TensorFlow's
    assignment writes a new buffer while a read of the old one is held)."""
    v = _plain(variable)
    if v is not None:
        return tf.raw_ops.ReadVariableOp(resource=v.handle, dtype=v.dtype)
    return tf.identity(variable.value)


def assign(variable: Any, value: tf.Tensor) -> None:
    """``variable`` set to ``value`` (a tensor of its shape and dtype): one assignment op on the
    variable's handle, without the Python-level checks of ``Variable.assign`` (a tenth of its cost on a
    small variable)."""
    v = _plain(variable)
    if v is not None:
        tf.raw_ops.AssignVariableOp(resource=v.handle, value=value)
    else:
        variable.assign(value)


def take_rows(value: Any, order: tf.Tensor) -> tf.Tensor:
    """``value[order]``: the rows (first axis) of ``value`` in the order of the int32 indices ``order``."""
    return tf.raw_ops.GatherV2(params=value, indices=order, axis=0)
