"""Pruning by explanation: remove the least important convolution channels, dense units or attention heads
of a Keras model (Yeom et al. 2021, "Pruning by explaining: a novel criterion for deep neural network
pruning", Pattern Recognition 115; Hatefi et al. 2024 for transformer heads).

:func:`prune` scores every unit of every prunable layer on a reference set (criteria in
:mod:`.criteria`: ``'lrp'``, ``'magnitude'``, ``'taylor'``), normalises the scores per layer
(``|s| / ||s||_2``), ranks all units of all layers together (global ranking, as Yeom et al. and
Molchanov et al.; ``ranking='layer'`` removes the same fraction of every layer instead) and removes the
lowest ``amount`` of them. Removal is real: the layers are rebuilt with fewer filters / units / heads
and the weights of the layers that read them are sliced (:mod:`.surgery`); which layers can be pruned
and which are skipped (and why: ``Concatenate``, model outputs, ...) is decided by :mod:`.structure`;
channels summed by ``Add`` (residual branches) are removed from every operand's layer at once, as one
group scored by the sum of its layers' scores. The result is a new Keras model, saveable and
explainable like the original; it is not compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np

from .criteria import CRITERIA, lrp_scores, magnitude_scores, normalise, taylor_scores
from .structure import Plan, PruningError, plan
from .surgery import count_flops, count_params, remove

__all__ = ["prune", "PruningReport", "PruningError", "count_flops", "count_params", "scores", "plan",
           "CRITERIA"]

UNITS = ("channel", "head")
RANKINGS = ("global", "layer")


@dataclass
class PruningReport:
    """What :func:`prune` did: sizes before and after, and per layer the removed unit indices, the
    number of units before, and the normalised scores; ``skipped``: layers left alone and why; ``groups``:
    for a layer pruned with others (residual sums), all their names (keyed like ``removed``)."""

    criterion: str
    unit: str
    amount: float
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    removed: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)

    @property
    def n_removed(self) -> int:
        return int(sum(len(v) for v in self.removed.values()))

    def __str__(self) -> str:
        lines = [f"pruned {self.n_removed} of {sum(self.sizes.values())} {self.unit}s by {self.criterion} "
                 f"(amount {self.amount:g})",
                 f"parameters {self.params_before:,} -> {self.params_after:,}; "
                 f"FLOPs {self.flops_before:,} -> {self.flops_after:,}"]
        for name, size in self.sizes.items():
            also = f" (with {', '.join(self.groups[name][1:])}: residual sum)" if name in self.groups else ""
            lines.append(f"  {name}{also}: {size} -> {size - len(self.removed.get(name, []))}")
        for name, why in self.skipped.items():
            lines.append(f"  {name}: skipped ({why})")
        return "\n".join(lines)


def _labels(model: keras.Model, x: np.ndarray, y: Any, batch_size: int) -> np.ndarray:
    if y is None:
        out = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
        return out.reshape(len(x), -1).argmax(axis=-1).astype("int64")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] == len(x) and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != len(x):
        raise PruningError(f"y_ref has {len(y)} labels for {len(x)} reference samples")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise PruningError("y_ref must hold integer class labels (or one-hot rows)")
        y = y.astype("int64")
    n_out = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
    if n_out is not None and (y.min() < 0 or y.max() >= n_out):
        raise PruningError(f"y_ref has labels in [{y.min()}, {y.max()}], but the model has {n_out} outputs")
    return y


def scores(model: keras.Model, x_ref: Any = None, y_ref: Any = None, criterion: str = "lrp", unit: str = "channel",
           rule: Any = "epsilon_plus", layers: list | None = None, batch_size: int = 64,
           progress: Callable[[int], None] | None = None, **rule_params: Any) -> tuple[dict, Plan]:
    """Raw (unnormalised) scores ``{layer name: one per unit}`` of the prunable layers, and the plan."""
    if criterion not in CRITERIA:
        raise PruningError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if unit not in UNITS:
        raise PruningError(f"unit must be one of {UNITS}, got {unit!r}")
    if rule_params and criterion != "lrp":
        raise PruningError(f"rule parameters {sorted(rule_params)} only apply to criterion 'lrp'")
    p = plan(model, unit, layers)
    if not p.units:
        why = "; ".join(f"{k}: {v}" for k, v in p.skipped.items()) or "no Conv / Dense layer feeds another"
        raise PruningError(f"the model has no prunable {unit}s ({why})")
    if criterion == "magnitude":
        return magnitude_scores(p.units, unit), p
    if x_ref is None:
        raise PruningError(f"criterion {criterion!r} needs reference samples x_ref")
    x = np.asarray(x_ref, dtype="float32") if not isinstance(x_ref, np.ndarray) else x_ref
    if x.ndim == 0 or len(x) == 0:
        raise PruningError(f"criterion {criterion!r} needs reference samples; x_ref is empty")
    y = _labels(model, x, y_ref, batch_size)
    if criterion == "lrp":
        return lrp_scores(model, p.units, x, y, unit, rule, batch_size, progress, **rule_params), p
    return taylor_scores(model, p.units, x, y, unit, batch_size, progress), p


def _select(p: Plan, normalised: dict, amount: float, ranking: str) -> dict[str, np.ndarray]:
    """``{layer: removed indices}``: the lowest-scoring units, at least one kept per layer."""
    total = sum(u.size for u in p.units)
    if ranking == "layer":
        out = {}
        for u in p.units:
            n = min(int(np.floor(amount * u.size + 0.5)), u.size - 1)
            out[u.layer.name] = np.sort(np.argsort(normalised[u.layer.name], kind="stable")[:n])
        return out
    n = int(np.floor(amount * total + 0.5))
    most = total - len(p.units)
    if n > most:
        raise PruningError(f"amount={amount:g} removes {n} of {total} {('units')}, but each of the {len(p.units)} "
                           f"prunable layers keeps at least one: at most {most} ({most / total:.3f}) can go")
    order = sorted(((float(normalised[u.layer.name][i]), li, i) for li, u in enumerate(p.units)
                    for i in range(u.size)))
    left = {u.layer.name: u.size for u in p.units}
    removed: dict = {u.layer.name: [] for u in p.units}
    for _, li, i in order:
        if n == 0:
            break
        name = p.units[li].layer.name
        if left[name] > 1:
            removed[name].append(i)
            left[name] -= 1
            n -= 1
    return {k: np.sort(np.asarray(v, dtype="int64")) for k, v in removed.items()}


def prune(model: keras.Model, x_ref: Any = None, y_ref: Any = None, amount: float = 0.3, criterion: str = "lrp",
          unit: str = "channel", rule: Any = "epsilon_plus", layers: list | None = None, ranking: str = "global",
          batch_size: int = 64, progress: Callable[[int], None] | None = None,
          **rule_params: Any) -> tuple[keras.Model, PruningReport]:
    """Remove the least important ``amount`` (a fraction in ``[0, 1)``) of the units of ``model``.

    Args:
        model: a functional or Sequential Keras model (channels last).
        x_ref, y_ref: reference samples and their integer labels (``y_ref=None``: the model's predicted
            classes); ``x_ref`` is not needed for ``criterion='magnitude'``.
        criterion: ``'lrp'`` (relevance summed over the reference set, Yeom et al. 2021), ``'magnitude'``
            (L1 norm of the weights) or ``'taylor'`` (Molchanov et al. 2017; for heads, of each head's output
            where the output projection reads it); see :mod:`.criteria`.
        unit: ``'channel'`` (output channels of Conv1D/2D/3D and units of Dense layers that feed other
            layers) or ``'head'`` (MultiHeadAttention heads).
        rule: the LRP rule or preset for ``'lrp'`` (default ``'epsilon_plus'``: epsilon in dense layers, z+ in
            convolutions, as Yeom et al.); ``rule_params`` go to it (``epsilon=...``).
        layers: prune only these layer names (an unprunable one is an error); default all prunable layers.
        ranking: ``'global'`` (all units of all layers ranked by their per-layer normalised score, Yeom et
            al.) or ``'layer'`` (``amount`` of each layer).
        batch_size: reference samples per LRP / gradient pass.
        progress: called with the number of reference samples done after each batch.

    Returns:
        ``(pruned model, PruningReport)``; every pruned layer keeps at least one unit.
    """
    try:
        amount = float(amount)
    except (TypeError, ValueError):
        raise PruningError(f"amount must be a fraction in [0, 1), got {amount!r}") from None
    if not 0.0 <= amount < 1.0:
        raise PruningError(f"amount must be a fraction in [0, 1), got {amount!r}")
    if ranking not in RANKINGS:
        raise PruningError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    raw, p = scores(model, x_ref, y_ref, criterion, unit, rule, layers, batch_size, progress, **rule_params)
    normalised = {k: normalise(v) for k, v in raw.items()}
    removed = _select(p, normalised, amount, ranking)
    keep = {u.layer.name: np.setdiff1d(np.arange(u.size), removed[u.layer.name]) for u in p.units}
    new = remove(model, p, keep, unit)
    report = PruningReport(criterion, unit, amount, count_params(model), count_params(new), count_flops(model),
                           count_flops(new), {k: [int(i) for i in v] for k, v in removed.items()},
                           {u.layer.name: u.size for u in p.units}, normalised, dict(p.skipped),
                           {u.layer.name: [m.name for m in u.layers] for u in p.units if u.group})
    return new, report
