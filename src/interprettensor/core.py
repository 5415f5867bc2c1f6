"""The one LRP engine: a :class:`~interprettensor.rules.LinearRule` applied to a layer's linear map.

A layer contributes a :class:`LinearMap`: a function ``f(xs, params) -> z`` that is linear in each
input for fixed parameters (plus a bias), and its parameters. The transpose needed by LRP is never
written by hand: it is the vector-Jacobian product of ``f``, which TensorFlow computes as one
transposed matmul or transposed convolution. Under ``tf.function`` the forward op that the gradient
tape records for it is pruned when its value is not used, so the plain (unmodified) term costs one
backward op and reuses the forward pass's pre-activation ``z``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import tensorflow as tf

from .rules import Group, LinearRule, Term

Params = Mapping[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class LinearMap:
    """``z = fn(xs, params)``; ``params`` holds weight tensors under any name and an optional
    ``'bias'``. Rules modify every weight with their kernel modifier and ``'bias'`` with their bias
    modifier (dropping it when the modifier is ``None``)."""

    fn: Callable[[Sequence[tf.Tensor], Params], tf.Tensor]
    params: Params

    def __call__(self, xs: Sequence[tf.Tensor], params: Params | None = None) -> tf.Tensor:
        return self.fn(xs, self.params if params is None else params)


def modify_params(params: Params, term: Term) -> dict[str, tf.Tensor]:
    out = {}
    for name, value in params.items():
        if name == "bias":
            if term.bias is not None and value is not None:
                out[name] = term.bias(value)
        else:
            out[name] = term.kernel(value)
    return out


def _group_relevance(linear: LinearMap, xs: Sequence[tf.Tensor], R: tf.Tensor, group: Group,
                     rule: LinearRule, z: tf.Tensor | None) -> list[tf.Tensor]:
    terms_inputs = [[term.input(x) for x in xs] for term in group.terms]
    flat_inputs = [x for inputs in terms_inputs for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(flat_inputs)
        zg = None
        for term, inputs in zip(group.terms, terms_inputs):
            zt = linear(inputs, modify_params(linear.params, term))
            zg = zt if zg is None else zg + zt
    # the plain term can reuse the forward pass's pre-activation (then the recomputed one is dead code)
    denominator = z if (z is not None and len(group.terms) == 1 and group.terms[0].is_identity) else zg
    s = R / rule.stabilize(tf.cast(denominator, R.dtype))
    grads = tape.gradient(zg, flat_inputs, output_gradients=tf.cast(s, zg.dtype),
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    out = []
    n = len(xs)
    for i in range(n):
        acc = None
        for t in range(len(group.terms)):
            contrib = flat_inputs[t * n + i] * grads[t * n + i]
            acc = contrib if acc is None else acc + contrib
        out.append(acc)
    return out


def linear_relevance(linear: LinearMap, xs: Sequence[tf.Tensor], R: tf.Tensor, rule: LinearRule,
                     z: tf.Tensor | None = None) -> list[tf.Tensor]:
    """Relevance at each input of ``linear`` given relevance ``R`` at its (pre-activation) output.

    ``z`` is the forward pass's value of ``linear(xs)``, reused for the unmodified term's denominator.
    """
    result: list[tf.Tensor] | None = None
    for group in rule.groups():
        part = _group_relevance(linear, xs, R, group, rule, z)
        if group.coefficient != 1.0:
            part = [tf.cast(group.coefficient, p.dtype) * p for p in part]
        result = part if result is None else [a + b for a, b in zip(result, part)]
    if result is None:
        return [tf.zeros_like(x) for x in xs]
    return result
