"""Which handler serves which layer: registration by layer type (exact types, and subclasses that do
not override ``call``) and, for keras operations called on symbolic tensors (``x + y``,
``keras.ops.reshape``), by operation name."""

from __future__ import annotations

import inspect
from typing import Any

import keras

from .base import Handler

__all__ = ["register_handler", "register_op_handler", "get_handler", "handler_for", "overridden_parent"]

_REGISTRY: list[tuple[type, Handler]] = []
_OPS_BY_NAME: dict[str, Handler] = {}


def register_handler(layer_type: type, handler: Handler) -> None:
    """Tell the engine how ``layer_type`` takes part in LRP. The handler also serves subclasses of
    ``layer_type`` that do not override ``call`` (a subclass that computes something else needs its own
    handler). Later registrations win over earlier ones for the same type.

    Example::

        from interprettensor.engine.handlers import LinearHandler

        it.register_handler(MyScale, LinearHandler(
            params=lambda layer: {"kernel": layer.w},
            fn=lambda layer, xs, p: xs[0] * p["kernel"],
            activation=lambda layer: None))
    """
    if not isinstance(layer_type, type):
        raise TypeError(f"register_handler takes a layer class, got {layer_type!r}")
    if not isinstance(handler, Handler):
        raise TypeError(f"register_handler takes a Handler, got {type(handler).__name__}")
    _REGISTRY.insert(0, (layer_type, handler))


def register_op_handler(name: str, handler: Handler) -> None:
    """The handler of the keras operation class ``name`` (``'Add'``, ``'Reshape'``, ...) when it is
    called on symbolic tensors inside a functional model."""
    _OPS_BY_NAME[name] = handler


def _inherits_call(cls: type, base: type) -> bool:
    """``cls`` computes what ``base`` computes: it is ``base`` or no class between them defines
    ``call``."""
    return cls is base or getattr(cls, "call", None) is getattr(base, "call", None)


def get_handler(layer: Any) -> Handler | None:
    """The handler registered for ``type(layer)``, or for the nearest base class whose ``call`` the
    layer inherits unchanged; ``None`` if there is none."""
    cls = type(layer)
    best: tuple[int, Handler] | None = None
    for layer_type, handler in _REGISTRY:
        if isinstance(layer, layer_type) and _inherits_call(cls, layer_type):
            depth = cls.__mro__.index(layer_type)
            if best is None or depth < best[0]:
                best = (depth, handler)
    return None if best is None else best[1]


def overridden_parent(layer: Any) -> type | None:
    """The registered class that ``layer`` subclasses while overriding its ``call`` (for errors)."""
    for layer_type, _ in _REGISTRY:
        if isinstance(layer, layer_type) and not _inherits_call(type(layer), layer_type):
            return layer_type
    return None


def handler_for(op: Any) -> Handler | None:
    """The handler of a layer or keras operation, or None if the engine cannot explain it."""
    h = get_handler(op)
    if h is not None:
        return h
    if not isinstance(op, keras.layers.Layer):
        return _OPS_BY_NAME.get(type(op).__name__)
    return None


def register_keras_family(table: list[tuple[type, Handler]]) -> None:
    """Register ``(layer type, handler)`` pairs, and each Keras class of ``keras.layers`` that derives
    from a registered type with that type's handler (Keras' own variants, e.g. Conv1D's causal
    padding, are known to their handlers even where they override ``call``); explicit entries win."""
    for layer_type, handler in table:
        register_handler(layer_type, handler)
    registered = {t for t, _ in _REGISTRY}
    for layer_type, handler in reversed(table):  # later entries of the table are the more specific ones
        for c in vars(keras.layers).values():
            if inspect.isclass(c) and issubclass(c, layer_type) and c not in registered:
                _REGISTRY.append((c, handler))
                registered.add(c)
