"""Linear layers without trainable weights: sums, averages, average pooling, upsampling, and a
BatchNorm that could not be merged (an affine map). Relevance splits in proportion to the inputs'
contributions (the z-rule, or the rule the composite assigns)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

from ..linear import LinearMap, linear_relevance
from ..rules import Pass
from .base import LINEAR, Handler, cached_map, check_linear_rule, pass_through, shaped_like

__all__ = ["FixedLinearHandler"]


class FixedLinearHandler(Handler):
    """A linear layer without trainable weights: ``fn(layer, xs, params)`` with
    ``params = weights(layer, xs)`` (default: a scalar kernel 1 that rules may modify).

    ``sign_preserving``: non-negative inputs give a non-negative output (pooling, sums; not an affine
    BatchNorm or ``Subtract``)."""

    category = LINEAR
    accepts_lazy = True

    def __init__(self, fn: Callable, weights: Callable[[Any, Sequence[tf.Tensor]], dict] | None = None,
                 sign_preserving: bool = True):
        self._fn = fn
        self._weights = weights or (lambda layer, xs: {"kernel": tf.ones((), xs[0].dtype)})
        self.sign_preserving = sign_preserving

    def linear_map(self, layer: Any, xs: Sequence[tf.Tensor]) -> LinearMap:
        return LinearMap(lambda xs_, p: self._fn(layer, xs_, p), self._weights(layer, xs), None)

    def output_nonneg(self, layer, inputs_nonneg, step):
        return self.sign_preserving and all(inputs_nonneg)

    def forward(self, layer, xs, step):
        lm = self.linear_map(layer, xs)
        z = lm(xs)
        return [z], {"z": z, "map": lm}

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        if isinstance(rule, Pass):
            return pass_through(xs, Rs, step)
        rule = check_linear_rule(rule, step)
        lm = cached_map(state.get("map"), xs) or self.linear_map(layer, xs)
        return linear_relevance(lm, xs, shaped_like(Rs[0], state["z"]), rule, state["z"], step.nonneg, lazy=True)
