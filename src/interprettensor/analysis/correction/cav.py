"""Concept activation vectors (CAVs) of an artefact at a hidden layer.

A CAV is a unit direction in a layer's activation space that separates samples with the artefact from
samples without (Kim et al. 2018, TCAV). Its estimators (``method``):

* ``'signal'`` (default): the pattern ``cov(h, t) = 1/n sum_i (h_i - mean h)(t_i - mean t)`` with
  ``t = 1`` for artefact samples, ``0`` for clean ones (Haufe et al. 2014; Pahde et al. 2022,
  "Navigating neural space: revisiting concept activation vectors", the CAV Reveal-to-Revise uses): it
  points where the artefact moves the activations, not where a classifier's filter points, which is
  what a projection needs;
* ``'mean_difference'``: ``mean(h | artefact) - mean(h | clean)``; for one binary concept this is the
  pattern's direction (``cov(h, t) = p (1 - p) (mean_a - mean_c)`` with ``p`` the artefact share), so
  the two give the same unit CAV;
* ``'svm'`` (:class:`sklearn.svm.LinearSVC`), ``'logistic'`` (:class:`sklearn.linear_model.LogisticRegression`),
  ``'ridge'`` (:class:`sklearn.linear_model.Ridge` on ``t``), ``'lasso'`` (:class:`sklearn.linear_model.Lasso`):
  the normal of a linear model's decision function (a filter).

Each is made unit length and oriented from the clean towards the artefact samples (``v . (mean_a -
mean_c) > 0``).

Features (``pooling``) for a layer whose output has positions (``(N, H, W, C)``, ``(N, T, C)``):
``'flatten'`` (default) keeps every position's channels: a direction over ``H * W * C`` features,
projected out of the whole sample at once, so it captures where the artefact sits as well as what it
looks like (at the cost of a ``(H W C)^2`` projection; at most :data:`MAX_FLAT` features). This is
Reveal-to-Revise's "full feature" ClArC, the one its paper evaluates (signal CAV on flattened
activations, ``x' = x - (v.x - v.z) v`` with ``z`` the clean mean of the whole feature map).
``'mean'`` and ``'max'`` pool each channel over the positions, giving a direction over the channels
that the projection applies at every position, ``h_p' = h_p - (v.h_p - v.z) v`` with ``z`` the clean
mean over samples and positions (Reveal-to-Revise's older channel variant instead measures the length
on max-pooled channels and shifts every position by the same amount; a per-position projection keeps
the layer affine and position-wise): cheap, and right when the artefact has channels of its own, but
where the artefact's channels also carry the class's evidence (a watermark drawn with the same strokes
as the digits) projecting them out everywhere removes that evidence too: on the planted-shortcut
digits (``benchmarks/bench_correction.py``) channel CAVs at the second convolution left the poisoned
accuracy below 3 %, flattened ones raised it above the clean accuracy. Dense layers' outputs
``(N, C)`` are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .projection import CorrectionError, _layer

__all__ = ["CAV", "cav", "cav_from_cluster", "cav_from_channels", "activations", "METHODS", "POOLINGS"]

METHODS = ("signal", "mean_difference", "svm", "logistic", "ridge", "lasso")
POOLINGS = ("flatten", "mean", "max")
#: the largest number of features a flattened CAV may have (its projection is a dense square matrix)
MAX_FLAT = 16384


@dataclass
class CAV:
    """A unit concept activation vector and what it was computed from.

    ``vector``: the unit direction, shaped ``(C,)`` (channel CAV) or the layer's output shape without
    the batch axis (flattened CAV); ``layer``, ``method``, ``pooling``; ``clean_mean`` and
    ``artifact_mean``: the mean activation of each group in the space of ``vector`` (per position for a
    channel CAV: the mean over samples and positions), so ``clean_mean . vector`` is P-ClArC's reference.
    """

    vector: np.ndarray
    layer: str | None = None
    method: str = "signal"
    pooling: str = "mean"
    clean_mean: np.ndarray | None = None
    artifact_mean: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def clean_value(self) -> float:
        """``clean_mean . v``: where P-ClArC puts every sample along ``v``."""
        return 0.0 if self.clean_mean is None else float(np.sum(self.clean_mean * self.vector))

    @property
    def artifact_value(self) -> float:
        """``artifact_mean . v``: where A-ClArC moves augmented samples along ``v``."""
        return 0.0 if self.artifact_mean is None else float(np.sum(self.artifact_mean * self.vector))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.vector, dtype=dtype)


def activations(model: Any, layer: str, x: Any, batch_size: int = 64) -> np.ndarray:
    """The output of ``model``'s top-level layer ``layer`` for ``x`` (numpy, batched)."""
    import keras

    lay = _layer(model, layer)
    sub = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, lay.output)
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise CorrectionError(f"expected a batch of inputs for layer {layer!r}; got shape {x.shape}")
    return np.concatenate([np.asarray(sub(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def _features(h: np.ndarray, pooling: str) -> np.ndarray:
    if h.ndim == 2 or pooling == "flatten":
        return h.reshape(len(h), -1)
    axes = tuple(range(1, h.ndim - 1))
    return h.mean(axis=axes) if pooling == "mean" else h.max(axis=axes)


def _group_mean(h: np.ndarray, pooling: str) -> np.ndarray:
    """The mean in the space the projection acts on: per position over channels, or whole samples."""
    if pooling == "flatten" or h.ndim == 2:
        return h.mean(axis=0).astype("float64")
    return h.reshape(-1, h.shape[-1]).mean(axis=0).astype("float64")


def direction(features_a: np.ndarray, features_c: np.ndarray, method: str = "signal", *, C: float = 1.0,
              alpha: float | None = None, seed: int = 0) -> np.ndarray:
    """The unit CAV separating two feature matrices ``(n_a, d)`` and ``(n_c, d)`` by ``method``."""
    if method not in METHODS:
        raise CorrectionError(f"unknown CAV method {method!r}; choose one of {', '.join(METHODS)}")
    a, c = np.asarray(features_a, "float64"), np.asarray(features_c, "float64")
    if len(a) < 1 or len(c) < 1:
        raise CorrectionError(f"a CAV needs samples with and without the artefact; got {len(a)} and {len(c)}")
    X = np.concatenate([a, c])
    t = np.concatenate([np.ones(len(a)), np.zeros(len(c))])
    if method == "signal":
        w = (X - X.mean(0)).T @ (t - t.mean()) / len(X)
    elif method == "mean_difference":
        w = a.mean(0) - c.mean(0)
    else:
        from sklearn import linear_model, svm

        scale = X.std(0)
        scale[scale == 0] = 1.0                       # fit on standardised features, map the normal back
        Xs = (X - X.mean(0)) / scale
        if method == "svm":
            est = svm.LinearSVC(C=C, random_state=seed, max_iter=20000)
        elif method == "logistic":
            est = linear_model.LogisticRegression(C=C, max_iter=5000)
        elif method == "ridge":
            est = linear_model.Ridge(alpha=1.0 if alpha is None else alpha)
        else:
            est = linear_model.Lasso(alpha=0.01 if alpha is None else alpha, max_iter=20000)
        est.fit(Xs, t)
        w = np.ravel(est.coef_) / scale
    n = np.linalg.norm(w)
    if not np.isfinite(n) or n == 0:
        raise CorrectionError(f"the {method!r} CAV is zero: the artefact and clean activations are not "
                              "separated at this layer (or the regularisation removed every feature)")
    w = w / n
    if np.dot(w, a.mean(0) - c.mean(0)) < 0:
        w = -w
    return w


def cav(model: Any, *, layer: str, artifact: Any, clean: Any, method: str = "signal", pooling: str = "flatten",
        batch_size: int = 64, **params: Any) -> CAV:
    """The artefact's concept activation vector at ``layer`` of ``model``.

    Args:
        artifact: inputs with the artefact (``(N_a, ...)``).
        clean: inputs without it (``(N_c, ...)``), ideally of the same classes.
        method: ``'signal'``, ``'mean_difference'``, ``'svm'``, ``'logistic'``, ``'ridge'``, ``'lasso'``
            (see the module's docstring); ``params``: ``C`` (svm, logistic), ``alpha`` (ridge, lasso), ``seed``.
        pooling: ``'flatten'`` (over all features of a sample), ``'mean'`` or ``'max'`` (over channels).

    Returns:
        a :class:`CAV` (``np.asarray(cav)`` is the unit vector).

    Example::

        v = it.correction.cav(model, layer="conv_2", artifact=x_marked, clean=x_plain, method="svm")
    """
    if pooling not in POOLINGS:
        raise CorrectionError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    out = _layer(model, layer).output.shape[1:]
    if pooling == "flatten" and len(out) > 1 and int(np.prod(out)) > MAX_FLAT:
        raise CorrectionError(f"layer {layer!r} has {int(np.prod(out))} features per sample (shape {tuple(out)}): "
                              f"more than a flattened CAV's projection allows ({MAX_FLAT}); use pooling='max' or "
                              "'mean' (a channel CAV) or a later layer")
    ha = activations(model, layer, artifact, batch_size)
    hc = activations(model, layer, clean, batch_size)
    vec = direction(_features(ha, pooling), _features(hc, pooling), method, **params)
    pooled = pooling if ha.ndim > 2 else "flatten"
    shape = ha.shape[1:] if pooled == "flatten" else ha.shape[-1:]
    return CAV(vec.reshape(shape), layer, method, pooling, _group_mean(hc, pooled).reshape(shape),
               _group_mean(ha, pooled).reshape(shape))


def cav_from_cluster(model: Any, x: Any, indices: Sequence[int], *, layer: str,
                     clean_indices: Sequence[int] | None = None, **kwargs: Any) -> CAV:
    """A CAV from a SpRAy cluster: ``x[indices]`` are the artefact samples (e.g. the run's indices of
    one cluster, ``r.indices[r.labels['kmeans-3'] == k]``), ``x[clean_indices]`` (default: every other
    sample of ``x``) the clean ones. ``kwargs`` go to :func:`cav`."""
    x = np.asarray(x)
    idx = np.asarray(indices, "int64").ravel()
    if idx.size == 0 or idx.min() < 0 or idx.max() >= len(x):
        raise CorrectionError(f"cluster indices must be non-empty and within 0..{len(x) - 1}")
    if clean_indices is None:
        rest = np.setdiff1d(np.arange(len(x)), idx)
    else:
        rest = np.asarray(clean_indices, "int64").ravel()
    return cav(model, layer=layer, artifact=x[idx], clean=x[rest], **kwargs)


def cav_from_channels(model: Any, layer: str, channels: Sequence[int] | dict, *, clean: Any | None = None,
                      artifact: Any | None = None, batch_size: int = 64) -> CAV:
    """A CAV spanned by a CRP channel set: ``v = sum_k w_k e_k / ||w||`` over the channels ``k`` (a list:
    equal weights; a dict ``{channel: weight}``, e.g. their relevances). ``clean`` / ``artifact``
    inputs (optional) give the group means P-ClArC and A-ClArC need."""
    lay = _layer(model, layer)
    n = int(lay.output.shape[-1])
    weights = dict(channels) if isinstance(channels, dict) else {int(k): 1.0 for k in channels}
    if not weights or min(weights) < 0 or max(weights) >= n:
        raise CorrectionError(f"channels must be non-empty and within 0..{n - 1} for layer {layer!r}")
    v = np.zeros(n)
    for k, w in weights.items():
        v[int(k)] = float(w)
    v = v / (np.linalg.norm(v) or 1.0)
    if not np.any(v):
        raise CorrectionError("the channel weights are all zero")
    means = [None if d is None else _group_mean(activations(model, layer, d, batch_size), "channels")
             for d in (clean, artifact)]
    return CAV(v, layer, "channels", "mean", means[0], means[1], {"channels": weights})
