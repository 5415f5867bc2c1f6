"""Max pooling: each window's relevance goes to the input that won the maximum (winner-takes-all),
or spreads uniformly over the window under a rule with ``uniform_max_pool`` (flat, w^2)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

from ..linear import LinearMap, linear_relevance
from .base import DEFAULT_PASS, MAXPOOL, Handler, check_linear_rule, pass_through
from .routing import route

__all__ = ["MaxPoolHandler", "winner_takes_all_3d"]


class MaxPoolHandler(Handler):
    """Max pooling.

    Args:
        avg_fn: ``avg_fn(layer, x)``: average pooling with the same windows (the uniform split).
        window: ``window(layer)``: ``(ksize, strides, padding)`` of a 2-D channels-last pooling, or
            ``None``; winner-takes-all then uses the forward output directly (one MaxPoolGrad op).
        winner: ``winner(layer, x, R)``: winner-takes-all by another route than the layer's gradient.
    Otherwise winner-takes-all is the gradient of the layer's own call.
    """

    category = MAXPOOL
    batch_records = True

    def __init__(self, avg_fn: Callable[[Any, tf.Tensor], tf.Tensor],
                 window: Callable[[Any], tuple | None] | None = None,
                 winner: Callable[[Any, tf.Tensor, tf.Tensor], tf.Tensor] | None = None):
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
                           {"kernel": tf.ones((), xs[0].dtype)}, None)
            return linear_relevance(lm, xs, Rs[0], rule)
        if mode != "winner":
            check_linear_rule(rule, step)  # the error naming the layer
        if self._winner is not None:
            return [self._winner(layer, xs[0], Rs[0])]
        window = self._window(layer) if self._window is not None else None
        if window is not None and xs[0].dtype in (tf.float32, tf.float16, tf.bfloat16, tf.float64):
            ksize, strides, padding = window
            y = tf.cast(ys[0], xs[0].dtype)
            grad = tf.reshape(tf.cast(Rs[0], y.dtype), tf.shape(y))
            return [tf.raw_ops.MaxPoolGrad(orig_input=xs[0], orig_output=y, grad=grad, ksize=[1, *ksize, 1],
                                           strides=[1, *strides, 1], padding=padding)]
        return route(step, xs, Rs)


def _argmax_pool_2d(x: tf.Tensor, ksize: Sequence[int], strides: Sequence[int], padding: str,
                    ) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """2-D max pooling of ``x`` (N, H, W, C) with its argmax, and the map that sends a relevance shaped
    like the output to the one winner of each window."""
    y, argmax = tf.nn.max_pool_with_argmax(x, [1, *ksize, 1], [1, *strides, 1], padding,
                                           include_batch_in_index=True)

    def back(r: tf.Tensor) -> tf.Tensor:
        return tf.raw_ops.MaxPoolGradWithArgmax(input=x, grad=tf.reshape(tf.cast(r, x.dtype), tf.shape(y)),
                                                argmax=argmax, ksize=[1, *ksize, 1], strides=[1, *strides, 1],
                                                padding=padding, include_batch_in_index=True)

    return y, back


def winner_takes_all_3d(layer: Any, x: tf.Tensor, R: tf.Tensor) -> tf.Tensor:
    """Winner-takes-all through a 3-D max pooling, exactly: TensorFlow's MaxPool3DGrad kernel gives
    a window's relevance to every input *close* to the maximum (seen on CPU: two values 6e-6 apart
    both received it). The maximum over a box is the maximum over depth of the maxima over height
    and width, so two 2-D poolings with argmax route each window's relevance to one input."""
    channels_first = layer.data_format == "channels_first"
    if channels_first:
        x = tf.transpose(x, [0, 2, 3, 4, 1])
    (kd, kh, kw), (sd, sh, sw) = layer.pool_size, layer.strides
    padding = layer.padding.upper()
    shape = tf.shape(x)
    n, d, c = shape[0], shape[1], shape[4]
    planes = tf.reshape(x, tf.concat([[n * d], shape[2:]], 0))            # (N*D, H, W, C)
    t, back_hw = _argmax_pool_2d(planes, (kh, kw), (sh, sw), padding)
    hw = tf.shape(t)[1:3]
    cols = tf.reshape(t, tf.stack([n, d, 1, hw[0] * hw[1] * c]))        # (N, D, 1, H'W'C)
    y, back_d = _argmax_pool_2d(cols, (kd, 1), (sd, 1), padding)
    r = R if not channels_first else tf.transpose(R, [0, 2, 3, 4, 1])
    r_t = tf.reshape(back_d(tf.reshape(r, tf.shape(y))), tf.shape(t))
    out = tf.reshape(back_hw(r_t), shape)
    return tf.transpose(out, [0, 4, 1, 2, 3]) if channels_first else out
