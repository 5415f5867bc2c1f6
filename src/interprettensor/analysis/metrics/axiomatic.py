"""Axiomatic metrics: does the explanation have a property every explanation should have? Each calls
the model through :class:`~.model.MetricModel` with all perturbed versions of a batch stacked into
one call (split into chunks only where the stack would exceed ``max_elements`` numbers).

Differences from Quantus 0.6: :class:`NonSensitivity` with ``features_in_step > 1`` scores groups of
features (Quantus fails on broadcasting there); the ``'uniform'`` baseline is drawn per feature from
the metric's ``seed`` (Quantus draws one unseeded value per sample); :class:`InputInvariance` shifts
the first layer's bias exactly and refuses layers where no bias can absorb the shift (Quantus takes
the smallest response of a padded convolution to the shift as if it were the same everywhere).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import keras
import numpy as np

from ...engine.errors import ExplainError
from .base import Metric
from .model import MetricModel
from .perturb import baseline

__all__ = ["Completeness", "NonSensitivity", "InputInvariance", "shift_first_layer"]

#: the most numbers a stack of perturbed inputs may hold in one call
MAX_ELEMENTS = 2 ** 25


def _identity(x: np.ndarray) -> np.ndarray:
    return x


class Completeness(Metric):
    """Completeness (Sundararajan et al. 2017, "Axiomatic attribution for deep networks", ICML; also
    "summation to delta", Shrikumar et al. 2017): whether the attributions sum to the change of the
    class score from the baseline to the input, ``sum_i a_i == output_func(f_y(x) - f_y(x'))`` with
    ``x'`` every feature replaced by ``perturb_baseline``. The comparison is exact, as in Quantus
    (one boolean per sample).

    Args:
        output_func: applied to the score difference (default the identity).
        perturb_baseline: what the features become (:func:`~.perturb.baseline`: ``'black'`` the
            sample's minimum, ``'white'``, ``'mean'``, ``'uniform'``, a number or an array).
        perturb_func: Quantus' replacement function; only the default (baseline replacement) is
            supported here: anything else raises.
        perturb_func_kwargs: ``uniform_low`` / ``uniform_high`` for the ``'uniform'`` baseline.
        seed: seeds the ``'uniform'`` baseline.
    """

    category = "Axiomatic"
    default_softmax = False

    def __init__(self, abs: bool = False, normalise: bool = True, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, output_func: Callable | None = None,
                 perturb_baseline: Any = "black", perturb_func: Callable | None = None,
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = None, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int = 42, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.output_func = _identity if output_func is None else output_func
        self.perturb_baseline = perturb_baseline
        self.perturb_kwargs = _perturb_kwargs(type(self).__name__, perturb_func, perturb_func_kwargs)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        _need_labels(type(self).__name__, y_batch)
        self.rng = np.random.default_rng(self.seed)  # every call draws the same baselines

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        x = np.asarray(x_batch)
        x0 = baseline(self.perturb_baseline, x, self.rng, **self.perturb_kwargs).astype(x.dtype)
        f = model.scores(np.stack([x, x0]), y_batch)  # (2, n): one call
        target = np.asarray(self.output_func(f[0] - f[1]))
        return [bool(v) for v in a_batch.reshape(len(a_batch), -1).sum(-1) == target]


class NonSensitivity(Metric):
    """Non-sensitivity (Nguyen & Martinez 2020, "On quantitative aspects of model interpretability",
    arXiv:2007.07584): the number of features (or groups of ``features_in_step`` features) where the
    explanation and the model disagree about mattering: the attribution is below ``eps`` (all of the
    group's, after ``abs``) but replacing the features by ``perturb_baseline`` moves the class score
    by ``eps`` or more, or the other way round. 0 is best.

    Args:
        eps: the threshold for an attribution and for a score change.
        features_in_step: how many features are replaced at once: consecutive features in the order
            of the channels-last input (the channels of a pixel first, then the pixels row by row);
            the last group may be smaller.
        perturb_baseline, perturb_func, perturb_func_kwargs, seed: as :class:`Completeness`.

    Difference from Quantus 0.6: with ``features_in_step > 1`` Quantus compares one prediction per
    group with one attribution per feature and fails on broadcasting; here a group counts as
    "non-feature" when all its attributions are below ``eps``, as the definition asks. With
    ``features_in_step=1`` the scores equal Quantus'.
    """

    higher_is_better = False

    category = "Axiomatic"
    default_softmax = True

    def __init__(self, eps: float = 1e-5, features_in_step: int = 1, abs: bool = True, normalise: bool = True,
                 normalise_func: Callable | None = None, normalise_func_kwargs: Mapping[str, Any] | None = None,
                 perturb_baseline: Any = "black", perturb_func: Callable | None = None,
                 perturb_func_kwargs: Mapping[str, Any] | None = None, return_aggregate: bool = False,
                 aggregate_func: Callable | None = np.mean, default_plot_func: Callable | None = None,
                 disable_warnings: bool = False, display_progressbar: bool = False, seed: int = 42,
                 max_elements: int = MAX_ELEMENTS, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if int(features_in_step) < 1:
            raise ExplainError(f"NonSensitivity: features_in_step must be >= 1, got {features_in_step}")
        self.eps = float(eps)
        self.features_in_step = int(features_in_step)
        self.perturb_baseline = perturb_baseline
        self.perturb_kwargs = _perturb_kwargs(type(self).__name__, perturb_func, perturb_func_kwargs)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.max_elements = int(max_elements)

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        _need_labels(type(self).__name__, y_batch)
        self.rng = np.random.default_rng(self.seed)  # every call draws the same baselines

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        x = np.asarray(x_batch)
        n = x.shape[0]
        a = np.broadcast_to(a_batch, x.shape).reshape(n, -1)
        d = a.shape[-1]
        step = self.features_in_step
        k = -(-d // step)
        group = np.arange(d) // step  # the group of each feature
        # a group is a non-feature when all of its attributions are below eps
        non_feature = np.ones((n, k), bool)
        np.logical_and.at(non_feature, (slice(None), group), a < self.eps)
        f = model.scores(x, y_batch)
        x0 = baseline(self.perturb_baseline, x, self.rng, **self.perturb_kwargs).reshape(n, -1)
        xf = x.reshape(n, -1)
        chunk = max(1, self.max_elements // max(1, n * d))
        changes = []
        for g0 in range(0, k, chunk):  # steps stacked: one model call per chunk of groups
            g = np.arange(g0, min(k, g0 + chunk))
            hit = group[None, :] == g[:, None]  # (steps, d)
            stack = np.where(hit[:, None, :], x0[None], xf[None]).astype(x.dtype).reshape((len(g),) + x.shape)
            changes.append(np.abs(model.scores(stack, y_batch) - f[None]))
        insensitive = (np.concatenate(changes) < self.eps).T  # (n, k)
        return [int(v) for v in (insensitive ^ non_feature).sum(-1)]


class InputInvariance(Metric):
    """Input invariance (Kindermans et al. 2019, "The (un)reliability of saliency methods", in
    Explainable AI, LNCS 11700): a second model whose first layer's bias absorbs a constant shift of
    the input, ``b' = b - W m``, computes the same function of the shifted input ``x + m`` as the
    first of ``x``; an input-invariant explanation gives that model and input the same attributions.
    One boolean per sample: all attributions equal within ``1e-4`` (absolute), as in Quantus.

    Args:
        input_shift: the shift ``m`` added to every feature.
        perturb_func, perturb_func_kwargs: Quantus' shift function; only the default is supported.

    Needs ``explain_func`` (the explanation is recomputed for the shifted model). The first layer
    must be a Dense or convolution layer with a bias and no padding (``padding='valid'``), on the
    model's input: with zero padding the shift's response differs at the borders and no bias absorbs
    it (Quantus then takes the smallest response as if it held everywhere; here it raises).
    """

    category = "Axiomatic"
    default_softmax = None

    def __init__(self, abs: bool = False, normalise: bool = False, normalise_func: Callable | None = None,
                 normalise_func_kwargs: Mapping[str, Any] | None = None, input_shift: float = -1,
                 perturb_func: Callable | None = None, perturb_func_kwargs: Mapping[str, Any] | None = None,
                 return_aggregate: bool = False, aggregate_func: Callable | None = None,
                 default_plot_func: Callable | None = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if perturb_func is not None:
            raise ExplainError("InputInvariance supports only its own shift (perturb_func=None)")
        extra = dict(perturb_func_kwargs or {})
        self.input_shift = float(extra.pop("input_shift", input_shift))
        if extra:
            raise TypeError(f"InputInvariance got unexpected perturb_func_kwargs {sorted(extra)}")
        self._shifted: MetricModel | None = None

    def custom_preprocess(self, *, model, x_batch, y_batch, a_batch, s_batch) -> None:
        if self.explain_func is None:
            raise ExplainError("InputInvariance needs explain_func (to explain the shifted model)")
        # the shifted copy of this call's model, made once per call
        self._shifted = MetricModel(shift_first_layer(model.model, self.input_shift), channel_first=model.channel_first,
                                    softmax=model.softmax, batch_size=model.batch_size)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch) -> list:
        shifted = self._shifted
        xs = (np.asarray(x_batch, np.float64) + self.input_shift).astype(np.asarray(x_batch).dtype)
        a_shift = self.explain_batch(shifted, xs, y_batch)
        a = np.broadcast_to(a_batch, np.broadcast_shapes(a_batch.shape, a_shift.shape))
        close = np.isclose(a, np.broadcast_to(a_shift, a.shape), atol=1e-4)
        return [bool(v) for v in close.reshape(len(a), -1).all(-1)]


def shift_first_layer(model: keras.Model, shift: float) -> keras.Model:
    """A copy of ``model`` whose first layer's bias absorbs a constant input shift ``m``: ``b' = b -
    W m`` so that ``copy(x + m) == model(x)`` (Kindermans et al. 2019). The first layer must be a
    Dense or (non-depthwise) convolution with a bias and ``padding='valid'`` taking the model's
    input."""
    layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    if not layers:
        raise ExplainError("InputInvariance: the model has no layers")
    first = layers[0]
    conv = isinstance(first, keras.layers.Conv1D | keras.layers.Conv2D | keras.layers.Conv3D) and not isinstance(
        first, keras.layers.DepthwiseConv2D | keras.layers.SeparableConv2D | keras.layers.Conv2DTranspose)
    if not (isinstance(first, keras.layers.Dense) or conv):
        raise ExplainError(f"InputInvariance: the first layer {first.name!r} ({type(first).__name__}) is not a "
                           f"Dense or convolution layer whose bias could absorb an input shift")
    if getattr(first, "bias", None) is None:
        raise ExplainError(f"InputInvariance: the first layer {first.name!r} has no bias to absorb the input shift")
    if conv and first.padding != "valid":
        raise ExplainError(f"InputInvariance: the first layer {first.name!r} pads its input "
                           f"(padding={first.padding!r}): the shift's response differs at the borders and no bias "
                           f"absorbs it; use a model whose first convolution has padding='valid'")
    if getattr(first, "groups", 1) != 1:
        raise ExplainError(f"InputInvariance: grouped convolution {first.name!r} is not supported")
    if len(model.inputs) != 1 or first.input is not model.inputs[0]:
        raise ExplainError(f"InputInvariance: the first layer {first.name!r} does not take the model's input")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    target = [la for la in copy.layers if not isinstance(la, keras.layers.InputLayer)][0]
    kernel = np.asarray(keras.ops.convert_to_numpy(target.kernel), np.float64)
    bias = np.asarray(keras.ops.convert_to_numpy(target.bias), np.float64)
    # W m: the kernel summed over everything but the output units, times the shift
    response = kernel.reshape(-1, kernel.shape[-1]).sum(0) * float(shift)
    target.bias.assign((bias - response).astype(keras.backend.standardize_dtype(target.bias.dtype)))
    return copy


def _need_labels(name: str, y: np.ndarray | None) -> None:
    if y is None:
        raise ExplainError(f"{name} needs y_batch (the explained classes)")


def _perturb_kwargs(name: str, perturb_func: Callable | None, kwargs: Mapping[str, Any] | None) -> dict:
    if perturb_func is not None:
        raise ExplainError(f"{name} replaces features by perturb_baseline; a custom perturb_func is not supported")
    kw = dict(kwargs or {})
    unknown = set(kw) - {"uniform_low", "uniform_high"}
    if unknown:
        raise TypeError(f"{name} got unexpected perturb_func_kwargs {sorted(unknown)}")
    return kw
