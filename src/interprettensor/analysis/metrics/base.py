"""What every metric shares (:class:`Metric`): Quantus' arguments and defaults, the preparation of a
batch (channel layout, the model wrapped, explanations computed, normalised, made absolute) and the
aggregation of the scores.

A metric is called as in Quantus (Hedström et al. 2023, JMLR 24(34)) and returns one score (or one
curve) per sample, a list::

    metric = it.metrics.PixelFlipping(features_in_step=28, perturb_baseline="black")
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=a)

A subclass implements :meth:`Metric.evaluate_batch` on channels-last arrays (``x`` ``(n, *spatial,
C)``; ``a`` ``(n, *spatial, 1)`` or shaped like ``x``; feature vectors ``(n, D)``) and calls the model
through :class:`~.model.MetricModel`, which batches and compiles the calls. The metrics differ from
Quantus where it has a bug; each says so in its docstring.

Normalisation follows Quantus 0.6: with ``normalise=True`` the attributions are divided by the largest
absolute value of the whole ``a_batch`` (given) or of each batch of ``batch_size`` explanations
(computed by ``explain_func``), then made absolute if ``abs=True``.
"""

from __future__ import annotations

import warnings

from typing import Any, Callable, Mapping

import keras
import numpy as np

from ...engine.errors import ExplainError
from .explain import as_explain_func
from .model import MetricModel, to_channels_last

__all__ = ["Metric", "normalise_by_max", "normalise_by_negative", "infer_channel_first", "ExplainFunc"]

#: ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs) -> attributions``, as in Quantus
ExplainFunc = Callable[..., Any]


def normalise_by_max(a: np.ndarray, normalise_axes: tuple[int, ...] | None = None) -> np.ndarray:
    """``a / max |a|`` over ``normalise_axes`` (default all axes: one maximum for the whole array, as
    Quantus does); an all-zero ``a`` is returned unchanged."""
    a = np.asarray(a, np.float64)
    if not np.any(a):
        return a
    axes = tuple(range(a.ndim)) if normalise_axes is None else tuple(normalise_axes)
    m = np.max(np.abs(a), axis=axes, keepdims=True)
    return np.divide(a, m, out=np.zeros_like(a), where=m > 0)


def normalise_by_negative(a: np.ndarray, normalise_axes: tuple[int, ...] | None = None) -> np.ndarray:
    """Positive values divided by the largest, negative ones by the largest magnitude of the negative
    ones, so that ``a`` lies in ``[-1, 1]`` with both signs kept apart (Quantus'
    ``normalise_by_negative``); an all-zero ``a`` is returned unchanged."""
    a = np.asarray(a, np.float64)
    if not np.any(a):
        return a
    axes = tuple(range(a.ndim)) if normalise_axes is None else tuple(normalise_axes)
    pos = np.max(np.where(a > 0, a, 0.0), axis=axes, keepdims=True)
    neg = np.max(np.where(a < 0, -a, 0.0), axis=axes, keepdims=True)
    out = np.where(a > 0, np.divide(a, pos, out=np.zeros_like(a), where=pos > 0), a)
    return np.where(a < 0, np.divide(a, neg, out=np.zeros_like(a), where=neg > 0), out)


def infer_channel_first(x: np.ndarray) -> bool:
    """The channel layout of a batch, inferred from its shape as Quantus infers it: ``(N, D)`` has no
    channels (False here: nothing to move); ``(N, C, T)`` / ``(N, C, H, W)`` are channels-first when
    the channel axis is the smallest; equal sizes are ambiguous and raise."""
    shape = np.shape(x)
    if len(shape) == 2:
        return False
    if len(shape) == 3:
        if shape[1] == shape[2]:
            raise ExplainError(f"cannot tell the channel axis of inputs shaped {shape}; pass channel_first=")
        return shape[1] < shape[2]
    if len(shape) == 4:
        if shape[1] == shape[3] or (shape[1] > min(shape[2:]) and shape[3] > min(shape[1:3])):
            raise ExplainError(f"cannot tell the channel axis of inputs shaped {shape}; pass channel_first=")
        return shape[1] < shape[3]
    raise ExplainError(f"inputs must be (N, D), (N, T, C) or (N, H, W, C) batches (or channels-first with "
                       f"channel_first=True), got shape {shape}")


class Metric:
    """Quantus' metric interface (its base class ``quantus.Metric``), batched.

    Args:
        abs: take the absolute value of the attributions (after normalising).
        normalise: divide the attributions by their largest magnitude (:func:`normalise_by_max`).
        normalise_func: the normalisation (default :func:`normalise_by_max`).
        normalise_func_kwargs: keyword arguments of ``normalise_func``.
        return_aggregate: return ``[aggregate_func(scores)]`` instead of one score per sample.
        aggregate_func: how to aggregate (default ``np.mean``).
        default_plot_func: a function plotting the results (:meth:`plot`).
        disable_warnings: accepted as Quantus does; this library warns only where a result would
            otherwise be wrong, and those warnings stay.
        display_progressbar: show a progress bar over the batches.
    """

    #: name of the category in Quantus' taxonomy
    category: str = ""

    def __init__(self, abs: bool = False, normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, **kwargs: Any):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(kwargs)}")
        self.abs = bool(abs)
        self.normalise = bool(normalise)
        func = normalise_by_max if normalise_func is None else normalise_func
        self.normalise_func_kwargs = dict(normalise_func_kwargs or {})
        self.normalise_func = (lambda a: func(a, **self.normalise_func_kwargs)) if self.normalise_func_kwargs else func
        self.return_aggregate = bool(return_aggregate)
        self.aggregate_func = np.mean if aggregate_func is None else aggregate_func
        self.default_plot_func = default_plot_func
        self.disable_warnings = bool(disable_warnings)
        self.display_progressbar = bool(display_progressbar)
        self.explain_func: ExplainFunc | None = None
        self.explain_func_kwargs: dict[str, Any] = {}
        self.channel_first = False
        self.evaluation_scores: list = []
        self.all_evaluation_scores: list = []

    # ------------------------------------------------------------------ the call

    #: ``softmax`` when the call does not say (Quantus sets it per metric)
    default_softmax: bool | None = False
    #: whether the metric needs ``a_batch`` (or ``explain_func``) at all
    needs_attributions: bool = True
    #: whether the metric needs ``s_batch``
    needs_segmentation: bool = False
    #: whether the metric needs the model
    needs_model: bool = True
    #: the score direction (Quantus' ``score_direction``): True where higher scores mean better
    #: explanations, False where lower ones do; used by :func:`~.comparison.compare`'s ranking
    higher_is_better: bool = True

    def __call__(self, model: keras.Model | None, x_batch: Any, y_batch: Any, a_batch: Any = None,
                 s_batch: Any = None, channel_first: bool | None = None, explain_func: ExplainFunc | None = None,
                 explain_func_kwargs: Mapping[str, Any] | None = None, model_predict_kwargs: Mapping | None = None,
                 softmax: bool | None = None, device: str | None = None, batch_size: int = 64,
                 custom_batch: Any = None, **kwargs: Any) -> list:
        """Score each sample: ``x_batch`` (channels-last unless ``channel_first``), ``y_batch`` the
        explained classes, ``a_batch`` the attributions (or ``explain_func`` to compute them, Quantus'
        signature, e.g. :func:`interprettensor.analysis.metrics.explain`), ``s_batch`` the masks (the
        localisation metrics). Returns a list, one entry per sample (``[aggregate]`` with
        ``return_aggregate``)."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(kwargs)}")
        if device not in (None, "cpu") and not isinstance(device, str):
            raise ExplainError(f"device must be a string or None, got {device!r}")
        if custom_batch is not None:
            raise ExplainError(f"{type(self).__name__} takes no custom_batch")
        if int(batch_size) < 1:
            raise ExplainError(f"batch_size must be >= 1, got {batch_size}")
        x = np.asarray(x_batch)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ExplainError(f"x_batch must be a non-empty batch (N, ...), got shape {x.shape}")
        n = x.shape[0]
        y = None if y_batch is None else np.asarray(y_batch)
        if y is not None and (y.ndim == 0 or y.shape[0] != n):
            raise ExplainError(f"y_batch must hold one label per sample ({n}), got shape {np.shape(y_batch)}")
        cf = infer_channel_first(x) if channel_first is None else bool(channel_first)
        self.channel_first = cf
        self.explain_func = as_explain_func(explain_func)
        self.explain_func_kwargs = dict(explain_func_kwargs or {})
        if device is not None:
            self.explain_func_kwargs.setdefault("device", device)
        use_softmax = self.default_softmax if softmax is None else bool(softmax)
        wrapped = None
        if model is not None:
            wrapped = MetricModel(model, channel_first=cf, softmax=bool(use_softmax), batch_size=int(batch_size),
                                  model_predict_kwargs=dict(model_predict_kwargs or {}) or None)
        elif self.needs_model:
            raise ExplainError(f"{type(self).__name__} needs the model")
        xc = to_channels_last(x) if cf else x
        a = None
        if a_batch is not None:
            a = self.prepare_attributions(np.asarray(a_batch), x, cf)
        elif self.needs_attributions and explain_func is None:
            raise ExplainError(f"{type(self).__name__} needs a_batch or explain_func")
        s = None
        if s_batch is not None:
            s = self.prepare_attributions(np.asarray(s_batch), x, cf, what="s_batch", normalise=False)
        elif self.needs_segmentation:
            raise ExplainError(f"{type(self).__name__} needs s_batch (the masks, shaped like x or without "
                               f"its channel axis)")
        self.custom_preprocess(model=wrapped, x_batch=xc, y_batch=y, a_batch=a, s_batch=s)
        scores: list = []
        starts = range(0, n, int(batch_size))
        bar = None
        if self.display_progressbar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=type(self).__name__)
        for s0 in starts:
            sl = slice(s0, s0 + int(batch_size))
            xb = xc[sl]
            yb = None if y is None else y[sl]
            ab = None if a is None else a[sl]
            if ab is None and self.needs_attributions:
                ab = self.explain_batch(wrapped, xb, yb)
            sb = None if s is None else s[sl]
            scores.extend(self.evaluate_batch(model=wrapped, x_batch=xb, y_batch=yb, a_batch=ab, s_batch=sb))
            if bar is not None:
                bar.update(xb.shape[0])
        if bar is not None:
            bar.close()
        scores = self.custom_postprocess(scores)
        self._warn_undefined(scores)
        if self.return_aggregate:
            scores = [self.aggregate_func(scores)]
        self.evaluation_scores = scores
        self.all_evaluation_scores.extend(scores)
        return scores

    #: why a sample's score can be undefined (NaN) under this metric, for the warning that names the
    #: samples; a metric whose scores are always defined leaves it empty
    nan_reason: str = ""

    def _warn_undefined(self, scores: Any) -> None:
        """Warn, naming the samples, where a score is NaN: a NaN never leaves a metric silently
        (:attr:`nan_reason` says why it can happen; the comparisons leave such samples out)."""
        def nan(v: Any) -> bool:
            try:
                return bool(np.isnan(np.asarray(v, np.float64)).any())
            except (TypeError, ValueError):
                return False

        rows = list(scores.values()) if isinstance(scores, dict) else [scores]
        bad: set[int] = set()
        aggregate = False
        for row in rows:
            if isinstance(row, (list, tuple, np.ndarray)):
                bad.update(i for i, v in enumerate(row) if nan(v))
            elif nan(row):  # one number for the whole batch (ROAD's curve)
                aggregate = True
        if bad or aggregate:
            why = f" ({self.nan_reason})" if self.nan_reason else ""
            which = f"the scores of samples {sorted(bad)}" if bad else "some scores"
            warnings.warn(f"{type(self).__name__}: {which} are undefined (NaN){why}", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ preparing attributions

    def prepare_attributions(self, a: np.ndarray, x: np.ndarray, channel_first: bool, what: str = "a_batch",
                             normalise: bool = True) -> np.ndarray:
        """``a`` (shaped like ``x``, or ``x`` without its channel axis, or with a channel axis of 1) as
        channels-last float64: ``(n, *spatial, 1)`` or shaped like channels-last ``x``; normalised and
        made absolute as the metric's arguments say (``normalise`` False for masks)."""
        a = np.asarray(a)
        if a.shape[0] != x.shape[0]:
            raise ExplainError(f"{what} holds {a.shape[0]} samples, x_batch {x.shape[0]}")
        if x.ndim == 2:
            if a.shape != x.shape:
                raise ExplainError(f"{what} has shape {a.shape}, but x_batch has shape {x.shape}")
            out = a
        else:
            xc = to_channels_last(x) if channel_first else x
            if a.shape == x.shape:
                out = to_channels_last(a) if channel_first else a
            elif a.ndim == x.ndim - 1 and a.shape[1:] == xc.shape[1:-1]:
                out = a[..., None]
            elif a.ndim == x.ndim and channel_first and a.shape[1] == 1 and a.shape[2:] == x.shape[2:]:
                out = to_channels_last(a)
            elif a.ndim == x.ndim and not channel_first and a.shape[-1] == 1 and a.shape[1:-1] == x.shape[1:-1]:
                out = a
            else:
                raise ExplainError(f"{what} has shape {a.shape}; expected x_batch's shape {x.shape}, or it "
                                   f"without the channel axis")
        if what == "s_batch":
            return out.astype(bool) if out.dtype != bool else out
        out = out.astype(np.float64)
        if not np.isfinite(out).all():
            raise ExplainError(f"{what} contains NaN or infinite values")
        if normalise and self.normalise:
            out = np.asarray(self.normalise_func(out), np.float64)
        if normalise and self.abs:
            out = np.abs(out)
        return out

    def explain_batch(self, model: MetricModel | None, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        """Attributions of channels-last ``x`` by ``explain_func`` (called on the model's own layout),
        prepared as :meth:`prepare_attributions` does."""
        if self.explain_func is None:
            raise ExplainError(f"{type(self).__name__} needs a_batch or explain_func")
        native = model.native(x) if model is not None else x
        a = self.explain_func(model=None if model is None else model.model, inputs=native, targets=y,
                              **self.explain_func_kwargs)
        a = np.asarray(keras.ops.convert_to_numpy(a) if not isinstance(a, np.ndarray) else a)
        return self.prepare_attributions(a, native, self.channel_first)

    # ------------------------------------------------------------------ what a metric defines

    def custom_preprocess(self, *, model: MetricModel | None, x_batch: np.ndarray, y_batch: np.ndarray | None,
                          a_batch: np.ndarray | None, s_batch: np.ndarray | None) -> None:
        """Checks and preparation over the whole data before the batches (optional)."""

    def evaluate_batch(self, *, model: MetricModel | None, x_batch: np.ndarray, y_batch: np.ndarray | None,
                       a_batch: np.ndarray | None, s_batch: np.ndarray | None) -> list:
        """Scores of one batch (channels-last arrays): a list, one entry per sample."""
        raise NotImplementedError

    def custom_postprocess(self, scores: list) -> list:
        """The scores after all batches (optional; e.g. metrics scored over the whole data)."""
        return scores

    # ------------------------------------------------------------------ reporting

    #: how :meth:`summarise` makes one number of a curve: ``"mean"`` of its points, or ``"auc"``, the
    #: trapezoidal area under it with the points evenly spaced on [0, 1]
    curve_summary: str = "mean"

    def summarise(self, scores: Any) -> tuple[np.ndarray, str]:
        """One number per sample from what the call returned, and the summary's name (for
        :func:`~.comparison.compare`): scores as they are (``"score"``); curves (one array per
        sample) by ``curve_summary`` (``"mean of curve"`` or ``"area under curve"``). Metrics
        returning other structures override this."""
        if isinstance(scores, dict):
            raise ExplainError(f"{type(self).__name__} returns a dict of scores; it must define summarise()")
        rows = [np.asarray(v, np.float64) for v in scores]
        if all(r.ndim == 0 for r in rows):
            return np.array([float(r) for r in rows]), "score"
        if self.curve_summary == "mean":
            return np.array([float(np.mean(r)) for r in rows]), "mean of curve"
        if self.curve_summary == "auc":
            def area(r: np.ndarray) -> float:
                r = r.reshape(-1)
                return float(r[0]) if r.size == 1 else float(((r[1:] + r[:-1]) / 2).sum() / (r.size - 1))

            return np.array([area(r) for r in rows]), "area under curve"
        raise ExplainError(f"{type(self).__name__}.curve_summary must be 'mean' or 'auc', got {self.curve_summary!r}")

    @property
    def get_params(self) -> dict[str, Any]:
        """The metric's settings (Quantus' ``get_params``)."""
        skip = {"evaluation_scores", "all_evaluation_scores", "default_plot_func"}
        return {k: v for k, v in self.__dict__.items() if k not in skip and not k.startswith("_")}

    def plot(self, plot_func: Callable | None = None, show: bool = False, path_to_save: str | None = None,
             *args: Any, **kwargs: Any) -> None:
        """Plot with ``plot_func`` (default: the metric's ``default_plot_func``) and save it."""
        import matplotlib.pyplot as plt

        func = plot_func or self.default_plot_func
        if func is None:
            raise ExplainError(f"{type(self).__name__} has no default plot; pass plot_func")
        func(*args, **kwargs)
        if path_to_save:
            plt.savefig(path_to_save, dpi=150)
        if show:
            plt.show()
