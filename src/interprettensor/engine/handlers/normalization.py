"""Layer normalisation, as AttnLRP treats it (Achtibat et al. 2024, Sec. 3.3): the standard
deviation is a constant of the forward pass, so ``y = (x − mean(x)) / σ · γ + β`` is a linear map of
``x`` (the mean subtraction and the affine part) that the composite's rule explains. RMS
normalisation ``x / rms(x) · γ`` with ``rms`` constant is the identity for relevance (each output
comes from one input): relevance passes through.

The same convention for normalisations written out in keras operations (any layer whose traced call
multiplies a tensor by ``rsqrt(mean(x²) + ε)``, ``1 / sqrt(var + ε)``, ``(var + ε)^-½`` of it, or
divides it by ``sqrt(...)``; :func:`interprettensor.engine.graph.mark_statistics` finds them):
:class:`NormScaleHandler` passes relevance through the scaling by the held statistic,
:class:`HeldStatisticHandler` holds the statistic's operations constant (no relevance enters them),
and :class:`StatisticOpHandler` serves the nonlinear operations such statistics are made of (square,
power, square root, ...), which have no LRP rule anywhere else."""

from __future__ import annotations

from typing import Any

from keras import ops

from ..linear import LinearMap, linear_relevance, materialize
from ..errors import ExplainError
from .base import (
    CONSTANT,
    DEFAULT_PASS,
    ELEMENTWISE,
    NORM,
    Handler,
    cast_params,
    check_linear_rule,
    pass_through,
    shaped_like,
)

__all__ = ["HeldStatisticHandler", "LayerNormHandler", "NormScaleHandler", "StatisticOpHandler"]


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

        def transpose(args, p, s):  # scaling, then centring (its own transpose)
            v = s * inv_std * p["kernel"]
            return [v - ops.mean(v, axis=axes, keepdims=True)]

        return [y], {"z": y, "map": LinearMap(fn, params, None, transpose)}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if getattr(layer, "rms_scaling", False) or rule.passes_through:
            return pass_through(xs, [materialize(Rs[0])], step)
        rule = check_linear_rule(rule, step)
        z = ops.cast(state["z"], xs[0].dtype)
        return linear_relevance(state["map"], xs, shaped_like(Rs[0], z), rule, z, False, lazy=True)



class NormScaleHandler(Handler):
    """``y = a ⊙ s`` or ``y = a / s`` where ``s`` is a statistic of ``a`` that scales it to degree 0
    (``rsqrt(mean(a²) + ε)``, ``1 / std(a)``): a normalisation whose statistic is held constant
    (AttnLRP, Achtibat et al. 2024, Sec. 3.3; LXT's identity rule for RMSNorm). With ``s`` constant the
    map is diagonal, each output read from one input, so every conservative rule gives the identity:
    the signal ``a`` receives the relevance unchanged, the statistic none (as
    :class:`LayerNormHandler` does for ``rms_scaling``). Built by
    :func:`interprettensor.engine.graph.mark_statistics` with the index of the signal input."""

    category = NORM
    accepts_lazy = True
    batch_records = True

    def __init__(self, signal: int = 0):
        self.signal = signal

    def zero_relevance(self, layer, rule):
        return "moved"

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        a = xs[self.signal]
        R = materialize(Rs[0])
        if tuple(a.shape[1:]) != tuple(ys[0].shape[1:]):
            raise ExplainError(f"layer {step.name!r} ({step.type_name}) normalises a tensor of shape {tuple(a.shape)} "
                               f"into one of shape {tuple(ys[0].shape)}: relevance passes through a normalisation "
                               f"only where the two shapes agree")
        return [ops.reshape(R, ops.shape(a)) if i == self.signal else None for i in range(len(xs))]


class HeldStatisticHandler(Handler):
    """An operation of a normalisation's statistic (``x²``, its mean, ``+ ε``, ``rsqrt``), held constant
    (:class:`NormScaleHandler`): it computes its value in the forward pass; no relevance enters it and
    its output counts as independent of the explained input."""

    category = CONSTANT
    depends_on_values = False
    batch_records = True

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        return [None] * len(xs)


class StatisticOpHandler(Handler):
    """A nonlinear keras operation that statistics are made of (``square``, ``power``, ``sqrt``,
    ``rsqrt``, ``reciprocal``, ``var``, ``std``, ``norm``, ``abs``): on constants it is a constant;
    inside a normalisation's statistic :func:`~interprettensor.engine.graph.mark_statistics` holds it
    constant; on a tensor that carries relevance anywhere else it has no LRP rule
    (:meth:`for_inputs` says so and the graph names it)."""

    category = ELEMENTWISE
    #: the graph's error names the operation as one explained only inside a statistic
    statistic_op = True

    def for_inputs(self, n_computed: int) -> "Handler | None":
        if n_computed == 0:
            return HeldStatisticHandler()
        return None
