"""Quantised layers (``model.quantize('int8')`` / ``'int4'``): the weights the rules see are the
dequantised ones, and the forward pass an explanation follows is the float model with those weights.

Keras stores a quantised ``Dense`` / ``EinsumDense`` kernel as integers ``q`` and a scale ``s`` per
output channel (int8 and per-channel int4: ``W = q / s``), or, for int4 with a block size (Keras'
default, 128), a scale and a zero point per group of input rows (``W = (q - z[g]) * s[g]``). An int8
layer also quantises its *inputs* on the fly (``x ≈ round(x·a) / a`` with ``a = 127 / max|x|`` per
row); the explanation does not: the rules apply the dequantised weights to the float inputs, so the
explained output differs from the quantised model's by that activation quantisation error (at most
``max|x| / 254`` per input value of such a layer). :func:`weight_only` switches the input quantisers
off, which makes the model compute exactly what the explanation follows: the forward check compares
with it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras
from keras import ops

from ..backend import Tensor
from ..errors import ExplainError

__all__ = ["SUPPORTED_MODES", "dequantised_kernel", "dequantised_reverse_embeddings", "weight_only",
           "quantisation_mode"]

#: the quantisation modes whose weights the engine reads (``None``: a float layer)
SUPPORTED_MODES = (None, "int8", "int4")


def quantisation_mode(layer: Any) -> str | None:
    """The layer's quantisation mode (``None`` for a float layer); an :class:`ExplainError` naming the
    layer and mode where the engine cannot read its weights (float8, GPTQ, AWQ)."""
    mode = getattr(layer, "quantization_mode", None)
    if mode not in SUPPORTED_MODES:
        raise ExplainError(f"layer {layer.name!r} ({type(layer).__name__}) is quantised in mode {mode!r}, whose "
                           f"weights LRP cannot read: explain a float or an 'int8'/'int4' quantised model")
    return mode


def _blocked(layer: Any) -> bool:
    return getattr(layer, "_int4_block_size", None) not in (None, -1)


def _grouped(q: Tensor, scale: Any, zero: Any, g_idx: Any) -> Tensor:
    """``(q - z[g]) * s[g]`` with the group ``g = g_idx[i]`` of row ``i`` (scale, zero: (groups, cols))."""
    groups = ops.cast(ops.convert_to_tensor(g_idx), "int32")
    s = ops.take(ops.convert_to_tensor(scale), groups, axis=0)
    z = ops.cast(ops.take(ops.convert_to_tensor(zero), groups, axis=0), s.dtype)
    return (ops.cast(q, s.dtype) - z) * s


def _lora(layer: Any, kernel: Tensor) -> Tensor:
    if not getattr(layer, "lora_enabled", False):
        return kernel
    delta = ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b) * (layer.lora_alpha / layer.lora_rank)
    return kernel + ops.reshape(ops.cast(delta, kernel.dtype), ops.shape(kernel))


def dequantised_kernel(layer: Any) -> Any:
    """The float kernel of a ``Dense`` or ``EinsumDense`` layer: ``layer.kernel`` for a float layer, the
    dequantised integer kernel (plus a LoRA update, if enabled) for an int8 / int4 one."""
    mode = quantisation_mode(layer)
    if mode is None:
        return layer.kernel
    einsum = isinstance(layer, keras.layers.EinsumDense)
    scale = ops.convert_to_tensor(layer.kernel_scale)
    if mode == "int8":
        if einsum:
            scale = layer._adjust_scale_for_dequant(scale)
        return _lora(layer, ops.cast(ops.convert_to_tensor(layer._kernel), scale.dtype) / scale)
    # int4: stored packed two to a byte as (rows, ceil(columns / 2))
    columns = layer._int4_unpacked_column_size if einsum else layer._orig_output_dim
    q = keras.quantizers.unpack_int4(ops.convert_to_tensor(layer._kernel), columns, axis=-1)
    if _blocked(layer):
        w = _grouped(q, scale, layer.kernel_zero, layer.g_idx)
    else:
        w = ops.cast(q, scale.dtype) / scale
    if einsum:
        w = ops.reshape(w, layer.original_kernel_shape)
    return _lora(layer, w)


def dequantised_reverse_embeddings(layer: Any) -> Any:
    """The float output projection ``(hidden, vocabulary)`` of a ``ReversibleEmbedding`` (its transposed
    embeddings when tied), dequantised for an int8 / int4 layer."""
    mode = quantisation_mode(layer)
    if mode is None:
        return ops.transpose(layer.embeddings) if layer.tie_weights else layer.reverse_embeddings
    if getattr(layer, "lora_enabled", False):
        raise ExplainError(f"layer {layer.name!r} ({type(layer).__name__}): a quantised embedding with LoRA "
                           f"is not supported; merge the LoRA weights before quantising")
    tied = layer.tie_weights
    if mode == "int8":
        if tied:  # rows of the embedding table, one scale per token
            q, scale = ops.transpose(layer._embeddings), ops.convert_to_tensor(layer.embeddings_scale)
        else:
            q, scale = layer.reverse_embeddings, ops.convert_to_tensor(layer.reverse_embeddings_scale)
        return ops.cast(ops.convert_to_tensor(q), scale.dtype) / scale
    packed = ops.transpose(layer._embeddings) if tied else ops.convert_to_tensor(layer.reverse_embeddings)
    q = keras.quantizers.unpack_int4(packed, layer.output_dim, axis=0)  # (hidden, vocabulary)
    scale = ops.convert_to_tensor(layer.embeddings_scale if tied else layer.reverse_embeddings_scale)
    if not _blocked(layer):
        return ops.cast(q, scale.dtype) / (ops.transpose(scale) if tied else scale)
    if tied:
        return _grouped(q, ops.transpose(scale), ops.transpose(layer.embeddings_zero), layer.g_idx)
    return _grouped(q, scale, layer.reverse_embeddings_zero, layer.g_idx)


@contextlib.contextmanager
def weight_only(model: Any) -> Iterator[None]:
    """Within the block, the quantised layers of ``model`` (and of its sublayers) leave their inputs
    unquantised: the model computes its dequantised weights applied to float inputs, the forward pass
    an explanation follows."""
    saved = []
    layers = list(model._flatten_layers(include_self=True, recursive=True)) if hasattr(model, "_flatten_layers") \
        else [model]
    try:
        for layer in layers:
            if getattr(layer, "quantization_mode", None) and getattr(layer, "inputs_quantizer", None) is not None:
                saved.append((layer, layer.inputs_quantizer))
                layer.inputs_quantizer = None
        yield
    finally:
        for layer, quantizer in saved:
            layer.inputs_quantizer = quantizer
