"""Layers with weights: ``act(f(x; W, b))`` with a linear ``f`` (dense, convolutions), and separable
convolutions (two linear factors). The assigned rule modifies their inputs and weights; BatchNorm
layers that follow them are merged into their weights (canonisation)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from keras import ops

from .. import backend, dtypes
from ..backend import Tensor
from ..linear import LinearMap, Product, interval_bounds, linear_relevance
from ..rules import constant
from .base import (DEFAULT_PASS, WEIGHTED, Handler, PassOptions, cached_map, cast_params, check_linear_rule,
                   is_gating_activation, is_nonneg_activation, pass_through, shaped_like)

__all__ = ["LinearHandler", "SeparableHandler", "merge_batchnorm", "batchnorm_affine", "bias_add"]


class LinearHandler(Handler):
    """A layer ``act(f(x; W, b))`` with weights.

    Args:
        params: ``params(layer)``: the weights by name (``'bias'`` for the bias, ``None`` if absent).
        fn: ``fn(layer, xs, params)``: the pre-activation, linear in ``xs`` for fixed ``params``.
        activation: ``activation(layer)``: the activation function (``None``: linear).
        channel_axis: axis of the kernel that indexes output channels, for merging a BatchNorm that
            follows (``None``: never merge).
        kind: ``'dense'`` or ``'conv'``, how composites address the layer.
        per_position: ``fn`` maps the last axis only (a dense layer): on a sequence ``(N, T, ...)`` each
            position is mapped on its own (see :meth:`record_at_position`).
    """

    category = WEIGHTED
    accepts_lazy = True
    uses_output_signs = True
    batch_records = True

    def __init__(self, params: Callable[[Any], dict], fn: Callable[[Any, Sequence[Tensor], dict], Tensor],
                 activation: Callable[[Any], Callable | None] = lambda layer: getattr(layer, "activation", None),
                 channel_axis: int | None = -1, kind: str = "conv", per_position: bool = False):
        self._params, self._fn, self._activation = params, fn, activation
        self.channel_axis = channel_axis
        self.kind = kind
        self.per_position = per_position

    def activation_of(self, layer: Any) -> Callable | None:
        """The layer's activation function (``None`` for none)."""
        return self._activation(layer)

    def can_absorb_batchnorm(self, layer: Any) -> bool:
        """Whether a BatchNorm after this layer can be merged into its weights: the layer has no
        activation (the BatchNorm acts on the pre-activation) and a known channel axis."""
        act = self.activation_of(layer)
        return self.channel_axis is not None and (act is None or getattr(act, "__name__", "") == "linear")

    def linear_map(self, layer: Any, step: Any, dtype: Any) -> LinearMap:
        params = cast_params(self._params(layer), dtype)
        for bn in getattr(step, "fused", ()):
            params = merge_batchnorm(params, bn, self.channel_axis, dtype)

        def fn(xs: Sequence[Tensor], p: dict) -> Tensor:
            return self._fn(layer, xs, p)

        return LinearMap(fn, params, 1 if getattr(layer, "data_format", None) == "channels_first" else -1)

    def copies_weights(self, layer: Any, dtype: Any) -> bool:
        """Whether the layer's weights as the rules read them in ``dtype`` are a computed copy rather
        than its variables (int8 / int4 weights dequantised; bfloat16 weights read as float32, or
        float32 ones as bfloat16; a tied embedding's transpose is not counted: the graph optimiser
        folds it into the product): such a copy is made when the layer runs, after its input exists,
        and not kept for the backward pass, which makes it again once the relevance reaches the layer
        (held from one pass to the other, the copies of every layer would be alive at once: for an
        8B-parameter int8 model, 16 GB in bfloat16)."""
        if getattr(layer, "quantization_mode", None):
            return True
        name = dtypes.name(dtype)
        return any(dtypes.name(w.dtype) != name for w in getattr(layer, "weights", ()) if dtypes.is_floating(w.dtype))

    def forward(self, layer: Any, xs: Sequence[Tensor], step: Any,
                options: PassOptions = DEFAULT_PASS) -> tuple[list, dict]:
        # a merged BatchNorm makes the weights a computed copy too (W * s, b * s + t): one per layer,
        # remade in the backward pass (an element-wise product over the kernel) rather than held
        copies = self.copies_weights(layer, xs[0].dtype) or bool(getattr(step, "fused", ()))
        if copies:
            lm = backend.after([xs[0]], lambda: self.linear_map(layer, step, xs[0].dtype))
        else:
            lm = self.linear_map(layer, step, xs[0].dtype)
        z = lm(xs)
        y = z if options.strips_activation(step) else options.activate(layer, self.activation_of(layer), z)
        held = {} if copies else {"map": lm}
        if step in options.relu_denominator:
            # z and relu(z) differ only where the relevance is provably zero; keeping only the
            # activation lets the forward pass use the fused convolution + bias + ReLU kernel
            return [y], {"z": y, **held}
        return [y], {"z": z, **held}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if rule.passes_through:
            return pass_through(xs, Rs, step)
        rule = check_linear_rule(rule, step)
        R = shaped_like(Rs[0], state["z"])
        lm = cached_map(state.get("map"), xs)
        if lm is None:  # made now, once the relevance has reached the layer (see copies_weights, forward)
            lm = backend.after([R.g if isinstance(R, Product) else R],
                               lambda: self.linear_map(layer, step, xs[0].dtype))
        return linear_relevance(lm, xs, R, rule, state["z"], step.nonneg,
                                lazy=True, positive_outputs_only=step in options.positive_outputs)

    def record_at_position(self, layer, xs, ys, state, step, take):
        if not self.per_position or len(xs) != 1 or len(xs[0].shape) < 3:
            return None
        return ([take(xs[0])], [take(y) for y in ys],
                {k: take(v) if k == "z" else v for k, v in state.items()})

    def output_nonneg(self, layer, inputs_nonneg, step):
        return not step.strip_activation and is_nonneg_activation(self.activation_of(layer))

    def zero_relevance(self, layer, rule):
        return "proportional" if rule.keeps_zeros() else None

    def is_gate(self, layer, step):
        return is_gating_activation(self.activation_of(layer))


def merge_batchnorm(params: dict, bn: Any, channel_axis: int | None, dtype: Any) -> dict:
    """Fold an inference-mode BatchNormalization into the preceding layer's kernel and bias:
    ``W' = W * s``, ``b' = b * s + t`` (see :func:`batchnorm_affine`)."""
    s, t = batchnorm_affine(bn, dtype)
    out = dict(params)
    weight_names = [k for k in params if k != "bias"]
    name = weight_names[-1]  # the last weight produces the output channels (pointwise for separable)
    kernel = params[name]
    rank = len(kernel.shape)
    axis = channel_axis % rank
    if kernel.shape[axis] == s.shape[0]:
        shape = [1] * rank
        shape[axis] = -1
        out[name] = kernel * ops.reshape(s, shape)
    else:  # depthwise (kh, kw, in, multiplier): output channel c*mult + m
        shape = [1] * (rank - 2) + list(kernel.shape[-2:])
        out[name] = kernel * ops.reshape(s, shape)
    bias = params.get("bias")
    out["bias"] = t if bias is None else bias * s + t
    return out


def batchnorm_affine(bn: Any, dtype: Any) -> tuple[Tensor, Tensor]:
    """An inference-mode BatchNormalization as ``y = x * s + t``: ``s = gamma / sqrt(var + eps)``,
    ``t = beta - mean * s`` (in ``dtype``, a dtype or its name)."""
    mean = ops.cast(ops.convert_to_tensor(bn.moving_mean), dtype)
    var = ops.cast(ops.convert_to_tensor(bn.moving_variance), dtype)
    gamma = ops.cast(ops.convert_to_tensor(bn.gamma), dtype) if bn.scale else ops.ones_like(mean)
    beta = ops.cast(ops.convert_to_tensor(bn.beta), dtype) if bn.center else ops.zeros_like(mean)
    s = gamma * ops.rsqrt(var + constant(float(bn.epsilon), dtype))
    return s, beta - mean * s


def bias_add(z: Tensor, p: dict, channels_first: bool = False) -> Tensor:
    """``z`` plus ``p['bias']`` (if any) along the channel axis."""
    b = p.get("bias")
    if b is None:
        return z
    if channels_first:
        b = ops.reshape(b, (1, -1) + (1,) * (len(z.shape) - 2))
    return z + b


class SeparableHandler(Handler):
    """SeparableConv: depthwise then pointwise convolution, the rule applied to each in turn."""

    category = WEIGHTED
    channel_axis = -1
    kind = "conv"
    batch_records = True

    def activation_of(self, layer: Any) -> Callable | None:
        return layer.activation

    def can_absorb_batchnorm(self, layer: Any) -> bool:
        act = self.activation_of(layer)
        return act is None or getattr(act, "__name__", "") == "linear"

    def maps(self, layer: Any, step: Any, dtype: Any) -> tuple[LinearMap, LinearMap]:
        params = cast_params({"kernel": layer.pointwise_kernel,
                              "bias": layer.bias if layer.use_bias else None}, dtype)
        for bn in getattr(step, "fused", ()):
            params = merge_batchnorm(params, bn, -1, dtype)
        axis = 1 if layer.data_format == "channels_first" else -1
        dw = LinearMap(lambda xs_, p: ops.depthwise_conv(
            xs_[0], p["kernel"], strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format),
            cast_params({"kernel": layer.depthwise_kernel}, dtype), axis)
        pw = LinearMap(lambda xs_, p: bias_add(ops.conv(xs_[0], p["kernel"], strides=1, padding="valid",
                                                        data_format=layer.data_format), p,
                                               layer.data_format == "channels_first"), params, axis)
        return dw, pw

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        dw, pw = self.maps(layer, step, xs[0].dtype)
        t = dw(xs)
        z = pw([t])
        y = z if options.strips_activation(step) else options.activate(layer, layer.activation, z)
        return [y], {"t": t, "z": z, "maps": (dw, pw)}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        rule = check_linear_rule(rule, step)
        maps = state.get("maps")
        dw, pw = maps if maps and cached_map(maps[0], xs) else self.maps(layer, step, xs[0].dtype)
        R = ops.reshape(Rs[0], ops.shape(state["z"]))
        pw_rule = rule
        box = rule.bounds()
        if box is not None:
            # the depthwise output's values lie in the interval image of the input's box: the pointwise
            # factor gets those bounds, not the input's (its input has other channels)
            pw_rule = rule.with_bounds(*interval_bounds(dw, xs[0], *box))
        Rt = linear_relevance(pw, [state["t"]], R, pw_rule, state["z"])[0]
        return linear_relevance(dw, xs, Rt, rule, state["t"], step.nonneg)

    def output_nonneg(self, layer, inputs_nonneg, step):
        return not step.strip_activation and is_nonneg_activation(layer.activation)

    def zero_relevance(self, layer, rule):
        return "proportional" if rule.keeps_zeros() else None
