"""How the original modules take part in LRP: the same handlers as Keras' layers (one engine);
``Linear`` and ``Convolution`` merge their own batch norm into their weights."""

from __future__ import annotations

from typing import Any

from keras import ops

from ..engine.backend import Tensor
from ..engine.handlers import (ElementwiseHandler, FixedLinearHandler, LinearHandler, MaxPoolHandler, RouteHandler,
                               merge_batchnorm, register_handler)
from ..engine.linear import LinearMap
from . import modules as m


class ModuleHandler(LinearHandler):
    """``Linear``/``Convolution``: ``act(bn(f(x; W, b)))``; the batch norm (training-time only in the
    original) is merged into the weights for LRP."""

    def linear_map(self, layer: Any, step: Any, dtype: Any) -> LinearMap:
        lm = super().linear_map(layer, step, dtype)
        if layer.bn is not None:
            return LinearMap(lm.fn, merge_batchnorm(dict(lm.params), layer.bn, -1, dtype))
        return lm

    def can_absorb_batchnorm(self, layer: Any) -> bool:
        return layer.bn is None and getattr(layer, "act", None) in (None, "linear")


def _module_params(layer: Any) -> dict:
    return {"kernel": layer.kernel, "bias": layer.bias}


def _module_fn(layer: Any, xs: Any, p: dict) -> Tensor:
    return layer.linear(xs[0], p["kernel"], p.get("bias"))


def _avg_pool(layer: Any, xs: Any, p: dict) -> Tensor:
    return p["kernel"] * ops.cast(layer(xs[0]), xs[0].dtype)


_activation = ElementwiseHandler(zero_preserving=True)
for _type, _handler in [
    (m.Linear, ModuleHandler(_module_params, _module_fn, activation=lambda l: l.act_fn, kind="dense")),
    (m.Convolution, ModuleHandler(_module_params, _module_fn, activation=lambda l: l.act_fn, kind="conv")),
    (m.AvgPool, FixedLinearHandler(_avg_pool)),
    (m.MaxPool, MaxPoolHandler(lambda l, x: ops.average_pool(x, l.pool_size, l.pool_stride, l.pad.lower(),
                                                             data_format="channels_last"),
                               lambda l: (l.pool_size, l.pool_stride, l.pad))),
    (m.Flatten, RouteHandler()),
    (m.Softmax, ElementwiseHandler(nonneg=True)),
    (m.Relu, ElementwiseHandler(nonneg=True, zero_preserving=True)),
    (m.Tanh, _activation),
    (m.Sigmoid, ElementwiseHandler(nonneg=True)),
    (m.Elu, _activation),
]:
    register_handler(_type, _handler)
