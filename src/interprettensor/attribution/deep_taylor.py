"""Deep Taylor decomposition (Montavon et al. 2017, "Explaining nonlinear classification decisions
with deep Taylor decomposition"), as iNNvestigate applies it: the presets ``'deep_taylor'`` and
``'bounded_deep_taylor'`` of the engine, with the explained score ``relu(f_t)``."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ..engine.composites import Composite, _bounded_deep_taylor_preset, _deep_taylor_preset
from ..engine.explainer import Explainer
from .gradients import ArrayLike, _result

__all__ = ["deep_taylor", "bounded_deep_taylor"]


def _deep_taylor(model: keras.Model, x: ArrayLike, target: ArrayLike | None, rule: Composite,
                 output: int | str | None, batch_size: int | None) -> np.ndarray | list[np.ndarray]:
    explainer = Explainer(model, rule, output=output)
    R, out = explainer(x, target, batch_size=batch_size, return_output=True)
    flat = out.reshape(out.shape[0], -1)
    t = np.argmax(flat, axis=-1) if target is None else np.broadcast_to(np.asarray(target), (flat.shape[0],))
    # Deep Taylor explains relu(f_t): a non-positive score has no relevance (all rules are linear in R)
    keep = (flat[np.arange(flat.shape[0]), t] > 0)
    Rs = R if isinstance(R, list) else [R]
    Rs = [r * keep.reshape((-1,) + (1,) * (r.ndim - 1)).astype(r.dtype) for r in Rs]
    return _result(Rs)


def deep_taylor(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None, *,
                output: int | str | None = None, batch_size: int | None = None) -> np.ndarray | list[np.ndarray]:
    """Deep Taylor decomposition for ReLU networks with unbounded inputs (Montavon et al. 2017,
    "Explaining nonlinear classification decisions with deep Taylor decomposition"), as
    iNNvestigate's ``DeepTaylor``: the z+ rule on every layer with weights, relevance through
    pooling, sums and upsampling by their transposed Jacobian (:class:`GradientMap`), max pooling
    winner-takes-all; the explained score is ``relu(f_t)``. The same rules as the preset
    ``'deep_taylor'`` (``it.lrp(model, x, rule='deep_taylor')``, without the final ReLU)."""
    return _deep_taylor(model, x, target, _deep_taylor_preset(), output, batch_size)


def bounded_deep_taylor(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None,
                        low: Any = None, high: Any = None, *, output: int | str | None = None,
                        batch_size: int | None = None) -> np.ndarray | list[np.ndarray]:
    """Deep Taylor decomposition for inputs in a box ``[low, high]`` (Montavon et al. 2017): as
    :func:`deep_taylor` with the z^B rule on the first layer(s) with weights (iNNvestigate's
    ``BoundedDeepTaylor``; the preset ``'bounded_deep_taylor'``)."""
    params = {k: v for k, v in (("low", low), ("high", high)) if v is not None}
    return _deep_taylor(model, x, target, _bounded_deep_taylor_preset(**params), output, batch_size)
