"""Region perturbation of one explanation (:func:`region_perturbation`): rank the regions by their
relevance, replace them one per step and record the target's score after each step; the result
(:class:`PerturbationResult`) holds the scores and derives the perturbation curve and its AOPC."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from .regions import _region_ids, check_regions, region_label, spatial_shape
from .replacement import _RANDOM, _TIES, Perturbation, _replacement, _rng, _sample_key
from .scoring import ArrayLike, _resolve_targets, _Scorer


@dataclass
class PerturbationResult:
    """The outcome of :func:`region_perturbation`.

    Attributes:
        scores: ``(N, steps + 1)`` score of the target class after ``k`` perturbed regions.
        target: ``(N,)`` the explained classes.
        ranking: ``(N, steps)`` region indices in the order they were perturbed (row-major grid).
        order, patch, steps, perturbation: the settings.
        spatial: the inputs' spatial size (``(H, W)``, ``(T,)`` or ``(F,)``).
    """

    scores: np.ndarray
    target: np.ndarray
    ranking: np.ndarray
    order: str
    patch: int
    steps: int
    perturbation: str
    spatial: tuple = ()

    @property
    def region(self) -> str:
        """The regions in words: ``'4x4 regions'`` (images) or ``'regions of 4 positions'`` (1-D inputs)."""
        return region_label(self.patch, len(self.spatial) if self.spatial else 2)

    @property
    def drops(self) -> np.ndarray:
        """``(N, steps + 1)``: ``f(x^(0)) - f(x^(k))``."""
        return self.scores[:, :1] - self.scores

    @property
    def curve(self) -> np.ndarray:
        """Mean score over the samples after ``k = 0..steps`` perturbed regions."""
        return self.scores.mean(axis=0)

    @property
    def aopc_per_sample(self) -> np.ndarray:
        """``1/(L+1) sum_k (f(x^(0)) - f(x^(k)))`` per sample."""
        return self.drops.mean(axis=1)

    @property
    def aopc(self) -> float:
        """The area over the perturbation curve, averaged over the samples (Samek et al. 2017, eq. 12)."""
        return float(self.aopc_per_sample.mean())

    @property
    def aopc_sem(self) -> float:
        """Standard error of :attr:`aopc` over the samples."""
        a = self.aopc_per_sample
        return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")

    @property
    def aopc_curve(self) -> np.ndarray:
        """AOPC after ``k`` steps: ``1/(k+1) sum_{j<=k} <f(x^(0)) - f(x^(j))>``, ``k = 0..steps``."""
        d = self.drops.mean(axis=0)
        return np.cumsum(d) / np.arange(1, len(d) + 1)


def region_perturbation(model: keras.Model, x: ArrayLike, relevance: ArrayLike | str,
                        target: ArrayLike | None = None, *, patch: int | None = None,
                        steps: int | None = None, perturbation: Perturbation = "uniform", order: str = "morf",
                        value_range: tuple[float, float] | None = None, blur_sigma: float | None = None,
                        seed: int = 0, batch_size: int = 256,
                        output: int | str | None = None) -> PerturbationResult:
    """Region perturbation ("pixel flipping") of Samek et al. 2017 for a batch of inputs.

    Args:
        model: a Keras model with one input (anything :func:`interprettensor.lrp` explains).
        x: inputs ``(N, H, W, C)`` (also ``(N, T, C)`` sequences and ``(N, D)`` vectors: the regions
            are then runs of ``patch`` positions).
        relevance: an array shaped like ``x``, or ``'random'`` for the random baseline (uniform
            random relevance per pixel, from ``seed``).
        target: ``None`` (the class predicted for the unperturbed input), an int, or one per sample.
            The score is that class's pre-softmax output (a final softmax is skipped, as in LRP).
        patch: region size; relevance is summed per ``patch`` x ``patch`` region (runs of ``patch``
            positions for 1-D inputs) and over channels. Default: :func:`default_patch` of the input
            size (about 49 regions or more).
        steps: number of regions to perturb, one per step (default: all); curves have ``steps + 1``
            points (``k = 0`` is the unperturbed input).
        perturbation: what a region becomes: ``'uniform'`` (noise drawn uniformly from
            ``value_range``, the paper's choice), ``'mean'`` (the image's per-channel mean),
            ``'blur'`` (a Gaussian-blurred copy, ``blur_sigma``, default ``patch / 2``), a number
            (e.g. a dataset mean), or a function ``x -> replacement`` returning an array shaped like x.
        order: ``'morf'`` (most relevant first) or ``'lerf'`` (least relevant first).
        value_range: ``(low, high)`` for uniform noise (default: the min and max of ``x``; give it
            to make results independent of the batch).
        seed: random seed of the noise, the random baseline and the breaking of ties.
        batch_size: perturbed inputs per forward pass.
        output: which output of a multi-output model.

    Returns:
        a :class:`PerturbationResult` (``scores``, ``curve``, ``aopc``, ...).
    """
    order = str(order).lower()
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' (most relevant first) or 'lerf' (least relevant first), "
                         f"got {order!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scorer = _Scorer(model, output)
    xs = scorer.check(x)
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (N, ...), got shape {xs.shape}")
    spatial = spatial_shape(xs.shape)
    patch, steps, _ = check_regions(spatial, patch, steps)
    ids, n_regions = _region_ids(spatial, int(patch))
    n = xs.shape[0]
    keys = [_sample_key(xi) for xi in xs]

    if isinstance(relevance, str):
        if relevance != "random":
            raise ValueError(f"relevance must be an array shaped like x or 'random', got {relevance!r}")
        rel = np.stack([_rng(seed, _RANDOM, k).uniform(0.0, 1.0, xs.shape[1:]) for k in keys])
    else:
        rel = np.asarray(relevance, dtype=np.float64)
        if rel.shape != xs.shape:
            raise ValueError(f"relevance has shape {rel.shape}, but x has shape {xs.shape}; they must match")
        if not np.isfinite(rel).all():
            raise ValueError("relevance contains NaN or infinite values")

    # relevance per region: sum over channels and over the region's positions
    per_pos = rel.reshape(n, int(np.prod(spatial)), -1).sum(-1)
    region_rel = np.zeros((n, n_regions))
    np.add.at(region_rel, (np.arange(n)[:, None], ids[None, :]), per_pos)
    ranking = np.empty((n, n_regions), np.int64)
    for i, k in enumerate(keys):
        perm = _rng(seed, _TIES, k).permutation(n_regions)  # ties in random order
        key = -region_rel[i, perm] if order == "morf" else region_rel[i, perm]
        ranking[i] = perm[np.argsort(key, kind="stable")]
    rank = np.empty_like(ranking)
    rank[np.arange(n)[:, None], ranking] = np.arange(n_regions)[None, :]
    rank_pos = rank[:, ids].reshape((n,) + spatial + ((1,) if xs.ndim >= 3 else ()))

    if value_range is None:
        value_range = (float(xs.min()), float(xs.max()))
    lo, hi = (float(v) for v in value_range)
    if not hi >= lo:
        raise ValueError(f"value_range must be (low, high) with low <= high, got {value_range}")
    rep = _replacement(xs, perturbation, keys, seed, (lo, hi), blur_sigma, int(patch))

    targets = _resolve_targets(scorer(xs), target)
    scores = np.empty((n, steps + 1))
    nb = min(n, int(batch_size))
    per_call = max(1, int(batch_size) // nb)
    for s0 in range(0, n, nb):
        sl = slice(s0, min(s0 + nb, n))
        xb, rb, kb = xs[sl], rep[sl], rank_pos[sl]
        for k0 in range(0, steps + 1, per_call):
            ks = np.arange(k0, min(k0 + per_call, steps + 1))
            mask = kb[None] < ks.reshape((-1,) + (1,) * kb.ndim)
            batch = np.where(mask, rb[None], xb[None]).reshape((-1,) + xs.shape[1:])
            flat = scorer(batch).reshape(len(ks), len(xb), -1)
            scores[sl, k0:k0 + len(ks)] = flat[:, np.arange(len(xb)), targets[sl]].T
    name = perturbation if isinstance(perturbation, str) else (
        f"constant {float(perturbation):g}" if isinstance(perturbation, (int, float, np.number))
        else getattr(perturbation, "__name__", "custom"))
    return PerturbationResult(scores, targets, ranking[:, :steps], order, int(patch), int(steps), name,
                              tuple(int(v) for v in spatial))
