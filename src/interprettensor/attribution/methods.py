"""Any attribution method by name: the gradient baselines, Deep Taylor, and every LRP rule or preset."""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

from ..engine.explainer import lrp
from .deep_taylor import bounded_deep_taylor, deep_taylor
from .gradients import (ArrayLike, deconvnet, gradient, guided_backprop, input_x_gradient, integrated_gradients,
                        smoothgrad)

__all__ = ["attribute", "METHODS"]


_BASELINES: dict[str, Callable[..., Any]] = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "deep_taylor": deep_taylor,
    "bounded_deep_taylor": bounded_deep_taylor,
}

_ALIASES = {
    "saliency": "gradient",
    "input_times_gradient": "input_x_gradient",
    "inputxgradient": "input_x_gradient",
    "gradient_x_input": "input_x_gradient",
    "smooth_grad": "smoothgrad",
    "ig": "integrated_gradients",
    "integratedgradients": "integrated_gradients",
    "guidedbackprop": "guided_backprop",
    "guided_backpropagation": "guided_backprop",
    "deeptaylor": "deep_taylor",
    "boundeddeeptaylor": "bounded_deep_taylor",
}

#: names of the baselines accepted by :func:`attribute` (besides every LRP rule and preset name)
METHODS: tuple[str, ...] = tuple(_BASELINES)


def attribute(model: keras.Model, x: ArrayLike, method: str, target: ArrayLike | None = None,
              **kw: Any) -> np.ndarray | list[np.ndarray]:
    """Run an attribution method by name: a baseline of :data:`METHODS` (or an alias such as
    ``'saliency'``, ``'ig'``), or any LRP rule or preset name (``'epsilon'``, ``'alpha2beta1'``,
    ``'preset_a'``, ...; also a Rule or Composite object), which goes to :func:`interprettensor.lrp`.
    Keyword arguments go to the method.

    Example::

        for m in ["gradient", "integrated_gradients", "epsilon", "preset_a"]:
            R = it.attribution.attribute(model, x, m, target=3)
    """
    if isinstance(method, str):
        key = method.lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key in _BASELINES:
            return _BASELINES[key](model, x, target, **kw)
    return lrp(model, x, rule=method, target=target, **kw)
