"""Quantus' randomisation metrics: does the explanation depend on the model's parameters and on the
explained class?

* :class:`MPRT` (alias :class:`ModelParameterRandomisation`): the model parameter randomisation test
  (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018, "Sanity checks for saliency maps",
  NeurIPS): the layers are randomised one after the other and each explanation is compared with the
  original one (Spearman rank correlation by default).
* :class:`SmoothMPRT` and :class:`EfficientMPRT` (Hedström, Weber, Bareeva, Krakowczyk, Motzkus,
  Samek, Lapuschkin & Höhne 2023, "Sanity checks revisited: an exploration to repair the model
  parameter randomisation test", XAI in Action workshop, NeurIPS): explanations averaged over noisy
  copies of the input (sMPRT), and the relative rise of the explanations' discrete entropy from the
  original to the fully randomised model (eMPRT, no similarity measure needed).
* :class:`RandomLogit` (Sixt, Granz & Landgraf 2020, "When explanations lie: why many modified BP
  attributions fail", ICML): the similarity of the explanation of the explained class to that of a
  randomly drawn other class.

Layers are randomised as Quantus' Keras wrapper does (:meth:`.model.MetricModel.randomised_layers`:
each weight array of a layer permuted along its first axis with ``RandomState(seed + 1)``), but
starting from the model's own weights. The permuted weights are assigned into the model's own
variables between stages and restored afterwards, so every stage reuses the explainer compiled for
the model (no copy, no new trace). Every stage explains the whole batch in one ``explain_func``
call; the original explanation's ranks (Spearman) are computed once and compared with each stage's,
and each stage's similarity is measured on a worker thread while the next stage is explained.

The similarity and complexity functions have Quantus' signatures (``similarity_func(a, b,
batched=True)`` on ``(n, features)`` arrays, ``complexity_func(a=, x=, **kwargs)``), so Quantus'
functions may be passed as well.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import Any, Callable, Mapping

import numpy as np

from ...engine.errors import ExplainError
from ..randomisation import ranks as _ranks
from ..randomisation import spearman as _spearman_rows
from .base import Metric
from .model import MetricModel

__all__ = ["MPRT", "ModelParameterRandomisation", "SmoothMPRT", "EfficientMPRT", "RandomLogit",
           "correlation_spearman", "ssim", "discrete_entropy", "entropy",
           "normalise_by_average_second_moment_estimate", "N_BINS_RULES"]


# ----------------------------------------------------------------------------- functions

def correlation_spearman(a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs: Any) -> Any:
    """Spearman rank correlation (average ranks for ties): of each row ``a[i]``, ``b[i]`` of two
    ``(n, features)`` arrays with ``batched`` (an array ``(n,)``), else of the two flattened arrays
    (a float). A constant row has no ranking, so no rank association with anything: 0 (scipy's
    ``spearmanr`` and so Quantus give NaN; the metrics warn, naming the samples)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if batched:
        if a.ndim != 2 or b.ndim != 2:
            raise ExplainError(f"correlation_spearman(batched=True) takes (n, features) arrays, got shapes "
                               f"{a.shape} and {b.shape}")
        if a.shape != b.shape:
            raise ExplainError(f"correlation_spearman: shapes differ, {a.shape} and {b.shape}")
        return np.nan_to_num(_spearman_rows(a, b), nan=0.0)
    if a.size != b.size:
        raise ExplainError(f"correlation_spearman: sizes differ, {a.shape} and {b.shape}")
    return float(np.nan_to_num(_spearman_rows(a.reshape(1, -1), b.reshape(1, -1))[0], nan=0.0))


def ssim(a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs: Any) -> Any:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004) as Quantus computes it with
    scikit-image's defaults: a uniform ``win_size`` window (default 7, odd, over every axis of a
    sample), sample covariances, ``K1 = 0.01``, ``K2 = 0.03``, ``data_range`` the range of the
    values of both arrays, the mean over the positions at least ``win_size // 2`` from the border.
    With ``batched``, ``a`` and ``b`` are ``(n, ...)`` and one value per row is returned (a list,
    as Quantus); else one float. Where both are the same constant (zero data range, where Quantus'
    formula gives 0/0), the two are identical and the value is 1."""
    from scipy.ndimage import uniform_filter

    unknown = set(kwargs) - {"win_size"}
    if unknown:
        raise TypeError(f"ssim got unexpected keyword arguments {sorted(unknown)}")
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ExplainError(f"ssim: shapes differ, {a.shape} and {b.shape}")
    if not batched:
        return float(ssim(a[None], b[None], batched=True, **kwargs)[0])
    win = kwargs.get("win_size") or 7
    sample = a.shape[1:]
    if win % 2 != 1 or any(s < win for s in sample):
        raise ExplainError(f"ssim: win_size must be odd and at most the size of each axis of a sample "
                           f"{sample}, got {win}")
    rng_ = (np.maximum(a.reshape(len(a), -1).max(1), b.reshape(len(b), -1).max(1))
            - np.minimum(a.reshape(len(a), -1).min(1), b.reshape(len(b), -1).min(1)))
    rng_ = np.abs(rng_).reshape((-1,) + (1,) * len(sample))
    size = (1,) + (win,) * len(sample)
    f = lambda v: uniform_filter(v, size=size, mode="reflect")  # noqa: E731
    npix = win ** len(sample)
    cov_norm = npix / (npix - 1.0)
    ux, uy = f(a), f(b)
    vx = cov_norm * (f(a * a) - ux * ux)
    vy = cov_norm * (f(b * b) - uy * uy)
    vxy = cov_norm * (f(a * b) - ux * uy)
    c1, c2 = (0.01 * rng_) ** 2, (0.03 * rng_) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    s = s[tuple([slice(None)] + [slice(pad, n - pad) for n in sample])]
    out = s.reshape(len(s), -1).mean(1)
    return [float(v) for v in np.where(rng_.reshape(-1) == 0, 1.0, out)]


def discrete_entropy(a: np.ndarray, x: Any = None, **kwargs: Any) -> float:
    """Shannon entropy (nats) of the histogram of ``a``'s values in ``n_bins`` (default 100) equal
    bins over its range (Hedström et al. 2023, eMPRT's complexity)."""
    from scipy.stats import entropy as _entropy

    counts, _ = np.histogram(np.asarray(a, np.float64), bins=int(kwargs.get("n_bins", 100)))
    return float(_entropy(counts))


def _discrete_entropies(a: np.ndarray, n_bins: int) -> np.ndarray:
    """:func:`discrete_entropy` of each row of ``a`` ``(n, m)`` at once: the bins and counts of
    ``np.histogram(row, bins=n_bins)`` (its edges, its rounding corrections at the edges, a constant
    row's range widened by 0.5 on each side) and the entropy of ``scipy.stats.entropy``."""
    a = np.asarray(a, np.float64)
    n = len(a)
    lo, hi = a.min(1), a.max(1)
    same = lo == hi
    lo, hi = np.where(same, lo - 0.5, lo), np.where(same, hi + 0.5, hi)
    edges = np.linspace(lo, hi, n_bins + 1, axis=1)
    idx = (((a - lo[:, None]) / (hi - lo)[:, None]) * n_bins).astype(np.intp)
    idx[idx == n_bins] -= 1
    flat = edges.ravel()  # each row's edges, read by flat index (row i's start at i * (n_bins + 1))
    at = idx + (np.arange(n) * (n_bins + 1))[:, None]
    idx[a < flat.take(at)] -= 1
    at = idx + (np.arange(n) * (n_bins + 1))[:, None] + 1
    idx[(a >= flat.take(at)) & (idx != n_bins - 1)] += 1
    counts = np.bincount((idx + (np.arange(n) * n_bins)[:, None]).ravel(), minlength=n * n_bins)
    p = counts.reshape(n, n_bins) / counts.reshape(n, n_bins).sum(1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)


def entropy(a: np.ndarray, x: Any = None, **kwargs: Any) -> float:
    """Shannon entropy (nats) of the non-negative ``a`` taken as a distribution (``a / sum |a|``)."""
    a = np.asarray(a, np.float64).reshape(-1)
    if (a < 0).any():
        raise ExplainError("entropy needs non-negative values (probabilities: use softmax=True)")
    p = a / np.abs(a).sum()
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


def normalise_by_average_second_moment_estimate(a: np.ndarray,
                                                normalise_axes: tuple[int, ...] | None = None) -> np.ndarray:
    """``a / sqrt(mean(a**2))`` over ``normalise_axes`` (default all axes), the normalisation of
    Hedström et al. 2023 for sMPRT/eMPRT; returned unchanged (with a warning) where the second moment
    is zero."""
    a = np.asarray(a, np.float64)
    if not np.any(a):
        return a
    axes = tuple(range(a.ndim)) if normalise_axes is None else tuple(normalise_axes)
    rms = np.sqrt(np.mean(a ** 2, axis=axes, keepdims=True))
    if np.any(rms == 0):
        warnings.warn("normalise_by_average_second_moment_estimate: a second moment is zero; the "
                      "attributions are left unnormalised", RuntimeWarning, stacklevel=2)
        return a
    return a / rms


def _freedman_diaconis(a: np.ndarray) -> int:
    iqr = np.percentile(a, 75) - np.percentile(a, 25)
    width = max(2 * iqr / np.cbrt(a[0].size), 1e-6)
    return int((a.max() - a.min()) / width)


def _scott(a: np.ndarray) -> int:
    width = 3.5 * np.std(a) / np.cbrt(a[0].size)
    return int((a.max() - a.min()) / width) if width > 0 else 1


#: eMPRT's rules for the number of bins (``complexity_func_kwargs={"rule": NAME}``), Quantus' names;
#: ``n`` is the number of attribution values of one sample (Quantus 0.6 takes the number of its axes)
N_BINS_RULES: dict[str, Callable[[np.ndarray], int]] = {
    "Freedman Diaconis": _freedman_diaconis,
    "Scotts": _scott,
    "Square Root": lambda a: int(np.sqrt(a[0].size)),
    "Sturges Formula": lambda a: int(np.log2(a[0].size) + 1),
    "Rice": lambda a: int(2 * np.cbrt(a[0].size)),
}


# ----------------------------------------------------------------------------- shared machinery

def _raise_failed(futures: Mapping[str, Future]) -> None:
    """The exception of the first finished future that failed, raised here."""
    for f in futures.values():
        if f.done() and f.exception() is not None:
            raise f.exception()


def _check_order(order: str) -> str:
    if order not in ("top_down", "bottom_up", "independent"):
        raise ValueError(f"layer_order must be 'top_down', 'bottom_up' or 'independent', got {order!r}")
    return order


class _Randomisation(Metric):
    """What the randomisation metrics share: an ``explain_func`` is required (they explain other
    models or classes than ``a_batch`` does), and labels."""

    category = "Randomisation"
    higher_is_better = False

    def custom_preprocess(self, *, model: MetricModel | None, x_batch: np.ndarray, y_batch: np.ndarray | None,
                          a_batch: np.ndarray | None, s_batch: np.ndarray | None) -> None:
        if self.explain_func is None:
            raise ExplainError(f"{type(self).__name__} needs explain_func (it explains the inputs again), e.g. "
                               f"explain_func=it.metrics.explain with explain_func_kwargs={{'method': ...}}")
        if y_batch is None:
            raise ExplainError(f"{type(self).__name__} needs y_batch (the explained classes)")
        self._constant: set[int] = set()  # samples with a constant explanation under a rank correlation
        self._offset = 0  # index of the current batch's first sample

    def custom_postprocess(self, scores: list) -> Any:
        self._warn_constant()
        return scores

    def _similarity(self, a: np.ndarray, b: np.ndarray, ranked_a: np.ndarray | None = None) -> np.ndarray:
        """``similarity_func`` of each row of ``a`` and ``b``; ``ranked_a``: the ranks of ``a``'s rows,
        computed once for all stages when the similarity is the default Spearman correlation."""
        n = len(a)
        fa, fb = a.reshape(n, -1), b.reshape(n, -1)
        if fa.shape != fb.shape:
            raise ExplainError(f"{type(self).__name__}: a_batch has {fa.shape[1]} values per sample but "
                               f"explain_func gives {fb.shape[1]}; give a_batch shaped like the explanations")
        if self.similarity_func is correlation_spearman:
            constant = (np.ptp(fa, axis=1) == 0) | (np.ptp(fb, axis=1) == 0)
            self._constant.update(int(i) + self._offset for i in np.flatnonzero(constant))
            if ranked_a is not None:
                return np.nan_to_num(_spearman_rows(fa, fb, ranked_a=ranked_a), nan=0.0)
        return np.asarray(self.similarity_func(fa, fb, batched=True), np.float64).reshape(n)

    def _warn_constant(self) -> None:
        if self._constant:
            warnings.warn(f"{type(self).__name__}: samples {sorted(self._constant)} have a constant explanation (the "
                          f"given one or one of a randomised model's); a constant map has no ranking, so its rank "
                          f"correlation is scored 0 (Quantus: NaN)", RuntimeWarning, stacklevel=4)

    def _stages(self, model: MetricModel) -> tuple[list[str], Any]:
        names = model.randomisable_layers()
        if self.layer_order == "top_down":
            names = names[::-1]
        return names, model.randomised_layers(order=self.layer_order, seed=self.seed)


class _LayerwiseTest(_Randomisation):
    """MPRT and sMPRT: per sample a dict ``{"original": s, layer: s, ...}`` of similarities."""

    def __init__(self, similarity_func: Callable | None, layer_order: str, seed: int,
                 return_average_correlation: bool, return_last_correlation: bool, skip_layers: bool,
                 return_aggregate: bool, **kwargs: Any):
        super().__init__(return_aggregate=return_aggregate, **kwargs)
        self.similarity_func = correlation_spearman if similarity_func is None else similarity_func
        self.layer_order = _check_order(layer_order)
        self.seed = int(seed)
        self.return_average_correlation = bool(return_average_correlation)
        self.return_last_correlation = bool(return_last_correlation)
        self.skip_layers = bool(skip_layers)
        if self.return_average_correlation and self.return_last_correlation:
            raise ValueError("return_average_correlation and return_last_correlation cannot both be True")
        if self.return_average_correlation and self.skip_layers:
            raise ValueError("return_average_correlation needs every layer's similarity: skip_layers must be False")
        if self.return_aggregate and not (self.return_average_correlation or self.return_last_correlation):
            raise ValueError("return_aggregate needs return_average_correlation or return_last_correlation "
                             "(one number per sample to aggregate)")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        before = len(self.all_evaluation_scores)
        out = super().__call__(*args, **kwargs)
        del self.all_evaluation_scores[before:]
        self.all_evaluation_scores.append(out)
        return out

    def _explain_stage(self, model: MetricModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.explain_batch(model, x, y)

    def evaluate_batch(self, *, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray,
                       a_batch: np.ndarray, s_batch: np.ndarray | None) -> list:
        # each stage's similarity is measured on a worker thread while the next stage's weights are
        # randomised and its explanation runs (NumPy's sorts and the compiled explanation release
        # the GIL); the explanation's ranks are computed once (Spearman) and compared with every stage's
        with ThreadPoolExecutor(max_workers=1) as worker:
            ranked = worker.submit(lambda: _ranks(a_batch.reshape(len(a_batch), -1))
                                   if self.similarity_func is correlation_spearman else None)

            def measure(a: np.ndarray) -> Any:
                return worker.submit(lambda: self._similarity(a_batch, a, ranked.result()))

            stages = {"original": measure(self._explain_stage(model, x_batch, y_batch))}
            names, gen = self._stages(model)
            with closing(gen):  # the model's weights are restored even if an explanation fails
                for i, (name, random_model) in enumerate(gen):
                    if self.skip_layers and i + 1 < len(names):
                        continue
                    stages[name] = measure(self._explain_stage(random_model, x_batch, y_batch))
                    _raise_failed(stages)  # a failed similarity stops the stages early
            values = {k: f.result() for k, f in stages.items()}
        self._offset += len(x_batch)
        return [{k: float(v[i]) for k, v in values.items()} for i in range(len(x_batch))]

    def custom_postprocess(self, scores: list) -> Any:
        self._warn_constant()
        keys = list(scores[0])
        table = {k: [s[k] for s in scores] for k in keys}
        if self.return_average_correlation:
            layers = [k for k in keys if k != "original"]
            return [float(np.mean([s[k] for k in layers])) for s in scores]
        if self.return_last_correlation:
            return table[keys[-1]]
        return table

    def summarise(self, scores: Any) -> tuple[np.ndarray, str]:
        if isinstance(scores, dict):
            layers = [k for k in scores if k != "original"]
            return np.mean([scores[k] for k in layers], axis=0), "mean similarity over randomised layers"
        what = "last layer similarity" if self.return_last_correlation else "mean similarity over randomised layers"
        return np.asarray(scores, np.float64), what


class MPRT(_LayerwiseTest):
    """The model parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency
    maps"): the layers with weights are randomised one after the other (``layer_order``
    ``'top_down'``, cascading, as in the paper; ``'bottom_up'``; ``'independent'``: one layer at a
    time) and the similarity (``similarity_func``, default Spearman rank correlation) of each sample's
    explanation by the randomised model to ``a_batch`` is recorded. An explanation that stays similar
    when the model is destroyed does not explain the model: lower is better.

    Returns Quantus' dict ``{"original": [per sample], layer name: [per sample], ...}`` ("original":
    ``a_batch`` against the unchanged model's explanation), or one number per sample with
    ``return_average_correlation`` (mean over the randomised layers) or ``return_last_correlation``
    (the fully randomised model). ``skip_layers`` explains only the fully randomised model.

    Differences from Quantus 0.6: the average leaves the "original" entry out (Quantus means to,
    but compares the key with ``"orig"``, so it averages it in); the cascade starts from the model's
    weights (Quantus' Keras wrapper clones the model with fresh initial weights), see
    :meth:`~.model.MetricModel.randomised_layers`; with the default Spearman correlation, a sample
    whose explanation (given or of a randomised model) is constant scores 0 at that stage, with a
    warning naming it (Quantus: NaN). ``return_sample_correlation`` is Quantus' deprecated name of
    ``return_average_correlation``.
    """

    def __init__(self, similarity_func: Callable | None = None, layer_order: str = "top_down", seed: int = 42,
                 return_sample_correlation: bool | None = None, return_average_correlation: bool = False,
                 return_last_correlation: bool = False, skip_layers: bool = False, abs: bool = True,
                 normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        if return_sample_correlation is not None:
            return_average_correlation = bool(return_sample_correlation)
        super().__init__(similarity_func, layer_order, seed, return_average_correlation, return_last_correlation,
                         skip_layers, return_aggregate, abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, aggregate_func=aggregate_func,
                         default_plot_func=default_plot_func, disable_warnings=disable_warnings,
                         display_progressbar=display_progressbar, **kwargs)


class ModelParameterRandomisation(MPRT):
    """Quantus' former name of :class:`MPRT` (the same metric)."""


class SmoothMPRT(_LayerwiseTest):
    """The smooth model parameter randomisation test (Hedström et al. 2023, "Sanity checks
    revisited"): :class:`MPRT` with every explanation averaged over ``nr_samples`` copies of the
    input, ``nr_samples - 1`` of them with Gaussian noise of standard deviation ``noise_magnitude *
    (max - min)`` of each input and the last one noise-free, which removes the noise of the
    explanations that would otherwise pass for randomisation. Default ``layer_order='bottom_up'``
    and normalisation by the average second moment (:func:`normalise_by_average_second_moment_estimate`).

    The noise is drawn from ``np.random.default_rng(seed)`` once per batch (in batch order) and the
    same noisy copies serve every stage (original and randomised models: common random numbers);
    the copies are explained in calls of up to ``batch_size`` inputs (at least one copy of the batch).
    ``a_batch``, when given, is compared as it is; otherwise it is the smoothed explanation of the
    original model.

    Differences from Quantus 0.6: Quantus smooths with ``quantus.explain`` whatever ``explain_func``
    is given, and draws unseeded noise (``np.random.randn``) for every stage; this implementation
    smooths ``explain_func`` and is reproducible; the average leaves "original" out, as in
    :class:`MPRT`.
    """

    def __init__(self, similarity_func: Callable | None = None, layer_order: str = "bottom_up", seed: int = 42,
                 nr_samples: int = 50, noise_magnitude: float = 0.1, return_average_correlation: bool = False,
                 return_last_correlation: bool = False, skip_layers: bool = False, abs: bool = True,
                 normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        super().__init__(similarity_func, layer_order, seed, return_average_correlation, return_last_correlation,
                         skip_layers, return_aggregate, abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, aggregate_func=aggregate_func,
                         default_plot_func=default_plot_func, disable_warnings=disable_warnings,
                         display_progressbar=display_progressbar, **kwargs)
        if int(nr_samples) < 1:
            raise ValueError(f"nr_samples must be >= 1, got {nr_samples}")
        if float(noise_magnitude) < 0:
            raise ValueError(f"noise_magnitude must be >= 0, got {noise_magnitude}")
        self.nr_samples = int(nr_samples)
        self.noise_magnitude = float(noise_magnitude)
        if normalise_func is None:
            func, kw = normalise_by_average_second_moment_estimate, self.normalise_func_kwargs
            self.normalise_func = (lambda a: func(a, **kw)) if kw else func
        self._rng: np.random.Generator | None = None
        self._noisy: np.ndarray | None = None

    def custom_preprocess(self, **kw: Any) -> None:
        super().custom_preprocess(**kw)
        self._rng = np.random.default_rng(self.seed)
        self._noisy = None

    def _copies(self, x: np.ndarray) -> np.ndarray:
        """``(nr_samples, n, ...)``: the noisy copies of ``x`` and ``x`` itself last (drawn once per batch)."""
        if self._noisy is not None and self._noisy.shape[1:] == x.shape and np.array_equal(self._noisy[-1], x):
            return self._noisy
        axes = tuple(range(1, x.ndim))
        std = self.noise_magnitude * (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True))
        rng = self._rng if self._rng is not None else np.random.default_rng(self.seed)
        eps = rng.standard_normal((self.nr_samples - 1,) + x.shape) * std
        self._noisy = np.concatenate([(x + eps).astype(x.dtype), x[None]], 0)
        return self._noisy

    def explain_batch(self, model: MetricModel | None, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        """The explanation of ``x`` averaged over the noisy copies, normalised and made absolute as
        configured."""
        copies = self._copies(x)
        n, k = len(x), self.nr_samples
        per_call = max(1, (model.batch_size if model is not None else n) // n)
        total = None
        for s in range(0, k, per_call):
            chunk = copies[s:s + per_call]
            flat = chunk.reshape((-1,) + x.shape[1:])
            native = model.native(flat) if model is not None else flat
            a = self.explain_func(model=None if model is None else model.model, inputs=native,
                                  targets=np.tile(np.asarray(y), len(chunk)), **self.explain_func_kwargs)
            a = np.asarray(a, np.float64)
            a = a.reshape((len(chunk), n) + a.shape[1:]).sum(0)
            total = a if total is None else total + a
        mean = total / k
        native_x = model.native(x) if model is not None else x
        return self.prepare_attributions(mean, native_x, self.channel_first)


class EfficientMPRT(_Randomisation):
    """The efficient model parameter randomisation test (Hedström et al. 2023, "Sanity checks
    revisited"): the relative rise of the explanation's complexity (``complexity_func``, default the
    discrete entropy of its histogram, :func:`discrete_entropy`) from the original model to the fully
    randomised one (``layer_order`` default ``'bottom_up'``), ``(H_random - H_original) /
    H_original`` per sample: an explanation of a destroyed model should be noise, so higher is better.

    The number of bins: ``complexity_func_kwargs["n_bins"]`` if given; else by the rule
    ``complexity_func_kwargs["rule"]`` (:data:`N_BINS_RULES`, from the attributions of all samples:
    ``a_batch`` or the original model's explanations), kept within ``min_n_bins`` (10) and
    ``max_n_bins`` (200); else ``n_bins_default`` (100). ``compute_extra_scores`` also fills
    ``scores_extra`` as Quantus (deltas and fractions of explanation and model entropy, the mean
    complexity over the randomised layers, the correlation of model and explanation complexity over
    the layers; the model's entropy needs ``softmax=True``, the default). The complexities per stage
    are kept in ``explanation_scores_by_layer`` and ``model_scores_by_layer`` (``"orig"`` first).

    Differences from Quantus 0.6: the rules take ``n`` as the number of attribution values of a sample
    (Quantus: the number of its axes, e.g. 3); the cascade starts from the model's weights (see
    :class:`MPRT`); ``complexity_func_kwargs`` is not changed by the call. A sample whose original
    explanation has zero entropy (constant) scores NaN (its relative rise is undefined; Quantus divides
    by zero), with a warning naming the samples.
    """

    nan_reason = "their original explanations are constant: zero entropy, so the relative rise is undefined"

    higher_is_better = True
    default_softmax = True
    #: the score compares the original model's explanation with the randomised one's, both made
    #: here; ``a_batch`` is only read for the number of bins (``complexity_func_kwargs["rule"]``), so
    #: a missing one is not explained per batch (Quantus explains it and leaves it unused)
    needs_attributions = False

    def __init__(self, complexity_func: Callable | None = None, complexity_func_kwargs: Mapping | None = None,
                 similarity_func: Callable | None = None, layer_order: str = "bottom_up", seed: int = 42,
                 compute_extra_scores: bool = False, skip_layers: bool = True, abs: bool = False,
                 normalise: bool = False, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.complexity_func = discrete_entropy if complexity_func is None else complexity_func
        self.complexity_func_kwargs = dict(complexity_func_kwargs or {})
        self.similarity_func = correlation_spearman if similarity_func is None else similarity_func
        self.layer_order = _check_order(layer_order)
        self.seed = int(seed)
        self.compute_extra_scores = bool(compute_extra_scores)
        self.skip_layers = bool(skip_layers)
        if normalise_func is None:
            func, kw = normalise_by_average_second_moment_estimate, self.normalise_func_kwargs
            self.normalise_func = (lambda a: func(a, **kw)) if kw else func
        rule = self.complexity_func_kwargs.get("rule")
        if rule is not None and rule not in N_BINS_RULES:
            raise ValueError(f"unknown rule {rule!r} for the number of bins; the rules: {sorted(N_BINS_RULES)}")
        self.n_bins: int | None = None
        self.explanation_scores_by_layer: dict[str, list[float]] = {}
        self.model_scores_by_layer: dict[str, list[float]] = {}
        self.scores_extra: dict[str, list] = {}

    def custom_preprocess(self, *, model: MetricModel | None, x_batch: np.ndarray, y_batch: np.ndarray | None,
                          a_batch: np.ndarray | None, s_batch: np.ndarray | None) -> None:
        super().custom_preprocess(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch)
        self.explanation_scores_by_layer = {}
        self.model_scores_by_layer = {}
        self.scores_extra = {}
        kw = self.complexity_func_kwargs
        if "n_bins" in kw:
            self.n_bins = int(kw["n_bins"])
            return
        rule = kw.get("rule")
        if rule is None:
            self.n_bins = int(kw.get("n_bins_default", 100))
            return
        if a_batch is None:
            bs = model.batch_size
            a_batch = np.concatenate([self.explain_batch(model, x_batch[s:s + bs], y_batch[s:s + bs])
                                      for s in range(0, len(x_batch), bs)])
        n_bins = N_BINS_RULES[rule](np.asarray(a_batch, np.float64))
        self.n_bins = int(max(min(n_bins, int(kw.get("max_n_bins", 200))), int(kw.get("min_n_bins", 10))))

    def _complexity(self, a: np.ndarray, x: np.ndarray) -> list[float]:
        if self.complexity_func is discrete_entropy:  # every sample at once
            return [float(v) for v in _discrete_entropies(a.reshape(len(a), -1), int(self.n_bins))]
        kw = {**self.complexity_func_kwargs, "n_bins": self.n_bins}
        return [float(self.complexity_func(a=a[i], x=x[i], **kw)) for i in range(len(a))]

    def _model_entropy(self, model: MetricModel, x: np.ndarray) -> list[float]:
        p = model.predict(x)
        return [entropy(p[i]) for i in range(len(p))]

    def evaluate_batch(self, *, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray,
                       a_batch: np.ndarray, s_batch: np.ndarray | None) -> list:
        ex = self.explanation_scores_by_layer
        mo = self.model_scores_by_layer
        stages = {"orig": self._complexity(self.explain_batch(model, x_batch, y_batch), x_batch)}
        models = {"orig": self._model_entropy(model, x_batch)} if self.compute_extra_scores else {}
        names, gen = self._stages(model)
        with closing(gen):
            for i, (name, random_model) in enumerate(gen):
                if self.skip_layers and i + 1 < len(names):
                    continue
                stages[name] = self._complexity(self.explain_batch(random_model, x_batch, y_batch), x_batch)
                if self.compute_extra_scores:
                    models[name] = self._model_entropy(random_model, x_batch)
        for k, v in stages.items():
            ex.setdefault(k, []).extend(v)
        for k, v in models.items():
            mo.setdefault(k, []).extend(v)
        h0 = np.asarray(stages["orig"])
        h1 = np.asarray(list(stages.values())[-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(h0 != 0, (h1 - h0) / np.where(h0 != 0, h0, 1.0), np.nan)
        return [float(v) for v in rel]

    def custom_postprocess(self, scores: list) -> list:
        self._warn_constant()
        if self.compute_extra_scores:
            ex = list(self.explanation_scores_by_layer.values())
            mo = list(self.model_scores_by_layer.values())
            e0, e1, m0, m1 = (np.asarray(v, np.float64) for v in (ex[0], ex[-1], mo[0], mo[-1]))
            with np.errstate(invalid="ignore", divide="ignore"):
                fe = np.where(e0 != 0, e1 / np.where(e0 != 0, e0, 1.0), np.nan)
                fm = np.where(m0 != 0, m1 / np.where(m0 != 0, m0, 1.0), np.nan)
                fem = np.where(fm != 0, fe / np.where(fm != 0, fm, 1.0), np.nan)
            layers = [k for k in self.explanation_scores_by_layer if k != "orig"]
            E = np.asarray(ex, np.float64).T     # (n, stages)
            M = np.asarray(mo, np.float64).T
            self.scores_extra = {
                "scores_delta_explanation": (e1 - e0).tolist(),
                "scores_fraction_explanation": fe.tolist(),
                "scores_delta_model": (m1 - m0).tolist(),
                "scores_fraction_model": fm.tolist(),
                "scores_delta_explanation_vs_models": fem.tolist(),
                "scores_average_complexity": np.mean([self.explanation_scores_by_layer[k] for k in layers],
                                                     axis=0).tolist(),
                "scores_correlation_model_vs_explanation_complexity":
                    [float(self.similarity_func(M[i], E[i])) for i in range(len(E))],
            }
        return scores

    def summarise(self, scores: Any) -> tuple[np.ndarray, str]:
        return np.asarray(scores, np.float64), "relative rise of explanation entropy"


class RandomLogit(_Randomisation):
    """Random logit (Sixt, Granz & Landgraf 2020, "When explanations lie"): the similarity
    (``similarity_func``, default :func:`ssim`) of each sample's explanation ``a_batch`` for its class
    to the explanation for another class drawn at random from the ``num_classes`` classes; an
    explanation that does not depend on the class scores high: lower is better.

    The other classes are drawn as Quantus 0.6 draws them, so the scores equal Quantus': for each
    batch ``np.random.RandomState(seed).randint(0, num_classes - 1, n)`` indexes the classes without
    ``y``. ``num_classes`` (default 1000, as Quantus) must not exceed the model's outputs.
    """

    def __init__(self, similarity_func: Callable | None = None, num_classes: int = 1000, seed: int = 42,
                 abs: bool = False, normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.similarity_func = ssim if similarity_func is None else similarity_func
        self.num_classes = int(num_classes)
        self.seed = int(seed)

    def custom_preprocess(self, *, model: MetricModel | None, x_batch: np.ndarray, y_batch: np.ndarray | None,
                          a_batch: np.ndarray | None, s_batch: np.ndarray | None) -> None:
        super().custom_preprocess(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch)
        outputs = getattr(model.model, "outputs", None)
        units = outputs[0].shape[-1] if outputs else None
        if units is not None and self.num_classes > int(units):
            raise ExplainError(f"RandomLogit: num_classes={self.num_classes} but the model has {units} outputs; "
                               f"pass num_classes={units}")
        y = np.asarray(y_batch)
        if (y < 0).any() or (y >= self.num_classes).any():
            raise ExplainError(f"RandomLogit: y_batch holds classes outside [0, {self.num_classes})")

    def off_classes(self, y: np.ndarray) -> np.ndarray:
        """The other class of each sample of a batch: index ``k`` drawn by
        ``RandomState(seed).randint(0, num_classes - 1, n)`` into the classes without ``y[i]``."""
        y = np.asarray(y).astype(np.int64).reshape(-1)
        k = np.random.RandomState(self.seed).randint(0, self.num_classes - 1, len(y))
        return k + (k >= y)

    def evaluate_batch(self, *, model: MetricModel, x_batch: np.ndarray, y_batch: np.ndarray,
                       a_batch: np.ndarray, s_batch: np.ndarray | None) -> list:
        other = self.explain_batch(model, x_batch, self.off_classes(y_batch))
        scores = self._similarity(a_batch, other)
        self._offset += len(x_batch)
        return [float(v) for v in scores]
