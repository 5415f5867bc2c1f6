"""keras_hub's own layers that are not built from other layers: position embeddings (constants of the
input's shape), rotary embeddings (a rotation of each position: linear), and the RMS normalisations of
its language models (relevance passes, as for Keras' ``RMSNormalization``). keras_hub's blocks
(encoders, decoders, attention, patching) are built from layers and are traced through their calls
(:mod:`interprettensor.engine.expand`). Registered when keras_hub has been imported (by
:func:`interprettensor.engine.handlers.load_optional_handlers`)."""

from __future__ import annotations

import importlib

from .attention import MultiOutputLinearHandler, OpLinearHandler
from .elementwise import ElementwiseHandler
from .embedding import ConstantHandler
from .registry import register_handler

__all__ = ["register_keras_hub_layers"]

#: (module, class name) -> handler kind
_LAYERS = {
    ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding"): "constant",
    ("keras_hub.src.layers.modeling.rotary_embedding", "RotaryEmbedding"): "linear",
    ("keras_hub.src.models.llama.llama_rotary_embedding", "LlamaRotaryEmbedding"): "linear",
    # RoFormer v2's rotation of queries and keys in one call (indexing that symbolic tensors refuse)
    ("keras_hub.src.models.roformer_v2.roformer_v2_attention", "RoformrPositionalEmbedding"): "linear_outputs",
    # ALiBi: a constant of the scores' shape added to them (its key length must be known to trace it)
    ("keras_hub.src.layers.modeling.alibi_bias", "AlibiBias"): "pass",
    ("keras_hub.src.layers.modeling.rms_normalization", "RMSNormalization"): "pass",
    ("keras_hub.src.models.llama.llama_layernorm", "LlamaLayerNorm"): "pass",
    ("keras_hub.src.models.qwen.qwen_layernorm", "QwenLayerNorm"): "pass",
    ("keras_hub.src.models.mistral.mistral_layer_norm", "MistralLayerNormalization"): "pass",
    ("keras_hub.src.models.gemma.rms_normalization", "RMSNormalization"): "pass",
    ("keras_hub.src.models.gemma3.gemma3_layers", "RMSNormalization"): "pass",
}

_registered = False


def register_keras_hub_layers() -> None:
    """Register the handlers of keras_hub's layers (once; classes this keras_hub lacks are skipped)."""
    global _registered
    if _registered:
        return
    _registered = True
    handlers = {"constant": ConstantHandler(), "linear": OpLinearHandler(), "linear_outputs": MultiOutputLinearHandler(),
                "pass": ElementwiseHandler()}
    for (module, name), kind in _LAYERS.items():
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        register_handler(cls, handlers[kind])
