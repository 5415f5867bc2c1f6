"""Explanations for the metrics: :func:`explain` has Quantus' ``explain_func`` signature and runs any
method of :func:`interprettensor.attribution.attribute` (every LRP rule and preset, the gradient
baselines); :func:`as_explain_func` also accepts an :class:`interprettensor.Explainer` or a method name
where a metric takes ``explain_func``."""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

from ...engine.errors import ExplainError
from ...rule_names import needs_box

__all__ = ["explain", "as_explain_func"]


def explain(model: keras.Model, inputs: Any, targets: Any, method: str = "gradient", **kwargs: Any) -> np.ndarray:
    """Attributions of ``inputs`` for the classes ``targets`` by ``method`` (an LRP rule or preset name
    such as ``'epsilon'`` or ``'epsilon_gamma_box'``, or ``'gradient'``, ``'input_x_gradient'``,
    ``'integrated_gradients'``, ``'smoothgrad'``, ...), shaped like ``inputs``, float64.

    Box rules get ``low``/``high`` from the inputs' range unless given. ``device`` (which Quantus
    passes along) is accepted and must be None or ``'cpu'``-like: Keras places the computation.

    Example::

        metric(model=model, x_batch=x, y_batch=y, explain_func=it.metrics.explain,
               explain_func_kwargs={"method": "epsilon_gamma_box"})
    """
    from ...attribution import attribute

    kwargs.pop("device", None)
    x = np.asarray(inputs)
    if needs_box(method):
        kwargs.setdefault("low", float(x.min()))
        kwargs.setdefault("high", float(x.max()))
    target = None if targets is None else np.asarray(targets).astype(np.int64)
    a = attribute(model, x, method, target=target, **kwargs)
    if isinstance(a, list):
        if len(a) != 1:
            raise ExplainError("the metrics evaluate single-input models")
        a = a[0]
    return np.asarray(a, np.float64)


def as_explain_func(obj: Any) -> Callable[..., np.ndarray] | None:
    """``explain_func`` from a callable with Quantus' signature, an :class:`interprettensor.Explainer`
    (called on ``inputs`` with ``target=targets``) or a method name for :func:`explain`."""
    if obj is None:
        return None
    from ...engine.explainer import Explainer

    if isinstance(obj, Explainer):
        def run(model: Any = None, inputs: Any = None, targets: Any = None, **kw: Any) -> np.ndarray:
            kw.pop("device", None)
            if kw:
                raise ExplainError(f"an Explainer as explain_func takes no explain_func_kwargs, got {sorted(kw)}")
            if model is not None and model is not obj.model:
                raise ExplainError("the Explainer given as explain_func explains another model than the metric's "
                                   "(randomisation metrics need a function of the model: use it.metrics.explain)")
            return np.asarray(obj(inputs, target=None if targets is None else np.asarray(targets)), np.float64)

        return run
    if isinstance(obj, str):
        def by_name(model: Any = None, inputs: Any = None, targets: Any = None, **kw: Any) -> np.ndarray:
            return explain(model, inputs, targets, method=obj, **kw)

        return by_name
    if callable(obj):
        return obj
    raise ExplainError(f"explain_func must be a function, an interprettensor.Explainer or a method name, got "
                       f"{type(obj).__name__}")
