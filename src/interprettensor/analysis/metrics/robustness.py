"""Robustness metrics (Quantus' category of that name): how much an explanation changes when the
input changes a little (and the model's decision does not).

:class:`MaxSensitivity`, :class:`AvgSensitivity` (Yeh et al. 2019), :class:`LocalLipschitzEstimate`
(Alvarez-Melis & Jaakkola 2018), :class:`Continuity` (Montavon et al. 2018), :class:`Consistency`
(Dasgupta et al. 2022), :class:`RelativeInputStability`, :class:`RelativeOutputStability`,
:class:`RelativeRepresentationStability` (Agarwal et al. 2022), with Quantus 0.6's keyword arguments
and defaults.

Batched: the ``nr_samples`` perturbed versions of a batch of ``n`` inputs are drawn at once, stacked
into ``nr_samples * n`` inputs and explained by ONE ``explain_func`` call (and predicted by one
:class:`~.model.MetricModel` call, split only into ``batch_size`` chunks); stacks larger than
:data:`MAX_STACKED_FEATURES` values are split into several such calls. Each perturbation step's
explanations are normalised on their own (Quantus normalises each re-explained batch).

The functions a metric takes follow Quantus' batched signatures, on 2-D arrays whose rows are the
``N = k * n`` stacked samples (flattened):

* ``perturb_func(arr, indices, **perturb_func_kwargs) -> (N, d)``: ``arr`` ``(N, d)``, ``indices``
  ``(N, d)`` the features to perturb (all of them here). A function with an ``rng`` parameter (those
  here) gets the metric's seeded :class:`numpy.random.Generator`; one without (e.g. Quantus'
  ``batch_uniform_noise``) draws its own randomness, and ``seed=`` does not reach it.
  (:class:`Continuity`'s ``perturb_func`` takes channels-last inputs instead, see there.)
* ``similarity_func(a, b, **kw) -> (N, d) or (N,)`` and ``norm_numerator`` / ``norm_denominator``
  ``(a) -> (N,)`` (:class:`LocalLipschitzEstimate`: ``similarity_func(a, b, c, d, norm_numerator,
  norm_denominator) -> (N,)`` and distances ``(a, b) -> (N,)``).
* ``discretise_func(a) -> (N,)`` or ``(N, m)`` labels of the flattened attributions ``(N, d)``.

Quantus' own batched functions (``quantus.functions.similarity_func.difference``,
``norm_func.fro_norm``, ``perturb_func.batch_uniform_noise``, ...) therefore work unchanged; its
per-sample functions (``uniform_noise`` with ``indexed_axes``, ``discretise_func.top_n_sign``) are
refused with an error saying which signature is needed.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from ...engine.errors import ExplainError
from .base import Metric, normalise_by_max
from .model import MetricModel, to_channels_first
from .perturb import baseline
from .randomisation import normalise_by_average_second_moment_estimate

__all__ = ["MaxSensitivity", "AvgSensitivity", "LocalLipschitzEstimate", "Continuity", "Consistency",
           "RelativeInputStability", "RelativeOutputStability", "RelativeRepresentationStability",
           "uniform_noise", "gaussian_noise", "batched_translation", "difference", "fro_norm", "l2_norm",
           "linf_norm", "distance_euclidean", "distance_manhattan", "lipschitz_constant", "top_n_sign",
           "MAX_STACKED_FEATURES"]

#: at most this many input values (steps x samples x features) are explained in one call: 2**21, about
#: 14 images of 224 x 224 x 3, whose gradient through VGG16 keeps about 2 GB of activations (at 2**24,
#: MaxSensitivity's 10 x 8 such images went into one explanation call of over 6 GB and were killed for
#: memory on a 24 GB machine); a batch's steps still go together below it (small inputs)
MAX_STACKED_FEATURES = 1 << 21


# ---------------------------------------------------------------------------------------------- functions

def uniform_noise(arr: np.ndarray, indices: np.ndarray | None = None, lower_bound: float = 0.02,
                  upper_bound: float | None = None, rng: np.random.Generator | None = None,
                  **kwargs: Any) -> np.ndarray:
    """``arr`` ``(N, d)`` plus noise drawn uniformly from ``[-lower_bound, lower_bound)`` (no
    ``upper_bound``) or ``[lower_bound, upper_bound)`` at the features ``indices`` ``(N, m)`` (all if
    None); the result keeps ``arr``'s floating dtype (Quantus' ``batch_uniform_noise``)."""
    arr = _rows(arr, "uniform_noise")
    if upper_bound is None:
        low, high = -float(lower_bound), float(lower_bound)
    else:
        if not upper_bound > lower_bound:
            raise ExplainError(f"upper_bound ({upper_bound}) must be larger than lower_bound ({lower_bound})")
        low, high = float(lower_bound), float(upper_bound)
    rng = np.random.default_rng() if rng is None else rng
    return _add_at(arr, rng.uniform(low, high, arr.shape), indices)


def gaussian_noise(arr: np.ndarray, indices: np.ndarray | None = None, perturb_mean: float = 0.0,
                   perturb_std: float = 0.01, rng: np.random.Generator | None = None,
                   **kwargs: Any) -> np.ndarray:
    """``arr`` ``(N, d)`` plus normal noise ``N(perturb_mean, perturb_std**2)`` at the features
    ``indices`` (all if None), keeping ``arr``'s floating dtype (Quantus' ``batch_gaussian_noise``)."""
    arr = _rows(arr, "gaussian_noise")
    rng = np.random.default_rng() if rng is None else rng
    return _add_at(arr, rng.normal(float(perturb_mean), float(perturb_std), arr.shape), indices)


#: Quantus' names of the same functions
batch_uniform_noise = uniform_noise
batch_gaussian_noise = gaussian_noise


def batched_translation(arr: np.ndarray, perturb_baseline: Any = "black", perturb_dx: int = 10,
                        direction: str = "x", rng: np.random.Generator | None = None, uniform_low: float = 0.0,
                        uniform_high: float = 1.0, **kwargs: Any) -> np.ndarray:
    """Channels-last images ``(n, H, W, C)`` (or series ``(n, T, C)``) shifted by ``perturb_dx``
    pixels along the width (``direction='x'``; the series' time axis) or the height (``'y'``),
    positive to the right/down; uncovered pixels get ``perturb_baseline`` (per sample, as
    :func:`~.perturb.baseline`, ``'uniform'`` drawn from ``rng`` in ``[uniform_low, uniform_high)``). A
    shift of the whole size or more leaves only the baseline."""
    arr = np.asarray(arr)
    if direction not in ("x", "y"):
        raise ExplainError(f"direction must be 'x' or 'y', got {direction!r}")
    if arr.ndim == 3:
        if direction == "y":
            raise ExplainError("series (n, T, C) translate along their time axis only (direction='x')")
        axis = 1
    elif arr.ndim == 4:
        axis = 2 if direction == "x" else 1
    else:
        raise ExplainError(f"translation needs images (n, H, W, C) or series (n, T, C), got shape {arr.shape}")
    fill = baseline(perturb_baseline, arr.reshape(arr.shape[0], -1), rng, uniform_low,
                    uniform_high).reshape(arr.shape)
    size, dx = arr.shape[axis], int(perturb_dx)
    pos = np.arange(size) - dx  # source position of each target position
    valid = (pos >= 0) & (pos < size)
    shifted = np.take(arr, np.clip(pos, 0, size - 1), axis=axis)
    shape = [1] * arr.ndim
    shape[axis] = size
    return np.where(valid.reshape(shape), shifted, fill).astype(arr.dtype, copy=False)


def difference(a: np.ndarray, b: np.ndarray, **kwargs: Any) -> np.ndarray:
    """``a - b`` (rows are samples)."""
    return np.asarray(a) - np.asarray(b)


def fro_norm(a: np.ndarray, **kwargs: Any) -> np.ndarray:
    """The Frobenius (L2) norm of each row of ``a`` ``(N, d)``: ``(N,)``."""
    return np.linalg.norm(np.asarray(a), axis=-1)


def l2_norm(a: np.ndarray, **kwargs: Any) -> np.ndarray:
    """The L2 norm of each row of ``a`` ``(N, d)``: ``(N,)``."""
    return np.linalg.norm(np.asarray(a), axis=-1)


def linf_norm(a: np.ndarray, **kwargs: Any) -> np.ndarray:
    """The largest magnitude in each row of ``a`` ``(N, d)``: ``(N,)``."""
    return np.linalg.norm(np.asarray(a), ord=np.inf, axis=-1)


def distance_euclidean(a: np.ndarray, b: np.ndarray, **kwargs: Any) -> np.ndarray:
    """``||a - b||_2`` per row: ``(N,)``."""
    return np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).sum(axis=-1))


def distance_manhattan(a: np.ndarray, b: np.ndarray, **kwargs: Any) -> np.ndarray:
    """``||a - b||_1`` per row: ``(N,)``."""
    return np.abs(np.asarray(a) - np.asarray(b)).sum(axis=-1)


def lipschitz_constant(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray,
                       norm_numerator: Callable = distance_manhattan, norm_denominator: Callable = distance_euclidean,
                       **kwargs: Any) -> np.ndarray:
    """The local Lipschitz ratio ``norm_numerator(a, b) / (norm_denominator(c, d) + 1e-10)`` per row:
    explanations ``a``, ``b`` of the inputs ``c``, ``d`` (Alvarez-Melis & Jaakkola 2018, eq. 5)."""
    return np.asarray(norm_numerator(a=a, b=b)) / (np.asarray(norm_denominator(a=c, b=d)) + 1e-10)


def top_n_sign(a: np.ndarray, n: int = 5, **kwargs: Any) -> np.ndarray:
    """Labels of flattened attributions ``a`` ``(N, d)``: the signs of each row's first ``n`` values,
    ``(N, n)`` (Quantus' ``top_n_sign``, which hashes the same signs per sample)."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise ExplainError(f"top_n_sign takes flattened attributions (N, d), got shape {a.shape}")
    return np.sign(a[:, :int(n)])


# ---------------------------------------------------------------------------------------------- helpers

def _rows(arr: Any, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ExplainError(f"{name} takes a batch of flattened samples (N, d), got shape {arr.shape}")
    return arr


def _every_feature(indices: np.ndarray, d: int) -> bool:
    """Whether ``indices`` ``(N, m)`` names every one of ``d`` features in order in each row, as the
    metrics pass them (one ``arange(d)`` broadcast over the rows: checked in O(d))."""
    return (indices.ndim == 2 and indices.shape[1] == d and indices.strides[0] == 0
            and np.array_equal(indices[0], np.arange(d)))


def _add_at(arr: np.ndarray, noise: np.ndarray, indices: np.ndarray | None) -> np.ndarray:
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    if indices is None or _every_feature(np.asarray(indices), arr.shape[1]):  # no gather and scatter
        return (arr + noise).astype(dtype)
    out = arr.astype(dtype, copy=True)
    rows = np.arange(arr.shape[0])[:, None]
    idx = np.asarray(indices)
    out[rows, idx] = (arr + noise)[rows, idx]
    return out


def _same_size(ap: np.ndarray, a: np.ndarray) -> np.ndarray:
    if ap.shape[1] != a.shape[1]:
        raise ExplainError(f"the re-explained attributions hold {ap.shape[1]} values per sample, a_batch "
                           f"{a.shape[1]}; give a_batch shaped as explain_func returns them")
    return ap


def _takes(func: Callable, name: str) -> bool:
    """Whether ``func`` has a parameter called ``name`` (not merely ``**kwargs``)."""
    target = func.func if hasattr(func, "func") and hasattr(func, "keywords") else func
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _check_vector_func(func: Callable | None, default: Callable, what: str) -> Callable:
    func = default if func is None else func
    if not callable(func):
        raise ExplainError(f"{what} must be a function, got {type(func).__name__}")
    return func


def _per_row(value: Any, rows: int, what: str, signature: str) -> np.ndarray:
    out = np.asarray(value, np.float64)
    if out.shape != (rows,):
        raise ExplainError(f"{what} returned shape {out.shape}; it must map a batch of {rows} flattened rows to "
                           f"{rows} values: {signature} (Quantus' per-sample functions need wrapping)")
    return out


class _Perturbing(Metric):
    """Shared machinery: seeded perturbation of all steps at once, stacked explanation."""

    category = "Robustness"
    higher_is_better = False
    nan_reason = ("a perturbation changed the predicted class and return_nan_when_prediction_changes is set, as "
                  "in Quantus")

    def _init_perturb(self, perturb_func: Callable | None, default: Callable, perturb_func_kwargs: Mapping | None,
                      seed: int | None, **defaults: Any) -> None:
        func = default if perturb_func is None else perturb_func
        if not callable(func):
            raise ExplainError(f"perturb_func must be a function, got {type(func).__name__}")
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):
            params = {}
        p = params.get("indexed_axes")
        if p is not None and p.default is inspect.Parameter.empty:
            raise ExplainError(f"perturb_func {getattr(func, '__name__', func)!r} is a per-sample Quantus function "
                               f"(it needs indexed_axes); give a batched one: perturb_func(arr (N, d), indices "
                               f"(N, m), **kwargs) -> (N, d), e.g. it.metrics.uniform_noise")
        self.perturb_func = func
        self.perturb_func_kwargs = {**defaults, **dict(perturb_func_kwargs or {})}
        self.seed = seed
        self._rng: np.random.Generator = np.random.default_rng(seed)

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        if self.explain_func is None:
            raise ExplainError(f"{type(self).__name__} re-explains perturbed inputs: it needs explain_func")
        if y_batch is None:
            raise ExplainError(f"{type(self).__name__} needs y_batch (the explained classes)")
        self._rng = np.random.default_rng(self.seed)  # every call draws the same noise

    def _perturb(self, x: np.ndarray, k: int) -> np.ndarray:
        """``k`` perturbed versions of the batch ``x`` ``(n, ...)``: ``(k, n, ...)``."""
        n = x.shape[0]
        flat = np.broadcast_to(x.reshape(1, n, -1), (k, n, x[0].size)).reshape(k * n, -1)
        indices = np.broadcast_to(np.arange(flat.shape[1]), flat.shape)
        kwargs = dict(self.perturb_func_kwargs)
        if _takes(self.perturb_func, "rng"):
            kwargs["rng"] = self._rng
        out = np.asarray(self.perturb_func(arr=flat, indices=indices, **kwargs))
        if out.shape != flat.shape:
            raise ExplainError(f"perturb_func returned shape {out.shape} for inputs {flat.shape}; it must return "
                               f"the perturbed (N, d) batch: perturb_func(arr (N, d), indices (N, m), **kwargs)")
        return out.reshape((k,) + x.shape)

    def _steps(self, n: int, d: int, k: int) -> list[int]:
        """The sizes of the stacked chunks of ``k`` steps of ``n`` inputs of ``d`` values."""
        per = max(1, MAX_STACKED_FEATURES // max(1, n * d))
        return [min(per, k - s) for s in range(0, k, per)]

    def _explain_steps(self, model: MetricModel, xs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Attributions of ``xs`` ``(k, n, ...)`` (channels-last) for the classes ``y`` ``(n,)`` from
        ONE ``explain_func`` call, channels-last ``(k, n, ...)``, each step normalised and made
        absolute on its own as the metric's arguments say."""
        k, n = xs.shape[:2]
        flat = xs.reshape((k * n,) + xs.shape[2:])
        native = model.native(flat)
        a = self.explain_func(model=model.model, inputs=native, targets=np.tile(np.asarray(y), k),
                              **self.explain_func_kwargs)
        a = np.asarray(keras.ops.convert_to_numpy(a) if not isinstance(a, np.ndarray) else a)
        a = self.prepare_attributions(a, native, self.channel_first, normalise=False)
        a = a.reshape((k, n) + a.shape[1:])
        if self.normalise:
            if self.normalise_func is normalise_by_max:
                axes = tuple(range(1, a.ndim))
                m = np.max(np.abs(a), axis=axes, keepdims=True)
                a = np.divide(a, m, out=np.zeros_like(a), where=m > 0) + np.where(m > 0, 0.0, a)
            else:  # the user's function sees one step's batch, as in Quantus
                a = np.stack([np.asarray(self.normalise_func(a[i]), np.float64) for i in range(k)])
        if self.abs:
            a = np.abs(a)
        return a

    def _predicted(self, model: MetricModel, x: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model outputs (as ``softmax`` says) of ``x`` ``(n, ...)`` and ``xs`` ``(k, n, ...)``, in one
        call: ``(n, classes)``, ``(k, n, classes)``."""
        k, n = xs.shape[:2]
        p = model.predict(np.concatenate([x[None].astype(xs.dtype, copy=False), xs]).reshape((-1,) + x.shape[1:]))
        p = p.reshape(k + 1, n, -1)
        return p[0], p[1:]


# ---------------------------------------------------------------------------------------------- sensitivity

class _Sensitivity(_Perturbing):
    _reduce: str = "max"
    _zero_norm_reason = ("their explanations have norm 0, which the relative sensitivity divides by (Quantus: NaN "
                         "or inf with numpy's warning, or an AssertionError when the whole batch is zero)")

    @property
    def nan_reason(self) -> str:  # type: ignore[override]
        """Why scores of the last call are NaN: zero-norm explanations, classes that changed, or both."""
        why = [self._zero_norm_reason] if getattr(self, "_zero_norm", False) else []
        if self.return_nan_when_prediction_changes:
            why.append(_Perturbing.nan_reason)
        return "; or ".join(why)

    def custom_preprocess(self, **kw: Any) -> None:
        super().custom_preprocess(**kw)
        self._zero_norm = False

    def __init__(self, similarity_func: Callable | None = None, norm_numerator: Callable | None = None,
                 norm_denominator: Callable | None = None, nr_samples: int = 200, abs: bool = False,
                 normalise: bool = False, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping | None = None, perturb_func: Callable | None = None,
                 lower_bound: float = 0.2, upper_bound: float | None = None,
                 perturb_func_kwargs: Mapping | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False,
                 return_nan_when_prediction_changes: bool = False, seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if int(nr_samples) < 1:
            raise ExplainError(f"nr_samples must be >= 1, got {nr_samples}")
        self.nr_samples = int(nr_samples)
        self.similarity_func = _check_vector_func(similarity_func, difference, "similarity_func")
        self.norm_numerator = _check_vector_func(norm_numerator, fro_norm, "norm_numerator")
        self.norm_denominator = _check_vector_func(norm_denominator, fro_norm, "norm_denominator")
        self.return_nan_when_prediction_changes = bool(return_nan_when_prediction_changes)
        self._init_perturb(perturb_func, uniform_noise, perturb_func_kwargs, seed, lower_bound=lower_bound,
                           upper_bound=upper_bound)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        n = x_batch.shape[0]
        a = a_batch.reshape(n, -1)
        den = _per_row(self.norm_denominator(a=a), n, "norm_denominator", "norm_denominator(a (N, d)) -> (N,)")
        zero = den == 0  # no relative change of a zero explanation: NaN, named by the base's warning
        den = np.where(zero, 1.0, den)
        self._zero_norm = self._zero_norm or bool(zero.any())
        ratios = []
        for kc in self._steps(n, x_batch[0].size, self.nr_samples):
            xs = self._perturb(x_batch, kc)
            ap = _same_size(self._explain_steps(model, xs, y_batch).reshape(kc * n, -1), a)
            sim = np.asarray(self.similarity_func(a=np.tile(a, (kc, 1)), b=ap))
            if sim.shape[0] != kc * n:
                raise ExplainError(f"similarity_func returned shape {sim.shape}; it must compare the rows of two "
                                   f"(N, d) batches: similarity_func(a, b) -> (N, d) or (N,)")
            num = _per_row(self.norm_numerator(a=sim), kc * n, "norm_numerator", "norm_numerator(a (N, d)) -> (N,)")
            r = np.where(zero[None], np.nan, num.reshape(kc, n) / den[None])
            if self.return_nan_when_prediction_changes:
                p, pp = self._predicted(model, x_batch, xs)
                r = np.where(pp.argmax(-1) != p.argmax(-1)[None], np.nan, r)
            ratios.append(r)
        r = np.concatenate(ratios)
        if self.return_nan_when_prediction_changes:  # NaN where any perturbation changed the class, as Quantus
            return list(r.max(0) if self._reduce == "max" else r.mean(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return list(np.nanmax(r, 0) if self._reduce == "max" else np.nanmean(r, 0))


class MaxSensitivity(_Sensitivity):
    """Max-Sensitivity (Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations",
    NeurIPS, eq. 4 with Bhatt et al. 2020's relative norm): the largest
    ``norm_numerator(similarity_func(a, a')) / norm_denominator(a)`` over ``nr_samples`` perturbed
    inputs ``x' = perturb_func(x)`` (default uniform noise in ``[-lower_bound, lower_bound)``) with
    ``a'`` their explanation. Lower is better.

    Quantus' arguments and defaults; ``seed`` seeds the noise (every call draws the same). With
    ``return_nan_when_prediction_changes`` a sample whose class changes under any perturbation
    scores NaN, as in Quantus. A sample whose explanation has norm 0 (e.g. a dead model's) scores NaN,
    its relative sensitivity being undefined, with a warning naming the samples (Quantus divides by
    zero: NaN or inf, and it raises an AssertionError when every explanation of the batch is zero).
    """

    _reduce = "max"


class AvgSensitivity(_Sensitivity):
    """Avg-Sensitivity (Yeh et al. 2019, eq. 5): as :class:`MaxSensitivity`, the mean over the
    ``nr_samples`` perturbed inputs instead of the maximum. Lower is better."""

    _reduce = "mean"


class LocalLipschitzEstimate(_Perturbing):
    """Local Lipschitz Estimate (Alvarez-Melis & Jaakkola 2018, "On the robustness of interpretability
    methods", eq. 5): the largest ``similarity_func(a, a', x, x')`` (default :func:`lipschitz_constant`
    with Euclidean distances both ways) over ``nr_samples`` inputs ``x'`` perturbed by Gaussian noise
    (``perturb_mean``, ``perturb_std``). Lower is better. Quantus' arguments and defaults; ``seed``
    seeds the noise; NaN handling as :class:`MaxSensitivity`.
    """

    default_softmax = True

    def __init__(self, similarity_func: Callable | None = None, norm_numerator: Callable | None = None,
                 norm_denominator: Callable | None = None, nr_samples: int = 200, abs: bool = False,
                 normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping | None = None, perturb_func: Callable | None = None,
                 perturb_mean: float = 0.0, perturb_std: float = 0.1, perturb_func_kwargs: Mapping | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, return_nan_when_prediction_changes: bool = False,
                 seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if int(nr_samples) < 1:
            raise ExplainError(f"nr_samples must be >= 1, got {nr_samples}")
        self.nr_samples = int(nr_samples)
        self.similarity_func = _check_vector_func(similarity_func, lipschitz_constant, "similarity_func")
        self.norm_numerator = _check_vector_func(norm_numerator, distance_euclidean, "norm_numerator")
        self.norm_denominator = _check_vector_func(norm_denominator, distance_euclidean, "norm_denominator")
        self.return_nan_when_prediction_changes = bool(return_nan_when_prediction_changes)
        self._init_perturb(perturb_func, gaussian_noise, perturb_func_kwargs, seed, perturb_mean=perturb_mean,
                           perturb_std=perturb_std)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        n = x_batch.shape[0]
        a, x = a_batch.reshape(n, -1), x_batch.reshape(n, -1)
        out = []
        for kc in self._steps(n, x.shape[1], self.nr_samples):
            xs = self._perturb(x_batch, kc)
            ap = _same_size(self._explain_steps(model, xs, y_batch).reshape(kc * n, -1), a)
            sim = self.similarity_func(a=np.tile(a, (kc, 1)), b=ap, c=np.tile(x, (kc, 1)), d=xs.reshape(kc * n, -1),
                                       norm_numerator=self.norm_numerator, norm_denominator=self.norm_denominator)
            r = _per_row(sim, kc * n, "similarity_func",
                         "similarity_func(a, b, c, d, norm_numerator, norm_denominator) -> (N,)").reshape(kc, n)
            if self.return_nan_when_prediction_changes:
                p, pp = self._predicted(model, x_batch, xs)
                r = np.where(pp.argmax(-1) != p.argmax(-1)[None], np.nan, r)
            out.append(r)
        r = np.concatenate(out)
        if self.return_nan_when_prediction_changes:
            return list(r.max(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return list(np.nanmax(r, 0))


# ---------------------------------------------------------------------------------------------- continuity

class Continuity(_Perturbing):
    """Continuity (Montavon et al. 2018, "Methods for interpreting and understanding deep neural
    networks", Digital Signal Processing 73, sec. 5.2): the largest
    ``||a - a'||_1 / (||x - x'||_2 + 1e-9)`` over ``nr_steps`` translations ``x'`` of the input along
    its width, by ``-W + dx, -W + 2 dx, ...`` pixels with ``dx = (2 W + 1) // nr_steps``, the uncovered
    pixels set to ``perturb_baseline``; ``a`` is the input's own explanation (computed with the
    translations, in the same ``explain_func`` call). Lower is better.

    ``perturb_func(arr, perturb_baseline=, perturb_dx=, **perturb_func_kwargs)`` takes the
    channels-last batch ``(n, H, W, C)`` (default :func:`batched_translation`, ``direction='x'``).

    Differences from Quantus 0.6 (its ``evaluate_batch`` ignores ``perturb_func``, ``perturb_baseline``
    and ``perturb_func_kwargs``, always translating with a ``'black'`` baseline; it normalises the
    explanations twice; it fails for a translation by more than the width; and it marks a sample as
    changed when the class differs from ``y_batch`` rather than from the unperturbed prediction): here
    the arguments are used, the explanations are normalised once (the same for the default
    ``normalise_by_max``), any translation works, and ``return_nan_when_prediction_changes`` compares
    with the unperturbed prediction as the other metrics of this module do. ``nr_steps`` larger than
    ``2 W + 1`` (which makes Quantus translate by 0 pixels each step) raises. ``seed`` (not a Quantus
    argument) draws a ``'uniform'`` baseline for the uncovered pixels.
    """

    def __init__(self, nr_steps: int = 28, abs: bool = True, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping | None = None,
                 perturb_func: Callable | None = None, perturb_baseline: Any = "black",
                 perturb_func_kwargs: Mapping | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = np.mean, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False,
                 return_nan_when_prediction_changes: bool = False, seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if int(nr_steps) < 1:
            raise ExplainError(f"nr_steps must be >= 1, got {nr_steps}")
        self.nr_steps = int(nr_steps)
        self.nr_patches = None
        self.return_nan_when_prediction_changes = bool(return_nan_when_prediction_changes)
        func = batched_translation if perturb_func is None else perturb_func
        if not callable(func):
            raise ExplainError(f"perturb_func must be a function, got {type(func).__name__}")
        self.perturb_func = func
        self.perturb_func_kwargs = {"perturb_baseline": perturb_baseline, **dict(perturb_func_kwargs or {})}
        self.seed = seed  # draws the 'uniform' baseline of the uncovered pixels (not a Quantus argument)
        self._rng = np.random.default_rng(seed)

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        super().custom_preprocess(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch)
        if x_batch.ndim not in (3, 4):
            raise ExplainError(f"Continuity translates images (n, H, W, C) or series (n, T, C); got inputs shaped "
                               f"{x_batch.shape}")
        width = x_batch.shape[2] if x_batch.ndim == 4 else x_batch.shape[1]
        if (2 * width + 1) // self.nr_steps == 0:
            raise ExplainError(f"nr_steps={self.nr_steps} is more than the {2 * width + 1} translations of inputs "
                               f"{width} wide: every step would translate by 0 pixels")

    #: Continuity explains x itself, with its translations (a given a_batch is not used, as in Quantus)
    needs_attributions = False

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        n = x_batch.shape[0]
        width = x_batch.shape[2] if x_batch.ndim == 4 else x_batch.shape[1]
        dx = (2 * width + 1) // self.nr_steps
        shifts = -width + dx * np.arange(1, self.nr_steps + 1)
        kw = dict(self.perturb_func_kwargs)
        if _takes(self.perturb_func, "rng"):
            kw["rng"] = self._rng
        xs = np.stack([x_batch] + [np.asarray(self.perturb_func(x_batch, perturb_dx=int(t), **kw)) for t in shifts])
        if xs.shape[1:] != x_batch.shape:
            raise ExplainError(f"perturb_func returned shape {xs.shape[2:]} for inputs {x_batch.shape}")
        a = self._explain_steps(model, xs, y_batch).reshape(self.nr_steps + 1, n, -1)
        flat = xs.reshape(self.nr_steps + 1, n, -1).astype(np.float64)
        r = distance_manhattan(a[:1], a[1:]) / (distance_euclidean(flat[:1], flat[1:]) + 1e-9)
        if self.return_nan_when_prediction_changes:
            p, pp = self._predicted(model, x_batch, xs[1:])
            r = np.where(pp.argmax(-1) != p.argmax(-1)[None], np.nan, r)
        return list(r.max(0))


# ---------------------------------------------------------------------------------------------- consistency

class Consistency(Metric):
    """Consistency (Dasgupta, Frost & Moshkovitz 2022, "Framework for evaluating faithfulness of local
    explanations", ICML, def. 2): for each sample, the share of the other samples of its batch with
    the same discretised explanation (``discretise_func``, default :func:`top_n_sign`) that the model
    also assigns the same class. Higher is better.

    ``discretise_func(a) -> (N,)`` or ``(N, m)`` labels of the flattened attributions ``(N, d)``
    (flattened in channels-first order when they have several channels, as Quantus flattens them);
    Quantus' per-sample functions (``a (d,) -> hashable``) are refused with that explanation. As in
    Quantus, samples are compared within each batch of ``batch_size``. Higher is better, as in the
    paper (Quantus 0.6 declares ``ScoreDirection.LOWER``).
    """

    category = "Robustness"
    higher_is_better = True
    default_softmax = True

    def __init__(self, discretise_func: Callable | None = None, abs: bool = True, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.discretise_func = _check_vector_func(discretise_func, top_n_sign, "discretise_func")
        self.y_pred_classes = None

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        n = x_batch.shape[0]
        flat = (to_channels_first(a_batch) if a_batch.ndim >= 3 and a_batch.shape[-1] > 1 else a_batch).reshape(n, -1)
        labels = np.asarray(self.discretise_func(flat))
        if labels.ndim == 0 or labels.shape[0] != n:
            raise ExplainError(f"discretise_func returned shape {labels.shape} for {n} samples; it must label each "
                               f"row of the flattened attributions: discretise_func(a (N, d)) -> (N,) or (N, m) "
                               f"(a per-sample Quantus function f can be given as lambda a: [f(r) for r in a])")
        labels = labels.reshape(n, -1)
        same_a = (labels[:, None] == labels[None]).all(-1) & ~np.eye(n, dtype=bool)
        pred = model.predict(x_batch).argmax(-1)
        self.y_pred_classes = pred
        same_y = pred[:, None] == pred[None]
        return list((same_a & same_y).sum(-1) / (same_a.sum(-1) + 1e-9))


# ---------------------------------------------------------------------------------------------- relative stability

def _flat_norm(v: np.ndarray) -> np.ndarray:
    """L2 norm over all but the two leading (step, sample) axes."""
    return np.linalg.norm(v.reshape(v.shape[0], v.shape[1], -1), axis=-1)


class _RelativeStability(_Perturbing):
    """Agarwal et al. 2022, "Rethinking stability for attribution-based explanations" (ICLR workshop),
    eqs. 2-5: the largest relative change of the explanation over ``nr_samples`` perturbed inputs,
    divided by the relative change of the input (RIS), of the logits (ROS) or of hidden
    representations (RRS). Quantus' arguments and defaults: uniform noise in ``[0.02, 0.2)``
    (``perturb_func_kwargs`` overrides ``upper_bound=0.2`` and the noise function's
    ``lower_bound=0.02``); ``eps_min`` keeps divisions finite; with
    ``return_nan_when_prediction_changes`` (default True) a sample whose class changes under any
    perturbation scores NaN, as Quantus (``np.max`` over the samples). ``seed`` seeds the noise.
    Lower is better.
    """

    def __init__(self, nr_samples: int = 200, abs: bool = False, normalise: bool = False,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping | None = None,
                 perturb_func: Callable | None = None, perturb_func_kwargs: Mapping | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, eps_min: float = 1e-6,
                 default_plot_func: Callable | None = None, return_nan_when_prediction_changes: bool = True,
                 seed: int | None = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise,
                         normalise_func=normalise_by_average_second_moment_estimate if normalise_func is None
                         else normalise_func, normalise_func_kwargs=normalise_func_kwargs,
                         return_aggregate=return_aggregate, aggregate_func=aggregate_func,
                         default_plot_func=default_plot_func, disable_warnings=disable_warnings,
                         display_progressbar=display_progressbar, **kwargs)
        if int(nr_samples) < 1:
            raise ExplainError(f"nr_samples must be >= 1, got {nr_samples}")
        self._nr_samples = int(nr_samples)
        self._eps_min = float(eps_min)
        self.return_nan_when_prediction_changes = bool(return_nan_when_prediction_changes)
        self._init_perturb(perturb_func, uniform_noise, perturb_func_kwargs, seed, upper_bound=0.2)

    def _relative_explanation_change(self, a: np.ndarray, ap: np.ndarray) -> np.ndarray:
        """``|| (e_x - e_x') / e_x ||`` (zeros of ``e_x`` replaced by ``eps_min``): ``(k, n)``."""
        e = a[None]
        return _flat_norm((e - ap) / (e + (e == 0) * self._eps_min))

    def _denominator(self, model: MetricModel, x: np.ndarray, xs: np.ndarray, p: np.ndarray,
                     pp: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        n = x_batch.shape[0]
        out = []
        for kc in self._steps(n, x_batch[0].size, self._nr_samples):
            xs = self._perturb(x_batch, kc)
            ap = self._explain_steps(model, xs, y_batch)
            if ap.shape[1:] != a_batch.shape:
                raise ExplainError(f"the re-explained attributions are shaped {ap.shape[1:]}, a_batch {a_batch.shape}; "
                                   f"give a_batch shaped as explain_func returns them")
            num = self._relative_explanation_change(a_batch, ap)
            need_pred = self.return_nan_when_prediction_changes or isinstance(self, RelativeOutputStability)
            p, pp = self._predicted(model, x_batch, xs) if need_pred else (None, None)
            den = self._denominator(model, x_batch, xs, p, pp)
            den = den + (den == 0) * self._eps_min
            r = num / den
            if self.return_nan_when_prediction_changes:
                r = np.where(pp.argmax(-1) != p.argmax(-1)[None], np.nan, r)
            out.append(r)
        return list(np.concatenate(out).max(0))


class RelativeInputStability(_RelativeStability):
    """Relative Input Stability (Agarwal et al. 2022, eq. 2):
    ``max ||(e_x - e_x') / e_x|| / max(||(x - x') / x||, eps_min)`` over the perturbed inputs ``x'``
    (zeros in the divisors replaced by ``eps_min``); see :class:`_RelativeStability`."""

    def _denominator(self, model, x, xs, p, pp):
        x64 = x.astype(np.float64)[None]
        return _flat_norm((x64 - xs) / (x64 + (x64 == 0) * self._eps_min))


class RelativeOutputStability(_RelativeStability):
    """Relative Output Stability (Agarwal et al. 2022, eq. 5): the relative explanation change divided
    by ``||h(x) - h(x')||_2`` of the model's outputs (logits unless ``softmax=True``)."""

    def _denominator(self, model, x, xs, p, pp):
        return np.linalg.norm(p[None] - pp, axis=-1)


class RelativeRepresentationStability(_RelativeStability):
    """Relative Representation Stability (Agarwal et al. 2022, eq. 3): the relative explanation change
    divided by ``||(L(x) - L(x')) / L(x)||_2`` of the hidden representations ``L`` of the layers
    ``layer_names`` or ``layer_indices`` (all layers by default; a Keras layer's output includes its
    activation, e.g. a final ``Dense(..., activation='softmax')`` gives probabilities), flattened and
    concatenated (:meth:`~.model.MetricModel.hidden`)."""

    def __init__(self, nr_samples: int = 200, abs: bool = False, normalise: bool = False,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping | None = None,
                 perturb_func: Callable | None = None, perturb_func_kwargs: Mapping | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, eps_min: float = 1e-6,
                 default_plot_func: Callable | None = None, layer_names: Sequence[str] | None = None,
                 layer_indices: Sequence[int] | None = None, return_nan_when_prediction_changes: bool = True,
                 seed: int | None = 42, **kwargs: Any):
        super().__init__(nr_samples=nr_samples, abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, perturb_func=perturb_func,
                         perturb_func_kwargs=perturb_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, disable_warnings=disable_warnings,
                         display_progressbar=display_progressbar, eps_min=eps_min,
                         default_plot_func=default_plot_func,
                         return_nan_when_prediction_changes=return_nan_when_prediction_changes, seed=seed, **kwargs)
        if layer_names is not None and layer_indices is not None:
            raise ExplainError("give layer_names or layer_indices, not both")
        self._layer_names = None if layer_names is None else list(layer_names)
        self._layer_indices = None if layer_indices is None else list(layer_indices)

    def _denominator(self, model, x, xs, p, pp):
        k, n = xs.shape[:2]
        h = model.hidden(np.concatenate([x[None].astype(xs.dtype, copy=False), xs]).reshape((-1,) + x.shape[1:]),
                         self._layer_names, self._layer_indices).reshape(k + 1, n, -1)
        l0 = h[:1]
        return np.linalg.norm((l0 - h[1:]) / (l0 + (l0 == 0) * self._eps_min), axis=-1)
