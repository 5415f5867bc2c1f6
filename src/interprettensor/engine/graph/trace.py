"""Tracing: a Keras model (Sequential, Functional, nested; chains registered with
:func:`register_chain`) flattened into the steps of a :class:`~.model.Graph` (:func:`build_graph`).
Nested models are inlined; layers without a handler are traced into the layers and operations they
use (:mod:`..expand`), with concrete shapes where needed (:func:`concrete_specs`)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
from keras import tree

from ..backend import Tensor
from ..errors import ExplainError
from ..expand import CONCRETE_SPECS, CONSTANT_OUTPUT, ShapeDependent, expansion, output_spec
from ..handlers import ConstantHandler, handler_for, load_optional_handlers, overridden_parent
from .analyses import mark_carried, mark_gates, mark_nonneg
from .statistics import mark_statistics
from .canonical import fuse_batchnorm
from .model import Graph, Step, _Keys


def _is_model(op: Any) -> bool:
    return isinstance(op, keras.Model)


def _layer_call(layer: Any) -> Callable:
    def call(xs: Sequence[Tensor]) -> list:
        return tree.flatten(layer(xs[0] if len(xs) == 1 else list(xs)))

    return call


def _node_call(op: Any, node: Any) -> Callable:
    ids = [id(kt) for kt in node.input_tensors]
    repeated = len(set(ids)) < len(ids)  # op(x, x): each occurrence takes its own value (a product rule
    # may hold one of them fixed), so the values are filled in by position, not by tensor

    def call(xs: Sequence[Tensor]) -> list:
        if repeated:
            values = iter(xs)
            args, kwargs = node.arguments.convert(
                lambda t: next(values) if isinstance(t, keras.KerasTensor) else t)
        else:
            args, kwargs = node.arguments.fill_in(dict(zip(ids, xs)))
        kwargs.pop("training", None)
        # optional outputs the call returns as None are not in the graph (Keras' nodes hold tensors only)
        return [t for t in tree.flatten(op(*args, **kwargs)) if t is not None]

    return call


def _floating(kts: Sequence[Any] | None) -> list[bool] | None:
    if kts is None:
        return None
    return [str(getattr(kt, "dtype", "float32")).startswith(("float", "bfloat")) for kt in kts]


_CONSTANT = ConstantHandler()


def _make_step(op: Any, name: str, ins: list, outs: list, call: Callable, node: Any = None,
               constant: bool = False) -> Step:
    out_float = _floating(node.outputs) if node is not None else None
    handler = _CONSTANT if constant else handler_for(op)
    if handler is not None:  # a wrapper is built around the wrapped layer's handler; a sum of one tensor
        handler = handler.for_layer(op, len(ins))  # and constants is an element-wise shift
    if out_float is not None and not any(out_float):
        handler = _CONSTANT  # integer or boolean outputs (masks, indices): no relevance flows through them
    if handler is None:
        parent = overridden_parent(op)
        why = (f" (it subclasses {parent.__name__} but overrides call, so {parent.__name__}'s handler would "
               f"explain another computation)" if parent is not None else "")
        if isinstance(op, keras.layers.TimeDistributed):
            why = f" (the layer it wraps, {type(op.layer).__name__}, has none)"
        raise ExplainError(
            f"layer {name!r} of type {type(op).__name__} cannot be explained: no LRP handler is "
            f"registered for it{why}. Register one with interprettensor.register_handler({type(op).__name__}, "
            f"handler) (see 'Adding a rule or a layer' in the documentation, docs/tutorials/extending.md).")
    options = {}
    if node is not None:
        options = {k: v for k, v in node.arguments.kwargs.items()
                   if isinstance(v, (bool, int, float, str, type(None)))}
        # numbers among the positional arguments (an exponent, ``1 / x``'s numerator), by position
        options.update({f"arg{i}": v for i, v in enumerate(node.arguments.args)
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return Step(name, op, handler, ins, outs, call, options=options)


def _add_chain(g: Graph, layers: Sequence[Any], in_keys: list, prefix: str, keys: _Keys) -> list:
    cur = in_keys
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _is_model(layer):
            cur = _add_model(g, layer, cur, prefix + layer.name + "/", keys)
            continue
        outs = [keys.new()]
        g.steps.append(_make_step(layer, prefix + layer.name, cur, outs, _layer_call(layer)))
        cur = outs
    return cur


def _add_functional(g: Graph, model: Any, in_keys: list, prefix: str, keys: _Keys) -> list:
    if len(in_keys) != len(model.inputs):
        raise ExplainError(f"model {model.name!r} takes {len(model.inputs)} inputs, got {len(in_keys)}")
    kmap = {id(kt): k for kt, k in zip(model.inputs, in_keys)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            if any(id(kt) not in kmap for kt in node.input_tensors):
                continue
            ins = [kmap[id(kt)] for kt in node.input_tensors]
            expanded = None
            if not _is_model(op) and handler_for(op) is None and any(_floating(node.outputs)):
                expanded = _expand(op, node, prefix)
            if _is_model(op):
                outs = _add_model(g, op, ins, prefix + op.name + "/", keys)
            elif expanded is CONSTANT_OUTPUT:  # outputs that do not depend on the inputs
                outs = [keys.new() for _ in node.outputs]
                step = _make_step(op, prefix + op.name, ins, outs, _node_call(op, node), node, constant=True)
                g.steps.append(step)
            elif expanded is not None:
                outs = _add_traced(g, op, expanded, ins, prefix, keys)
                _name_block_output(g, outs, prefix + op.name)
            else:
                outs = [keys.new() for _ in node.outputs]
                g.steps.append(_make_step(op, prefix + op.name, ins, outs, _node_call(op, node), node))
            for kt, k in zip(node.outputs, outs):
                kmap[id(kt)] = k
    return [kmap[id(kt)] for kt in model.outputs]


_TRACED_NOTE = "traced because it has no handler"


def _add_traced(g: Graph, op: Any, expanded: Any, ins: list, prefix: str, keys: _Keys) -> list:
    """The traced layer's graph added; an error inside it also names the layer (the innermost one), for
    which a handler can be registered instead."""
    try:
        return _add_model(g, expanded, ins, prefix + op.name + "/", keys)
    except ShapeDependent:
        raise
    except ExplainError as e:
        if _TRACED_NOTE in str(e):
            raise
        raise ExplainError(f"{e} It is part of layer {prefix + op.name!r} of type {type(op).__name__}, {_TRACED_NOTE}: "
                           f"or register one with interprettensor.register_handler({type(op).__name__}, handler).") from e


def _name_block_output(g: Graph, outs: list, name: str) -> None:
    """The step that computes a traced layer's (first) output also answers to the layer's name, so
    that ``layerwise`` results and ``layer=`` find the block (``'transformer_layer_0'``)."""
    for s in reversed(g.steps):
        if outs and outs[0] in s.outputs:
            s.aliases = s.aliases + (name,)
            return


def _expand(op: Any, node: Any, prefix: str) -> Any:
    """The functional graph of what ``op`` computes (see :mod:`.expand`), or ``None``."""
    try:
        return expansion(op, node)
    except ExplainError:
        raise
    except Exception as e:  # noqa: BLE001 - a call that cannot run on symbolic tensors
        specs = CONCRETE_SPECS.get()
        unknown = any(d is None for kt in node.input_tensors for d in tuple((specs or {}).get(id(kt), kt).shape))
        if specs is None and unknown:
            raise ShapeDependent(f"layer {prefix + op.name!r} ({type(op).__name__}) needs the input's shape to be "
                                 f"traced: {type(e).__name__}: {e}") from e
        raise ExplainError(
            f"layer {prefix + op.name!r} of type {type(op).__name__} has no LRP handler, and tracing its call "
            f"into the layers and operations it uses failed{_where(e)}: {type(e).__name__}: {e}. Register a handler "
            f"with interprettensor.register_handler({type(op).__name__}, handler) (see 'Adding a rule or a layer' in the "
            f"documentation, docs/tutorials/extending.md).") from e


def _where(e: BaseException) -> str:
    """`` at file:line (`source`)``: the innermost line of the traced layer's own code (not Keras', the
    backend's or this library's) where ``e`` was raised, i.e. the operation that could not be traced."""
    import linecache
    import os
    import traceback

    skip = tuple(os.sep + p + os.sep for p in ("keras", "tensorflow", "jax", "torch", "interprettensor", "optree"))
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not any(p in f.filename for p in skip)]
    if not frames:
        return ""
    f = frames[-1]
    line = (f.line or linecache.getline(f.filename, f.lineno)).strip()
    return f" at {os.path.basename(f.filename)}:{f.lineno} (`{line}`)"


#: model classes that are chains of layers, each with a function listing them in order
_CHAINS: list[tuple[type, Callable[[Any], list]]] = [(keras.Sequential, lambda model: list(model.layers))]


def register_chain(model_type: type, layers: Callable[[Any], list]) -> None:
    """Models of ``model_type`` are walked as the chain ``layers(model)`` (e.g. the original API's
    Sequential of modules)."""
    _CHAINS.insert(0, (model_type, layers))


def _chain_layers(model: Any) -> list | None:
    for model_type, layers in _CHAINS:
        if isinstance(model, model_type):
            return layers(model)
    return None


def _add_model(g: Graph, model: Any, in_keys: list, prefix: str, keys: _Keys) -> list:
    chain = _chain_layers(model)
    if chain is not None:
        return _add_chain(g, chain, in_keys, prefix, keys)
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None):
        return _add_functional(g, model, in_keys, prefix, keys)
    raise ExplainError(
        f"model {model.name!r} ({type(model).__name__}) is a subclassed Keras model whose layers cannot be "
        f"traced; explain a Sequential or Functional model (e.g. rebuild it with keras.Input)")


def concrete_specs(model: Any, input_shapes: Sequence[Sequence[int | None]]) -> dict:
    """``{id(tensor): KerasTensor}`` for the tensors of a functional ``model`` (nested ones too) with
    the shapes they take when the inputs have ``input_shapes`` (per input, with the batch axis);
    tensors whose shape cannot be inferred are left out."""
    specs: dict = {}
    ins = [keras.KerasTensor(tuple(s), dtype=kt.dtype) for kt, s in zip(model.inputs, input_shapes)]
    _functional_specs(model, ins, specs)
    return specs


def _functional_specs(model: Any, ins: list, specs: dict) -> list | None:
    for kt, v in zip(model.inputs, ins):
        specs[id(kt)] = v
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input or any(id(kt) not in specs for kt in node.input_tensors):
                continue
            values = [specs[id(kt)] for kt in node.input_tensors]
            try:
                if _is_model(op) and _chain_layers(op) is None and hasattr(op, "_nodes_by_depth"):
                    outs = _functional_specs(op, values, specs)
                else:
                    args, kwargs = node.arguments.fill_in({id(kt): v for kt, v in zip(node.input_tensors, values)})
                    outs = output_spec(op, *args, **kwargs)
            except Exception:  # noqa: BLE001 - shapes not inferable here: later expansions use the model's
                continue
            if outs is not None:
                for kt, v in zip(node.outputs, outs):
                    specs[id(kt)] = v
    if any(id(kt) not in specs for kt in model.outputs):
        return None
    return [specs[id(kt)] for kt in model.outputs]


def build_graph(model: Any, canonize: bool = True, input_shapes: Sequence[Sequence[int | None]] | None = None) -> Graph:
    """Flatten ``model`` into steps. With ``canonize``, BatchNorm layers are merged (see
    :func:`fuse_batchnorm`). ``input_shapes`` (per model input, with the batch axis): build the
    graph for inputs of these shapes, for layers whose call can only be traced with known dimensions
    (the graph then holds only for them); without, such layers raise :class:`ShapeDependent`."""
    if not isinstance(model, keras.Model):
        raise ExplainError(f"expected a Keras model, got {type(model).__name__}")
    load_optional_handlers()
    if input_shapes is not None and getattr(model, "inputs", None) and hasattr(model, "_nodes_by_depth"):
        token = CONCRETE_SPECS.set(concrete_specs(model, input_shapes))
        try:
            return build_graph(model, canonize)
        finally:
            CONCRETE_SPECS.reset(token)
    keys = _Keys()
    chain = _chain_layers(model)
    if chain is not None:
        inputs = [keys.new()]
        input_names = [f"{model.name}_input"]
    else:
        if not hasattr(model, "_nodes_by_depth"):
            raise ExplainError(
                f"model {model.name!r} ({type(model).__name__}) is a subclassed Keras model whose layers cannot "
                f"be traced; explain a Sequential or Functional model (e.g. rebuild it with keras.Input)")
        if not getattr(model, "inputs", None):
            raise ExplainError(f"model {model.name!r} has no defined inputs; build it with keras.Input "
                               f"before explaining it")
        inputs = [keys.new() for _ in model.inputs]
        input_names = [getattr(kt, "name", f"input_{i}") for i, kt in enumerate(model.inputs)]
    g = Graph(inputs, [], [], input_names, [])
    g.outputs = _add_model(g, model, inputs, "", keys)
    producer = g.producer()
    g.output_names = [producer[k].name if k in producer else f"output_{i}" for i, k in enumerate(g.outputs)]
    if canonize:
        fuse_batchnorm(g)
    mark_statistics(g)
    mark_carried(g, _floating(model.inputs) if chain is None else [True])
    mark_nonneg(g)
    mark_gates(g)
    return g
