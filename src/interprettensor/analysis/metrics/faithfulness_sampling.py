"""Faithfulness by sampled or accumulated perturbations (Quantus' faithfulness category, part B):
:class:`FaithfulnessCorrelation` (Bhatt et al. 2020), :class:`SensitivityN` (Ancona et al. 2018),
:class:`Infidelity` (Yeh et al. 2019) and :class:`Sufficiency` (Dasgupta et al. 2022).

Each takes Quantus 0.6's keyword arguments with its defaults. All perturbed versions of a batch are
stacked and passed through the model in as few calls as memory allows (:data:`MAX_ELEMENTS` input
values per stacked call, split further by ``batch_size``); random draws come from
``numpy.random.default_rng(seed)``, made anew on every call, so a call is reproducible.

Perturbations replace features by a baseline as Quantus' ``batch_baseline_replacement_by_indices``
does: ``'black'`` / ``'white'`` / ``'mean'`` are the minimum / maximum / mean of the sample as it is
when the step is taken, ``'uniform'`` one value per replaced feature drawn from ``[uniform_low,
uniform_high)`` (``perturb_func_kwargs``; :func:`.perturb.baseline`, as every metric here: Quantus
0.6's batched replacement draws one value per sample and step), a number that number, an array shaped like one sample
(channels-last) the array's values at the replaced features. Features are numbered in the channels-last flat order of
``x``; a custom ``perturb_func(arr=(n, F), indices=(n, k), perturb_baseline=..., **perturb_func_kwargs)``
sees that order.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...engine.errors import ExplainError
from .base import Metric
from .model import MetricModel
from .perturb import baseline as _baseline

__all__ = ["FaithfulnessCorrelation", "SensitivityN", "Infidelity", "Sufficiency", "correlation_pearson", "mse",
           "baseline_replacement_by_indices"]

#: input values (all stacked perturbed versions together) per model call of a metric
MAX_ELEMENTS = 2 ** 24


def correlation_pearson(a: np.ndarray, b: np.ndarray, batched: bool = True, **kwargs: Any) -> np.ndarray:
    """Pearson's correlation of ``a`` and ``b`` along the last axis (one per row when ``batched``),
    in float64. A row that is constant has no correlation: it scores 0 (scipy, hence Quantus, gives
    NaN)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if not batched:
        a, b = a[None], b[None]
    da = a - a.mean(-1, keepdims=True)
    db = b - b.mean(-1, keepdims=True)
    den = np.sqrt((da * da).sum(-1) * (db * db).sum(-1))
    r = np.divide((da * db).sum(-1), den, out=np.zeros(den.shape), where=den > 0)
    r = np.clip(r, -1.0, 1.0)
    return r if batched else r[0]


def mse(a: np.ndarray, b: np.ndarray, batched: bool = True, **kwargs: Any) -> np.ndarray:
    """Mean squared difference along the last axis (Quantus' ``mse``; ``normalise_mse`` as there)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    axis = -1 if batched else 0
    if kwargs.get("normalise_mse", False):
        return np.average(a ** 2 - 2 * a * b + b ** 2, axis=axis)
    return np.average((a - b) ** 2, axis=axis)


def baseline_replacement_by_indices(arr: np.ndarray, indices: np.ndarray, perturb_baseline: Any = "black",
                                    rng: np.random.Generator | None = None, uniform_low: float = 0.0,
                                    uniform_high: float = 1.0, **kwargs: Any) -> np.ndarray:
    """``arr`` ``(n, F)`` with the features ``indices`` ``(n, k)`` of each row replaced by the row's
    baseline (see the module's docstring); a new array."""
    if kwargs:
        raise TypeError(f"baseline_replacement_by_indices got unexpected keyword arguments {sorted(kwargs)}")
    arr = np.asarray(arr)
    indices = np.asarray(indices, np.int64)
    if arr.ndim != 2 or indices.ndim != 2 or indices.shape[0] != arr.shape[0]:
        raise ExplainError(f"perturbation needs arr (n, F) and indices (n, k), got {arr.shape} and {indices.shape}")
    rows = np.arange(arr.shape[0])[:, None]
    value = perturb_baseline
    if isinstance(value, str) and value.lower() not in ("black", "white", "mean", "uniform", "random"):
        raise ExplainError(f"perturb_baseline must be 'black', 'white', 'mean', 'uniform', a number or an "
                           f"array shaped like one sample, got {value!r}")
    if not isinstance(value, (str, bool, np.bool_)):
        v = np.asarray(value, np.float64)
        if v.ndim > 0 and v.size != arr.shape[1]:
            raise ExplainError(f"perturb_baseline array has {v.size} values; expected one per feature of a "
                               f"sample ({arr.shape[1]})")
        value = v.reshape(-1) if v.ndim > 0 else v
    if isinstance(value, str) and value.lower() == "uniform":  # draw only the replaced features' values
        fill = _baseline(value, np.empty(indices.shape), rng, uniform_low, uniform_high)
    else:
        fill = np.take_along_axis(_baseline(value, arr, rng, uniform_low, uniform_high), indices, axis=1)
    out = arr.copy()
    out[rows, indices] = fill
    return out


def _is_random_baseline(value: Any) -> bool:
    return isinstance(value, str) and value.lower() == "uniform"


class _Perturbing(Metric):
    """Shared by the metrics that replace features: the perturbation function and its arguments, the
    random generator, the flat views and the stacked model calls."""

    def _init_perturbation(self, perturb_func: Callable | None, perturb_baseline: Any,
                           perturb_func_kwargs: Mapping[str, Any] | None, seed: int | None) -> None:
        self.perturb_baseline = perturb_baseline
        self.perturb_func_kwargs = dict(perturb_func_kwargs or {})
        self.custom_perturb_func = perturb_func
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        if perturb_func is None:
            unknown = set(self.perturb_func_kwargs) - {"uniform_low", "uniform_high"}
            if unknown:
                raise TypeError(f"{type(self).__name__}: perturb_func_kwargs {sorted(unknown)} are not arguments "
                                f"of the default perturbation (uniform_low, uniform_high)")
            if isinstance(perturb_baseline, (str, bool, np.bool_)) or np.ndim(perturb_baseline) == 0:
                baseline_replacement_by_indices(np.zeros((1, 2)), np.zeros((1, 1), np.int64), perturb_baseline,
                                                np.random.default_rng(0), **self.perturb_func_kwargs)

    def _perturb(self, arr: np.ndarray, indices: np.ndarray) -> np.ndarray:
        if self.custom_perturb_func is None:
            return baseline_replacement_by_indices(arr, indices, self.perturb_baseline, self.rng,
                                                   **self.perturb_func_kwargs)
        out = self.custom_perturb_func(arr=arr, indices=indices, perturb_baseline=self.perturb_baseline,
                                       **self.perturb_func_kwargs)
        out = np.asarray(out)
        if out.shape != arr.shape:
            raise ExplainError(f"perturb_func returned shape {out.shape} for arr of shape {arr.shape}")
        return out

    def _random(self) -> bool:
        return self.custom_perturb_func is not None or _is_random_baseline(self.perturb_baseline)

    def custom_preprocess(self, **kwargs: Any) -> None:
        self.rng = np.random.default_rng(self.seed)  # every call draws the same
        self._offset = 0  # index of the current batch's first sample (for warnings)

    @staticmethod
    def _flat_attributions(a: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, x.shape).reshape(x.shape[0], -1).astype(np.float64)

    @staticmethod
    def _chunk(n: int, features: int, total: int) -> int:
        """How many perturbed versions of a batch of ``n`` go into one stacked model call."""
        return max(1, min(total, MAX_ELEMENTS // max(1, n * features)))


class FaithfulnessCorrelation(_Perturbing):
    """Faithfulness correlation (Bhatt, Weller & Moura 2020, "Evaluating and aggregating feature-based
    model explanations", IJCAI, eq. 2): over ``nr_runs`` random subsets ``S`` of ``subset_size``
    features, the correlation (``similarity_func``, Pearson by default) between the attributions'
    sum over ``S`` and the drop of the explained class's score when ``S`` is replaced by the baseline.
    One score per sample (``[mean]`` with ``return_aggregate``, True by default as in Quantus).

    Subsets are drawn without replacement from the generator ``seed`` (Quantus draws from the global
    ``np.random``); the ``nr_runs`` perturbed versions of a batch go through the model stacked.
    ``subset_size`` must be smaller than the number of features of a sample (all channels counted;
    Quantus compares it to the spatial size only). With the default Pearson correlation, a sample
    whose attribution sums or score drops are constant over the runs scores 0 (Quantus: NaN), with a
    warning naming it.
    """

    category = "Faithfulness"
    default_softmax = False

    def __init__(self, similarity_func: Callable | None = None, nr_runs: int = 100, subset_size: int = 224,
                 abs: bool = False, normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, perturb_func: Callable | None = None,
                 perturb_baseline: Any = "black", perturb_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = True, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if int(nr_runs) < 2:
            raise ExplainError(f"nr_runs must be >= 2 (a correlation needs two runs), got {nr_runs}")
        if int(subset_size) < 1:
            raise ExplainError(f"subset_size must be >= 1, got {subset_size}")
        self.similarity_func = correlation_pearson if similarity_func is None else similarity_func
        self.nr_runs = int(nr_runs)
        self.subset_size = int(subset_size)
        self._init_perturbation(perturb_func, perturb_baseline, perturb_func_kwargs, seed)

    def custom_preprocess(self, *, x_batch: np.ndarray, **kwargs: Any) -> None:
        super().custom_preprocess()
        features = int(np.prod(x_batch.shape[1:]))
        if self.subset_size >= features:
            raise ExplainError(f"subset_size ({self.subset_size}) must be smaller than the number of features of "
                               f"a sample ({features})")

    def draw_subsets(self, runs: int, n: int, features: int) -> np.ndarray:
        """``(runs, n, subset_size)`` feature indices, each row a uniform random subset without
        replacement: the ``subset_size`` smallest of ``features`` uniform draws."""
        u = self.rng.random((runs, n, features))
        return np.argpartition(u, self.subset_size - 1, axis=-1)[..., :self.subset_size]

    def evaluate_batch(self, *, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray,
                       a_batch: np.ndarray, s_batch: np.ndarray | None = None) -> list:
        n = x_batch.shape[0]
        xf = x_batch.reshape(n, -1)
        af = self._flat_attributions(a_batch, x_batch)
        features = xf.shape[1]
        y0 = model.scores(x_batch, y_batch)
        deltas, sums = [], []
        chunk = self._chunk(n, features, self.nr_runs)
        for r0 in range(0, self.nr_runs, chunk):
            k = min(chunk, self.nr_runs - r0)
            idx = self.draw_subsets(k, n, features)                                   # (k, n, s)
            xp = self._perturb(np.broadcast_to(xf, (k, n, features)).reshape(k * n, features),
                               idx.reshape(k * n, -1))
            yp = model.scores(xp.reshape((k,) + x_batch.shape), y_batch)              # (k, n)
            deltas.append(y0[None] - yp)
            sums.append(np.take_along_axis(af[None], idx, axis=-1).sum(-1))
        deltas = np.concatenate(deltas).T                                             # (n, runs)
        sums = np.concatenate(sums).T
        if self.similarity_func is correlation_pearson:
            constant = np.flatnonzero((np.ptp(sums, axis=1) == 0) | (np.ptp(deltas, axis=1) == 0))
            if constant.size:
                warnings.warn(f"FaithfulnessCorrelation: samples {(constant + self._offset).tolist()} have constant "
                              f"attribution sums or score drops over the runs; their correlation is undefined and "
                              f"scored 0 (Quantus: NaN)", RuntimeWarning, stacklevel=4)
        self._offset += n
        return list(np.asarray(self.similarity_func(a=sums, b=deltas, batched=True), np.float64))


class SensitivityN(_Perturbing):
    """Sensitivity-n (Ancona, Ceolini, Öztireli & Gross 2018, "Towards better understanding of
    gradient-based attribution methods for deep neural networks", ICLR, Def. 3) as Quantus 0.6 computes
    it: features are removed most relevant first, ``features_in_step`` at a time, up to
    ``n_max_percentage`` of them; after each step the drop of the explained class's score and the
    attributions' sum over the removed features are recorded, and the result is, per step, their
    Pearson correlation (``similarity_func``) **across the samples** - a list with one value per step
    (``[mean]`` with ``return_aggregate``, True by default as in Quantus).

    Differences from Quantus 0.6 (where it contradicts the definition):

    - the attribution sum is over **all** features removed so far (the set whose removal caused the
      drop), not over the last step's features only;
    - the number of steps is ``int(n_max_percentage * F // features_in_step)`` with ``F`` the features
      that are removed (all channels counted), not the spatial size only; steps beyond it are not run;
    - all batches count (Quantus correlates over the first batch only);
    - ties in the attributions are broken by position (stable sort); a constant step scores 0, not NaN.

    The order is deterministic; ``seed`` matters only for ``perturb_baseline='uniform'``.
    """

    category = "Faithfulness"
    default_softmax = True

    def __init__(self, similarity_func: Callable | None = None, n_max_percentage: float = 0.8,
                 features_in_step: int = 1, abs: bool = False, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "black",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = True,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int | None = 42,
                 **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if not 0 < float(n_max_percentage) <= 1:
            raise ExplainError(f"n_max_percentage must be in (0, 1], got {n_max_percentage}")
        if int(features_in_step) < 1:
            raise ExplainError(f"features_in_step must be >= 1, got {features_in_step}")
        self.similarity_func = correlation_pearson if similarity_func is None else similarity_func
        self.n_max_percentage = float(n_max_percentage)
        self.features_in_step = int(features_in_step)
        self._init_perturbation(perturb_func, perturb_baseline, perturb_func_kwargs, seed)
        self.pred_deltas: np.ndarray | None = None
        self.att_sums: np.ndarray | None = None

    def custom_preprocess(self, *, x_batch: np.ndarray, **kwargs: Any) -> None:
        super().custom_preprocess()
        features = int(np.prod(x_batch.shape[1:]))
        if features % self.features_in_step:
            raise ExplainError(f"features_in_step ({self.features_in_step}) must divide the number of features "
                               f"of a sample ({features})")
        if self.steps(features) < 1:
            raise ExplainError("n_max_percentage * features // features_in_step is 0: no step to take")

    def steps(self, features: int) -> int:
        """The number of removal steps for samples of ``features`` features."""
        return int(self.n_max_percentage * features // self.features_in_step)

    def evaluate_batch(self, *, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray,
                       a_batch: np.ndarray, s_batch: np.ndarray | None = None) -> list:
        n = x_batch.shape[0]
        xf = x_batch.reshape(n, -1)
        af = self._flat_attributions(a_batch, x_batch)
        features = xf.shape[1]
        steps = self.steps(features)
        order = np.argsort(-af, axis=1, kind="stable")
        y0 = model.scores(x_batch, y_batch)
        fis = self.features_in_step
        sums = np.cumsum(np.take_along_axis(af, order, 1)[:, :steps * fis].reshape(n, steps, fis).sum(-1), 1)
        deltas = []
        current = xf
        chunk = self._chunk(n, features, steps)
        for s0 in range(0, steps, chunk):
            versions = []
            for step in range(s0, min(steps, s0 + chunk)):
                current = self._perturb(current, order[:, step * fis:(step + 1) * fis])
                versions.append(current)
            yp = model.scores(np.stack(versions).reshape((len(versions),) + x_batch.shape), y_batch)
            deltas.append(y0[None] - yp)
        deltas = np.concatenate(deltas).T                                              # (n, steps)
        return [(d, s) for d, s in zip(deltas, sums)]

    def summarise(self, scores: Any) -> tuple[np.ndarray, str]:
        """The correlations as they are: one per step (or their aggregate), not one per sample."""
        return np.asarray(scores, np.float64).reshape(-1), "correlation across samples per step"

    def custom_postprocess(self, scores: list) -> list:
        self.pred_deltas = np.stack([d for d, _ in scores])
        self.att_sums = np.stack([s for _, s in scores])
        if self.pred_deltas.shape[0] < 2:
            raise ExplainError("SensitivityN correlates across samples: it needs at least two")
        return list(np.asarray(self.similarity_func(a=self.pred_deltas.T, b=self.att_sums.T, batched=True),
                               np.float64))


def _blocks(height: int, width: int, patch: int) -> list[tuple[slice, slice]]:
    """The ``patch`` x ``patch`` blocks of a ``height`` x ``width`` image in raster order, on a grid
    padded evenly (floor before, ceil after) to a multiple of ``patch`` as Quantus pads, cut to the
    image."""
    def edges(size: int) -> list[slice]:
        total = (-size) % patch
        start = -(total // 2)
        return [slice(max(0, s), min(size, s + patch)) for s in range(start, size, patch)]

    return [(r, c) for r in edges(height) for c in edges(width)]


class Infidelity(_Perturbing):
    """Explanation infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019, "On the (in)fidelity and
    sensitivity of explanations", NeurIPS, Def. 2.1) with Quantus 0.6's perturbations: for each patch
    size in ``perturb_patch_sizes`` the image's ``patch x patch`` squares are replaced by the baseline
    one after another (raster order, cumulatively), and after each the perturbation ``I = x - x'``
    gives the expected drop ``sum(a * I)`` to compare with the model's drop ``f(x)_y - f(x')_y``;
    the score is ``loss_func`` (mean squared difference) over the squares, averaged over patch sizes
    and ``n_perturb_samples`` repetitions. Lower is better. Images only ``(n, H, W, C)``.

    Only a random baseline (``'uniform'``) or a custom ``perturb_func`` makes the repetitions differ;
    with a deterministic one they are equal, so one is computed (the score is the same). Patch sizes
    that do not divide the image use the evenly padded grid Quantus intends, with the squares cut to
    the image (Quantus 0.6 fails there).
    """

    category = "Faithfulness"
    default_softmax = False
    higher_is_better = False

    def __init__(self, loss_func: str | Callable = "mse", perturb_patch_sizes: Sequence[int] | None = None,
                 n_perturb_samples: int = 10, abs: bool = False, normalise: bool = False,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "black",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int | None = 42,
                 **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if isinstance(loss_func, str):
            if loss_func != "mse":
                raise ExplainError(f"loss_func must be 'mse' or a callable, got {loss_func!r}")
            loss_func = mse
        self.loss_func = loss_func
        sizes = [4] if perturb_patch_sizes is None else [int(p) for p in perturb_patch_sizes]
        if not sizes or min(sizes) < 1:
            raise ExplainError(f"perturb_patch_sizes must be positive sizes, got {perturb_patch_sizes}")
        self.perturb_patch_sizes = sizes
        if int(n_perturb_samples) < 1:
            raise ExplainError(f"n_perturb_samples must be >= 1, got {n_perturb_samples}")
        self.n_perturb_samples = int(n_perturb_samples)
        self._init_perturbation(perturb_func, perturb_baseline, perturb_func_kwargs, seed)

    def custom_preprocess(self, *, x_batch: np.ndarray, **kwargs: Any) -> None:
        super().custom_preprocess()
        if x_batch.ndim != 4:
            raise ExplainError(f"Infidelity perturbs square patches of images (n, H, W, C); got inputs shaped "
                               f"{x_batch.shape}")
        h, w = x_batch.shape[1:3]
        if max(self.perturb_patch_sizes) > min(h, w):
            raise ExplainError(f"perturb_patch_sizes {self.perturb_patch_sizes} exceed the image ({h} x {w})")

    def evaluate_batch(self, *, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray,
                       a_batch: np.ndarray, s_batch: np.ndarray | None = None) -> list:
        n, h, w, c = x_batch.shape
        xf = x_batch.reshape(n, -1)
        af = self._flat_attributions(a_batch, x_batch)
        features = xf.shape[1]
        y0 = model.scores(x_batch, y_batch)
        flat_index = np.arange(features).reshape(h, w, c)
        repeats = self.n_perturb_samples if self._random() else 1
        results = []
        for _ in range(repeats):
            per_size = []
            for patch in self.perturb_patch_sizes:
                blocks = [flat_index[r, q].reshape(-1) for r, q in _blocks(h, w, patch)]
                deltas, a_sums = [], []
                current = xf
                chunk = self._chunk(n, features, len(blocks))
                for b0 in range(0, len(blocks), chunk):
                    versions = []
                    for block in blocks[b0:b0 + chunk]:
                        current = self._perturb(current, np.broadcast_to(block, (n, block.size)))
                        versions.append(current)
                    v = np.stack(versions)                                              # (k, n, F)
                    yp = model.scores(v.reshape((len(versions),) + x_batch.shape), y_batch)
                    deltas.append(y0[None] - yp)
                    a_sums.append((af[None] * (xf[None].astype(np.float64) - v)).sum(-1))
                deltas = np.concatenate(deltas).T                                           # (n, blocks)
                a_sums = np.concatenate(a_sums).T
                per_size.append(np.asarray(self.loss_func(a=deltas, b=a_sums, batched=True), np.float64))
            results.append(np.mean(np.stack(per_size, 1), -1))
        return list(np.mean(np.stack(results, 1), -1))


class Sufficiency(Metric):
    """Sufficiency (Dasgupta, Frost & Moshkovitz 2022, "Framework for evaluating faithfulness of local
    explanations", ICML, Def. 3): of the other samples of the batch whose explanations lie within
    ``threshold`` of a sample's (``distance_func`` distances divided by the batch's largest through
    ``normalise_func``), the fraction the model predicts the same class for; 0 when there is none.
    Scored within each batch of ``batch_size``, as Quantus does.

    ``'seuclidean'`` weighs each feature by its variance over the batch; features that do not vary
    (e.g. a border with zero relevance everywhere) are left out of the distance, where Quantus 0.6
    divides by their zero variance and scores every sample 0.
    """

    category = "Faithfulness"
    default_softmax = True

    def __init__(self, threshold: float = 0.6, distance_func: str | Callable = "seuclidean", abs: bool = True,
                 normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.threshold = float(threshold)
        self.distance_func = distance_func

    def distances(self, a: np.ndarray) -> np.ndarray:
        """The ``(n, n)`` distances between the flattened explanations."""
        from scipy.spatial.distance import cdist

        af = a.reshape(a.shape[0], -1).astype(np.float64)
        if isinstance(self.distance_func, str) and self.distance_func == "seuclidean":
            var = np.var(np.concatenate([af, af]), axis=0, ddof=1) if af.shape[0] > 1 else np.zeros(af.shape[1])
            keep = var > 0
            if not keep.any():
                return np.zeros((af.shape[0], af.shape[0]))
            return cdist(af[:, keep], af[:, keep], "seuclidean", V=var[keep])
        return cdist(af, af, self.distance_func)

    def evaluate_batch(self, *, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray | None,
                       a_batch: np.ndarray, s_batch: np.ndarray | None = None) -> list:
        n = x_batch.shape[0]
        dist = np.asarray(self.normalise_func(self.distances(a_batch)), np.float64)
        similar = (dist <= self.threshold) & ~np.eye(n, dtype=bool)
        pred = np.argmax(model.predict(x_batch), axis=1)
        same = pred[None, :] == pred[:, None]
        count = similar.sum(1)
        return list(np.divide((same & similar).sum(1), count, out=np.zeros(n), where=count > 0))
