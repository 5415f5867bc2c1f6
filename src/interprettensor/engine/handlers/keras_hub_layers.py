"""keras_hub's own layers that the engine names by class: position embeddings (constants of the input's
shape), rotary embeddings (a rotation of each position: linear; RoFormer v2's rotates queries and keys
in one call), ALiBi (a constant added to the scores: relevance passes), Gemma 3's interleaving of image and text
embeddings (a scatter: relevance is routed back) and the RMS normalisations of
its first language models (relevance passes, as for Keras' ``RMSNormalization``).

Every other keras_hub layer is traced through its call (:mod:`interprettensor.engine.expand`) and
recognised by what it computes: the RMS norms of Qwen 3, Qwen MoE, Mixtral, Phi-3, gpt-oss, RoFormer
v2, Gemma 4, Qwen 3.5 and T5 by their statistic (:mod:`interprettensor.engine.graph.statistics`),
which gives the relevance the table's entries give (up to the float rounding of the traced scale's
product; tests/test_hub_layers.py). The norms stay in the table for speed: a tiny Llama 3 (2 layers)
has 63 steps with them and 98 traced, and its first explanation (graph and compilation) takes 0.4 to 1 s
less (2 shared cores); later calls take the same time. The rotary layers
and ALiBi are here because their calls cannot run on symbolic tensors (RoFormer's indexes with a list,
ALiBi needs the key length, which attention's traced shapes leave unknown). Registered when keras_hub
has been imported (by :func:`interprettensor.engine.handlers.load_optional_handlers`)."""

from __future__ import annotations

import importlib

from .attention import MultiOutputLinearHandler, OpLinearHandler
from .elementwise import ElementwiseHandler
from .embedding import ConstantHandler
from .registry import register_handler
from .routing import RouteHandler

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
    # Gemma 3's image embeddings scattered into the text embeddings at the (integer, constant) vision
    # indices: each output position is one input element, so relevance goes back to where it came from
    ("keras_hub.src.models.gemma3.gemma3_layers", "Gemma3InterleaveEmbeddings"): "route",
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
                "pass": ElementwiseHandler(), "route": RouteHandler()}
    for (module, name), kind in _LAYERS.items():
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        register_handler(cls, handlers[kind])
