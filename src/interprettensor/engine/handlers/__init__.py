"""How each layer type takes part in LRP: its linear map (for rules) or how it routes relevance.

One module per family: :mod:`.weighted` (dense, convolutions, separable convolutions, BatchNorm
merging), :mod:`.fixed_linear` (sums, average pooling, upsampling, affine BatchNorm),
:mod:`.pooling` (max pooling), :mod:`.routing` (reshapes, concatenation, gates),
:mod:`.elementwise` (activations, dropout, rescaling), :mod:`.attention` (products of activations,
softmax), :mod:`.normalization` (layer and RMS normalisation), :mod:`.embedding` (embeddings of
integer inputs, constants and masks), :mod:`.recurrent` (SimpleRNN, LSTM, GRU); :mod:`.registry` says which handler serves
which layer and :mod:`.keras_layers` registers Keras' own layers.

Register a handler for your own layer type with :func:`register_handler`::

    from keras import ops
    from interprettensor.engine.handlers import LinearHandler

    it.register_handler(MyDense, LinearHandler(
        params=lambda layer: {"kernel": layer.w, "bias": layer.b},
        fn=lambda layer, xs, p: ops.matmul(xs[0], p["kernel"]) + p.get("bias", 0.0)))
"""

from ..errors import ExplainError
from . import keras_layers  # noqa: F401 - registers Keras' layers and operations
from . import recurrent  # noqa: F401 - registers SimpleRNN, LSTM, GRU and Masking
from .attention import ContractionHandler, OpLinearHandler, ProductHandler, SoftmaxHandler
from .base import (CONSTANT, DEFAULT_PASS, ELEMENTWISE, EMBEDDING, GATE, LINEAR, MAXPOOL, NORM, PRODUCT, ROUTE, SOFTMAX,
                   WEIGHTED, Handler, PassOptions, check_linear_rule, is_gating_activation, is_nonneg_activation)
from .elementwise import ElementwiseHandler
from .embedding import ConstantHandler, EmbeddingHandler
from .fixed_linear import FixedLinearHandler
from .normalization import LayerNormHandler
from .pooling import MaxPoolHandler
from .recurrent import RecurrentHandler
from .registry import (_REGISTRY, get_handler, handler_for, overridden_parent,  # noqa: F401 - _REGISTRY: inspected
                       register_handler, register_op_handler)
from .routing import GateHandler, RouteHandler, route
from .weighted import LinearHandler, SeparableHandler, batchnorm_affine, merge_batchnorm

def load_optional_handlers() -> None:
    """Register the handlers of optional libraries' layers that have been imported (keras_hub)."""
    import sys

    if "keras_hub" in sys.modules:
        from .keras_hub_layers import register_keras_hub_layers

        register_keras_hub_layers()


__all__ = ["load_optional_handlers", "Handler", "LinearHandler", "SeparableHandler", "FixedLinearHandler", "MaxPoolHandler", "RouteHandler",
           "GateHandler", "ElementwiseHandler", "ProductHandler", "ContractionHandler", "OpLinearHandler",
           "SoftmaxHandler", "LayerNormHandler", "RecurrentHandler", "EmbeddingHandler", "ConstantHandler", "register_handler", "register_op_handler", "get_handler",
           "handler_for", "overridden_parent", "ExplainError", "route", "merge_batchnorm", "batchnorm_affine",
           "PassOptions", "DEFAULT_PASS", "check_linear_rule", "is_nonneg_activation", "is_gating_activation",
           "WEIGHTED", "LINEAR", "MAXPOOL", "ROUTE", "ELEMENTWISE", "GATE", "PRODUCT", "SOFTMAX", "NORM",
           "EMBEDDING", "CONSTANT"]
