"""Layers explained through what they are made of.

A layer without a handler of its own that is built from other layers (a transformer block, Keras'
``MultiHeadAttention``, keras_hub's encoder and decoder layers) is traced: its ``call`` runs on
symbolic inputs, which records the sub-layers and keras operations it uses as a small functional
graph, and the graph walk explains that graph like a nested model. Fused operations expand into their
explicit parts in the same way (:func:`register_expansion`): ``keras.ops.dot_product_attention``
becomes ``Q·Kᵀ``, a masked softmax and ``A·V``, so that each part gets its own rule.

The forward check of the explainer compares the traced computation with the layer's own output.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import types
from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras import ops, tree

from .errors import ExplainError

__all__ = ["CONCRETE_SPECS", "ShapeDependent", "expansion", "is_composite_layer", "register_expansion",
           "register_traced"]

#: ``{id(KerasTensor): KerasTensor}``: the model's tensors with the shapes of the inputs being explained
#: (set while a graph is built for concrete input shapes; see :class:`ShapeDependent`)
CONCRETE_SPECS: contextvars.ContextVar = contextvars.ContextVar("concrete_specs", default=None)


class ShapeDependent(ExplainError):
    """A layer's call could not be traced with the model's unknown dimensions (e.g. a causal mask
    built from the sequence length): the graph is built again for the shapes of the inputs being
    explained."""

#: keras operation or layer class name -> builder(op, *args, **kwargs) that computes the same on
#: symbolic tensors with operations that have handlers
_EXPANSIONS: dict[str, Callable[..., Any]] = {}


def register_expansion(name: str, builder: Callable[..., Any]) -> None:
    """Explain the operation or layer class ``name`` as what ``builder(op, *args, **kwargs)``
    computes on symbolic tensors (with the call's own arguments)."""
    _EXPANSIONS[name] = builder


def register_traced(name: str) -> None:
    """Explain the layer class ``name`` through its ``call``, traced into the keras operations it uses,
    as a layer built from other layers is; for layers that compute with keras operations on their
    own weights and hold no sub-layers (the stacked experts of keras_hub's mixtures of experts:
    ``einsum`` over the expert axis, an element-wise gate, another ``einsum``). A weight is a constant
    of the traced graph, so an ``einsum`` of an activation with it is a linear map."""
    register_expansion(name, _trace_call)


def is_composite_layer(op: Any) -> bool:
    """A layer (not a model) that holds other layers: traced through its ``call``."""
    if not isinstance(op, keras.layers.Layer) or isinstance(op, keras.Model):
        return False
    return any(True for _ in op._flatten_layers(include_self=False, recursive=False))


def _trace_call(op: Any, *args: Any, **kwargs: Any) -> Any:
    import inspect

    try:
        params = inspect.signature(op.call).parameters
    except (TypeError, ValueError):
        params = {}
    if "training" in params:
        kwargs["training"] = False
    return op.call(*args, **kwargs)


def _known_output_spec(own: Callable[..., Any]) -> Callable[..., Any]:
    """A layer's ``compute_output_spec`` that, where its own answer leaves a dimension unknown although
    every input's shape is known, infers the spec from the layer's call instead."""

    def spec(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = own(*args, **kwargs)
        ins = [t for t in tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        outs = [t for t in tree.flatten(out) if isinstance(t, keras.KerasTensor)]
        if all(None not in t.shape for t in ins) and any(None in t.shape for t in outs):
            return keras.Operation.compute_output_spec(self, *args, **kwargs)
        return out

    return spec


@contextlib.contextmanager
def _generic_output_specs(op: Any) -> Iterator[None]:
    """While tracing ``op``: sub-layers whose class overrides ``call`` but inherits a parent's own
    ``compute_output_spec`` (keras_hub's cached attention takes arguments that Keras' attention's
    output spec does not) infer their output spec from their call, as Keras does for any layer; and
    while a graph is built for concrete input shapes (:data:`CONCRETE_SPECS`), so does any sub-layer
    whose own spec leaves a dimension unknown (:func:`_known_output_spec`)."""
    generic = keras.layers.Layer.compute_output_spec
    concrete = CONCRETE_SPECS.get() is not None
    patched = []
    for layer in op._flatten_layers(include_self=False, recursive=True) if isinstance(op, keras.layers.Layer) else ():
        cls = type(layer)
        own = None
        if "call" in vars(cls) and "compute_output_spec" not in vars(cls) and cls.compute_output_spec is not generic:
            own = types.MethodType(generic, layer)
        # with the inputs' shapes known, a layer's own spec may still leave a dimension unknown that its
        # call fixes (EinsumDense's output shape given as (None, heads, head_dim)), and a call traced
        # after it may need it (gpt-oss builds its sliding window from the query's length)
        if concrete:
            own = types.MethodType(_known_output_spec(own or layer.compute_output_spec), layer)
        if own is not None:
            layer.compute_output_spec = own
            patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.compute_output_spec


def expansion(op: Any, node: Any) -> keras.Model | None:
    """``op``'s call at ``node`` as a functional model of explainable parts, or ``None`` if ``op`` is
    neither registered for expansion nor a composite layer (or cannot be traced)."""
    builder = _EXPANSIONS.get(type(op).__name__)
    if builder is None:
        if not is_composite_layer(op):
            return None
        builder = _trace_call
    specs = CONCRETE_SPECS.get() or {}
    fresh = [keras.Input(batch_shape=tuple(specs.get(id(kt), kt).shape), dtype=kt.dtype, name=f"{op.name}_in{i}")
             for i, kt in enumerate(node.input_tensors)]
    args, kwargs = node.arguments.fill_in({id(kt): f for kt, f in zip(node.input_tensors, fresh)})
    kwargs = dict(kwargs)
    with _generic_output_specs(op):
        outs = builder(op, *args, **kwargs)
    flat = tree.flatten(outs)
    if len(flat) != len(node.outputs):
        return None
    return keras.Model(fresh, flat, name=op.name)


# ----------------------------------------------------------------------------- dot-product attention
class CausalMask(keras.layers.Layer):
    """The lower-triangular mask ``(T, S)`` of attention scores ``(..., T, S)`` (query ``t`` sees keys
    ``s <= t``, as Keras' ``dot_product_attention(is_causal=True)``), as booleans broadcast to the
    scores' shape."""

    def call(self, scores: Any) -> Any:
        shape = ops.shape(scores)
        lower = ops.tril(ops.ones((shape[-2], shape[-1]), dtype="bool"))
        return ops.broadcast_to(lower, shape)

    def compute_output_spec(self, scores: Any) -> Any:
        return keras.KerasTensor(scores.shape, dtype="bool")


def _dot_product_attention(op: Any, query: Any, key: Any, value: Any, bias: Any = None, mask: Any = None,
                           scale: Any = None, **_: Any) -> Any:
    """``softmax(scale · Q·Kᵀ + bias, masked) · V`` with queries ``(B, T, N, H)`` and keys and values
    ``(B, S, K, H)`` (``K`` dividing ``N``: grouped heads repeat each key and value head); causal
    masking and the soft cap of the logits are attributes of the operation."""
    is_causal = bool(getattr(op, "is_causal", False))
    attn_logits_soft_cap = getattr(op, "attn_logits_soft_cap", None)
    heads, kv_heads = query.shape[-2], key.shape[-2]
    if heads is not None and kv_heads is not None and heads != kv_heads:
        key = ops.repeat(key, heads // kv_heads, axis=-2)
        value = ops.repeat(value, heads // kv_heads, axis=-2)
    if scale is None:
        scale = 1.0 / math.sqrt(float(query.shape[-1]))
    # the query scaled first (as Keras' einsum path does): the scores are then both the product's output
    # and the softmax's input, one tensor of (batch, heads, T, S) per layer instead of two
    query = ops.multiply(query, ops.cast(scale, query.dtype))
    scores = ops.einsum("btnh,bsnh->bnts", query, key)
    if attn_logits_soft_cap is not None:
        cap = float(attn_logits_soft_cap)
        scores = ops.multiply(ops.tanh(ops.divide(scores, cap)), cap)
    if bias is not None:
        scores = ops.add(scores, bias)
    full_mask = None
    if mask is not None:
        full_mask = ops.broadcast_to(ops.cast(mask, "bool"), scores.shape) if None not in scores.shape else \
            ops.logical_and(ops.cast(mask, "bool"), ops.ones_like(scores, dtype="bool"))
    if is_causal:
        causal = CausalMask()(scores)
        full_mask = causal if full_mask is None else ops.logical_and(full_mask, causal)
    if full_mask is not None:  # as Keras' kernel: masked logits set to a large negative number, then softmax
        big = 65500.0 if scores.dtype == "float16" else 3.38953e38
        scores = ops.where(full_mask, scores, ops.cast(-0.7 * big, scores.dtype))
    probs = keras.layers.Softmax(axis=-1)(scores)
    return ops.einsum("bnts,bsnh->btnh", probs, value)


register_expansion("DotProductAttention", _dot_product_attention)


# ----------------------------------------------------------------------------- mixtures of experts
#: keras_hub's stacked experts (Mixtral, Qwen-MoE, Qwen3-MoE, Qwen3.5-MoE, gpt-oss): every expert for every
#: token in one ``einsum`` over the expert axis, a gated unit, another ``einsum``; the block around them
#: weighs the outputs with the router's top-k weights (zero for the experts a token does not use) and
#: sums over the expert axis. By class name, so that keras_hub need not be imported here.
for _experts in ("MixtralMoeExperts", "QwenMoeExperts", "Qwen3MoeExperts", "Qwen3_5MoeExperts", "GptOssExperts"):
    register_traced(_experts)
