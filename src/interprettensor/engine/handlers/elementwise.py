"""Element-wise layers (activations, dropout and noise at inference, rescaling, normalisation):
relevance passes through unchanged."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from .base import DEFAULT_PASS, ELEMENTWISE, GATING_ACTIVATIONS, Handler, is_nonneg_activation, shaped_like

__all__ = ["ElementwiseHandler", "IDENTITY_AT_INFERENCE", "AFFINE_ELEMENTWISE"]

L = keras.layers
#: layers that return their input unchanged at inference
IDENTITY_AT_INFERENCE = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
                         L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization)
#: layers that change no value at inference or change it affinely and monotonically per element:
#: a box on their input maps to a box on their output
AFFINE_ELEMENTWISE = (L.Rescaling, L.Normalization) + IDENTITY_AT_INFERENCE
_ZERO_PRESERVING_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "tanh", "selu", "silu", "swish", "gelu",
                                "linear")


class ElementwiseHandler(Handler):
    """Activations, dropout and noise, rescaling: relevance passes through unchanged.

    Args:
        nonneg: the layer's output is never negative (``None``: decided from Keras' layer types and
            activation names).
        zero_preserving: ``f(0) = 0`` (``None``: decided from Keras' layer types and activation names);
            the engine uses it to prove where relevance is zero.
        relu_like: the output is zero exactly where the input is ``<= 0`` (ReLU, ReLU6; ``None``:
            decided from Keras' layer types and activation names).
    """

    category = ELEMENTWISE
    accepts_lazy = True
    batch_records = True

    def __init__(self, nonneg: bool | None = None, zero_preserving: bool | None = None,
                 relu_like: bool | None = None):
        self._nonneg = nonneg
        self._zero_preserving = zero_preserving
        self._relu_like = relu_like

    def cheap_to_recompute(self, layer, step):
        return len(step.inputs) == 1

    def output_nonneg(self, layer, inputs_nonneg, step):
        if self._nonneg if self._nonneg is not None else _nonneg_layer(layer):
            return True
        return isinstance(layer, IDENTITY_AT_INFERENCE) and all(inputs_nonneg)

    def maps_zero_to_zero(self, layer: Any) -> bool:
        """``f(0) = 0``: relevance that is zero where the input is zero stays so."""
        if self._zero_preserving is not None:
            return self._zero_preserving
        if isinstance(layer, L.ReLU):
            return float(layer.threshold) == 0.0
        if isinstance(layer, (L.LeakyReLU, L.ELU, L.PReLU) + IDENTITY_AT_INFERENCE):
            return True
        if isinstance(layer, L.Activation):
            return getattr(layer.activation, "__name__", "") in _ZERO_PRESERVING_ACTIVATIONS
        return False

    def relu_like(self, layer: Any) -> bool:
        """The output is zero exactly where the input is ``<= 0``."""
        if self._relu_like is not None:
            return self._relu_like
        if isinstance(layer, L.ReLU):
            return float(layer.threshold) == 0.0 and float(layer.negative_slope) == 0.0
        if isinstance(layer, L.Activation):
            return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
        return type(layer).__name__ in ("Relu", "Relu6")  # keras.ops.relu inside a functional model

    def zero_relevance(self, layer, rule):
        return "moved" if self.maps_zero_to_zero(layer) else None

    def is_gate(self, layer, step):
        act = layer.activation if isinstance(layer, L.Activation) else None
        if getattr(act, "__name__", "") in GATING_ACTIVATIONS or type(layer).__name__ in GATING_ACTIVATIONS:
            return True
        if (type(layer).__name__ == "Cast" or isinstance(layer, IDENTITY_AT_INFERENCE)) and len(step.inputs) == 1:
            return None  # a gate cast to another dtype, or behind dropout
        return False

    def preserves_box(self, layer):
        return isinstance(layer, AFFINE_ELEMENTWISE) or type(layer).__name__ == "Cast"

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        if options.activation_override is not None and len(xs) == 1:
            out = options.activation_override(layer, None, xs[0])
            if out is not None:
                return [out], {}
        return step.call(xs), {}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        return [shaped_like(Rs[0], xs[0])] + [ops.zeros_like(x) for x in xs[1:]]


def _nonneg_layer(layer: Any) -> bool:
    if isinstance(layer, L.ReLU):
        return float(layer.negative_slope) == 0.0 and float(layer.threshold) >= 0.0
    if isinstance(layer, L.Activation):
        return is_nonneg_activation(layer.activation)
    if isinstance(layer, L.Softmax):
        return True
    return is_nonneg_activation(type(layer))  # keras ops by class name: Relu, Sigmoid, Softmax, ...
