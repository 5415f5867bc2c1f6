"""What a perturbed region becomes (:func:`_replacement`: uniform noise, the mean, a blurred copy, a
number or a function of the inputs), and the randomness of region perturbation: one random stream per
sample, purpose (noise, breaking ties, the random baseline) and ``seed``, drawn from the sample's content
(:func:`_sample_key`, :func:`_rng`), so that the same input gets the same noise under every method and in
every batch."""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np

from .regions import spatial_shape

Perturbation = str | float | Callable[[np.ndarray], np.ndarray]


def _sample_key(xi: np.ndarray) -> int:
    h = hashlib.blake2b(np.ascontiguousarray(xi, dtype=np.float32).tobytes(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def _rng(seed: int, stream: int, key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, key])


_NOISE, _TIES, _RANDOM = 0, 1, 2


def _replacement(x: np.ndarray, perturbation: Perturbation, keys: Sequence[int], seed: int,
                 value_range: tuple[float, float], blur_sigma: float | None, patch: int) -> np.ndarray:
    """What each pixel becomes when its region is perturbed: an array shaped like ``x``."""
    if callable(perturbation):
        rep = np.asarray(perturbation(x.copy()))
        if rep.shape != x.shape:
            raise ValueError(f"the perturbation function returned shape {rep.shape}, expected {x.shape} "
                             f"(the replacement values, shaped like x)")
        return rep.astype(x.dtype)
    if isinstance(perturbation, (int, float, np.number)) and not isinstance(perturbation, bool):
        return np.full_like(x, float(perturbation))
    if perturbation == "uniform":
        lo, hi = value_range
        return np.stack([_rng(seed, _NOISE, k).uniform(lo, hi, x.shape[1:]) for k in keys]).astype(x.dtype)
    if perturbation == "mean":
        axes = tuple(range(1, x.ndim - 1)) if x.ndim >= 3 else tuple(range(1, x.ndim))
        return np.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape).astype(x.dtype)
    if perturbation == "blur":
        from scipy.ndimage import gaussian_filter

        sigma = float(blur_sigma) if blur_sigma is not None else patch / 2.0
        sig = [0.0] + [sigma] * len(spatial_shape(x.shape)) + ([0.0] if x.ndim >= 3 else [])
        return gaussian_filter(x.astype(np.float64), sig, mode="nearest").astype(x.dtype)
    raise ValueError(f"perturbation must be 'uniform', 'mean', 'blur', a number or a function "
                     f"x -> replacement, got {perturbation!r}")
