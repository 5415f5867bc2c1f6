"""``TimeDistributed``: the wrapped layer applied to every time step. Its handler runs on the steps
folded into the batch axis, ``(B, T, ...) -> (B·T, ...)``, under the rule the composite assigns to
the wrapped layer's kind (a ``TimeDistributed(Dense)`` is a dense layer, a
``TimeDistributed(Conv2D)`` a convolution)."""

from __future__ import annotations

from typing import Any

from keras import ops

from ..backend import Tensor
from ..errors import ExplainError
from ..linear import materialize
from .base import DEFAULT_PASS, Handler
from .registry import get_handler

__all__ = ["TimeDistributedHandler", "TimeDistributedDispatch"]


def _fold(x: Tensor) -> Tensor:
    return ops.reshape(x, (-1, *ops.shape(x)[2:]))


def _unfold(y: Tensor, like: Tensor) -> Tensor:
    return ops.reshape(y, (*ops.shape(like)[:2], *ops.shape(y)[1:]))


class TimeDistributedHandler(Handler):
    """The wrapped layer's handler on time steps folded into the batch (see the module docstring)."""

    def __init__(self, inner: Handler):
        self.inner = inner
        self.category = inner.category
        if hasattr(inner, "kind"):
            self.kind = inner.kind

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        if len(xs) != 1:
            raise ExplainError(f"layer {step.name!r} (TimeDistributed) is called with a mask or several inputs; "
                               f"only a single input is supported")
        outs, state = self.inner.forward(layer.layer, [_fold(xs[0])], step, options)
        return [_unfold(materialize(o), xs[0]) for o in outs], {"inner": state, "outs": outs}

    def output_nonneg(self, layer, inputs_nonneg, step):
        return self.inner.output_nonneg(layer.layer, inputs_nonneg, step)

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        folded = [_fold(materialize(R)) for R in Rs]
        R_in = self.inner.relevance(layer.layer, [_fold(xs[0])], state["outs"], state["inner"], folded, rule, step,
                                    options)
        return [_unfold(materialize(R_in[0]), xs[0])]


class TimeDistributedDispatch(Handler):
    """Registered for ``TimeDistributed``: the graph asks it for the handler of each such layer
    (:meth:`for_layer`), built around the wrapped layer's own handler."""

    def for_layer(self, layer: Any, n_inputs: int = 1) -> Handler | None:
        inner = get_handler(layer.layer)
        return None if inner is None else TimeDistributedHandler(inner)
