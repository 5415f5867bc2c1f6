"""Complexity metrics: how concentrated is the explanation? Functions of the attributions alone (no
model), computed as Quantus 0.6 computes them, on the whole batch at once."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from .base import Metric

__all__ = ["Sparseness", "Complexity", "EffectiveComplexity"]


class _Complexity(Metric):
    category = "Complexity"
    needs_model = False
    default_softmax = False

    def __init__(self, abs: bool = True, normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)


class Sparseness(_Complexity):
    """Sparseness (Chalasani et al. 2020, "Concise explanations of neural networks using adversarial
    training", ICML): the Gini index of the attributions, ``sum_i (2i - d - 1) a_(i) / (d sum_i
    a_(i))`` over the ``d`` attributions sorted ascending (each plus ``1e-7``, as Quantus): 0 for a
    uniform, near 1 for a one-feature explanation. Expects non-negative attributions (``abs=True``)."""

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a = np.sort(a_batch.reshape(len(a_batch), -1) + 1e-7, axis=-1)
        d = a.shape[-1]
        i = np.arange(1, d + 1, dtype=np.float64)
        return list(((2 * i - d - 1) * a).sum(-1) / (d * a.sum(-1)))


class Complexity(_Complexity):
    """Complexity (Bhatt et al. 2020, "Evaluating and aggregating feature-based model explanations",
    IJCAI): the entropy of the attributions' shares, ``-sum_i p_i log(p_i + 1e-12)`` with ``p_i = a_i
    / sum_j |a_j|``. Expects non-negative attributions (``abs=True``). All-zero attributions have no
    shares and score NaN, as in Quantus, with a warning naming the samples."""

    higher_is_better = False

    nan_reason = "their attributions are all zero: there are no shares, as in Quantus"

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        a = a_batch.reshape(len(a_batch), -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = a / np.abs(a).sum(-1, keepdims=True)
            return list(-(p * np.log(p + 1e-12)).sum(-1))


class EffectiveComplexity(_Complexity):
    """Effective complexity (Nguyen & Martinez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584): the number of attributions above ``eps``.

    Args:
        eps: the threshold.
    """

    higher_is_better = False

    def __init__(self, eps: float = 1e-5, abs: bool = True, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.eps = float(eps)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        return [int(c) for c in (a_batch.reshape(len(a_batch), -1) > self.eps).sum(-1)]
