"""Layers explained through what they are made of.

A layer without a handler of its own (a transformer block, Keras' ``MultiHeadAttention``, keras_hub's
encoder and decoder layers, but also a layer computed from keras operations alone: an RMS norm, a
layer scale ``x * γ``, a drop path) is traced: its ``call`` runs on symbolic inputs, which records the
sub-layers and keras operations it uses as a small functional graph, and the graph walk explains that
graph like a nested model (the graph analyses then recognise what the operations compute, e.g. a
normalisation's statistic: :func:`interprettensor.engine.graph.mark_statistics`). A layer whose traced
outputs do not depend on its inputs' values at all (a rotary table or a bias computed from the input's
shape) is a constant (:data:`CONSTANT_OUTPUT`). Fused operations expand into their
explicit parts in the same way (:func:`register_expansion`): ``keras.ops.dot_product_attention``
becomes ``Q·Kᵀ``, a masked softmax and ``A·V``, so that each part gets its own rule.

The forward check of the explainer compares the traced computation with the layer's own output.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import types
from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras import ops, tree

from .errors import ExplainError

__all__ = ["CONCRETE_SPECS", "CONSTANT_OUTPUT", "ConstantOutput", "ConstantTensor", "ShapeDependent", "expansion",
           "is_composite_layer", "is_traceable_layer", "output_spec", "register_expansion", "register_spec_from_call"]

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
    """``op.call`` in inference mode (``training=False`` where the call takes it; a ``training``
    recorded by the caller is dropped where it does not)."""
    unused = _context_args_not_taken(op.call)
    for name in unused:
        kwargs.pop(name, None)
    if "training" not in unused:
        kwargs["training"] = False
    return op.call(*args, **kwargs)


def _strip_none(layer: Any, out: Any) -> Any:
    """``out`` without the ``None`` among its outputs (a cache or attention scores not asked for),
    the full structure kept on ``layer`` for :func:`_with_optional_outputs` to restore."""
    flat = tree.flatten(out)
    if not any(t is None for t in flat):
        return out
    object.__setattr__(layer, "_it_optional_outputs", out)
    return [t for t in flat if t is not None]


_OPTIONAL_CLASSES: dict[type, type] = {}


def _with_optional_outputs(cls: type) -> type:
    """A subclass of ``cls`` whose ``__call__`` gives its caller the structure the call returned, with
    its ``None`` in place, while Keras records only the tensors (its graph nodes take tensors only)."""
    sub = _OPTIONAL_CLASSES.get(cls)
    if sub is None:
        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            structure = self.__dict__.pop("_it_optional_outputs", None)
            if structure is None:
                return out
            tensors = iter(tree.flatten(out))
            return tree.pack_sequence_as(structure, [None if t is None else next(tensors)
                                                     for t in tree.flatten(structure)])

        sub = _OPTIONAL_CLASSES[cls] = type(cls.__name__, (cls,), {"__call__": __call__,
                                                                  "__module__": cls.__module__})
    return sub


#: the arguments Keras passes on to sub-layers by itself (its call context)
_CONTEXT_ARGS = ("training",)


def _context_args_not_taken(call: Callable) -> tuple[str, ...]:
    """The call-context arguments (``training``) that ``call`` does not take (nor ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return ()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return ()
    return tuple(name for name in _CONTEXT_ARGS if name not in params)


def _less_known(out: Any, inputs: Any) -> bool:
    """Some output size is unknown (``None``) while every size of the tensor inputs is known."""
    shapes = [tuple(t.shape) for t in tree.flatten(inputs) if isinstance(t, keras.KerasTensor)]
    if not shapes or any(d is None for s in shapes for d in s):
        return False
    return any(d is None for t in tree.flatten(out) if isinstance(t, keras.KerasTensor) for d in t.shape)


#: layer class names whose own ``compute_output_shape`` is wrong for their call (keras_hub's
#: ``Gemma3InterleaveEmbeddings`` gives its first input's, the image embeddings', shape for the text
#: sequence it returns): their output spec is inferred from the call where the call can run
_SPEC_FROM_CALL: set[str] = set()


def register_spec_from_call(name: str) -> None:
    """Infer the output spec of layer class ``name`` from its call (on symbolic tensors), not from its
    own ``compute_output_spec``/``compute_output_shape``, wherever the call can run on them."""
    _SPEC_FROM_CALL.add(name)


def output_spec(op: Any, *args: Any, **kwargs: Any) -> Any:
    """The output spec of ``op`` called on symbolic ``args``: its own, else (a library's hand-written
    spec or shape that does not fit these arguments, or a class of :func:`register_spec_from_call`)
    inferred from its call under the conventions of :func:`_tracing_conventions`. Outputs that are
    ``None`` are left out."""
    if type(op).__name__ in _SPEC_FROM_CALL:
        # on dense tensors, as the engine computes (Keras marks ``embeddings * scale`` as sparse)
        dense = functools.partial(tree.map_structure, lambda t: keras.KerasTensor(t.shape, dtype=t.dtype)
                                  if isinstance(t, keras.KerasTensor) else t)
        try:
            out = keras.Operation.compute_output_spec(op, *dense(list(args)), **dense(dict(kwargs)))
            return [t for t in tree.flatten(out) if t is not None]
        except Exception:  # noqa: BLE001 - a call that needs known sizes: the layer's own spec
            pass
    try:
        out = op.compute_output_spec(*args, **kwargs)
    except Exception:  # noqa: BLE001
        if not isinstance(op, keras.layers.Layer):
            raise
        out = None
    if out is None or (isinstance(op, keras.layers.Layer) and _less_known(out, (args, kwargs))):
        with _tracing_conventions(op):
            out = keras.Operation.compute_output_spec(op, *args, **kwargs)
    return [t for t in tree.flatten(out) if t is not None]


def _traceable(layer: Any) -> dict:
    """Instance attributes that make ``layer`` traceable on symbolic tensors, whatever its library's
    conventions: outputs that are ``None`` are left out of the graph (and restored for the caller); an
    output spec that the layer's own ``compute_output_spec`` or ``compute_output_shape`` cannot give
    for the arguments of this call is inferred from the call itself, as Keras does for any layer."""
    cls = type(layer)
    generic = keras.layers.Layer.compute_output_spec
    own = layer.compute_output_spec
    if "call" in vars(cls) and "compute_output_spec" not in vars(cls) and cls.compute_output_spec is not generic:
        # keras_hub's cached attention overrides call but inherits Keras' attention's output spec
        own = types.MethodType(generic, layer)
    call = layer.call
    unused = _context_args_not_taken(call)

    @functools.wraps(call)
    def traced_call(*args: Any, **kwargs: Any) -> Any:
        for name in unused:  # e.g. training= passed by a block to a sub-layer whose call does not take it
            kwargs.pop(name, None)
        return _strip_none(layer, call(*args, **kwargs))

    def spec(*args: Any, **kwargs: Any) -> Any:
        for name in unused:
            kwargs.pop(name, None)
        try:
            out = own(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a hand-written spec or shape that does not fit this call
            out = None
        if out is None or _less_known(out, (args, kwargs)):
            # a spec the layer cannot give, or one vaguer than its inputs (EinsumDense's configured
            # output shape has None where the input's size is known): what its call computes
            out = keras.Operation.compute_output_spec(layer, *args, **kwargs)
        return _strip_none(layer, out)

    return {"call": traced_call, "compute_output_spec": spec}


@contextlib.contextmanager
def _tracing_conventions(op: Any) -> Iterator[None]:
    """While tracing ``op``: its sub-layers follow :func:`_traceable` (instance attributes and a
    subclass that are removed afterwards; the layers compute what they computed before)."""
    patched = []
    layers = op._flatten_layers(include_self=False, recursive=True) if isinstance(op, keras.layers.Layer) else ()
    try:
        for layer in layers:
            if isinstance(layer, keras.Model):
                continue
            cls = type(layer)
            attrs = _traceable(layer)
            before = {name: layer.__dict__[name] for name in attrs if name in layer.__dict__}
            for name, value in attrs.items():
                object.__setattr__(layer, name, value)
            object.__setattr__(layer, "__class__", _with_optional_outputs(cls))
            patched.append((layer, cls, attrs, before))
        yield
    finally:
        for layer, cls, attrs, before in patched:
            object.__setattr__(layer, "__class__", cls)
            layer.__dict__.pop("_it_optional_outputs", None)
            for name in attrs:
                if name in before:
                    object.__setattr__(layer, name, before[name])
                else:
                    layer.__dict__.pop(name, None)


class ConstantOutput:
    """What :func:`expansion` answers for a layer whose outputs do not depend on its inputs (e.g. a
    relative position embedding computed from the layer's weights): a constant, through which no
    relevance flows."""


#: the answer of :func:`expansion` for a layer whose outputs are constants
CONSTANT_OUTPUT = ConstantOutput()


class ConstantTensor(keras.layers.Layer):
    """An output of a traced call that does not depend on the call's inputs (computed while tracing,
    for the traced shapes), as a layer of the traced graph: its input only places it there."""

    def __init__(self, value: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.value = ops.convert_to_numpy(value)

    def call(self, anchor: Any) -> Any:
        return ops.convert_to_tensor(self.value)

    def compute_output_spec(self, anchor: Any) -> Any:
        return keras.KerasTensor(self.value.shape, dtype=str(self.value.dtype))


def _runtime_shapes(model: keras.Model) -> list[str]:
    """The operations of a traced ``model`` that hold a shape read while tracing with unknown
    dimensions (``ops.reshape(x, ops.shape(y))`` records ``None`` where the size is only known at run
    time), as ``'Reshape (newshape=(None, None, 4))'``."""
    found = []
    for node_op in model.operations:
        if isinstance(node_op, keras.layers.Layer):
            continue
        for attr, value in vars(node_op).items():
            if not (isinstance(value, (tuple, list)) and value and any(d is None for d in value)
                    and all(d is None or isinstance(d, int) for d in value)):
                continue
            if (type(node_op).__name__ == "Reshape" and attr == "newshape" and sum(d is None for d in value) == 1
                    and -1 not in value):
                # one unknown size of a reshape follows from the others: -1 is exact for any input size
                node_op.newshape = tuple(-1 if d is None else d for d in value)
                continue
            found.append(f"{type(node_op).__name__} ({attr}={tuple(value)})")
    return found


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


def expansion(op: Any, node: Any) -> keras.Model | ConstantOutput | None:
    """``op``'s call at ``node`` as a functional model of explainable parts, :data:`CONSTANT_OUTPUT` if
    its outputs do not depend on its inputs, or ``None`` if ``op`` is neither registered for expansion
    nor a layer (or a layer without sub-layers whose call cannot be traced). Outputs that are ``None`` (optional outputs not asked
    for) are left out, as Keras leaves them out of the node. Raises :class:`ShapeDependent` where the
    call reads a size that is unknown until run time (the graph is then built for the input's shapes)."""
    builder = _EXPANSIONS.get(type(op).__name__)
    leaf = False
    if builder is None:
        if not is_traceable_layer(op):
            return None
        # a layer of its own (no sub-layers) is traced into the keras operations it uses (a norm written
        # out, a layer scale, a rotary table for the input's length); if its call cannot be traced on
        # symbolic tensors, it needs a handler
        leaf = not is_composite_layer(op)
        builder = _trace_call
    specs = CONCRETE_SPECS.get() or {}
    fresh = [keras.Input(batch_shape=tuple(specs.get(id(kt), kt).shape), dtype=kt.dtype, name=f"{op.name}_in{i}")
             for i, kt in enumerate(node.input_tensors)]
    args, kwargs = node.arguments.fill_in({id(kt): f for kt, f in zip(node.input_tensors, fresh)})
    kwargs = dict(kwargs)
    try:
        with _tracing_conventions(op), _symbolic_variables():
            outs = builder(op, *args, **kwargs)
    except Exception as e:  # noqa: BLE001
        if not leaf:
            raise
        if not specs and any(d is None for f in fresh for d in f.shape):
            raise ShapeDependent(f"layer {op.name!r} ({type(op).__name__}) may be a constant of the input's "
                                 f"shape: {type(e).__name__}: {e}") from e
        return None
    flat = [t for t in tree.flatten(outs) if t is not None]
    if len(flat) != len(node.outputs):
        return None
    symbolic = [isinstance(t, keras.KerasTensor) for t in flat]
    if not any(symbolic):
        return CONSTANT_OUTPUT
    if not all(symbolic):  # e.g. an empty placeholder for hidden states not asked for, beside the output
        flat = [t if s else ConstantTensor(t)(fresh[0]) for t, s in zip(flat, symbolic)]
    model = keras.Model(fresh, flat, name=op.name)
    unknown = _runtime_shapes(model)
    if unknown:
        if not CONCRETE_SPECS.get():
            raise ShapeDependent(f"layer {op.name!r} ({type(op).__name__}) reads sizes that are only known at run "
                                 f"time: {', '.join(unknown)}")
        raise ValueError(f"its call reads sizes that are unknown even for inputs of known shape: {', '.join(unknown)}")
    return model


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


def _register_constant_tensor() -> None:
    from .handlers import ConstantHandler, register_handler

    register_handler(ConstantTensor, ConstantHandler())


_register_constant_tensor()


# ----------------------------------------------------------------------------- DeBERTa-v3
def _disentangled_scores(op: Any, query: Any, key: Any, rel_embeddings: Any) -> Any:
    """DeBERTa's content-to-position and position-to-content scores (He et al. 2021, eq. 2-4) with
    ``ops.take_along_axis`` for the relative-position gathers (keras_hub's layer calls ``tf.gather`` on
    TensorFlow, which cannot run on symbolic tensors): ``Q_c·K_rᵀ`` and ``K_c·Q_rᵀ`` gathered at the
    bucketed relative positions ``δ(i, j)``, scaled; the positions are integer constants."""
    batch_size = ops.shape(query)[0]
    num_positions = ops.shape(query)[1]
    rel_pos = op._get_rel_pos(num_positions)
    span = op.bucket_size
    shape = (batch_size, op.num_heads, num_positions, num_positions)
    pos_query = op._query_dense(rel_embeddings)
    pos_key = op._key_dense(rel_embeddings)
    c2p = ops.einsum("aecd,abcd->acbe", pos_key, query)
    c2p_pos = ops.broadcast_to(ops.clip(rel_pos + span, 0, span * 2 - 1), shape)
    c2p = ops.multiply(ops.take_along_axis(c2p, c2p_pos, axis=3), op.scale_factor)
    p2c = ops.einsum("aecd,abcd->acbe", pos_query, key)
    p2c_pos = ops.broadcast_to(ops.clip(-rel_pos + span, 0, span * 2 - 1), shape)
    p2c = ops.transpose(ops.take_along_axis(p2c, p2c_pos, axis=3), [0, 1, 3, 2])
    return ops.add(c2p, ops.multiply(p2c, op.scale_factor))


def _disentangled_self_attention(op: Any, *args: Any, **kwargs: Any) -> Any:
    """keras_hub's ``DisentangledSelfAttention`` traced through its own ``call`` (its dense layers and
    weights), the relative scores computed by :func:`_disentangled_scores`."""
    object.__setattr__(op, "_compute_disentangled_attention",
                       lambda query, key, rel_embeddings: _disentangled_scores(op, query, key, rel_embeddings))
    try:
        return _trace_call(op, *args, **kwargs)
    finally:
        object.__delattr__(op, "_compute_disentangled_attention")


register_expansion("DisentangledSelfAttention", _disentangled_self_attention)


register_spec_from_call("Gemma3InterleaveEmbeddings")
