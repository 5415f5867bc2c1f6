"""The backend interface of :mod:`interprettensor.engine.backend` on JAX: ``jax.vjp``,
``jax.lax.scan`` and ``jax.jit``.

Compiled functions take the model's variables as arguments (inside a Keras ``StatelessScope``), so
that weights are not baked into the compiled code as constants: a model trained or changed after an
explanation is explained with its new weights, and large models do not embed their weights in the
program."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from ._concrete import FUSED_MIN_ELEMENTS, conv, error_message, fused, spec, use_fused  # noqa: F401 - the interface

#: whether a compiled pass frees a value once nothing left to run reads it
#: (XLA's buffer assignment frees a value after its last use)
FREES_UNREAD = True
import keras

#: whether float64 tensors compute in float64 (Keras promotes float64 to float32 on JAX and PyTorch)
FLOAT64 = False

#: what a compiled call raises on bad data (XLA clamps indices instead of failing, so the explainer
#: checks indices and targets on the host before the call)
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (jax.errors.JaxRuntimeError,)


def compile(fn: Callable, signature: Sequence[Any], jit: bool = False,  # noqa: A001 - the interface's name
            variables: Sequence[Any] = ()) -> Callable:
    """``jax.jit(fn)``, traced once per input shapes; ``variables`` (Keras variables that ``fn``
    reads) are passed in as arguments at every call rather than captured as constants."""
    variables = list(variables)

    def stateless(values: list, *args: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)

    def call(*args: Any) -> Any:
        return jitted([v.value for v in variables], *args)

    call.__wrapped__ = fn
    return call


def distinct(inputs: Sequence[Any]) -> list:
    """``jax.vjp`` takes each primal as its own argument: repeated tensors need no copies."""
    return list(inputs)


def _as_output(out: Any, cotangent: Any) -> Any:
    """``cotangent`` in the structure (and dtype) of ``out``."""
    if isinstance(out, (list, tuple)):
        cot = list(cotangent) if isinstance(cotangent, (list, tuple)) else [cotangent]
        return type(out)(c.astype(o.dtype) for o, c in zip(out, cot))
    if isinstance(cotangent, (list, tuple)):
        (cotangent,) = cotangent
    return jax.numpy.asarray(cotangent).astype(out.dtype)


def vjp(fn: Callable[[list], Any], primals: Sequence[Any], cotangent: Any) -> list:
    """``J^T cotangent`` of ``fn(primals)`` for each primal (``jax.vjp``; zeros where ``fn`` does
    not depend on a primal, one share per occurrence of a repeated tensor)."""
    out, back = jax.vjp(lambda *xs: fn(list(xs)), *primals)
    return list(back(_as_output(out, cotangent)))


def pullback(fn: Callable[[list], Any], primals: Sequence[Any]) -> tuple[list, Any, Callable[[int, Any], Any]]:
    """One forward pass and ``back(i, cotangent)`` (under ``jit`` the unused cotangents are pruned)."""
    xs = list(primals)
    out, pull = jax.vjp(lambda *a: fn(list(a)), *xs)

    def back(i: int, cotangent: Any) -> Any:
        return pull(_as_output(out, cotangent))[i]

    return xs, out, back


def after(deps: Sequence[Any], fn: Callable[[], Any]) -> Any:
    """XLA schedules by data dependence; the hint has no JAX equivalent (values never depend on it)."""
    return fn()


def recompute(deps: Sequence[Any], inputs: Sequence[Any], fn: Callable[[list], Any]) -> Any:
    """``fn(inputs)`` computed anew once ``deps`` exist: an optimisation barrier ties the inputs to
    ``deps``, so XLA neither merges the recomputation with the forward pass's same operations (common
    subexpression elimination would keep those alive) nor hoists it (as ``jax.checkpoint`` does)."""
    _, xs = jax.lax.optimization_barrier((list(deps), list(inputs)))
    return fn(list(xs))


def stop_gradient(x: Any) -> Any:
    return jax.lax.stop_gradient(x)


def scan(fn: Callable[[Any, Any], Any], elems: Any, initializer: Any, reverse: bool = False) -> Any:
    """``jax.lax.scan`` with every accumulator as its per-step output (``tf.scan``'s contract)."""
    def step(acc: Any, elem: Any) -> tuple:
        new = fn(acc, elem)
        return new, new

    return jax.lax.scan(step, initializer, elems, reverse=reverse)[1]


def max_pool_winner(x: Any, y: Any, R: Any, pool_size: Sequence[int], strides: Sequence[int], padding: str,
                    data_format: str = "channels_last") -> Any:
    """Winner-takes-all relevance through a 2-D max pooling (see the TensorFlow module): the
    vector-Jacobian product of ``keras.ops.max_pool``, whose ``select_and_scatter_add`` routes each
    window to its first maximum in row-major order."""
    from keras import ops

    _, back = jax.vjp(lambda t: ops.max_pool(t, tuple(pool_size), tuple(strides), padding, data_format), x)
    return back(R.astype(x.dtype))[0]


def is_symbolic(x: Any) -> bool:
    """Whether ``x`` is a tracer of a computation being compiled (unreadable on the host)."""
    return isinstance(x, jax.core.Tracer)


def runtime_error(message: str) -> BaseException:
    """An error of :data:`RUNTIME_ERRORS`' kind for a check made on the host."""
    return jax.errors.JaxRuntimeError(message)


def snapshot(variable: Any) -> Any:
    """``variable``'s value now, unchanged by later assignments to it (a JAX array is immutable)."""
    return variable.value


def assign(variable: Any, value: Any) -> None:
    """``variable`` set to ``value`` (an array of its shape and dtype)."""
    variable.assign(value)


def take_rows(value: Any, order: Any) -> Any:
    """``value[order]``: the rows (first axis) of ``value`` in the order of the int32 indices ``order``."""
    return value[order]
