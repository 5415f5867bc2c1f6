"""The backend interface of :mod:`interprettensor.engine.backend` on TensorFlow: gradient tapes,
control dependencies and ``tf.scan``."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

__all__ = ["vjp", "pullback", "after", "stop_gradient", "scan", "distinct"]


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
        tape.watch(xs)
        out = fn(xs)
    return tape.gradient(out, xs, output_gradients=cotangent, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def pullback(fn: Callable[[list], Any], primals: Sequence[tf.Tensor]) -> tuple[list, Any, Callable[[int, Any], tf.Tensor]]:
    """One forward pass of ``fn`` on (distinct copies of) ``primals``: ``(the primals as watched, the
    output, back)`` where ``back(i, cotangent)`` is ``J_i^T cotangent`` for primal ``i``, callable
    once per primal."""
    tape = tf.GradientTape(persistent=True)
    with tape:
        xs = distinct(primals)
        tape.watch(xs)
        out = fn(xs)

    def back(i: int, cotangent: Any) -> tf.Tensor:
        return tape.gradient(out, xs[i], output_gradients=cotangent, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return xs, out, back


def after(deps: Sequence[Any], fn: Callable[[], Any]) -> Any:
    """``fn()``, scheduled once ``deps`` have been computed (values do not depend on it)."""
    with tf.control_dependencies(list(deps)):
        return fn()


def stop_gradient(x: tf.Tensor) -> tf.Tensor:
    return tf.stop_gradient(x)


def scan(fn: Callable[[Any, Any], Any], elems: Any, initializer: Any, reverse: bool = False) -> Any:
    """``fn(acc, elem) -> acc`` over the leading axis of (the nested) ``elems``, starting from
    ``initializer``; every accumulator, stacked along a new leading axis (``reverse``: from the last
    element to the first, stacked in the order of ``elems``)."""
    return tf.scan(fn, elems, initializer=initializer, reverse=reverse)
