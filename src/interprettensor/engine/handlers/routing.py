"""Layers that move, copy or select values (reshapes, padding, cropping, concatenation, ``max``):
relevance follows the values, by the layer's vector-Jacobian product. ``Multiply`` as a gate. And the
routing decision of a mixture of experts (``top_k``), held constant."""

from __future__ import annotations

from typing import Any, Sequence

from keras import ops

from .. import backend
from ..backend import Tensor
from ..linear import Product, materialize
from .attention import factor_relevance
from .base import DEFAULT_PASS, GATE, ROUTE, Handler
from .embedding import ConstantHandler

__all__ = ["RouteHandler", "GateHandler", "RoutingDecisionHandler", "route"]


def route(step: Any, xs: Sequence[Tensor], Rs: Sequence[Tensor]) -> list[Tensor]:
    """Relevance through a map that moves, copies or selects values: its vector-Jacobian product
    (taken with respect to distinct copies of repeated inputs, so each occurrence gets its share)."""
    return list(backend.vjp(step.call, xs, list(Rs)))


class RouteHandler(Handler):
    """Reshape, Flatten, Permute, padding, cropping, Concatenate: relevance follows the values.

    A relevance ``y ⊙ g`` left unevaluated at each output ``y`` (:class:`Product`) moves as
    ``x ⊙ route(g)``: every output value is a copy of an input value (or a padding that receives
    nothing), so moving the products moves the same numbers, and the outputs need not be kept for the
    backward pass (a key or value projection repeated over a query group's heads, for example)."""

    category = ROUTE
    batch_records = True
    accepts_lazy = True

    def output_nonneg(self, layer, inputs_nonneg, step):
        return all(inputs_nonneg)

    def zero_relevance(self, layer, rule):
        return "moved"

    def is_gate(self, layer, step):
        return None if len(step.inputs) == 1 else False  # a gate reshaped, repeated or transposed

    def preserves_box(self, layer):
        return True

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if all(isinstance(R, Product) and R.x is y for R, y in zip(Rs, ys)):
            return [None if g is None else Product(x, g) for x, g in zip(xs, route(step, xs, [R.g for R in Rs]))]
        return route(step, xs, [materialize(R) for R in Rs])


class GateHandler(Handler):
    """Multiply treated as a gate: the relevance goes to the signal input, i.e. the first input whose
    shape equals the output's (the gate, e.g. a squeeze-excitation or attention weight, is broadcast);
    the other inputs get none. Under the rules for products of activations (``'uniform'``,
    ``'gate'``: the transformer presets) the factors share the relevance as those rules say."""

    category = GATE
    batch_records = True

    def cheap_to_recompute(self, layer, step):
        return len(step.inputs) == 1  # a computed tensor times constants

    def output_nonneg(self, layer, inputs_nonneg, step):
        return all(inputs_nonneg)

    def zero_relevance(self, layer, rule):
        return "moved"

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if rule.explains_products:  # products of activations (AttnLRP, CP-LRP, Arras et al. 2019)
            return factor_relevance(step, list(xs), ys[0], Rs[0], rule, elementwise=True)
        out_shape = ys[0].shape
        signal = next((i for i, x in enumerate(xs) if x.shape == out_shape), 0)
        return [ops.reshape(Rs[0], ops.shape(x)) if i == signal else ops.zeros_like(x)
                for i, x in enumerate(xs)]


class RoutingDecisionHandler(ConstantHandler):
    """``top_k`` as the router of a mixture of experts uses it (Mixtral, Qwen-MoE, gpt-oss): which
    experts each token goes to (the indices) and with which weights (the values, then normalised or
    passed through a softmax). Both are constants of the explanation: the routing weights ``g_e`` are
    gates held fixed, as CP-LRP (Ali et al., ICML 2022) holds attention weights fixed, so the relevance
    of the block's output ``y = Σ_e g_e z_e`` reaches each selected expert's output ``z_e`` by its share
    ``g_e z_e / y`` (the sum's rule), and the router receives none. The indices are integers and carry
    no relevance in any case."""
