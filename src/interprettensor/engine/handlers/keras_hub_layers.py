"""keras_hub's own layers that are not built from other layers: position embeddings (constants of the
input's shape), rotary embeddings (a rotation of each position: linear), and the RMS normalisations of
its language models (relevance passes, as for Keras' ``RMSNormalization``). keras_hub's blocks
(encoders, decoders, attention, patching) are built from layers and are traced through their calls
(:mod:`interprettensor.engine.expand`); so are the stacked experts of its mixtures of experts, which
compute with keras operations on their own weights (:func:`~interprettensor.engine.expand.register_traced`). Registered when keras_hub has been imported (by
:func:`interprettensor.engine.handlers.load_optional_handlers`)."""

from __future__ import annotations

import importlib

from .attention import OpLinearHandler
from .elementwise import ElementwiseHandler
from .embedding import ConstantHandler
from ..expand import register_traced
from .registry import register_handler

__all__ = ["register_keras_hub_layers"]

#: (module, class name) -> handler kind
_LAYERS = {
    ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding"): "constant",
    ("keras_hub.src.layers.modeling.rotary_embedding", "RotaryEmbedding"): "linear",
    ("keras_hub.src.models.llama.llama_rotary_embedding", "LlamaRotaryEmbedding"): "linear",
    ("keras_hub.src.layers.modeling.rms_normalization", "RMSNormalization"): "pass",
    ("keras_hub.src.models.llama.llama_layernorm", "LlamaLayerNorm"): "pass",
    ("keras_hub.src.models.qwen.qwen_layernorm", "QwenLayerNorm"): "pass",
    ("keras_hub.src.models.mistral.mistral_layer_norm", "MistralLayerNormalization"): "pass",
    ("keras_hub.src.models.gemma.rms_normalization", "RMSNormalization"): "pass",
    ("keras_hub.src.models.gemma3.gemma3_layers", "RMSNormalization"): "pass",
}

#: (module, class name) of layers traced through their call: the experts of mixtures of experts (all
#: experts for all tokens in one ``einsum`` over the expert axis; the router's top-k weights, zero for
#: the experts a token does not use, then weigh and sum them)
_TRACED = [
    ("keras_hub.src.models.mixtral.mixtral_decoder", "MixtralMoeExperts"),
    ("keras_hub.src.models.qwen_moe.qwen_moe_decoder", "QwenMoeExperts"),
    ("keras_hub.src.models.qwen3_moe.qwen3_moe_decoder", "Qwen3MoeExperts"),
    ("keras_hub.src.models.qwen3_5_moe.qwen3_5_moe_decoder", "Qwen3_5MoeExperts"),
    ("keras_hub.src.models.gpt_oss.gpt_oss_decoder", "GptOssExperts"),
]

_registered = False


def register_keras_hub_layers() -> None:
    """Register the handlers of keras_hub's layers (once; classes this keras_hub lacks are skipped)."""
    global _registered
    if _registered:
        return
    _registered = True
    handlers = {"constant": ConstantHandler(), "linear": OpLinearHandler(), "pass": ElementwiseHandler()}
    for (module, name), kind in _LAYERS.items():
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        register_handler(cls, handlers[kind])
    for module, name in _TRACED:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        register_traced(name)
