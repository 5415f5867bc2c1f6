"""Layers explained through what they are made of.

A layer without a handler of its own (a transformer block, Keras' ``MultiHeadAttention``, keras_hub's
encoder and decoder layers, but also a layer computed from keras operations alone: an RMS norm, a
layer scale ``x * γ``, a drop path) is traced: its ``call`` runs on symbolic inputs, which records the
sub-layers and keras operations it uses as a small functional graph, and the graph walk explains that
graph like a nested model (the graph analyses then recognise what the operations compute, e.g. a
normalisation's statistic: :func:`interprettensor.engine.graph.mark_statistics`). A layer whose traced
outputs do not depend on its inputs' values at all (a rotary table or a bias computed from the input's
shape) is a constant (:data:`CONSTANT_OUTPUTS`). Fused operations expand into their
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

__all__ = ["CONCRETE_SPECS", "CONSTANT_OUTPUTS", "ShapeDependent", "expansion", "is_composite_layer",
           "is_traceable_layer", "register_expansion"]

#: what :func:`expansion` returns for a layer whose traced outputs are all computed without reading its
#: inputs' values (from their static shapes only, e.g. DINOv3's rotary cos/sin table): a constant
CONSTANT_OUTPUTS = "constant outputs"

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


def is_composite_layer(op: Any) -> bool:
    """A layer (not a model) that holds other layers: traced through its ``call``."""
    if not isinstance(op, keras.layers.Layer) or isinstance(op, keras.Model):
        return False
    return any(True for _ in op._flatten_layers(include_self=False, recursive=False))


def is_traceable_layer(op: Any) -> bool:
    """A layer (not a model): without a handler, it is traced through its ``call`` (a composite layer
    into its sub-layers and operations, a layer without sub-layers into the keras operations it uses)."""
    return isinstance(op, keras.layers.Layer) and not isinstance(op, keras.Model)


def _trace_call(op: Any, *args: Any, **kwargs: Any) -> Any:
    import inspect

    try:
        params = inspect.signature(op.call).parameters
    except (TypeError, ValueError):
        params = {}
    if "training" in params:
        kwargs["training"] = False
    return op.call(*args, **kwargs)


@contextlib.contextmanager
def _generic_output_specs(op: Any) -> Iterator[None]:
    """While tracing ``op``: sub-layers whose class overrides ``call`` but inherits a parent's own
    ``compute_output_spec`` (keras_hub's cached attention takes arguments that Keras' attention's
    output spec does not) infer their output spec from their call, as Keras does for any layer."""
    generic = keras.layers.Layer.compute_output_spec
    patched = []
    for layer in op._flatten_layers(include_self=False, recursive=True) if isinstance(op, keras.layers.Layer) else ():
        cls = type(layer)
        if "call" in vars(cls) and "compute_output_spec" not in vars(cls) and cls.compute_output_spec is not generic:
            layer.compute_output_spec = types.MethodType(generic, layer)
            patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.compute_output_spec


#: a variable's binary operators and the keras operation each computes (``reflected``: ``other ∘ self``)
_VARIABLE_OPERATORS = {"__add__": (ops.add, False), "__radd__": (ops.add, True),
                       "__sub__": (ops.subtract, False), "__rsub__": (ops.subtract, True),
                       "__mul__": (ops.multiply, False), "__rmul__": (ops.multiply, True),
                       "__truediv__": (ops.divide, False), "__rtruediv__": (ops.divide, True),
                       "__matmul__": (ops.matmul, False), "__rmatmul__": (ops.matmul, True)}


def _symbolic_operator(fn: Callable, reflected: bool, original: Callable) -> Callable:
    def operator(self: Any, other: Any) -> Any:
        if isinstance(other, keras.KerasTensor):
            return fn(other, self) if reflected else fn(self, other)
        return original(self, other)

    return operator


@contextlib.contextmanager
def _symbolic_variables() -> Iterator[None]:
    """While tracing: ``variable * symbolic`` (T5's ``self.weight * x``) is the keras operation on the
    live variable, as ``symbolic * variable`` already is (a variable's own operators compute with the
    backend and refuse symbolic tensors)."""
    cls = keras.Variable
    own = {name: vars(cls)[name] for name in _VARIABLE_OPERATORS if name in vars(cls)}
    for name, (fn, reflected) in _VARIABLE_OPERATORS.items():
        setattr(cls, name, _symbolic_operator(fn, reflected, getattr(cls, name)))
    try:
        yield
    finally:
        for name in _VARIABLE_OPERATORS:
            if name in own:
                setattr(cls, name, own[name])
            else:
                delattr(cls, name)


def expansion(op: Any, node: Any) -> keras.Model | str | None:
    """``op``'s call at ``node`` as a functional model of explainable parts; :data:`CONSTANT_OUTPUTS` if
    the traced call computes every output without reading the inputs' values; ``None`` if ``op`` is
    neither registered for expansion nor a layer (or its outputs do not match the node's)."""
    builder = _EXPANSIONS.get(type(op).__name__)
    if builder is None:
        if not is_traceable_layer(op):
            return None
        builder = _trace_call
    specs = CONCRETE_SPECS.get() or {}
    fresh = [keras.Input(batch_shape=tuple(specs.get(id(kt), kt).shape), dtype=kt.dtype, name=f"{op.name}_in{i}")
             for i, kt in enumerate(node.input_tensors)]
    args, kwargs = node.arguments.fill_in({id(kt): f for kt, f in zip(node.input_tensors, fresh)})
    kwargs = dict(kwargs)
    with _generic_output_specs(op), _symbolic_variables():
        outs = builder(op, *args, **kwargs)
    flat = tree.flatten(outs)
    if len(flat) != len(node.outputs):
        return None
    symbolic = [isinstance(t, keras.KerasTensor) for t in flat]
    if not any(symbolic):
        return CONSTANT_OUTPUTS
    if not all(symbolic):
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
