"""Explanations for the metrics: :func:`explain` has Quantus' ``explain_func`` signature and runs any
method of :func:`interprettensor.attribution.attribute` (every LRP rule and preset, the gradient
baselines); :func:`as_explain_func` also accepts an :class:`interprettensor.Explainer` or a method name
where a metric takes ``explain_func``."""

from __future__ import annotations

import weakref
from collections import OrderedDict
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
    explainer = _lrp_explainer(model, method, kwargs)
    a = explainer(x, target=target) if explainer is not None else attribute(model, x, method, target=target, **kwargs)
    if isinstance(a, list):
        if len(a) != 1:
            raise ExplainError("the metrics evaluate single-input models")
        a = a[0]
    return np.asarray(a, np.float64)


#: the compiled LRP explainers of the models explained last: a metric explains the same model many
#: times (perturbed inputs, randomised weights), and an Explainer traces once per input signature
_RECENT: "OrderedDict[tuple, tuple[weakref.ref, Any]]" = OrderedDict()
_RECENT_SIZE = 8


def _lrp_explainer(model: keras.Model, method: Any, params: dict) -> Any:
    """A reusable :class:`interprettensor.Explainer` for an LRP rule or preset given by name with
    hashable parameters (None for the gradient baselines, which keep their own, and for anything
    else: :func:`interprettensor.attribution.attribute` then runs it once)."""
    from ...attribution.methods import _ALIASES, METHODS
    from ...engine.explainer import Explainer

    if not isinstance(method, str):
        return None
    name = method.lower().replace("-", "_")
    if _ALIASES.get(name, name) in METHODS:
        return None
    try:
        key = (id(model), method, tuple(sorted(params.items())))
        hash(key)
    except TypeError:
        return None
    hit = _RECENT.get(key)
    if hit is not None and hit[0]() is model:
        _RECENT.move_to_end(key)
        return hit[1]
    explainer = Explainer(model, method, **params)
    _RECENT[key] = (weakref.ref(model), explainer)
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return explainer


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
                                   "(give an Explainer of the metric's model, or use it.metrics.explain)")
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
