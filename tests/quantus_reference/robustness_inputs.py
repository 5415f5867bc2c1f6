"""Arrays the robustness reference script (Quantus' environment) and tests/test_metrics_robustness.py
(ours) build identically from formulas, so both sides see the same perturbed inputs and explanations
without sharing random number streams."""

from __future__ import annotations

import numpy as np

from models import CHANNELS, SIZE


def deltas(k: int, n: int, scale: float, channels_last: bool) -> np.ndarray:
    """``k`` fixed additive perturbations of ``n`` inputs, ``(k, n, d)`` flattened in the given layout:
    ``scale * sin(1.3 (t + 1) + 0.7 i + 0.31 h + 0.17 w + 0.53 c)``."""
    t, i, h, w, c = np.meshgrid(np.arange(k), np.arange(n), np.arange(SIZE), np.arange(SIZE), np.arange(CHANNELS),
                                indexing="ij")
    v = scale * np.sin(1.3 * (t + 1) + 0.7 * i + 0.31 * h + 0.17 * w + 0.53 * c)  # (k, n, H, W, C)
    if not channels_last:
        v = v.transpose(0, 1, 4, 2, 3)
    return v.reshape(k, n, -1)


def elementwise_explain(model=None, inputs=None, targets=None, **kwargs) -> np.ndarray:
    """An explain_func computed identically in any layout: ``sin(5 x + 1) (1 + 0.3 target)``, float64."""
    x = np.asarray(inputs, np.float64)
    t = np.asarray(targets, np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.sin(5.0 * x + 1.0) * (1.0 + 0.3 * t)


def gated_explain(model=None, inputs=None, targets=None, **kwargs) -> np.ndarray:
    """:func:`elementwise_explain` for targets other than 0 and all zeros for target 0 (a sample whose
    explanation has norm 0 before and after any perturbation, as a dead unit gives)."""
    t = np.asarray(targets).reshape((-1,) + (1,) * (np.ndim(inputs) - 1))
    return elementwise_explain(inputs=inputs, targets=targets) * (t != 0)


def zero_sample(a: np.ndarray, i: int) -> np.ndarray:
    """``a`` with sample ``i`` set to zero."""
    a = np.array(a, np.float64)
    a[i] = 0.0
    return a


def consistency_attributions(n: int, seed: int = 3) -> np.ndarray:
    """``(n, SIZE, SIZE)`` attributions whose first row's first 5 values follow one of three zero
    patterns (so their ``top_n_sign`` labels collide), the rest random."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, SIZE, SIZE))
    patterns = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 1, 1, 0]], np.float64)
    a[:, 0, :5] *= patterns[np.arange(n) % 3]
    return a
