"""Faithfulness metrics (Quantus' category, part A): does removing what an explanation calls important
change the model's output more than removing what it calls unimportant?

:class:`PixelFlipping`, :class:`RegionPerturbation`, :class:`Selectivity`, :class:`Monotonicity`,
:class:`MonotonicityCorrelation`, :class:`FaithfulnessEstimate`, :class:`IROF` and :class:`ROAD`, with
Quantus 0.6's names, keyword arguments and defaults (Hedström et al. 2023, JMLR 24(34)).

Batched: the perturbed inputs of every step of a batch are built at once (a step index per feature,
compared with each step) and passed to the model stacked, ``(k, n, ...)``, in as few calls as memory
allows (chunks of steps of at most ``max_elements`` numbers); there is no loop over samples.

Features are ordered as Quantus orders them: attributions broadcast to the input's shape and
flattened channels-first, sorted by a *stable* sort (Quantus uses numpy's default, unstable sort, so
equal attributions, e.g. one value per pixel broadcast over the channels, come in an arbitrary order
there; here ties keep the channels-first order, whatever the layout of the data). Without ties the
two agree exactly.

Baselines (``perturb_baseline``) follow Quantus' batched replacement: the value is computed per sample
from the input *as perturbed so far* (``'black'`` its minimum, ``'white'`` its maximum -- both
unchanged by the replacement -- and ``'mean'`` its current mean, which drifts as features are
replaced); ``'uniform'`` draws one value per feature from ``[uniform_low, uniform_high)`` (set in
``perturb_func_kwargs``) with the metric's ``seed`` (Quantus 0.6's batched replacement draws one value
per sample for all features of a step, unseeded); a number or an array (one sample's or the batch's
shape, channels-last) is used as given. ``perturb_func`` is not taken (the replacement is built in,
batched): passing one raises rather than being ignored.

Quantus' ``features_in_step`` must divide the spatial size of the inputs, as there.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...engine.errors import ExplainError
from .base import Metric
from .model import MetricModel
from .perturb import baseline as _baseline

__all__ = ["PixelFlipping", "RegionPerturbation", "Selectivity", "Monotonicity", "MonotonicityCorrelation",
           "FaithfulnessEstimate", "IROF", "ROAD", "noisy_linear_imputation"]

#: at most this many numbers in one stacked batch of perturbed inputs (the steps are chunked to fit)
MAX_ELEMENTS = 2 ** 25


# ---------------------------------------------------------------------- layouts and orderings

def _cf_flat(a: np.ndarray) -> np.ndarray:
    """Channels-last ``(n, *spatial, C)`` -> channels-first flattened ``(n, C * prod(spatial))``;
    feature vectors ``(n, D)`` unchanged."""
    a = np.asarray(a)
    if a.ndim <= 2:
        return a.reshape(a.shape[0], -1)
    return np.moveaxis(a, -1, 1).reshape(a.shape[0], -1)


def _from_cf_flat(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_cf_flat` for channels-last ``shape`` (leading axes of ``flat`` kept)."""
    lead = flat.shape[:-1]
    if len(shape) <= 2:
        return flat.reshape(lead + tuple(shape[1:]))
    cf = flat.reshape(lead + (shape[-1],) + tuple(shape[1:-1]))
    return np.moveaxis(cf, len(lead), -1)


def _cl_order(flat: np.ndarray, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
    """Channels-first flattened ``(n, F)`` (:func:`_cf_flat`) -> flattened in the channels-last
    layout of ``shape``, ``(n, F)``, contiguous (and cast to ``dtype``): an element-wise
    combination of such arrays is then the perturbed batch itself."""
    out = _from_cf_flat(np.asarray(flat), shape).reshape(flat.shape[0], -1)
    return np.ascontiguousarray(out, dtype=dtype)


def _broadcast_attributions(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.broadcast_to(a, x.shape) if a.shape != x.shape else a


def _ranks(values: np.ndarray, descending: bool) -> np.ndarray:
    """Position of each feature in a stable sort of each row (``(n, F)`` ints)."""
    order = np.argsort(-values if descending else values, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(values.shape[1])[None, :].repeat(values.shape[0], 0), axis=1)
    return ranks


def _step_chunks(k: int, per_step: int, max_elements: int) -> list[slice]:
    size = max(1, int(max_elements) // max(1, per_step))
    return [slice(s, min(k, s + size)) for s in range(0, k, size)]


#: unsigned integers of each float size: the bits a select copies
_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _stepped_inputs(step_of: np.ndarray, k: int, after: np.ndarray, before: np.ndarray,
                    cumulative: bool = True) -> Callable[[slice], np.ndarray]:
    """``build(steps)``: the inputs of the steps in the slice ``steps`` (within ``0..k-1``),
    ``(len(steps), n, F)``, each feature ``after`` from its step ``step_of`` on and ``before`` until
    then (``cumulative=False``: ``after`` at its step only) --
    ``np.where(step_of[None] <= steps, after[None], before[None])``.
    Built as a select on the values' bits, ``before ^ mask * (before ^ after)``: exact (every bit is
    copied from one side), and on the small CNN of the benchmark four times faster than NumPy's
    broadcasting ``where`` (0.8 against 3.7 ms for 96 steps of 8 x 3072 values)."""
    dtype = np.result_type(after, before)
    bits = _BITS[dtype.itemsize]
    base = np.ascontiguousarray(before, dtype).view(bits)
    flips = np.ascontiguousarray(after, dtype).view(bits) ^ base
    # a step of k or more is never reached (k, as any of them); the steps compared as int16 where
    # they fit (a fifth of int64's time)
    small = np.int16 if k < np.iinfo(np.int16).max else np.int64
    step_of = np.minimum(step_of, k).astype(small)

    def build(sl: slice) -> np.ndarray:
        if not 0 <= sl.start < sl.stop <= k:
            raise ValueError(f"steps {sl.start}..{sl.stop - 1} outside 0..{k - 1}")
        steps = np.arange(sl.start, sl.stop, dtype=small)[:, None, None]
        mask = (step_of[None] <= steps) if cumulative else (step_of[None] == steps)
        out = np.multiply(mask.view(np.uint8), flips, dtype=bits)
        out ^= base
        return out.view(dtype)

    return build


def _check_features_in_step(f: Any, name: str) -> int:
    if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, np.integer)) or f < 1:
        raise ExplainError(f"{name}: features_in_step must be a positive integer, got {f!r}")
    return int(f)


def _check_spatial_divisible(f: int, x: np.ndarray, name: str) -> None:
    spatial = int(np.prod(x.shape[1:-1])) if x.ndim > 2 else int(x.shape[1])
    if spatial % f:
        raise ExplainError(f"{name}: features_in_step={f} does not divide the spatial size {spatial} of the "
                           f"inputs {x.shape[1:]}")


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    out = np.zeros(a.shape[0])
    np.divide((a * b).sum(1), den, out=out, where=den > 0)
    return np.clip(out, -1.0, 1.0)


def _rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return _rowwise_pearson(rankdata(a, axis=1), rankdata(b, axis=1))


def _correlation(func: Callable | None, default: Callable, a: np.ndarray, b: np.ndarray, name: str) -> list:
    if func is None:
        out = default(a, b)
        constant = (np.ptp(a, axis=1) == 0) | (np.ptp(b, axis=1) == 0)
        if constant.any():
            warnings.warn(f"{name}: samples {np.flatnonzero(constant).tolist()} have a constant curve; their "
                          f"correlation is undefined and scored 0 (Quantus returns NaN)", stacklevel=3)
        return [float(v) for v in out]
    out = func(a=a, b=b, batched=True)
    return [float(v) for v in np.asarray(out, np.float64).reshape(-1)]


# ---------------------------------------------------------------------- the shared base

class _Perturbation(Metric):
    """Arguments every perturbation metric here shares: the baseline and the seed."""

    category = "Faithfulness"
    default_softmax = True

    def __init__(self, *, perturb_func: Callable | None = None, perturb_baseline: Any = "black",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, seed: int | None = 42,
                 max_elements: int = MAX_ELEMENTS, **kwargs: Any):
        super().__init__(**kwargs)
        name = type(self).__name__
        if perturb_func is not None:
            raise ExplainError(f"{name}: a custom perturb_func is not supported (the perturbation is built in "
                               f"and batched); choose perturb_baseline instead")
        extra = dict(perturb_func_kwargs or {})
        unknown = sorted(set(extra) - {"uniform_low", "uniform_high"})
        if unknown:
            raise ExplainError(f"{name}: perturb_func_kwargs {unknown} are not understood (only uniform_low, "
                               f"uniform_high for the 'uniform' baseline)")
        if isinstance(perturb_baseline, str) and perturb_baseline.lower() not in (
                "black", "white", "mean", "uniform"):
            raise ExplainError(f"{name}: perturb_baseline must be 'black', 'white', 'mean', 'uniform', a number "
                               f"or an array, got {perturb_baseline!r} (the neighbourhood baselines need a "
                               f"patch; Quantus' batched replacement does not take them either)")
        self.perturb_baseline = perturb_baseline
        self.perturb_func_kwargs = extra
        self.seed = seed
        self.max_elements = int(max_elements)
        self._rng = np.random.default_rng(seed)
        self._dtype = np.float32

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        # every call starts the random stream anew: the same call gives the same scores
        self._rng = np.random.default_rng(self.seed)
        self._dtype = x_batch.dtype if np.issubdtype(x_batch.dtype, np.floating) else np.float32
        if y_batch is None:
            raise ExplainError(f"{type(self).__name__} needs y_batch, the explained classes")
        if model is None:
            raise ExplainError(f"{type(self).__name__} needs the model")
        f = getattr(self, "features_in_step", None)
        if f is not None:
            _check_spatial_divisible(f, x_batch, type(self).__name__)

    # the values a perturbed feature takes ------------------------------------------------------
    def _fixed_baseline(self, x: np.ndarray) -> np.ndarray:
        """The baseline of channels-last ``x`` as the perturbed features' values (``'mean'`` excluded:
        it drifts, see :meth:`_cumulative_values`)."""
        return _baseline(self.perturb_baseline, x, rng=self._rng,
                         uniform_low=self.perturb_func_kwargs.get("uniform_low", 0.0),
                         uniform_high=self.perturb_func_kwargs.get("uniform_high", 1.0))

    def _cumulative_values(self, arr: np.ndarray, step_of: np.ndarray, k: int,
                           fixed: np.ndarray | None) -> np.ndarray:
        """What each feature of ``arr`` ``(n, F)`` becomes when replaced at step ``step_of`` (features
        replaced cumulatively, step after step). ``'mean'``: the mean of the sample as perturbed before
        that step (Quantus' batched replacement computes the baseline from the current array)."""
        if not (isinstance(self.perturb_baseline, str) and self.perturb_baseline.lower() == "mean"):
            return fixed
        n, F = arr.shape
        total = arr.sum(1, dtype=np.float64)
        means = np.empty((n, k))
        # sum over the features first replaced at each step, by a scatter-add per sample
        removed = np.zeros((n, k + 1))
        counts = np.zeros((n, k + 1))
        idx = np.minimum(step_of, k)
        np.add.at(removed, (np.arange(n)[:, None], idx), arr)
        np.add.at(counts, (np.arange(n)[:, None], idx), 1.0)
        for j in range(k):  # the recurrence over steps: each mean depends on the previous ones
            means[:, j] = total / F
            total = total - removed[:, j] + counts[:, j] * means[:, j]
        return np.take_along_axis(means, np.minimum(step_of, k - 1), axis=1)

    def _predict_stacked(self, model: MetricModel, x_shape: tuple[int, ...], y: np.ndarray, k: int,
                         build: Callable[[slice], np.ndarray], channels_last: bool = False) -> np.ndarray:
        """``(n, k)`` scores of class ``y`` for the ``k`` perturbed versions that ``build(steps)``
        returns as channels-first flattened ``(len(steps), n, F)`` (``channels_last``: flattened in
        the layout of ``x_shape``, which is passed to the model without a copy; see
        :func:`_cl_order`); stacked into one model call per chunk of steps."""
        n, F = x_shape[0], int(np.prod(x_shape[1:]))
        out = []
        for sl in _step_chunks(k, n * F, self.max_elements):
            flat = build(sl)
            xs = flat.reshape((-1,) + tuple(x_shape)) if channels_last else _from_cf_flat(flat, x_shape)
            out.append(model.scores(xs.astype(self._dtype, copy=False), y))
        return np.concatenate(out, 0).T


def _auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each row, unit spacing (Quantus' ``calculate_auc``)."""
    return np.trapezoid(curves, dx=1, axis=-1)


# ---------------------------------------------------------------------- pixel flipping

class PixelFlipping(_Perturbation):
    """Pixel-flipping (Bach et al. 2015, PLoS ONE 10(7) e0130140): the features are replaced by the
    baseline in order of decreasing attribution, ``features_in_step`` at a time and cumulatively;
    the score of the explained class after each step is the curve (``return_auc_per_sample``: its
    trapezoidal area instead). One model call per chunk of steps over the whole batch."""

    higher_is_better = False

    def __init__(self, features_in_step: int = 1, abs: bool = False, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "black",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, return_auc_per_sample: bool = False,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, perturb_baseline=perturb_baseline,
                         perturb_func_kwargs=perturb_func_kwargs, seed=seed, **kwargs)
        self.features_in_step = _check_features_in_step(features_in_step, type(self).__name__)
        self.return_auc_per_sample = bool(return_auc_per_sample)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        arr = _cf_flat(x_batch).astype(np.float64)
        F = arr.shape[1]
        a = _cf_flat(_broadcast_attributions(a_batch, x_batch))
        k = math.ceil(F / self.features_in_step)
        step_of = _ranks(a, descending=True) // self.features_in_step
        fixed = None if _is_mean(self.perturb_baseline) else _cf_flat(self._fixed_baseline(x_batch))
        values = self._cumulative_values(arr, step_of, k, fixed)
        # the perturbed inputs are built in the model's dtype and layout (the replacement is a
        # selection: casting before it gives the same values as after)
        arr, values, step_of = (_cl_order(v, x_batch.shape, d) for v, d in
                                ((arr, self._dtype), (values, self._dtype), (step_of, None)))

        build = _stepped_inputs(step_of, k, after=values, before=arr)

        curves = self._predict_stacked(model, x_batch.shape, y_batch, k, build, channels_last=True)
        if self.return_auc_per_sample:
            return [float(v) for v in _auc(curves)]
        return [list(map(float, c)) for c in curves]

    @property
    def get_auc_score(self) -> float:
        """Mean area under the curves of the last call."""
        return float(np.mean([_auc(np.asarray(c)) for c in self.evaluation_scores]))


def _is_mean(value: Any) -> bool:
    return isinstance(value, str) and value.lower() == "mean"


# ---------------------------------------------------------------------- regions (patches)

def _image_view(x: np.ndarray, name: str) -> np.ndarray:
    """Channels-last ``(n, H, W, C)``; ``(n, T, C)`` as ``(n, 1, T, C)`` (as Quantus treats series)."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x[:, None]
    raise ExplainError(f"{name} works on images (n, H, W, C) or series (n, T, C), got shape {x.shape}")


def _padding(dim: int, patch: int) -> tuple[int, int]:
    rest = dim % patch
    if rest == 0:
        return (0, 0)
    total = patch - rest
    return (total // 2, total - total // 2)


class _Patches(_Perturbation):
    """Square patches of ``patch_size`` (the image padded at the edges to a multiple, as Quantus
    does: inputs repeated at the border, attributions by zeros), ranked by their attribution sum."""

    def _check_patch(self, patch_size: Any) -> int:
        if isinstance(patch_size, (bool, np.bool_)) or not isinstance(patch_size, (int, np.integer)) \
                or patch_size < 1:
            raise ExplainError(f"{type(self).__name__}: patch_size must be a positive integer, got {patch_size!r}")
        return int(patch_size)

    def _curves(self, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray,
                order: str, max_regions: int | None) -> np.ndarray:
        """The explained scores ``(n, k)`` after each of the first ``k`` patches (all, or
        ``max_regions``) is replaced, cumulatively, in ``order``."""
        name = type(self).__name__
        orig_shape = x_batch.shape
        x = _image_view(x_batch, name)
        a = _image_view(_broadcast_attributions(a_batch, x_batch), name)
        n, H, W, C = x.shape
        p = self.patch_size
        ph, pw = _padding(H, p), _padding(W, p)
        pad = ((0, 0), ph, pw, (0, 0))
        xp = np.pad(x.astype(np.float64), pad, mode="edge")
        ap = np.pad(np.asarray(a, np.float64), pad, mode="constant")
        Hp, Wp = xp.shape[1:3]
        bh, bw = Hp // p, Wp // p
        # the patch each padded pixel belongs to, row-major over the grid of patches
        patch_id = (np.arange(Hp)[:, None] // p) * bw + np.arange(Wp)[None, :] // p
        sums = ap.reshape(n, bh, p, bw, p, C).sum(axis=(2, 4, 5)).reshape(n, bh * bw)
        n_patches = bh * bw
        if order == "random":
            patch_rank = np.argsort(self._rng.random((n, n_patches)), axis=1)
        else:
            patch_rank = _ranks(sums, descending=(order == "morf"))
        k = n_patches if max_regions is None else min(int(max_regions), n_patches)
        pixel_step = np.take_along_axis(patch_rank, np.broadcast_to(patch_id.reshape(1, -1), (n, Hp * Wp)), 1)
        step_of = np.repeat(pixel_step.reshape(n, 1, Hp * Wp), C, axis=1).reshape(n, -1)  # channels-first
        step_of = np.where(step_of < k, step_of, np.iinfo(np.int64).max)
        arr = _cf_flat(xp)
        if _is_mean(self.perturb_baseline):
            fixed = None
        else:
            base = self._fixed_baseline(x)
            if base.shape != x.shape:
                base = np.broadcast_to(base, x.shape)
            fixed = _cf_flat(np.pad(np.asarray(base, np.float64), pad, mode="edge"))
        values = self._cumulative_values(arr, step_of, k, fixed)
        keep_h = slice(ph[0], Hp - ph[1])
        keep_w = slice(pw[0], Wp - pw[1])

        def unpadded(v: np.ndarray, dtype: Any) -> np.ndarray:
            """The padded channels-first features cropped back to the input, in the input's layout."""
            v = np.broadcast_to(v, (n, C * Hp * Wp)).reshape(n, C, Hp, Wp)[:, :, keep_h, keep_w]
            return _cl_order(v.reshape(n, -1), orig_shape, dtype)

        arr, values, step_of = unpadded(arr, self._dtype), unpadded(values, self._dtype), unpadded(step_of, None)

        build = _stepped_inputs(step_of, k, after=values, before=arr)

        return self._predict_stacked(model, orig_shape, y_batch, k, build, channels_last=True)


class RegionPerturbation(_Patches):
    """Region perturbation (Samek et al. 2017, IEEE TNNLS 28(11)): square patches replaced by the
    baseline in the order of their attribution sums (``order``: ``'morf'`` most relevant first,
    ``'lerf'`` least relevant first, ``'random'`` seeded), cumulatively, for ``regions_evaluation``
    steps; the curve is the score of the explained class before minus after each step."""

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """The curve holds drops: most relevant first, larger drops are better; least relevant first,
        smaller ones (Quantus 0.6.0 declares 'lower' in both orders)."""
        return self.order != "lerf"

    def __init__(self, patch_size: int = 8, order: str = "morf", regions_evaluation: int = 100,
                 abs: bool = False, normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, perturb_func: Callable | None = None,
                 perturb_baseline: Any = "black", perturb_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, perturb_baseline=perturb_baseline,
                         perturb_func_kwargs=perturb_func_kwargs, seed=seed, **kwargs)
        self.patch_size = self._check_patch(patch_size)
        if not isinstance(order, str) or order.lower() not in ("morf", "lerf", "random"):
            raise ExplainError(f"RegionPerturbation: order must be 'morf', 'lerf' or 'random', got {order!r}")
        self.order = order.lower()
        if isinstance(regions_evaluation, (bool, np.bool_)) or not isinstance(regions_evaluation, (int, np.integer)) \
                or regions_evaluation < 1:
            raise ExplainError(f"RegionPerturbation: regions_evaluation must be a positive integer, got "
                               f"{regions_evaluation!r}")
        self.regions_evaluation = int(regions_evaluation)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        y0 = model.scores(x_batch, y_batch)
        curves = self._curves(model, x_batch, y_batch, a_batch, self.order, self.regions_evaluation)
        return [list(map(float, c)) for c in y0[:, None] - curves]

    @property
    def get_auc_score(self) -> float:
        """Mean area under the curves of the last call."""
        return float(np.mean([_auc(np.asarray(c)) for c in self.evaluation_scores]))


class Selectivity(_Patches):
    """Selectivity (Montavon et al. 2018, Digital Signal Processing 73): square patches replaced by
    the baseline in order of decreasing attribution sum, cumulatively, until all are; the curve is
    the score of the explained class after each step (lower area: better)."""

    higher_is_better = False

    def __init__(self, patch_size: int = 8, abs: bool = False, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "black",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int | None = 42,
                 **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, perturb_baseline=perturb_baseline,
                         perturb_func_kwargs=perturb_func_kwargs, seed=seed, **kwargs)
        self.patch_size = self._check_patch(patch_size)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        curves = self._curves(model, x_batch, y_batch, a_batch, "morf", None)
        return [list(map(float, c)) for c in curves]

    @property
    def get_auc_score(self) -> float:
        """Mean area under the curves of the last call."""
        return float(np.mean([_auc(np.asarray(c)) for c in self.evaluation_scores]))


# ---------------------------------------------------------------------- monotonicity

class Monotonicity(_Perturbation):
    """Monotonicity (Arya et al. 2019, arXiv:1909.03012): starting from the baseline, the input's
    features are put back in order of *increasing* attribution, ``features_in_step`` at a time; the
    explanation is monotonic (True) when the score of the explained class never decreases.

    Differs from Quantus 0.6.0: there the batched loop replaces the baseline by the baseline again,
    so the input never comes back, every curve is flat and every sample scores True. Here the
    original features are inserted, as the paper defines it."""

    def __init__(self, features_in_step: int = 1, abs: bool = True, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "black",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int | None = 42,
                 **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, perturb_baseline=perturb_baseline,
                         perturb_func_kwargs=perturb_func_kwargs, seed=seed, **kwargs)
        self.features_in_step = _check_features_in_step(features_in_step, type(self).__name__)

    def curves(self, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray,
               a_batch: np.ndarray) -> np.ndarray:
        """The scores after each insertion step, ``(n, k)``."""
        arr = _cf_flat(x_batch).astype(np.float64)
        F = arr.shape[1]
        a = _cf_flat(_broadcast_attributions(a_batch, x_batch))
        k = math.ceil(F / self.features_in_step)
        step_of = _ranks(a, descending=False) // self.features_in_step
        base = _cf_flat(self._fixed_baseline(x_batch)) if not _is_mean(self.perturb_baseline) else \
            np.broadcast_to(arr.mean(1, keepdims=True), arr.shape)
        arr, base, step_of = (_cl_order(v, x_batch.shape, d) for v, d in
                              ((arr, self._dtype), (base, self._dtype), (step_of, None)))

        build = _stepped_inputs(step_of, k, after=arr, before=base)

        return self._predict_stacked(model, x_batch.shape, y_batch, k, build, channels_last=True)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        curves = self.curves(model, x_batch, y_batch, a_batch)
        return [bool(v) for v in np.all(np.diff(curves, axis=1) >= 0, axis=1)]


class MonotonicityCorrelation(_Perturbation):
    """Monotonicity correlation (Nguyen & Martínez 2020, arXiv:2007.07584): for each group of
    ``features_in_step`` features (in order of increasing attribution), the group alone is replaced
    by the baseline ``nr_samples`` times; the variance of the explained score,
    ``mean((f(x') - f(x))^2) / f(x)^2`` (``1`` instead of ``1/f(x)^2`` where ``|f(x)| < eps``), should
    grow with the group's attribution: the score is the Spearman correlation of the two over the
    groups (``similarity_func(a=..., b=..., batched=True)`` instead if given).

    ``'uniform'`` draws one value per feature and draw (Quantus 0.6's batched replacement draws one
    value per sample for the whole group); a correlation of constant curves scores 0 with a warning
    (Quantus: NaN)."""

    def __init__(self, similarity_func: Callable | None = None, eps: float = 1e-5, nr_samples: int = 100,
                 features_in_step: int = 1, abs: bool = True, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "uniform",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int | None = 42,
                 **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, perturb_baseline=perturb_baseline,
                         perturb_func_kwargs=perturb_func_kwargs, seed=seed, **kwargs)
        self.features_in_step = _check_features_in_step(features_in_step, type(self).__name__)
        if isinstance(nr_samples, (bool, np.bool_)) or not isinstance(nr_samples, (int, np.integer)) or nr_samples < 1:
            raise ExplainError(f"MonotonicityCorrelation: nr_samples must be a positive integer, got {nr_samples!r}")
        if not float(eps) >= 0:
            raise ExplainError(f"MonotonicityCorrelation: eps must be >= 0, got {eps!r}")
        self.similarity_func = similarity_func
        self.eps = float(eps)
        self.nr_samples = int(nr_samples)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        n = x_batch.shape[0]
        y0 = model.scores(x_batch, y_batch)
        inv = np.where(np.abs(y0) >= self.eps, 1.0 / np.where(y0 == 0, 1.0, np.abs(y0)), 1.0) ** 2
        arr = _cf_flat(x_batch).astype(np.float64)
        F = arr.shape[1]
        a = _cf_flat(_broadcast_attributions(a_batch, x_batch)).astype(np.float64)
        k = math.ceil(F / self.features_in_step)
        step_of = _ranks(a, descending=False) // self.features_in_step
        r = self.nr_samples
        random = isinstance(self.perturb_baseline, str) and self.perturb_baseline.lower() == "uniform"
        fixed = None if (random or _is_mean(self.perturb_baseline)) else _cf_flat(self._fixed_baseline(x_batch))
        mean = arr.mean(1, keepdims=True)

        def build(steps: np.ndarray) -> np.ndarray:
            # every draw of every step: (len(steps) * r, n, F), the draws of a step together
            steps = np.repeat(steps, r)[:, None, None]
            mask = step_of[None] == steps
            if random:  # a fresh draw per feature, step and repetition (perturb.baseline's 'uniform')
                vals = self._fixed_baseline(np.empty((steps.shape[0] * n, F))).reshape(steps.shape[0], n, F)
            elif fixed is None:
                vals = mean[None]
            else:
                vals = fixed[None]
            return np.where(mask, vals, arr[None])

        out = []
        for sl in _step_chunks(k, n * F * r, self.max_elements):
            flat = build(np.arange(sl.start, sl.stop))
            out.append(model.scores(_from_cf_flat(flat, x_batch.shape).astype(self._dtype), y_batch))
        scores = np.concatenate(out, 0).reshape(k, r, n)
        var = ((scores - y0[None, None]) ** 2).mean(1).T * inv[:, None]
        atts = np.zeros((n, k))
        np.add.at(atts, (np.arange(n)[:, None], step_of), a)
        return _correlation(self.similarity_func, _rowwise_spearman, atts, var, type(self).__name__)


class FaithfulnessEstimate(_Perturbation):
    """Faithfulness estimate (Alvarez-Melis & Jaakkola 2018, NeurIPS): each group of
    ``features_in_step`` features (in order of decreasing attribution) is replaced by the baseline
    alone; the score is the Pearson correlation, over the groups, of the group's attribution sum
    with the drop of the explained score (``similarity_func(a=..., b=..., batched=True)`` if given).
    A correlation of constant curves scores 0 with a warning (Quantus: NaN)."""

    default_softmax = False

    def __init__(self, similarity_func: Callable | None = None, features_in_step: int = 1, abs: bool = False,
                 normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, perturb_func: Callable | None = None,
                 perturb_baseline: Any = "black", perturb_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, perturb_baseline=perturb_baseline,
                         perturb_func_kwargs=perturb_func_kwargs, seed=seed, **kwargs)
        self.features_in_step = _check_features_in_step(features_in_step, type(self).__name__)
        self.similarity_func = similarity_func

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        n = x_batch.shape[0]
        y0 = model.scores(x_batch, y_batch)
        arr = _cf_flat(x_batch).astype(np.float64)
        F = arr.shape[1]
        a = _cf_flat(_broadcast_attributions(a_batch, x_batch)).astype(np.float64)
        k = math.ceil(F / self.features_in_step)
        step_of = _ranks(a, descending=True) // self.features_in_step
        values = (np.broadcast_to(arr.mean(1, keepdims=True), arr.shape) if _is_mean(self.perturb_baseline)
                  else _cf_flat(self._fixed_baseline(x_batch)))

        build = _stepped_inputs(step_of, k, after=values, before=arr, cumulative=False)

        scores = self._predict_stacked(model, x_batch.shape, y_batch, k, build)
        atts = np.zeros((n, k))
        np.add.at(atts, (np.arange(n)[:, None], step_of), a)
        return _correlation(self.similarity_func, _rowwise_pearson, atts, y0[:, None] - scores,
                            type(self).__name__)


# ---------------------------------------------------------------------- IROF

def _segment(method: str | Callable, img: np.ndarray) -> np.ndarray:
    if callable(method):
        return np.asarray(method(img))
    try:
        from skimage.segmentation import felzenszwalb, slic
    except ImportError:  # pragma: no cover - depends on the environment
        raise ExplainError("IROF's segmentation_method 'slic' / 'felzenszwalb' needs scikit-image (pip "
                           "install 'interprettensor[analysis]'), or pass a callable img -> labels") from None
    return slic(img, start_label=0) if method == "slic" else felzenszwalb(img)


class IROF(_Perturbation):
    """Iterative removal of features (Rieger & Hansen 2020, arXiv:2003.08747): the image is cut into
    superpixels (``segmentation_method``: ``'slic'`` or ``'felzenszwalb'`` of scikit-image as Quantus
    calls them, or a callable ``img (H, W, C) -> labels (H, W)``), which are replaced by the baseline
    in order of decreasing mean attribution, cumulatively; the score is the area over the curve of
    the explained score relative to the unperturbed one, ``m - trapz(f(x_j) / f(x))`` for ``m``
    segments (Quantus' definition).

    Differs from Quantus 0.6.0, where the method fails for inputs with more than one channel (a mask
    without the channel axis against the inputs) and, with several samples in a batch, computes the
    baseline over the whole batch and pads shorter segment lists with zeros into the area: here each
    sample is scored on its own (Quantus with ``batch_size=1``, on one-channel inputs), with its own
    baseline (its current mean, ``'mean'``, or minimum, ``'black'``, ...) and all channels replaced."""

    def __init__(self, segmentation_method: str | Callable = "slic", abs: bool = False, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "mean",
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = True,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int | None = 42,
                 **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, perturb_baseline=perturb_baseline,
                         perturb_func_kwargs=perturb_func_kwargs, seed=seed, **kwargs)
        if not callable(segmentation_method) and segmentation_method not in ("slic", "felzenszwalb"):
            raise ExplainError(f"IROF: segmentation_method must be 'slic', 'felzenszwalb' or a callable, got "
                               f"{segmentation_method!r}")
        self.segmentation_method = segmentation_method

    def segments(self, x_batch: np.ndarray) -> np.ndarray:
        """Superpixel labels ``(n, H, W)``, relabelled ``0..m-1`` per sample."""
        if x_batch.ndim != 4:
            raise ExplainError(f"IROF works on images (n, H, W, C), got shape {x_batch.shape}")
        out = []
        for img in x_batch.astype(np.float64):  # the segmentation is per image (scikit-image)
            seg = _segment(self.segmentation_method, img)
            if seg.shape != img.shape[:2]:
                raise ExplainError(f"IROF: the segmentation of an image {img.shape} has shape {seg.shape}; "
                                   f"expected {img.shape[:2]}")
            labels = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
            if labels.max() < 1:
                raise ExplainError("IROF: the segmentation found a single segment; it needs at least two")
            out.append(labels)
        return np.stack(out)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        seg = self.segments(x_batch)
        n, H, W, C = x_batch.shape
        y0 = model.scores(x_batch, y_batch)
        if np.any(y0 == 0):
            raise ExplainError(f"IROF divides by the unperturbed score, which is 0 for samples "
                               f"{np.flatnonzero(y0 == 0).tolist()}")
        a = np.asarray(_broadcast_attributions(a_batch, x_batch), np.float64).sum(-1).reshape(n, -1)
        flat = seg.reshape(n, -1)
        m = flat.max(1) + 1
        M = int(m.max())
        sums = np.zeros((n, M))
        counts = np.zeros((n, M))
        np.add.at(sums, (np.arange(n)[:, None], flat), a)
        np.add.at(counts, (np.arange(n)[:, None], flat), 1.0)
        means = np.divide(sums, counts * C, out=np.full((n, M), -np.inf), where=counts > 0)
        seg_rank = _ranks(means, descending=True)  # absent segments (-inf) come last
        pixel_step = np.take_along_axis(seg_rank, flat, axis=1)
        step_of = np.repeat(pixel_step[:, None, :], C, axis=1).reshape(n, -1)
        arr = _cf_flat(x_batch).astype(np.float64)
        fixed = None if _is_mean(self.perturb_baseline) else _cf_flat(self._fixed_baseline(x_batch))
        values = self._cumulative_values(arr, step_of, M, fixed)

        build = _stepped_inputs(step_of, M, after=values, before=arr)

        curves = self._predict_stacked(model, x_batch.shape, y_batch, M, build) / y0[:, None]
        return [float(m[i] - _auc(curves[i, :m[i]])) for i in range(n)]

    @property
    def get_aoc_score(self) -> float:
        """Mean area over the curve of the last call."""
        return float(np.mean(self.evaluation_scores))


# ---------------------------------------------------------------------- ROAD

#: the neighbours of a pixel and their weights in the imputation (Rong et al. 2022): the
#: direct neighbours 1/6, the diagonal ones 1/12
_NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6),
               (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


def noisy_linear_imputation(x: np.ndarray, masks: np.ndarray, noise: float = 0.01,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """Noisy linear imputation (Rong et al. 2022, ICML, "A consistent and efficient evaluation
    strategy for attribution methods"): the pixels where ``masks`` is true are replaced, in every
    channel, by the solution of the linear system making each a weighted mean of its neighbours
    (:data:`_NEIGHBOURS`, weights renormalised at the border), plus Gaussian noise of standard
    deviation ``noise``.

    ``x`` ``(n, H, W, C)`` images, ``masks`` ``(m, n, H, W)`` boolean (``m`` masks per image); returns
    ``(m, n, H, W, C)``. All systems are solved as one block-diagonal sparse system."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    x = np.asarray(x, np.float64)
    masks = np.asarray(masks, bool)
    m, n, H, W = masks.shape
    C = x.shape[-1]
    # unknowns: every masked pixel of every (mask, image) system, numbered consecutively
    var = np.full(masks.shape, -1, np.int64)
    sys_idx, img_idx, rows, cols = np.nonzero(masks)
    var[sys_idx, img_idx, rows, cols] = np.arange(len(rows))
    N = len(rows)
    out = np.broadcast_to(x, (m,) + x.shape).copy()
    if N == 0:
        return out
    diag = np.ones(N)
    b = np.zeros((N, C))
    r_list, c_list, v_list = [], [], []
    for dr, dc, w in _NEIGHBOURS:
        rr, cc = rows + dr, cols + dc
        inside = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        diag[~inside] -= w
        ids = np.flatnonzero(inside)
        nb_var = var[sys_idx[ids], img_idx[ids], rr[ids], cc[ids]]
        unknown = nb_var >= 0
        r_list.append(ids[unknown])
        c_list.append(nb_var[unknown])
        v_list.append(np.full(int(unknown.sum()), w))
        known = ids[~unknown]
        b[known] -= w * x[img_idx[known], rr[known], cc[known]]
    r_all = np.concatenate(r_list + [np.arange(N)])
    c_all = np.concatenate(c_list + [np.arange(N)])
    v_all = np.concatenate(v_list + [-diag])
    A = csc_matrix((v_all, (r_all, c_all)), shape=(N, N))
    sol = spsolve(A, b)
    sol = np.asarray(sol).reshape(N, C)
    if noise:
        rng = np.random.default_rng() if rng is None else rng
        sol = sol + float(noise) * rng.standard_normal(sol.shape)
    out[sys_idx, img_idx, rows, cols] = sol
    return out


class ROAD(_Perturbation):
    """ROAD, remove and debias (Rong et al. 2022, ICML): for each percentage ``p`` of
    ``percentages`` (default 1, 3, ..., 99) the ``p`` % most relevant pixels are replaced by noisy
    linear imputation (:func:`noisy_linear_imputation`, noise ``noise``, seeded); the result, as in
    Quantus, is a dict ``{p: fraction of the samples still classified as y}`` over all samples.

    Differs from Quantus 0.6.0: there the method ranks the ``C*H*W`` features but imputes an image
    by pixel indices, which fails for images with more than one channel, and it averages only the
    first batch. Here pixels are ranked by their attribution (summed over the channels when the
    attributions have them), ``int(H*W*p/100)`` pixels are imputed in all channels, and all samples
    count. On one-channel images both agree."""

    higher_is_better = False

    def __init__(self, percentages: Sequence[float] | None = None, noise: float = 0.01, abs: bool = False,
                 normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, perturb_func: Callable | None = None,
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int | None = 42,
                 **kwargs: Any):
        if perturb_func_kwargs:
            raise ExplainError(f"ROAD: perturb_func_kwargs {sorted(perturb_func_kwargs)} are not understood; "
                               f"the imputation takes noise=")
        if return_aggregate:
            raise ExplainError("ROAD returns the curve averaged over the samples already (a dict); "
                               "return_aggregate=True is not supported")
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=False,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar,
                         perturb_func=perturb_func, seed=seed, **kwargs)
        pct = list(range(1, 100, 2)) if percentages is None else list(percentages)
        if not pct or any(not (0 <= float(p) <= 100) for p in pct):
            raise ExplainError(f"ROAD: percentages must be numbers in [0, 100], got {percentages!r}")
        if not float(noise) >= 0:
            raise ExplainError(f"ROAD: noise must be >= 0, got {noise!r}")
        self.percentages = pct
        self.noise = float(noise)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        if x_batch.ndim != 4:
            raise ExplainError(f"ROAD works on images (n, H, W, C), got shape {x_batch.shape}")
        n, H, W, C = x_batch.shape
        a = np.asarray(a_batch, np.float64).sum(-1).reshape(n, -1)
        ranks = _ranks(a, descending=True).reshape(n, H, W)
        counts = [int(H * W * float(p) / 100) for p in self.percentages]
        results = np.zeros((n, len(counts)), np.int64)
        for sl in _step_chunks(len(counts), n * H * W * C, self.max_elements):
            masks = ranks[None] < np.asarray(counts[sl])[:, None, None, None]
            xs = noisy_linear_imputation(x_batch, masks, self.noise, self._rng)
            pred = model.predict(xs.reshape((-1,) + x_batch.shape[1:]).astype(self._dtype))
            results[:, sl] = (pred.argmax(-1).reshape(-1, n) == np.asarray(y_batch)[None]).T
        return [r for r in results]

    def custom_postprocess(self, scores: list) -> dict:
        mean = np.mean(np.stack(scores), axis=0)
        return {p: float(v) for p, v in zip(self.percentages, mean)}
