"""The model-randomisation sanity check (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018,
"Sanity checks for saliency maps", NeurIPS): re-initialise the layers with weights of a copy of the
model from the top down, cumulatively, and measure how similar each explanation stays to the original
one (Spearman rank correlation, with and without absolute values, and SSIM). An explanation that does
not change when the model is destroyed does not explain the model."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any, Mapping

import keras
import numpy as np

from ..engine.errors import ExplainError
from ..engine.graph import build_graph
from .perturbation.comparison import explain
from .perturbation.plots import _figure, _save
from .perturbation.scoring import ArrayLike, _resolve_targets, _Scorer

__all__ = ["model_randomisation", "RandomisationResult", "spearman", "ranks", "ssim", "plot_randomisation",
           "weighted_layers"]


# ----------------------------------------------------------------------------- similarity

def _maps(R: ArrayLike) -> np.ndarray:
    """Relevance as per-sample maps: the channels (last axis) of image batches (N, H, W, C) summed."""
    R = np.asarray(R, np.float64)
    return R.sum(-1) if R.ndim >= 4 else R


def _sorted_ranks(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, r)``: the sorting permutation of each row of ``a`` ``(n, m)`` and the (average, for
    ties) ranks of its values in sorted order, so that ``ranks(a)[i, order[i, j]] = r[i, j]``.
    Values that float32 holds exactly (what a float32 model's explanations are) are sorted as 64-bit
    integer keys, the value's order above its position: distinct keys, one sort, faster than numpy's
    argsort, most of all on rows with many equal values (a ReLU network's zeros)."""
    n, m = a.shape
    single = a.astype(np.float32)
    if np.array_equal(single, a):  # float32 values (NaN fails the test): one sort of 64-bit keys
        bits = (single + np.float32(0.0)).view(np.uint32)  # -0.0 as +0.0
        # the float's order as an unsigned integer's (negative: all bits flipped; positive: the sign
        # bit set) in the high half, the position in the low half
        keys = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31)).astype(np.uint64) << np.uint64(32)
        keys |= np.arange(m, dtype=np.uint64)
        keys.sort(axis=1)
        order = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
        s = keys >> np.uint64(32)
    else:
        order = np.argsort(a, axis=1)
        s = np.take_along_axis(a, order, 1)
    first = np.ones((n, m), bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    pos = np.broadcast_to(np.arange(1.0, m + 1), (n, m))
    if first.all():  # no ties: the position in the sorted row
        return order, pos
    group = np.cumsum(first.ravel()) - 1  # runs of equal values, numbered over all rows
    mean = np.bincount(group, pos.ravel()) / np.bincount(group)
    return order, mean[group].reshape(n, m)


def ranks(a: ArrayLike) -> np.ndarray:
    """Ranks ``1..m`` of the values of each row of ``a`` ``(n, m)``, average ranks for ties (as
    ``scipy.stats.rankdata(a, axis=1)``, float64), with one unstable sort per row: ties are found
    among the sorted values and get the mean of their positions."""
    a = np.asarray(a, np.float64)
    order, r = _sorted_ranks(a)
    out = np.empty(a.shape)
    np.put_along_axis(out, order, r, 1)
    return out


def spearman(a: ArrayLike, b: ArrayLike, ranked_a: np.ndarray | None = None) -> np.ndarray:
    """Spearman rank correlation between ``a[i]`` and ``b[i]`` (flattened) for each sample ``i``
    (average ranks for ties; NaN where a map is constant). ``ranked_a``: ``ranks(a)`` computed
    before (``a`` is then only checked for its shape). ``b``'s ranks are used in ``b``'s sorted order
    (``a``'s ranks gathered into it), never scattered back."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"spearman: shapes differ, {a.shape} and {b.shape}")
    ra = ranks(a.reshape(len(a), -1)) if ranked_a is None else ranked_a
    order, rb = _sorted_ranks(np.asarray(b, np.float64).reshape(len(b), -1))
    centre = (ra.shape[1] + 1) / 2.0  # the mean rank, ties or not
    ra = np.take_along_axis(ra, order, 1) - centre
    rb = rb - centre
    # ranks are multiples of 1/2, so these float64 sums are exact (below 2**53 for up to 10**5 values
    # per row) whatever their order
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def ssim(a: ArrayLike, b: ArrayLike, data_range: float | None = None, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Structural similarity of ``a[i]`` and ``b[i]`` for each sample (Wang, Bovik, Sheikh &
    Simoncelli 2004, "Image quality assessment: from error visibility to structural similarity"):
    local statistics under a Gaussian window (``sigma`` 1.5, 11 x 11), constants ``k1``, ``k2``,
    averaged over the positions whose window lies inside the map (as scikit-image with
    ``gaussian_weights=True``). Maps are 2-D ``(N, H, W)`` (or any rank; every axis after the first
    is filtered). ``data_range`` defaults to the range of values of both arrays."""
    from scipy.ndimage import gaussian_filter

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {a.shape} and {b.shape}")
    if data_range is None:
        data_range = float(max(a.max(), b.max()) - min(a.min(), b.min())) or 1.0
    sig = [0.0] + [sigma] * (a.ndim - 1)
    truncate = 3.5
    f = lambda v: gaussian_filter(v, sig, truncate=truncate, mode="reflect")  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    va = f(a * a) - mu_a ** 2
    vb = f(b * b) - mu_b ** 2
    cov = f(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    pad = int(truncate * sigma + 0.5)
    inner = tuple([slice(None)] + [slice(pad, n - pad) if n > 2 * pad else slice(None) for n in a.shape[1:]])
    s = s[inner]
    return s.reshape(len(s), -1).mean(1)


def _normalise(m: np.ndarray) -> np.ndarray:
    scale = np.abs(m).reshape(len(m), -1).max(1)
    scale = np.where(scale > 0, scale, 1.0)
    return m / scale.reshape((-1,) + (1,) * (m.ndim - 1))


# ----------------------------------------------------------------------------- model randomisation

@dataclass
class RandomisationResult:
    """The outcome of :func:`model_randomisation`.

    Attributes:
        stages: ``['original', layer_top, layer_below, ...]``: at stage ``i`` the top ``i`` layers
            with weights are re-initialised.
        spearman, spearman_abs, ssim: ``(stages, N)`` similarity of each sample's explanation to the
            original one (``spearman_abs`` ranks ``|R|``; ``ssim`` on maps scaled to max |R| = 1).
        method: the explanation method.
    """

    stages: list[str]
    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray
    method: str = ""

    def mean(self, metric: str = "spearman") -> np.ndarray:
        """Mean similarity over the samples per stage."""
        return np.nanmean(getattr(self, metric), axis=1)

    def table(self) -> str:
        """Mean similarity per stage as aligned text."""
        w = max(12, max(len(s) for s in self.stages) + 1)
        lines = [f"model randomisation ({self.method}): similarity to the original explanation",
                 f"{'randomised down to':<{w}} {'spearman':>9} {'|spearman|':>10} {'ssim':>7}"]
        for i, s in enumerate(self.stages):
            lines.append(f"{s:<{w}} {np.nanmean(self.spearman[i]):>9.3f} {np.nanmean(self.spearman_abs[i]):>10.3f} "
                         f"{np.nanmean(self.ssim[i]):>7.3f}")
        return "\n".join(lines)

    def to_csv(self, path: str) -> str:
        """Write mean similarities per stage as CSV; returns ``path``."""
        with open(path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["method", "stage", "randomised_layer", "spearman", "spearman_abs", "ssim"])
            for i, s in enumerate(self.stages):
                wr.writerow([self.method, i, s, f"{np.nanmean(self.spearman[i]):.6g}",
                             f"{np.nanmean(self.spearman_abs[i]):.6g}", f"{np.nanmean(self.ssim[i]):.6g}"])
        return path


def _clone(model: keras.Model) -> keras.Model:
    try:
        clone = keras.models.clone_model(model)
    except Exception as e:  # noqa: BLE001 - keras raises many kinds for unclonable models
        raise ExplainError(f"cannot copy the model for randomisation (keras.models.clone_model failed: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not clone.built:
        shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
        if shape is None:
            raise ExplainError("cannot copy the model for randomisation: its input shape is unknown")
        clone.build(shape)
    clone.set_weights(model.get_weights())
    return clone


def weighted_layers(model: keras.Model) -> list[Any]:
    """The layers with trainable weights in forward order (nested models flattened)."""
    graph = build_graph(model, canonize=False)
    out, seen = [], set()
    for step in graph.steps:
        layer = step.layer
        if id(layer) in seen or not getattr(layer, "trainable_weights", None):
            continue
        seen.add(id(layer))
        out.append(layer)
    return out


def _reinitialise(layer: Any, rng: np.random.Generator) -> None:
    """Re-draw a layer's trainable weights: with the layer's own initializer where it has one
    (``kernel_initializer``, ``bias_initializer``, ...), else a truncated normal with standard
    deviation ``1/sqrt(fan_in)`` for kernels, ones for scales and zeros for other vectors."""
    for v in layer.trainable_weights:
        shape = tuple(v.shape)
        name = v.name.split("/")[-1].split(":")[0]
        init = getattr(layer, f"{name}_initializer", None)
        seed = int(rng.integers(2 ** 31 - 1))
        if init is not None:
            cfg = keras.initializers.serialize(init)
            if isinstance(cfg, dict) and isinstance(cfg.get("config"), dict) and "seed" in cfg["config"]:
                cfg["config"]["seed"] = seed
            value = np.asarray(keras.initializers.deserialize(cfg)(shape, dtype=v.dtype))
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            value = np.clip(rng.normal(0.0, 1.0, shape), -2, 2) / np.sqrt(fan_in)
        elif name in ("gamma", "scale"):
            value = np.ones(shape)
        else:
            value = np.zeros(shape)
        v.assign(np.asarray(value).astype(v.dtype))


def model_randomisation(model: keras.Model, x: ArrayLike, method: Any = "epsilon_gamma_box",
                        target: ArrayLike | None = None, *, seed: int = 0,
                        value_range: tuple[float, float] | None = None, absolute: bool | None = None,
                        output: int | str | None = None, method_params: Mapping[str, Any] | None = None,
                        **params: Any) -> RandomisationResult:
    """Cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps").

    A copy of ``model`` has its layers with weights re-initialised one by one from the top (output)
    down, cumulatively; after each step ``x`` is explained again (for the classes the original model
    predicted, or ``target``) and compared with the original explanation, per sample: Spearman rank
    correlation of the maps (channels summed), of their absolute values, and SSIM of the maps scaled
    to max |R| = 1. A method that explains the model loses similarity quickly; one that stays similar
    explains the input, not the model. ``model`` itself is never changed.

    Args:
        method: any name :func:`compare` accepts (an LRP rule or preset, ``'gradient'``, ...).
        seed: random seed of the re-initialisation.
        params: parameters of the method; ``value_range`` fills ``low``/``high`` of box rules
            (default: min and max of ``x``); ``absolute`` as in :func:`compare`.
        method_params: the method's parameters as a mapping, merged with ``params``: use it for
            parameters whose names this function takes itself, e.g. SmoothGrad's noise ``seed``
            (``method_params={'seed': 0, 'n': 16}``).
    """
    if method_params:
        clash = sorted(set(method_params) & set(params))
        if clash:
            raise TypeError(f"model_randomisation: {', '.join(clash)} given both in method_params and as "
                            f"keyword arguments")
        params = {**dict(method_params), **params}
    scorer = _Scorer(model, output)
    xs = scorer.check(x)
    targets = _resolve_targets(scorer(xs), target)
    if value_range is None:
        value_range = (float(xs.min()), float(xs.max()))
    if absolute is not None:
        params["absolute"] = absolute
    if output is not None:
        params["output"] = output

    def run(m: keras.Model) -> np.ndarray:
        return _maps(explain(m, xs, method, targets, params, value_range))

    base = run(model)
    clone = _clone(model)
    layers = weighted_layers(clone)
    if not layers:
        raise ExplainError("the model has no layers with trainable weights to randomise")
    rng = np.random.default_rng(seed)
    stages, maps = ["original"], [base]
    for layer in reversed(layers):
        _reinitialise(layer, rng)
        stages.append(layer.name)
        maps.append(run(clone))
    nb = _normalise(base)
    sp = np.stack([spearman(base, m) for m in maps])
    spa = np.stack([spearman(np.abs(base), np.abs(m)) for m in maps])
    ss = np.stack([ssim(nb, _normalise(m), data_range=2.0) for m in maps])
    label = method if isinstance(method, str) else getattr(method, "name", type(method).__name__)
    return RandomisationResult(stages, sp, spa, ss, str(label))



def plot_randomisation(results: Mapping[str, RandomisationResult] | RandomisationResult,
                       path: str | None = None, title: str | None = None, dpi: int = 100):
    """Plot model-randomisation similarity (Spearman, |Spearman|, SSIM) against the randomised
    layers, one line per method. Returns the Figure; writes a PNG when ``path`` is given."""
    if isinstance(results, RandomisationResult):
        results = {results.method: results}
    if not results:
        raise ValueError("nothing to plot")
    fig = _figure(13.5, 3.8)
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (metric, name) in zip(axes, [("spearman", "Spearman rank correlation"),
                                         ("spearman_abs", "Spearman of |R|"), ("ssim", "SSIM")]):
        for label, r in results.items():
            ax.plot(np.arange(len(r.stages)), r.mean(metric), marker="o", markersize=3, label=label)
        stages = next(iter(results.values())).stages
        ax.set_xticks(np.arange(len(stages)))
        ax.set_xticklabels(stages, rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the original explanation")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.03, 0.5))
    fig.suptitle(title or "Cascading model randomisation (top layer first)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)
