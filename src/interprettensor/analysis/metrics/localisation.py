"""Localisation metrics: does the explanation point at the object that decides the class? Each
compares the attributions ``a`` with a ground-truth mask ``s`` (``s_batch``: boolean, shaped like
``x`` without its channel axis, or with a channel axis of 1, or like ``x``), as Quantus 0.6 does, on
the whole batch at once (numpy over ``(n, features)``).

A mask with one channel is broadcast over the attributions' channels when the attributions have
several (Quantus requires both to have the same shape). Samples whose mask is empty score NaN, as in
Quantus. :class:`Focus` scores mosaics (Arias-Duart et al. 2022): the mosaic positions of the
target class come as Quantus' ``custom_batch`` or as a mask in ``s_batch``; :func:`make_mosaics`
builds 2 x 2 mosaics from a labelled data set.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import numpy as np
from scipy.stats import rankdata

from ...engine.errors import ExplainError
from .base import Metric

__all__ = ["PointingGame", "AttributionLocalisation", "TopKIntersection", "RelevanceRankAccuracy",
           "RelevanceMassAccuracy", "AUC", "Focus", "make_mosaics", "quadrant_masks"]


def _flat(a: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``s`` as ``(n, features)``; a one-channel mask is broadcast over ``a``'s channels."""
    n = a.shape[0]
    s = np.asarray(s, bool)
    if s.shape != a.shape:
        if s.ndim == a.ndim and s.shape[-1] == 1 and s.shape[:-1] == a.shape[:-1]:
            s = np.broadcast_to(s, a.shape)
        elif a.ndim == s.ndim and a.shape[-1] == 1 and a.shape[:-1] == s.shape[:-1]:
            a = np.broadcast_to(a, s.shape)
        else:
            raise ExplainError(f"s_batch of shape {s.shape} does not fit attributions of shape {a.shape}")
    return np.asarray(a, np.float64).reshape(n, -1), s.reshape(n, -1)


class _Localisation(Metric):
    """Shared by the localisation metrics: the mask is required and must not be all empty."""

    category = "Localisation"
    needs_segmentation = True
    needs_model = False
    default_softmax = False
    nan_reason = "their masks are empty, as in Quantus"

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        if not np.any(s_batch):
            raise ExplainError(f"{type(self).__name__}: s_batch holds no true element (every mask is empty)")

    @staticmethod
    def _empty_to_nan(scores: np.ndarray, s: np.ndarray) -> list:
        scores = np.asarray(scores, np.float64).copy()
        scores[s.sum(-1) == 0] = np.nan
        return list(scores)


class PointingGame(_Localisation):
    """Pointing game (Zhang et al. 2018, IJCV 126: "Top-down neural attention by excitation
    backprop"): 1 when a feature of largest attribution lies inside the mask, else 0.

    Args:
        weighted: score a hit ``1 - |s| / |x|`` (the fraction of the input outside the mask) instead
            of 1, rewarding hits on small objects.

    Differences from Quantus 0.6: the scores are floats (Quantus returns booleans, so its weighted
    scores collapse to True/False and an empty mask's NaN becomes True); an empty mask scores NaN.
    """

    def __init__(self, weighted: bool = False, abs: bool = False, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.weighted = bool(weighted)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a, s = _flat(a_batch, s_batch)
        hit = np.any(s & (a == a.max(-1, keepdims=True)), axis=-1).astype(np.float64)
        if self.weighted:
            hit = np.where(hit > 0, 1.0 - s.sum(-1) / s.shape[-1], 0.0)
        return self._empty_to_nan(hit, s)


class AttributionLocalisation(_Localisation):
    """Attribution localisation (Kohlbrenner et al. 2020, "Towards best practice in explaining neural
    network decisions with LRP", IJCNN): the share of the (positive) attribution inside the mask,
    ``sum(a * s) / (sum(a) + 1e-9)``.

    Args:
        weighted: multiply by the mask's share of the input, ``|s| / |x|``.
        max_size: warn when a mask covers more than this share of the input.
        positive_attributions: clip negative attributions to zero first.

    A share above 1 (negative attributions outside the mask) and an empty mask score NaN, as in
    Quantus. Difference from Quantus 0.6: the mask's share is taken of one sample (Quantus divides by
    ``x_batch[2:].size``, which counts the batch from its third sample on; 0 for batches of two).
    """

    def __init__(self, weighted: bool = False, max_size: float = 1.0, positive_attributions: bool = False,
                 abs: bool = True, normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.weighted = bool(weighted)
        self.max_size = float(max_size)
        self.positive_attributions = bool(positive_attributions)

    nan_reason = "their masks are empty or the share exceeds 1 (negative attributions outside), as in Quantus"

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a, s = _flat(a_batch, s_batch)
        if self.positive_attributions:
            a = np.clip(a, 0, None)
        ratio = s.sum(-1) / s.shape[-1]
        if np.any(ratio > self.max_size):
            warnings.warn(f"AttributionLocalisation: masks cover up to {ratio.max():.3f} of the input, more than "
                          f"max_size={self.max_size}", stacklevel=2)
        inside = (a * s).sum(-1)
        share = inside / (a.sum(-1) + 1e-9)
        share[share > 1] = np.nan
        if self.weighted:
            share = share * ratio
        return self._empty_to_nan(share, s)


class TopKIntersection(_Localisation):
    """Top-k intersection (Theiner et al. 2021, "Interpretable semantic photo geolocalization"): the
    share of the ``k`` features of largest attribution that lie inside the mask.

    Args:
        k: how many features (must be below the number of positions of one sample).
        concept_influence: divide by the mask's share of the input (``* |x| / |s|``).
    """

    def __init__(self, k: int = 1000, concept_influence: bool = False, abs: bool = False, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if int(k) < 1:
            raise ExplainError(f"TopKIntersection: k must be >= 1, got {k}")
        self.k = int(k)
        self.concept_influence = bool(concept_influence)

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        super().custom_preprocess(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch)
        size = int(np.prod(x_batch.shape[1:] if x_batch.ndim == 2 else x_batch.shape[1:-1]))
        if self.k >= size:
            raise ExplainError(f"TopKIntersection: k ({self.k}) must be smaller than the input size ({size} "
                               f"positions)")

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a, s = _flat(a_batch, s_batch)
        top = np.argsort(-a, axis=-1)[:, :self.k]
        tki = np.take_along_axis(s, top, -1).mean(-1)
        if self.concept_influence:
            with np.errstate(divide="ignore", invalid="ignore"):
                tki = tki * s.shape[-1] / s.sum(-1)
        return self._empty_to_nan(tki, s)


class RelevanceRankAccuracy(_Localisation):
    """Relevance rank accuracy (Arras et al. 2022, "CLEVR-XAI: a benchmark dataset for the ground
    truth evaluation of neural network explanations", Inf. Fusion 81): with ``K = |s|``, the share of
    the ``K`` features of largest attribution that lie inside the mask."""

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a, s = _flat(a_batch, s_batch)
        k = s.sum(-1)
        ranked = np.take_along_axis(s, np.argsort(-a, axis=-1), -1)
        within = ranked & (np.arange(s.shape[-1])[None] < k[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._empty_to_nan(within.sum(-1) / k, s)


class RelevanceMassAccuracy(_Localisation):
    """Relevance mass accuracy (Arras et al. 2022, CLEVR-XAI): the share of the attribution inside the
    mask, ``sum(a * s) / sum(a)`` (no stabiliser, as in the paper and Quantus)."""

    nan_reason = "their masks are empty or their attributions sum to zero, as in Quantus"

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a, s = _flat(a_batch, s_batch)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._empty_to_nan((a * s).sum(-1) / a.sum(-1), s)


class AUC(_Localisation):
    """Area under the ROC curve of the attributions as a classifier of the mask (Fawcett 2006, "An
    introduction to ROC analysis", Pattern Recognit. Lett. 27(8)): computed as the Mann-Whitney
    statistic, ``(sum of the ranks inside the mask - P(P+1)/2) / (P N)`` with tied attributions
    sharing their average rank, which equals the trapezoidal area under the ROC curve (Quantus uses
    scikit-learn's ``roc_curve`` + ``auc`` per sample). An empty or full mask scores NaN."""

    nan_reason = "their masks are empty or cover every feature, as in Quantus"

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a, s = _flat(a_batch, s_batch)
        ranks = rankdata(a, method="average", axis=-1)
        p = s.sum(-1).astype(np.float64)
        neg = s.shape[-1] - p
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = ((ranks * s).sum(-1) - p * (p + 1) / 2) / (p * neg)
        auc[neg == 0] = np.nan
        return self._empty_to_nan(auc, s)


class Focus(Metric):
    """Focus (Arias-Duart et al. 2022, "Focus! Rating XAI methods and finding biases", FUZZ-IEEE): on a
    mosaic of images of which some show the target class, the share of the positive attribution
    that falls on those, ``sum(max(a, 0) * m) / (sum(max(a, 0)) + 1e-9)``.

    Args:
        mosaic_shape: accepted as Quantus does (unused there too: the mosaic is 2 x 2).

    Call it as Quantus does with ``custom_batch`` (``(n, 4)``: 1 where the quadrant top-left,
    top-right, bottom-left, bottom-right shows the target class), or give the mask ``m`` as
    ``s_batch`` (any layout of mosaic). :func:`make_mosaics` builds the mosaics. Differences from
    Quantus: the ``s_batch`` alternative; the quadrant split is the same (the first ``H // 2`` rows,
    ``W // 2`` columns).
    """

    category = "Localisation"
    needs_model = False
    default_softmax = False

    def __init__(self, mosaic_shape: Any = None, abs: bool = False, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.mosaic_shape = mosaic_shape

    def __call__(self, model, x_batch, y_batch, a_batch=None, s_batch=None, channel_first=None, explain_func=None,
                 explain_func_kwargs=None, model_predict_kwargs=None, softmax=None, device=None, batch_size=64,
                 custom_batch=None, **kwargs) -> list:
        """As :meth:`Metric.__call__`; ``custom_batch`` the mosaic positions of the target class."""
        if (custom_batch is None) == (s_batch is None):
            raise ExplainError("Focus needs the positions of the target class in the mosaics: custom_batch (n, 4) "
                               "or s_batch (a mask), exactly one of them")
        if custom_batch is not None:
            s_batch = quadrant_masks(custom_batch, np.asarray(x_batch), channel_first)
        if explain_func is None and a_batch is None:
            raise ExplainError("Focus needs a_batch or explain_func")
        return super().__call__(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch,
                                channel_first=channel_first, explain_func=explain_func,
                                explain_func_kwargs=explain_func_kwargs, model_predict_kwargs=model_predict_kwargs,
                                softmax=softmax, device=device, batch_size=batch_size, **kwargs)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a, m = _flat(a_batch, s_batch)
        a = np.clip(a, 0, None)
        return list((a * m).sum(-1) / (a.sum(-1) + 1e-9))


def quadrant_masks(positions: Any, x: np.ndarray, channel_first: bool | None = None) -> np.ndarray:
    """The masks ``(n, H, W)`` of the 2 x 2 mosaics' quadrants flagged in ``positions`` ``(n, 4)``
    (top-left, top-right, bottom-left, bottom-right) for images ``x`` (``(n, H, W, C)``, or
    channels-first with ``channel_first``)."""
    from .base import infer_channel_first

    p = np.asarray(positions)
    if x.ndim != 4:
        raise ExplainError(f"Focus scores image mosaics (n, H, W, C); got x_batch of shape {x.shape}")
    if p.shape != (x.shape[0], 4):
        raise ExplainError(f"Focus: custom_batch must hold 4 quadrant flags per sample, shape ({x.shape[0]}, 4); "
                           f"got {p.shape}")
    cf = infer_channel_first(x) if channel_first is None else bool(channel_first)
    h, w = (x.shape[2], x.shape[3]) if cf else (x.shape[1], x.shape[2])
    top = np.arange(h)[:, None] < h // 2
    left = np.arange(w)[None, :] < w // 2
    quads = np.stack([top & left, top & ~left, ~top & left, ~top & ~left])  # (4, H, W)
    return np.einsum("nq,qhw->nhw", p.astype(np.float64), quads.astype(np.float64)) > 0


def make_mosaics(x: np.ndarray, y: np.ndarray, n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """``n`` 2 x 2 mosaics of images ``x`` ``(N, H, W, C)`` with labels ``y`` (Arias-Duart et al.
    2022): each holds two images of a target class and two of other classes at random quadrants.
    Returns the mosaics ``(n, 2H, 2W, C)``, their target classes ``(n,)`` and the positions
    ``(n, 4)`` (1 where the quadrant shows the target class; Focus' ``custom_batch``)."""
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim != 4 or len(y) != len(x):
        raise ExplainError(f"make_mosaics takes images (N, H, W, C) and N labels; got {x.shape} and {y.shape}")
    classes = np.unique(y)
    usable = [c for c in classes if (y == c).sum() >= 2 and (y != c).sum() >= 2]
    if not usable:
        raise ExplainError("make_mosaics needs a class with two images and two images of other classes")
    rng = np.random.default_rng(seed)
    targets = rng.choice(usable, n)
    pos = np.zeros((n, 4), np.int64)
    idx = np.zeros((n, 4), np.int64)
    for i, c in enumerate(targets):  # drawing the members of each mosaic (indices only)
        same = rng.choice(np.flatnonzero(y == c), 2, replace=False)
        other = rng.choice(np.flatnonzero(y != c), 2, replace=False)
        where = rng.permutation(4)
        idx[i, where[:2]], idx[i, where[2:]] = same, other
        pos[i, where[:2]] = 1
    q = x[idx]  # (n, 4, H, W, C)
    top = np.concatenate([q[:, 0], q[:, 1]], axis=2)
    bottom = np.concatenate([q[:, 2], q[:, 3]], axis=2)
    return np.concatenate([top, bottom], axis=1), targets, pos
