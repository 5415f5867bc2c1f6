"""Measuring a correction: the artefact's share of positive relevance, clean and poisoned accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .projection import CorrectionError

__all__ = ["Measurement", "measure", "relevance_share", "accuracy", "table"]


@dataclass(frozen=True)
class Measurement:
    """``artifact_share``: the mean over poisoned samples of ``sum_mask R+ / sum R+`` (the artefact's
    share of positive input relevance); ``clean_accuracy``, ``poisoned_accuracy``: fractions in [0, 1]."""

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


def relevance_share(model: Any, x: Any, masks: Any, *, rule: Any = "epsilon_plus", target: Any = "prediction",
                    y: Any = None, batch_size: int = 64, **params: Any) -> np.ndarray:
    """Per sample, the share of positive relevance inside the artefact mask, ``sum_{i in mask} max(R_i, 0)
    / sum_i max(R_i, 0)`` (0 where no relevance is positive), with the engine's ``rule``.

    ``target``: ``'prediction'`` (the model's top class), ``'label'`` (``y``), or a class index."""
    from ...engine.explainer import Explainer

    x = np.asarray(x, "float32")
    masks = np.broadcast_to(np.asarray(masks, bool), x.shape)
    if target == "prediction":
        t = np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).argmax(-1)
    elif target == "label":
        if y is None:
            raise CorrectionError("target='label' needs the labels y")
        t = np.asarray(y).ravel()
    else:
        t = np.full(len(x), int(target))
    explainer = Explainer(model, rule, **params)
    R = np.asarray(explainer(x, t, batch_size=batch_size), "float64")
    Rp = np.maximum(R, 0.0).reshape(len(x), -1)
    inside = (Rp * masks.reshape(len(x), -1)).sum(1)
    total = Rp.sum(1)
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
