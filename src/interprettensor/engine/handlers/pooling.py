"""Max pooling: each window's relevance goes to the input that won the maximum (winner-takes-all),
or spreads uniformly over the window under a rule with ``uniform_max_pool`` (flat, w^2)."""

from __future__ import annotations

from typing import Any, Callable

from keras import ops

from .. import backend, dtypes
from ..backend import Tensor
from ..linear import LinearMap, linear_relevance
from .base import DEFAULT_PASS, MAXPOOL, Handler, check_linear_rule, pass_through
from .routing import route

__all__ = ["MaxPoolHandler", "winner_takes_all_3d"]

#: the dtypes of :func:`~interprettensor.engine.backend.max_pool_winner` (others: the layer's gradient)
_POOL_GRAD_DTYPES = ("float16", "bfloat16", "float32", "float64")


class MaxPoolHandler(Handler):
    """Max pooling.

    Args:
        avg_fn: ``avg_fn(layer, x)``: average pooling with the same windows (the uniform split).
        window: ``window(layer)``: ``(ksize, strides, padding)`` of a 2-D channels-last pooling, or
            ``None``; winner-takes-all then uses the forward output directly
            (:func:`~interprettensor.engine.backend.max_pool_winner`: one MaxPoolGrad op on TensorFlow).
        winner: ``winner(layer, x, R)``: winner-takes-all by another route than the layer's gradient.
    Otherwise winner-takes-all is the gradient of the layer's own call.
    """

    category = MAXPOOL
    batch_records = True

    def __init__(self, avg_fn: Callable[[Any, Tensor], Tensor],
                 window: Callable[[Any], tuple | None] | None = None,
                 winner: Callable[[Any, Tensor, Tensor], Tensor] | None = None):
        self._avg_fn = avg_fn
        self._window = window
        self._winner = winner

    def output_nonneg(self, layer, inputs_nonneg, step):
        return all(inputs_nonneg)

    def zero_relevance(self, layer, rule):
        return "moved" if rule.max_pool() == "winner" else None

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if rule.passes_through:
            return pass_through(xs, Rs, step)
        mode = rule.max_pool()
        if mode == "uniform":
            lm = LinearMap(lambda xs_, p: p["kernel"] * self._avg_fn(layer, xs_[0]),
                           {"kernel": ops.ones((), dtype=xs[0].dtype)}, None)
            return linear_relevance(lm, xs, Rs[0], rule)
        if mode != "winner":
            check_linear_rule(rule, step)  # the error naming the layer
        if self._winner is not None:
            return [self._winner(layer, xs[0], Rs[0])]
        window = self._window(layer) if self._window is not None else None
        if window is not None and dtypes.name(xs[0].dtype) in _POOL_GRAD_DTYPES:
            ksize, strides, padding = window
            return [_winner_2d(xs[0], ys[0], Rs[0], ksize, strides, padding)]
        return route(step, xs, Rs)


def _winner_2d(x: Tensor, y: Tensor, R: Tensor, ksize, strides, padding: str) -> Tensor:
    """Winner-takes-all through the 2-D channels-last max pooling ``y`` of ``x``: ``y`` and ``R`` in
    ``x``'s dtype, ``R`` shaped like ``y``."""
    y = ops.cast(y, x.dtype)
    R = ops.reshape(ops.cast(R, x.dtype), ops.shape(y))
    return backend.max_pool_winner(x, y, R, ksize, strides, padding.lower(), "channels_last")


def winner_takes_all_3d(layer: Any, x: Tensor, R: Tensor) -> Tensor:
    """Winner-takes-all through a 3-D max pooling, exactly: TensorFlow's MaxPool3DGrad kernel gives
    a window's relevance to every input *close* to the maximum (seen on CPU: two values 6e-6 apart
    both received it). The maximum over a box is the maximum over depth of the maxima over height
    and width, so two 2-D poolings route each window's relevance to one input
    (:func:`~interprettensor.engine.backend.max_pool_winner`: to the first maximum of each window over
    height and width, then over depth)."""
    channels_first = layer.data_format == "channels_first"
    if channels_first:
        x = ops.transpose(x, (0, 2, 3, 4, 1))
    (kd, kh, kw), (sd, sh, sw) = layer.pool_size, layer.strides
    padding = layer.padding.lower()
    shape = ops.shape(x)
    n, d, h, w, c = shape
    planes = ops.reshape(x, (n * d, h, w, c))                                  # (N*D, H, W, C)
    t = ops.max_pool(planes, (kh, kw), (sh, sw), padding, "channels_last")
    _, h2, w2, _ = ops.shape(t)
    cols = ops.reshape(t, (n, d, 1, h2 * w2 * c))                              # (N, D, 1, H'W'C)
    y = ops.max_pool(cols, (kd, 1), (sd, 1), padding, "channels_last")
    r = R if not channels_first else ops.transpose(R, (0, 2, 3, 4, 1))
    r_t = ops.reshape(_winner_2d(cols, y, r, (kd, 1), (sd, 1), padding), ops.shape(t))
    out = ops.reshape(_winner_2d(planes, t, r_t, (kh, kw), (sh, sw), padding), shape)
    return ops.transpose(out, (0, 4, 1, 2, 3)) if channels_first else out
