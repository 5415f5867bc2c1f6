"""Which units of a Keras model can be removed, and what else must change with them.

A *prunable layer* is a ``Conv1D/2D/3D`` or ``Dense`` layer (channels last) whose output channels reach
only layers that treat channels one at a time (activations, dropout, pooling, padding, cropping,
up-sampling, ``BatchNormalization`` on the last axis, depthwise convolutions, ``Flatten``) before they
enter *consumers* (``Conv``, ``Dense``, ``DepthwiseConv``) whose input weights can be sliced. A channel
that reaches anything else (``Add``, ``Concatenate``, ``Multiply``, ``LayerNormalization``, a model
output, a shared layer, ...) cannot be removed without changing the other operands: such layers are
skipped and the reason is reported (:attr:`Plan.skipped`).

Residual sums are pruned jointly: where the channels reach an ``Add``, the layers that produce its other
operands (found backwards through layers that keep the channel order: activations, dropout,
BatchNormalization, pooling, padding, depthwise convolutions with multiplier 1, and earlier ``Add``\ s of
the same stream) form one *group* with the layer; channel ``j`` of the sum is removed from every one of
them at once, and the walk goes on through the sum's output (a ResNet's residual stream is one group,
its first convolution and every block's last). A group is skipped when any operand of its sums comes
from elsewhere (the model input, a layer that cannot be pruned).

A *head layer* is a ``MultiHeadAttention`` layer called once; removing heads changes nothing outside
it (its output projection keeps its size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from ...engine.errors import InterpretTensorError

__all__ = ["PruningError", "Plan", "Unit", "plan", "graph_of"]

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_DEPTHWISE = tuple(c for c in (getattr(keras.layers, "DepthwiseConv1D", None), keras.layers.DepthwiseConv2D) if c)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_POOL = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
         keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
         keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
         keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
         keras.layers.GlobalAveragePooling3D)
_SPATIAL = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
            keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
            keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D)
_ELEMENTWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                keras.layers.SpatialDropout3D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                keras.layers.AlphaDropout, keras.layers.Identity)


class PruningError(InterpretTensorError, ValueError):
    """A model, argument or reference set that pruning cannot work with."""


@dataclass
class Unit:
    """A prunable layer: its output units (``size``) and what reads them.

    ``group``: the other layers whose output channels are summed with this layer's (residual ``Add``), pruned
    with the same indices (empty for a plain layer). ``followers``: ``(layer, kind, index map)`` for each
    layer the channels (of the whole group) pass through or enter:
    kind ``'vector'`` (BatchNormalization: every weight sliced), ``'depthwise'`` (depthwise kernel
    sliced on its channel axis, bias on the expanded channels), ``'input'`` (a consumer: kernel sliced
    on its input axis). The index map turns the kept channels of the prunable layer into the indices on
    that layer's input (or, for depthwise, ``(channels, expanded outputs)``).
    """

    layer: Any
    size: int
    followers: list = field(default_factory=list)
    group: list = field(default_factory=list)

    @property
    def layers(self) -> list:
        """The layer and the rest of its group: every layer whose output channels are removed."""
        return [self.layer] + list(self.group)


@dataclass
class Plan:
    """What can be pruned: ``units`` (prunable layers in graph order, channel pruning) or ``heads``
    (MultiHeadAttention layers), and ``skipped``: ``{layer name: reason}``."""

    units: list
    skipped: dict


def graph_of(model: keras.Model) -> Any:
    """The functional graph of ``model`` (a Sequential model's inner Functional)."""
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise PruningError("the Sequential model is not built with an input shape: build it (model.build(shape) "
                               "or keras.Input as first layer) before pruning")
        return model._functional
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        kind = f"{type(model).__module__}.{type(model).__name__}"
        raise PruningError(f"pruning needs a functional or keras.Sequential model (it is rebuilt from its layer "
                           f"graph); got {kind}, which has no such graph (a subclassed model, or the 2017 API's "
                           f"it.Sequential: rebuild it from keras.layers)")
    try:
        model.get_config()["layers"]
    except Exception:  # noqa: BLE001 - a subclassed model has no layer graph in its config
        raise PruningError(f"pruning rebuilds the model from its configuration; {type(model).__name__} (a "
                           f"subclassed model?) has no functional layer graph") from None
    return model


def _links(g: Any) -> tuple[dict, dict, set]:
    """``(children, node count, output layers)``: for each operation of ``g``, the operations that read
    its output (once per use), and how often each operation is called inside ``g``."""
    nodes = [n for ns in g._nodes_by_depth.values() for n in ns]
    children: dict = {}
    calls: dict = {}
    for node in nodes:
        op = node.operation
        if op is None or node.is_input:
            continue
        calls[id(op)] = calls.get(id(op), 0) + 1
        for t in node.input_tensors:
            parent = t._keras_history.operation
            children.setdefault(id(parent), []).append(op)
    outputs = {id(t._keras_history.operation) for t in g.outputs}
    return children, calls, outputs


def _channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def plan(model: keras.Model, unit: str = "channel", layers: list | None = None) -> Plan:
    """The prunable layers of ``model`` for ``unit`` (``'channel'`` or ``'head'``), restricted to the
    names in ``layers`` when given (an unknown or unprunable name there is an error)."""
    g = graph_of(model)
    children, calls, outputs = _links(g)
    by_name = {layer.name: layer for layer in model.layers}
    if layers is not None:
        unknown = [n for n in layers if n not in by_name]
        if unknown:
            raise PruningError(f"layers={unknown} are not layers of the model (its layers: {sorted(by_name)})")
    units, skipped = [], {}
    grouped: set = set()
    for layer in model.layers:
        if layers is not None and layer.name not in layers:
            continue
        if id(layer) in grouped:
            continue
        if unit == "head":
            if isinstance(layer, keras.layers.MultiHeadAttention):
                if calls.get(id(layer), 0) != 1:
                    skipped[layer.name] = "a shared layer (called more than once)"
                elif layer._num_heads < 2:
                    skipped[layer.name] = "has one head"
                else:
                    units.append(Unit(layer, int(layer._num_heads)))
            elif layers is not None:
                skipped[layer.name] = f"{type(layer).__name__} has no attention heads"
            continue
        if isinstance(layer, _CONV + (keras.layers.Dense,)):
            reason = _why_not(layer, children, calls, outputs)
            if isinstance(reason, str):
                skipped[layer.name] = reason
            else:
                followers, group, joins = reason
                if layers is not None and any(m.name not in layers for m in group):
                    names = [layer.name] + [m.name for m in group]
                    raise PruningError(f"layer {layer.name!r} shares its output channels with {names[1:]} through "
                                       f"{[j.name for j in joins]} (residual sums): name all of {names} in "
                                       f"layers= to prune them together")
                grouped.update(id(m) for m in group)
                units.append(Unit(layer, _size(layer), followers, group))
        elif layers is not None:
            skipped[layer.name] = f"{type(layer).__name__} has no prunable output channels (Conv / Dense)"
    if layers is not None and skipped:
        raise PruningError("cannot prune these layers: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return Plan(units, skipped)


def _size(layer: Any) -> int:
    return int(layer.filters if isinstance(layer, _CONV) else layer.units)


def _producer_problem(layer: Any, calls: dict, outputs: set) -> str | None:
    if not _channels_last(layer):
        return "channels_first data format"
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution"
    if calls.get(id(layer), 0) != 1:
        return "a shared layer (called more than once)"
    if id(layer) in outputs:
        return "a model output"
    return None


def _order_preserving(op: Any) -> bool:
    """Layers that map channel ``j`` of their input to channel ``j`` of their output."""
    if isinstance(op, _ELEMENTWISE + _POOL + _SPATIAL):
        return _channels_last(op)
    if isinstance(op, keras.layers.BatchNormalization):
        axis = op.axis if isinstance(op.axis, int) else (op.axis[0] if len(op.axis) == 1 else None)
        return axis in (-1, len(op.input.shape) - 1)
    if isinstance(op, _DEPTHWISE):
        return _channels_last(op) and int(op.depth_multiplier) == 1
    return False


def _operand_producers(tensor: Any, calls: dict, seen: set) -> tuple[list, str | None]:
    """The Conv / Dense layers whose output channels reach ``tensor`` in order (through order-preserving
    layers and earlier ``Add``\ s), or why a part of it comes from elsewhere."""
    op = tensor._keras_history.operation
    while True:
        name = getattr(op, "name", type(op).__name__)
        if isinstance(op, keras.layers.InputLayer) or op is None:
            return [], "the model input"
        if isinstance(op, _CONV + (keras.layers.Dense,)):
            return [op], None
        if calls.get(id(op), 0) != 1:
            return [], f"{name}, a shared layer"
        node = next(n for n in op._inbound_nodes if n.operation is op)
        if isinstance(op, keras.layers.Add):
            if id(op) in seen:
                return [], None
            seen.add(id(op))
            found = []
            for t in node.input_tensors:
                more, why = _operand_producers(t, calls, seen)
                if why:
                    return [], why
                found += more
            return found, None
        if not _order_preserving(op) or len(node.input_tensors) != 1:
            return [], f"{name} ({type(op).__name__})"
        op = node.input_tensors[0]._keras_history.operation


def _why_not(layer: Any, children: dict, calls: dict, outputs: set) -> str | tuple:
    """``(followers, group, joins)`` of ``layer``'s channels (see :class:`Unit`; ``joins``: the ``Add`` layers
    that sum them with the group's), or why they cannot be removed."""
    reason = _producer_problem(layer, calls, outputs)
    if reason:
        return reason
    size = _size(layer)
    if not children.get(id(layer)):
        return "its output is not read by any layer"
    followers: list = []
    group: list = []
    joins: list = []
    visited: set = set()   # Adds (and so everything after them) walked once for the whole group
    producers = [layer]
    for producer in producers:
        # the walk: (layer reading the tensor, index map: kept channels -> indices on that tensor's last axis)
        todo = [(child, _identity(size)) for child in children.get(id(producer), [])]
        if not todo:
            return f"its channels are summed with those of {producer.name}, whose output is not read"
        while todo:
            op, index = todo.pop()
            name = getattr(op, "name", type(op).__name__)
            if calls.get(id(op), 0) != 1:
                return f"its channels reach {name}, a shared layer"
            kind = None
            if isinstance(op, _CONV + (keras.layers.Dense,)):
                if not _channels_last(op) or getattr(op, "groups", 1) != 1:
                    return f"its channels reach {name} (channels_first or grouped)"
                followers.append((op, "input", index))
                continue
            if isinstance(op, keras.layers.Add):
                if id(op) in visited:
                    continue
                if not np.array_equal(index(np.arange(size)), np.arange(size)):
                    return f"its channels reach {name} (Add) reordered (through Flatten or a depthwise multiplier)"
                visited.add(id(op))
                joins.append(op)
                node = next(n for n in op._inbound_nodes if n.operation is op)
                for t in node.input_tensors:
                    found, why = _operand_producers(t, calls, set(visited))
                    if why:
                        return f"its channels are summed at {name} (Add) with channels from {why}"
                    for q in found:
                        if q in producers:
                            continue
                        problem = _producer_problem(q, calls, outputs)
                        if problem:
                            return f"its channels are summed at {name} (Add) with those of {q.name}: {problem}"
                        if _size(q) != size:
                            return f"its channels are summed at {name} (Add) with {q.name}'s {_size(q)} channels"
                        producers.append(q)
                        group.append(q)
                nxt, kind = index, "through"
            elif isinstance(op, _DEPTHWISE):
                if not _channels_last(op):
                    return f"its channels reach {name} (channels_first)"
                m = int(op.depth_multiplier)
                followers.append((op, "depthwise", index))
                nxt = _expand(index, m)
                kind = "through"
            elif isinstance(op, keras.layers.BatchNormalization):
                axis = op.axis if isinstance(op.axis, int) else (op.axis[0] if len(op.axis) == 1 else None)
                if axis not in (-1, len(op.input.shape) - 1):
                    return f"its channels reach {name}, a BatchNormalization over axis {op.axis}, not the channels"
                followers.append((op, "vector", index))
                nxt, kind = index, "through"
            elif isinstance(op, keras.layers.Flatten):
                shape = op.input.shape
                if not _channels_last(op):
                    return f"its channels reach {name} (channels_first)"
                positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
                nxt, kind = _flatten(index, positions, int(shape[-1])), "through"
            elif isinstance(op, _POOL + _SPATIAL):
                if not _channels_last(op):
                    return f"its channels reach {name} (channels_first)"
                nxt, kind = index, "through"
            elif isinstance(op, _ELEMENTWISE):
                nxt, kind = index, "through"
            if kind is None:
                return f"its channels reach {name} ({type(op).__name__}), which mixes or joins channels"
            if id(op) in outputs:
                return f"its channels reach the model output {name}"
            kids = children.get(id(op), [])
            if not kids:
                return f"its channels reach {name}, whose output is not read"
            todo += [(child, nxt) for child in kids]
    return followers, group, joins


def _identity(size: int):
    return lambda keep: np.asarray(keep, dtype="int64")


def _expand(index, m: int):
    """Depthwise multiplier ``m``: channel ``c`` becomes outputs ``c*m .. c*m+m-1``."""
    return lambda keep: (index(keep)[:, None] * m + np.arange(m)[None, :]).reshape(-1)


def _flatten(index, positions: int, channels: int):
    """Channels last flattened: position ``p``, channel ``c`` -> ``p * channels + c``."""
    return lambda keep: (np.arange(positions)[:, None] * channels + index(keep)[None, :]).reshape(-1)
