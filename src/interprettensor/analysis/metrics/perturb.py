"""What a perturbed feature becomes (Quantus' ``perturb_baseline``) and replacing features by it,
batched: every function takes a batch ``(n, ...)`` and works on all samples at once.

Baselines by name, per sample as Quantus computes them: ``'black'`` the sample's minimum, ``'white'``
its maximum, ``'mean'`` its mean, ``'uniform'`` noise drawn uniformly from ``[uniform_low,
uniform_high)`` (0 and 1 by default, Quantus' ``perturb_func_kwargs``) per feature; a number is that
constant; an array shaped like one sample (or like the batch) is used as given.

:func:`baseline` is the one place every metric gets these values from, so ``'uniform'`` means the same
everywhere: one draw per replaced feature, from the metric's seeded generator. (Quantus' per-sample
replacement draws per feature as well; its batched replacement, ``batched=True``, draws one value per
sample for all the features of a step, which makes a "uniform" patch a flat colour.) ``'neighbourhood_mean'`` and
``'neighbourhood_random_min_max'`` are the patch's own mean or uniform noise between the patch's min
and max (:func:`patch_baseline`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...engine.errors import ExplainError

__all__ = ["BASELINES", "baseline", "patch_baseline", "replace"]

#: the baseline names accepted
BASELINES = ("black", "white", "mean", "uniform", "neighbourhood_mean", "neighbourhood_random_min_max")


def baseline(value: Any, x: np.ndarray, rng: np.random.Generator | None = None, uniform_low: float = 0.0,
             uniform_high: float = 1.0) -> np.ndarray:
    """What each feature of the batch ``x`` becomes: an array shaped like ``x`` (float64).

    ``rng`` draws the ``'uniform'`` values (one per feature of ``x``, in C order); the metrics pass
    their seeded generator, None draws unseeded."""
    x = np.asarray(x)
    axes = tuple(range(1, x.ndim))
    if isinstance(value, str):
        name = value.lower()
        if name == "black":
            return np.broadcast_to(x.min(axis=axes, keepdims=True), x.shape).astype(np.float64)
        if name == "white":
            return np.broadcast_to(x.max(axis=axes, keepdims=True), x.shape).astype(np.float64)
        if name == "mean":
            return np.broadcast_to(x.mean(axis=axes, keepdims=True, dtype=np.float64), x.shape)
        if name == "uniform":
            rng = np.random.default_rng() if rng is None else rng
            return rng.uniform(float(uniform_low), float(uniform_high), x.shape)
        if name == "random":
            raise ExplainError("perturb_baseline 'random' was removed in Quantus; use 'uniform' (with "
                               "uniform_low / uniform_high)")
        if name in ("neighbourhood_mean", "neighbourhood_random_min_max"):
            raise ExplainError(f"perturb_baseline {value!r} needs a patch: only the patch metrics "
                               f"(RegionPerturbation, Selectivity, IROF, ...) take it")
        raise ExplainError(f"perturb_baseline must be one of {BASELINES}, a number or an array, got {value!r}")
    if isinstance(value, (bool, np.bool_)):
        raise ExplainError(f"perturb_baseline must be one of {BASELINES}, a number or an array, got {value!r}")
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        return np.full(x.shape, float(arr))
    if arr.shape == x.shape:
        return arr
    if arr.shape == x.shape[1:]:
        return np.broadcast_to(arr, x.shape)
    raise ExplainError(f"perturb_baseline has shape {arr.shape}; expected a scalar, one sample's shape "
                       f"{x.shape[1:]} or the batch's {x.shape}")


def patch_baseline(value: str, patches: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """The neighbourhood baselines of ``patches`` ``(n, ..patch..)``: each patch's mean
    (``'neighbourhood_mean'``) or uniform noise between its min and max (one draw per patch,
    ``'neighbourhood_random_min_max'``), shaped like ``patches``."""
    patches = np.asarray(patches, np.float64)
    axes = tuple(range(1, patches.ndim))
    if value == "neighbourhood_mean":
        return np.broadcast_to(patches.mean(axis=axes, keepdims=True), patches.shape)
    if value == "neighbourhood_random_min_max":
        rng = np.random.default_rng() if rng is None else rng
        lo, hi = patches.min(axis=axes, keepdims=True), patches.max(axis=axes, keepdims=True)
        return np.broadcast_to(rng.uniform(lo, hi), patches.shape)
    raise ExplainError(f"not a neighbourhood baseline: {value!r}")


def replace(x: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``x`` with the features where ``mask`` is true replaced by ``values`` (broadcast; the mask may
    lack the channel axis's size, ``(n, *spatial, 1)``)."""
    return np.where(np.asarray(mask, bool), values, x).astype(np.asarray(x).dtype, copy=False)
