"""Layer normalisation, as AttnLRP treats it (Achtibat et al. 2024, Sec. 3.3): the standard
deviation is a constant of the forward pass, so ``y = (x − mean(x)) / σ · γ + β`` is a linear map of
``x`` (the mean subtraction and the affine part) that the composite's rule explains. RMS
normalisation ``x / rms(x) · γ`` with ``rms`` constant is the identity for relevance (each output
comes from one input): relevance passes through."""

from __future__ import annotations

from typing import Any

from keras import ops

from ..linear import LinearMap, linear_relevance, materialize
from .base import (
    DEFAULT_PASS,
    NORM,
    Handler,
    cast_params,
    check_linear_rule,
    pass_through,
    shaped_like,
)

__all__ = ["LayerNormHandler"]


def _axes(layer: Any, rank: int) -> list[int]:
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return sorted(a % rank for a in axis)


class LayerNormHandler(Handler):
    """``keras.layers.LayerNormalization``: a linear map with the standard deviation held constant
    (with ``rms_scaling=True``: relevance passes through)."""

    category = NORM
    accepts_lazy = True

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        y = step.call(xs)[0]
        x = xs[0]
        if getattr(layer, "rms_scaling", False):
            return [y], {"z": y}
        rank = len(x.shape)
        axes = _axes(layer, rank)
        _, var = ops.moments(x, axes=axes, keepdims=True)
        inv_std = ops.rsqrt(var + ops.cast(layer.epsilon, x.dtype))
        shape = [1] * rank
        for a in axes:
            shape[a] = x.shape[a]
        params = cast_params({"kernel": layer.gamma if layer.scale else None,
                              "bias": layer.beta if layer.center else None}, x.dtype)
        params = {k: ops.reshape(v, shape) for k, v in params.items()}
        if "kernel" not in params:
            params["kernel"] = ops.ones(shape, x.dtype)

        def fn(args, p):
            centred = args[0] - ops.mean(args[0], axis=axes, keepdims=True)
            z = centred * inv_std * p["kernel"]
            return z if p.get("bias") is None else z + p["bias"]

        return [y], {"z": y, "map": LinearMap(fn, params, None)}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if getattr(layer, "rms_scaling", False) or rule.passes_through:
            return pass_through(xs, [materialize(Rs[0])], step)
        rule = check_linear_rule(rule, step)
        z = ops.cast(state["z"], xs[0].dtype)
        return linear_relevance(state["map"], xs, shaped_like(Rs[0], z), rule, z, False, lazy=True)

