"""Linear layers without trainable weights: sums, averages, average pooling, upsampling, and a
BatchNorm that could not be merged (an affine map). Relevance splits in proportion to the inputs'
contributions (the z-rule, or the rule the composite assigns)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
from keras import ops

from .. import dtypes
from ..backend import Tensor
from ..linear import LinearMap, linear_relevance
from .base import DEFAULT_PASS, LINEAR, Handler, cached_map, check_linear_rule, pass_through, shaped_like
from .elementwise import ElementwiseHandler

__all__ = ["FixedLinearHandler"]


class FixedLinearHandler(Handler):
    """A linear layer without trainable weights: ``fn(layer, xs, params)`` with
    ``params = weights(layer, xs)`` (default: a scalar kernel 1 that rules may modify).

    ``sign_preserving``: non-negative inputs give a non-negative output (pooling, sums; not an affine
    BatchNorm or ``Subtract``). ``transpose(layer, xs, params, s)``: the map's transpose written out
    (:attr:`~interprettensor.engine.linear.LinearMap.transpose`), used where all inputs have the
    output's shape (no broadcasting to undo)."""

    category = LINEAR
    accepts_lazy = True
    batch_records = True

    def __init__(self, fn: Callable, weights: Callable[[Any, Sequence[Tensor]], dict] | None = None,
                 sign_preserving: bool = True, transpose: Callable | None = None):
        self._fn = fn
        self._weights = weights or (lambda layer, xs: {"kernel": ops.ones((), dtype=xs[0].dtype)})
        self.sign_preserving = sign_preserving
        self._transpose = transpose

    def linear_map(self, layer: Any, xs: Sequence[Tensor]) -> LinearMap:
        transpose = None
        if self._transpose is not None and all(tuple(x.shape) == tuple(xs[0].shape) for x in xs):
            def transpose(xs_: Sequence[Tensor], p: dict, s: Tensor) -> list:
                return self._transpose(layer, xs_, p, s)
        return LinearMap(lambda xs_, p: self._fn(layer, xs_, p), self._weights(layer, xs), None, transpose)

    def output_nonneg(self, layer, inputs_nonneg, step):
        return self.sign_preserving and all(inputs_nonneg)

    def for_layer(self, layer: Any, n_inputs: int) -> Handler:
        if not isinstance(layer, keras.layers.Layer) and n_inputs == 1:
            return ElementwiseHandler()  # an operation ``x + constant``: an element-wise shift
        return self

    def zero_relevance(self, layer, rule):
        return "proportional" if rule.keeps_zeros() else None

    def cheap_to_recompute(self, layer, step):
        return True  # the graph walk makes it again only where every input has the output's shape

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        lm = self.linear_map(layer, xs)
        return [lm(xs)], {"map": lm}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if rule.passes_through:
            return pass_through(xs, Rs, step)
        rule = check_linear_rule(rule, step)
        lm = cached_map(state.get("map"), xs) or self.linear_map(layer, xs)
        z = ys[0]  # the output, not a copy in ``state``: the graph walk may make it again from the inputs
        R = shaped_like(Rs[0], z)
        idx = [i for i, x in enumerate(xs) if dtypes.is_floating(x.dtype)]
        if len(idx) == len(xs):
            return linear_relevance(lm, xs, R, rule, z, step.nonneg, lazy=True)

        def fn(args, p):  # linear in the float inputs; a mask (e.g. of a masked average) held fixed
            full = list(xs)
            for i, a in zip(idx, args):
                full[i] = a
            return lm.fn(full, p)

        nonneg = [step.nonneg[i] for i in idx] if step.nonneg else False
        part = linear_relevance(LinearMap(fn, lm.params, lm.bias_axis), [xs[i] for i in idx], R, rule, z,
                                nonneg, lazy=True)
        out: list = [None] * len(xs)
        for i, r in zip(idx, part):
            out[i] = r
        return out
