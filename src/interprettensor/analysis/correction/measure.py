"""Measuring a correction: the artefact's share of positive relevance, clean and poisoned accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .projection import CorrectionError

__all__ = ["Measurement", "measure", "relevance_share", "accuracy", "table"]


@dataclass(frozen=True)
class Measurement:
    """``artifact_share``: the mean over poisoned samples of :func:`relevance_share` (the artefact's
    share of the heatmap's positive relevance); ``clean_accuracy``, ``poisoned_accuracy``: fractions in [0, 1]."""

    artifact_share: float
    clean_accuracy: float
    poisoned_accuracy: float

    def as_dict(self) -> dict:
        return {"artifact_share": self.artifact_share, "clean_accuracy": self.clean_accuracy,
                "poisoned_accuracy": self.poisoned_accuracy}


def accuracy(model: Any, x: Any, y: Any, batch_size: int = 128) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` (integer labels)."""
    p = np.asarray(model.predict(np.asarray(x), batch_size=batch_size, verbose=0))
    y = np.asarray(y).ravel()
    if len(p) != len(y):
        raise CorrectionError(f"{len(p)} inputs but {len(y)} labels")
    return float(np.mean(p.argmax(-1) == y))


def _heatmap_masks(masks: Any, x: np.ndarray) -> np.ndarray:
    """``masks`` as booleans shaped like the heatmaps: ``x.shape[:-1]`` for inputs with a channel axis
    (``x.ndim >= 3``: images, sequences), ``x.shape`` for ``(N, d)`` inputs. Read by their number of axes:
    ``x.ndim`` axes: shaped like the inputs (a mask on any channel marks the position); ``x.ndim - 1``: the
    heatmaps ``(N, H, W)``, or one sample's input shape ``(H, W, C)``; ``x.ndim - 2``: one heatmap
    ``(H, W)`` for every sample (each broadcast where an axis is 1)."""
    m = np.asarray(masks).astype(bool)
    heat = x.shape[:-1] if x.ndim >= 3 else x.shape
    try:
        if x.ndim < 3:
            return np.broadcast_to(m, x.shape)
        if m.ndim == x.ndim:
            return np.broadcast_to(m, x.shape).any(axis=-1)
        if m.ndim == x.ndim - 1 and m.shape != heat and m.shape[-1] in (1, x.shape[-1]) \
                and len(m) in (1, x.shape[1]):
            return np.broadcast_to(m[None], x.shape).any(axis=-1)
        if m.ndim in (x.ndim - 1, x.ndim - 2):
            return np.broadcast_to(m, heat)
    except ValueError:
        pass
    raise CorrectionError(f"masks of shape {m.shape} do not fit inputs of shape {x.shape} (give the heatmaps' "
                          f"shape {heat}, the inputs' shape, one sample's, or one heatmap's)")


def relevance_share(model: Any, x: Any, masks: Any, target: Any = "prediction", *, y: Any = None,
                    rule: Any = "epsilon_plus", batch_size: int = 64, **params: Any) -> np.ndarray:
    """Per sample, the share of the heatmap's positive relevance inside the artefact mask,
    ``sum_{p in mask} max(R_p, 0) / sum_p max(R_p, 0)`` (0 where no relevance is positive), ``R`` the
    engine's relevance (``rule``, ``params``) summed over the channel axis (inputs with ``x.ndim >= 3``;
    ``(N, d)`` inputs are used as they are).

    Args:
        masks: 1 / True on the artefact: the heatmaps' shape ``(N, H, W)``, the inputs' shape (a mask on
            any channel counts), or one that broadcasts (``(H, W)``, ``(H, W, 1)``).
        target: ``'prediction'`` or ``None`` (the model's top class), ``'label'`` (``y``), a class index,
            or one index per sample.
    """
    from ...engine.explainer import Explainer

    x = np.asarray(x, "float32")
    m = _heatmap_masks(masks, x)
    if target is None or (isinstance(target, str) and target == "prediction"):
        t = np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).reshape(len(x), -1).argmax(-1)
    elif isinstance(target, str) and target == "label":
        if y is None:
            raise CorrectionError("target='label' needs the labels y")
        t = np.asarray(y).ravel()
    elif isinstance(target, str):
        raise CorrectionError(f"target must be 'prediction', 'label', a class index or one per sample; got "
                              f"{target!r}")
    else:
        t = np.asarray(target).ravel()
        t = np.full(len(x), int(t[0])) if t.size == 1 else t
    if len(t) != len(x):
        raise CorrectionError(f"{len(x)} inputs but {len(t)} targets")
    R = np.asarray(Explainer(model, rule, **params)(x, t, batch_size=batch_size), "float64")
    heat = R.sum(axis=-1) if x.ndim >= 3 else R
    pos = np.maximum(heat, 0.0).reshape(len(x), -1)
    inside = (pos * m.reshape(len(x), -1)).sum(1)
    total = pos.sum(1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)


def measure(model: Any, x_clean: Any, y_clean: Any, x_poisoned: Any, y_poisoned: Any, artifact_masks: Any, *,
            rule: Any = "epsilon_plus", target: Any = "prediction", batch_size: int = 64,
            **params: Any) -> Measurement:
    """The artefact's relevance share on the poisoned samples (:func:`relevance_share`), the accuracy
    on clean data and on the poisoned data (the artefact moved to the other classes' samples)."""
    share = relevance_share(model, x_poisoned, artifact_masks, rule=rule, target=target, y=y_poisoned,
                            batch_size=batch_size, **params)
    return Measurement(float(share.mean()), accuracy(model, x_clean, y_clean, batch_size),
                       accuracy(model, x_poisoned, y_poisoned, batch_size))


def table(rows: Mapping[str, Measurement]) -> str:
    """A text table of measurements by name (``{'before': m0, 'P-ClArC': m1}``)."""
    w = max([len("model")] + [len(str(k)) for k in rows])
    head = f"{'model':<{w}} {'artefact share':>15} {'clean acc':>10} {'poisoned acc':>13} {'poisoned/clean':>15}"
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        ratio = m.poisoned_accuracy / m.clean_accuracy if m.clean_accuracy > 0 else float("nan")
        lines.append(f"{name:<{w}} {m.artifact_share:>15.3f} {100 * m.clean_accuracy:>9.1f}% "
                     f"{100 * m.poisoned_accuracy:>12.1f}% {ratio:>15.3f}")
    return "\n".join(lines)
