"""Region perturbation (pixel flipping, AOPC; Samek, Binder, Montavon, Lapuschkin & Müller 2017,
"Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS 28(11)) of one
explanation or several methods compared, with tables and plots. See :mod:`.evaluate` for the
overview.

The relevance is summed over non-overlapping ``patch`` x ``patch`` regions (and over channels; runs of
``patch`` positions for sequences ``(N, T, C)`` and feature vectors ``(N, F)``); regions are replaced,
one per step, in order of decreasing (``'morf'``) or increasing (``'lerf'``) relevance, and the
model's pre-softmax score for the target class is recorded after each step. The area over the
perturbation curve ``AOPC = 1/(L+1) sum_{k=0..L} <f(x^(0)) - f(x^(k))>`` is larger (MoRF) for
explanations that point at what the model uses.
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from ..engine.errors import ExplainError
from ..engine.precision import model_dtype as _model_dtype
from ..engine.targets import as_inputs
from ..engine.graph import build_graph, explained_output, forward
from ..rule_names import needs_box

__all__ = ["region_perturbation", "PerturbationResult", "default_patch", "compare", "Comparison", "DEFAULT_METHODS",
           "plot_curves"]

ArrayLike = Any
Perturbation = str | float | Callable[[np.ndarray], np.ndarray]

#: the methods :func:`compare` runs by default: ``(label, method, parameters)``
DEFAULT_METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("epsilon_gamma_box", "epsilon_gamma_box", {}),
    ("epsilon_plus", "epsilon_plus", {}),
    ("epsilon_alpha2_beta1", "epsilon_alpha2_beta1", {}),
    ("epsilon", "epsilon", {"epsilon": 0.01}),
    ("gradient", "gradient", {}),
    ("input_x_gradient", "input_x_gradient", {}),
    ("smoothgrad", "smoothgrad", {"n": 16, "noise_scale": 0.1, "seed": 0}),
    ("integrated_gradients", "integrated_gradients", {"steps": 32}),
    ("deconvnet", "deconvnet", {}),
    ("random", "random", {}),
]

#: methods whose maps are ranked by magnitude in :func:`compare` (their sign is not evidence for or
#: against the class; Samek et al. 2017 rank sensitivity and deconvolution maps by their norm)
MAGNITUDE_METHODS = frozenset({"gradient", "saliency", "smoothgrad", "smooth_grad", "deconvnet",
                               "guided_backprop", "guidedbackprop", "guided_backpropagation"})


# ----------------------------------------------------------------------------- scoring

class _Scorer:
    """The model's explained (pre-softmax) output, compiled once per input signature."""

    def __init__(self, model: keras.Model, output: int | str | None = None):
        self.model = model
        self.graph = build_graph(model, canonize=False)
        if len(self.graph.inputs) != 1:
            raise ExplainError(f"evaluation supports single-input models; this model takes "
                               f"{len(self.graph.inputs)} inputs")
        self.key, _ = explained_output(self.graph, output)
        self.dtype = _model_dtype(model)
        self._fns: dict = {}

    def check(self, x: ArrayLike) -> np.ndarray:
        t = as_inputs(self.model, x, 1, self.dtype)[0]
        return t.numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Flat outputs ``(n, units)`` as float64."""
        t = tf.convert_to_tensor(x, self.dtype)
        sig = tf.TensorSpec((None,) + tuple(t.shape[1:]), self.dtype)
        fn = self._fns.get(sig)
        if fn is None:
            def run(xb: tf.Tensor) -> tf.Tensor:
                values, _ = forward(self.graph, [xb])
                out = values[self.key]
                return tf.reshape(out, (tf.shape(out)[0], -1))

            fn = tf.function(run, input_signature=(sig,), autograph=False)
            self._fns[sig] = fn
        return fn(t).numpy().astype(np.float64)


def _resolve_targets(flat: np.ndarray, target: ArrayLike | None) -> np.ndarray:
    n, units = flat.shape
    if target is None:
        return flat.argmax(-1)
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full((n,), t)
    if t.shape != (n,):
        raise ExplainError(f"target must be an int or one int per sample ({n}), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ExplainError(f"target must be integer class indices, got {t.dtype}")
    if (t < 0).any() or (t >= units).any():
        raise ExplainError(f"target out of range: the model output has {units} units, valid targets are "
                           f"0..{units - 1}")
    return t.astype(np.int64)


# ----------------------------------------------------------------------------- regions

def spatial_shape(shape: tuple) -> tuple[int, ...]:
    """Spatial axes of a batch: (N, H, W, C) -> (H, W); (N, T, C) -> (T,); (N, D) -> (D,)."""
    return tuple(shape[1:-1]) if len(shape) >= 3 else tuple(shape[1:])


def default_patch(spatial: Sequence[int]) -> int:
    """The default region size for inputs of spatial size ``spatial`` (``(H, W)`` for images, ``(T,)``
    for sequences ``(N, T, C)``, ``(F,)`` for feature vectors ``(N, F)``): about 49 regions or more,
    ``max(1, min(spatial) // k)`` with ``k = ceil(49 ** (1 / d))`` for ``d`` spatial axes, i.e.
    ``min(H, W) // 7`` for images, ``length // 49`` for 1-D inputs and ``min(side) // 4`` for volumes."""
    spatial = tuple(int(s) for s in spatial)
    if not spatial or min(spatial) < 1:
        raise ValueError(f"inputs need a spatial size of at least 1, got {spatial}")
    k = int(np.ceil(49.0 ** (1.0 / len(spatial)) - 1e-9))
    return max(1, min(spatial) // k)


def region_label(patch: int, ndim: int) -> str:
    """How a region of size ``patch`` reads for inputs with ``ndim`` spatial axes: ``'4x4 regions'``
    for images, ``'regions of 4 positions'`` for sequences and feature vectors."""
    if ndim == 1:
        return f"regions of {patch} position{'s' if patch != 1 else ''}"
    return "x".join([str(patch)] * max(ndim, 1)) + " regions"


def check_regions(spatial: tuple[int, ...], patch: Any, steps: Any) -> tuple[int, int, int]:
    """Validate ``patch`` (None: :func:`default_patch`) and ``steps`` (None: all regions) for inputs of
    spatial size ``spatial``; returns ``(patch, steps, number of regions)``."""
    if patch is None:
        patch = default_patch(spatial)
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch!r}")
    size = "x".join(map(str, spatial))
    if patch > min(spatial):
        raise ValueError(f"patch {patch} is larger than the {'image' if len(spatial) >= 2 else 'input'}: the "
                         f"inputs have spatial size {size}")
    n_regions = int(np.prod([-(-s // int(patch)) for s in spatial]))
    if steps is None:
        steps = n_regions
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if steps > n_regions:
        raise ValueError(f"steps {steps} exceeds the number of regions: {size} inputs have {n_regions} "
                         f"{region_label(int(patch), len(spatial))}")
    return int(patch), int(steps), n_regions


def _region_ids(spatial: tuple[int, ...], patch: int) -> tuple[np.ndarray, int]:
    """The region index of every spatial position (flattened) and the number of regions. Regions
    are a grid of ``patch``-sized blocks; where a size is not a multiple of ``patch``, the last block
    along that axis is smaller."""
    grid = tuple(-(-s // patch) for s in spatial)
    idx = np.indices(spatial).reshape(len(spatial), -1) // patch
    return np.ravel_multi_index(tuple(idx), grid), int(np.prod(grid))


def _sample_key(xi: np.ndarray) -> int:
    h = hashlib.blake2b(np.ascontiguousarray(xi, dtype=np.float32).tobytes(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def _rng(seed: int, stream: int, key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, key])


_NOISE, _TIES, _RANDOM = 0, 1, 2


def _replacement(x: np.ndarray, perturbation: Perturbation, keys: Sequence[int], seed: int,
                 value_range: tuple[float, float], blur_sigma: float | None, patch: int) -> np.ndarray:
    """What each pixel becomes when its region is perturbed: an array shaped like ``x``."""
    if callable(perturbation):
        rep = np.asarray(perturbation(x.copy()))
        if rep.shape != x.shape:
            raise ValueError(f"the perturbation function returned shape {rep.shape}, expected {x.shape} "
                             f"(the replacement values, shaped like x)")
        return rep.astype(x.dtype)
    if isinstance(perturbation, (int, float, np.number)) and not isinstance(perturbation, bool):
        return np.full_like(x, float(perturbation))
    if perturbation == "uniform":
        lo, hi = value_range
        return np.stack([_rng(seed, _NOISE, k).uniform(lo, hi, x.shape[1:]) for k in keys]).astype(x.dtype)
    if perturbation == "mean":
        axes = tuple(range(1, x.ndim - 1)) if x.ndim >= 3 else tuple(range(1, x.ndim))
        return np.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape).astype(x.dtype)
    if perturbation == "blur":
        from scipy.ndimage import gaussian_filter

        sigma = float(blur_sigma) if blur_sigma is not None else patch / 2.0
        sig = [0.0] + [sigma] * len(spatial_shape(x.shape)) + ([0.0] if x.ndim >= 3 else [])
        return gaussian_filter(x.astype(np.float64), sig, mode="nearest").astype(x.dtype)
    raise ValueError(f"perturbation must be 'uniform', 'mean', 'blur', a number or a function "
                     f"x -> replacement, got {perturbation!r}")


@dataclass
class PerturbationResult:
    """The outcome of :func:`region_perturbation`.

    Attributes:
        scores: ``(N, steps + 1)`` score of the target class after ``k`` perturbed regions.
        target: ``(N,)`` the explained classes.
        ranking: ``(N, steps)`` region indices in the order they were perturbed (row-major grid).
        order, patch, steps, perturbation: the settings.
        spatial: the inputs' spatial size (``(H, W)``, ``(T,)`` or ``(F,)``).
    """

    scores: np.ndarray
    target: np.ndarray
    ranking: np.ndarray
    order: str
    patch: int
    steps: int
    perturbation: str
    spatial: tuple = ()

    @property
    def region(self) -> str:
        """The regions in words: ``'4x4 regions'`` (images) or ``'regions of 4 positions'`` (1-D inputs)."""
        return region_label(self.patch, len(self.spatial) if self.spatial else 2)

    @property
    def drops(self) -> np.ndarray:
        """``(N, steps + 1)``: ``f(x^(0)) - f(x^(k))``."""
        return self.scores[:, :1] - self.scores

    @property
    def curve(self) -> np.ndarray:
        """Mean score over the samples after ``k = 0..steps`` perturbed regions."""
        return self.scores.mean(axis=0)

    @property
    def aopc_per_sample(self) -> np.ndarray:
        """``1/(L+1) sum_k (f(x^(0)) - f(x^(k)))`` per sample."""
        return self.drops.mean(axis=1)

    @property
    def aopc(self) -> float:
        """The area over the perturbation curve, averaged over the samples (Samek et al. 2017, eq. 12)."""
        return float(self.aopc_per_sample.mean())

    @property
    def aopc_sem(self) -> float:
        """Standard error of :attr:`aopc` over the samples."""
        a = self.aopc_per_sample
        return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")

    @property
    def aopc_curve(self) -> np.ndarray:
        """AOPC after ``k`` steps: ``1/(k+1) sum_{j<=k} <f(x^(0)) - f(x^(j))>``, ``k = 0..steps``."""
        d = self.drops.mean(axis=0)
        return np.cumsum(d) / np.arange(1, len(d) + 1)


def region_perturbation(model: keras.Model, x: ArrayLike, relevance: ArrayLike | str,
                        target: ArrayLike | None = None, *, patch: int | None = None,
                        steps: int | None = None, perturbation: Perturbation = "uniform", order: str = "morf",
                        value_range: tuple[float, float] | None = None, blur_sigma: float | None = None,
                        seed: int = 0, batch_size: int = 256,
                        output: int | str | None = None) -> PerturbationResult:
    """Region perturbation ("pixel flipping") of Samek et al. 2017 for a batch of inputs.

    Args:
        model: a Keras model with one input (anything :func:`interprettensor.lrp` explains).
        x: inputs ``(N, H, W, C)`` (also ``(N, T, C)`` sequences and ``(N, D)`` vectors: the regions
            are then runs of ``patch`` positions).
        relevance: an array shaped like ``x``, or ``'random'`` for the random baseline (uniform
            random relevance per pixel, from ``seed``).
        target: ``None`` (the class predicted for the unperturbed input), an int, or one per sample.
            The score is that class's pre-softmax output (a final softmax is skipped, as in LRP).
        patch: region size; relevance is summed per ``patch`` x ``patch`` region (runs of ``patch``
            positions for 1-D inputs) and over channels. Default: :func:`default_patch` of the input
            size (about 49 regions or more).
        steps: number of regions to perturb, one per step (default: all); curves have ``steps + 1``
            points (``k = 0`` is the unperturbed input).
        perturbation: what a region becomes: ``'uniform'`` (noise drawn uniformly from
            ``value_range``, the paper's choice), ``'mean'`` (the image's per-channel mean),
            ``'blur'`` (a Gaussian-blurred copy, ``blur_sigma``, default ``patch / 2``), a number
            (e.g. a dataset mean), or a function ``x -> replacement`` returning an array shaped like x.
        order: ``'morf'`` (most relevant first) or ``'lerf'`` (least relevant first).
        value_range: ``(low, high)`` for uniform noise (default: the min and max of ``x``; give it
            to make results independent of the batch).
        seed: random seed of the noise, the random baseline and the breaking of ties.
        batch_size: perturbed inputs per forward pass.
        output: which output of a multi-output model.

    Returns:
        a :class:`PerturbationResult` (``scores``, ``curve``, ``aopc``, ...).
    """
    order = str(order).lower()
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' (most relevant first) or 'lerf' (least relevant first), "
                         f"got {order!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scorer = _Scorer(model, output)
    xs = scorer.check(x)
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (N, ...), got shape {xs.shape}")
    spatial = spatial_shape(xs.shape)
    patch, steps, _ = check_regions(spatial, patch, steps)
    ids, n_regions = _region_ids(spatial, int(patch))
    n = xs.shape[0]
    keys = [_sample_key(xi) for xi in xs]

    if isinstance(relevance, str):
        if relevance != "random":
            raise ValueError(f"relevance must be an array shaped like x or 'random', got {relevance!r}")
        rel = np.stack([_rng(seed, _RANDOM, k).uniform(0.0, 1.0, xs.shape[1:]) for k in keys])
    else:
        rel = np.asarray(relevance, dtype=np.float64)
        if rel.shape != xs.shape:
            raise ValueError(f"relevance has shape {rel.shape}, but x has shape {xs.shape}; they must match")
        if not np.isfinite(rel).all():
            raise ValueError("relevance contains NaN or infinite values")

    # relevance per region: sum over channels and over the region's positions
    per_pos = rel.reshape(n, int(np.prod(spatial)), -1).sum(-1)
    region_rel = np.zeros((n, n_regions))
    np.add.at(region_rel, (np.arange(n)[:, None], ids[None, :]), per_pos)
    ranking = np.empty((n, n_regions), np.int64)
    for i, k in enumerate(keys):
        perm = _rng(seed, _TIES, k).permutation(n_regions)  # ties in random order
        key = -region_rel[i, perm] if order == "morf" else region_rel[i, perm]
        ranking[i] = perm[np.argsort(key, kind="stable")]
    rank = np.empty_like(ranking)
    rank[np.arange(n)[:, None], ranking] = np.arange(n_regions)[None, :]
    rank_pos = rank[:, ids].reshape((n,) + spatial + ((1,) if xs.ndim >= 3 else ()))

    if value_range is None:
        value_range = (float(xs.min()), float(xs.max()))
    lo, hi = (float(v) for v in value_range)
    if not hi >= lo:
        raise ValueError(f"value_range must be (low, high) with low <= high, got {value_range}")
    rep = _replacement(xs, perturbation, keys, seed, (lo, hi), blur_sigma, int(patch))

    targets = _resolve_targets(scorer(xs), target)
    scores = np.empty((n, steps + 1))
    nb = min(n, int(batch_size))
    per_call = max(1, int(batch_size) // nb)
    for s0 in range(0, n, nb):
        sl = slice(s0, min(s0 + nb, n))
        xb, rb, kb = xs[sl], rep[sl], rank_pos[sl]
        for k0 in range(0, steps + 1, per_call):
            ks = np.arange(k0, min(k0 + per_call, steps + 1))
            mask = kb[None] < ks.reshape((-1,) + (1,) * kb.ndim)
            batch = np.where(mask, rb[None], xb[None]).reshape((-1,) + xs.shape[1:])
            flat = scorer(batch).reshape(len(ks), len(xb), -1)
            scores[sl, k0:k0 + len(ks)] = flat[:, np.arange(len(xb)), targets[sl]].T
    name = perturbation if isinstance(perturbation, str) else (
        f"constant {float(perturbation):g}" if isinstance(perturbation, (int, float, np.number))
        else getattr(perturbation, "__name__", "custom"))
    return PerturbationResult(scores, targets, ranking[:, :steps], order, int(patch), int(steps), name,
                              tuple(int(v) for v in spatial))


# ----------------------------------------------------------------------------- comparing methods

MethodSpec = str | tuple


def _method_list(methods: Sequence[MethodSpec] | Mapping[str, Any] | None) -> list[tuple[str, Any, dict]]:
    if methods is None:
        return [(a, b, dict(c)) for a, b, c in DEFAULT_METHODS]
    if isinstance(methods, Mapping):
        out = []
        for label, spec in methods.items():
            if isinstance(spec, tuple):
                out.append((str(label), spec[0], dict(spec[1]) if len(spec) > 1 else {}))
            else:
                out.append((str(label), spec, {}))
        return out
    defaults = {a: (b, c) for a, b, c in DEFAULT_METHODS}
    out = []
    for m in methods:
        if isinstance(m, tuple):
            if len(m) == 2:
                out.append((str(m[0]), m[0], dict(m[1])))
            elif len(m) == 3:
                out.append((str(m[0]), m[1], dict(m[2])))
            else:
                raise ValueError(f"a method is a name, (name, params) or (label, name, params), got {m!r}")
        elif isinstance(m, str):
            method, params = defaults.get(m, (m, {}))
            out.append((m, method, dict(params)))
        else:
            out.append((getattr(m, "name", type(m).__name__), m, {}))
    labels = [o[0] for o in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    if not out:
        raise ValueError("methods must name at least one method")
    return out


def _needs_box(method: Any) -> bool:
    """Box rules by name: zbox, epsilon_gamma_box, bounded_deep_taylor, ... (not the toolbox_* presets);
    :func:`interprettensor.rule_names.needs_box`, as the command line decides it."""
    return needs_box(method)


def explain(model: keras.Model, x: np.ndarray, method: Any, target: np.ndarray, params: Mapping[str, Any],
            value_range: tuple[float, float]) -> np.ndarray:
    """Relevance of ``x`` by ``method`` (via :func:`interprettensor.attribution.attribute`); box rules
    get ``low``/``high`` from ``value_range`` unless given; magnitude methods (gradient,
    SmoothGrad, deconvnet, guided backprop) return ``|R|`` unless ``absolute=False`` is given."""
    from ..attribution import attribute

    params = dict(params)
    absolute = params.pop("absolute", None)
    if _needs_box(method):
        params.setdefault("low", value_range[0])
        params.setdefault("high", value_range[1])
    R = attribute(model, x, method, target=target, **params)
    if isinstance(R, list):
        R = R[0]
    R = np.asarray(R, np.float64)
    if absolute is None:
        absolute = isinstance(method, str) and method.lower() in MAGNITUDE_METHODS
    return np.abs(R) if absolute else R


@dataclass
class Comparison:
    """Region perturbation of several methods on the same inputs (:func:`compare`).

    Attributes:
        results: ``{label: PerturbationResult}`` in the order of the methods.
        seconds: ``{label: seconds spent explaining}``.
        methods: ``{label: method name}``.
        baseline: the random baseline's result when ``'random'`` is not among the methods (the
            ``-random`` column is computed against it), else None.
    """

    results: dict[str, PerturbationResult]
    seconds: dict[str, float] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    baseline: PerturbationResult | None = None

    def random_result(self) -> PerturbationResult | None:
        """The random baseline: the ``'random'`` method if it was compared, else :attr:`baseline`."""
        found = next((r for k, r in self.results.items() if self.methods.get(k, k) == "random"), None)
        return found if found is not None else self.baseline

    def rows(self, sort: bool = True) -> list[dict[str, Any]]:
        """One dict per method: method, aopc, sem, aopc_minus_random, seconds, ...; best first if
        ``sort`` (largest AOPC for MoRF, smallest for LeRF). ``aopc_minus_random`` is NaN only when
        no random baseline was computed (a Comparison built by hand)."""
        base = self.random_result()
        rnd = base.aopc if base is not None else None
        rows = []
        for label, r in self.results.items():
            rows.append({"method": label, "aopc": r.aopc, "sem": r.aopc_sem,
                         "aopc_minus_random": (r.aopc - rnd) if rnd is not None else float("nan"),
                         "seconds": self.seconds.get(label, float("nan")), "order": r.order,
                         "patch": r.patch, "steps": r.steps, "perturbation": r.perturbation,
                         "samples": int(r.scores.shape[0])})
        if sort:
            lerf = next(iter(self.results.values())).order == "lerf"
            rows.sort(key=lambda d: d["aopc"], reverse=not lerf)
        return rows

    def table(self, sort: bool = True) -> str:
        """The AOPC table as aligned text."""
        first = next(iter(self.results.values()))
        w = max(20, max(len(k) for k in self.results) + 1)
        head = (f"AOPC ({first.order.upper()}, {first.perturbation}, {first.region}, "
                f"{first.steps} steps, {first.scores.shape[0]} samples)")
        lines = [head, f"{'method':<{w}} {'AOPC':>9} {'+-sem':>8} {'-random':>9} {'seconds':>8}"]
        for d in self.rows(sort):
            lines.append(f"{d['method']:<{w}} {d['aopc']:>9.4f} {d['sem']:>8.4f} {d['aopc_minus_random']:>9.4f} "
                         f"{d['seconds']:>8.2f}")
        if self.baseline is not None and "random" not in self.methods.values():
            lines.append(f"(-random: minus the AOPC of the random baseline, {self.baseline.aopc:.4f}, computed "
                         f"on the same inputs and noise)")
        return "\n".join(lines)

    def to_csv(self, path: str, sort: bool = True) -> str:
        """Write the table as CSV (one row per method); returns ``path``."""
        rows = self.rows(sort)
        with open(path, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            for d in rows:
                wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in d.items()})
        return path

    def plot(self, path: str | None = None, title: str | None = None):
        """Perturbation curves and AOPC curves of every method (:func:`plot_curves`)."""
        return plot_curves(self.results, path, title=title)


def compare(model: keras.Model, x: ArrayLike, methods: Sequence[MethodSpec] | Mapping[str, Any] | None = None,
            target: ArrayLike | None = None, *, patch: int | None = None, steps: int | None = None,
            perturbation: Perturbation = "uniform", order: str = "morf",
            value_range: tuple[float, float] | None = None, blur_sigma: float | None = None, seed: int = 0,
            batch_size: int = 256, output: int | str | None = None,
            progress: Callable[[str], None] | None = None) -> Comparison:
    """Run several attribution methods through the same region perturbation (Samek et al. 2017).

    Args:
        methods: names (any LRP rule or preset, ``'gradient'``, ``'input_x_gradient'``,
            ``'smoothgrad'``, ``'integrated_gradients'``, ``'guided_backprop'``, ``'deconvnet'``,
            ``'deep_taylor'``, ..., and ``'random'``), ``(name, params)`` or ``(label, name, params)``
            tuples, or ``{label: name or (name, params)}``; default :data:`DEFAULT_METHODS`. Box
            rules get ``low``/``high`` from ``value_range``; gradient, SmoothGrad, deconvnet and
            guided backprop are ranked by ``|R|`` (``params['absolute']`` overrides).
        target: ``None`` (each sample's predicted class, the same for every method) or classes.
        patch: region size (default: :func:`default_patch` of the input size); ``patch`` and
            ``steps`` are checked before any method runs.
        progress: called with each method's label before it runs.
        Other arguments: as :func:`region_perturbation`; every method sees the same noise. The random
        baseline is always computed: as the ``'random'`` method if listed, else as
        :attr:`Comparison.baseline` (for the ``-random`` column).

    Returns:
        a :class:`Comparison` (``table()``, ``rows()``, ``to_csv()``, ``plot()``).
    """
    specs = _method_list(methods)
    scorer = _Scorer(model, output)
    xs = scorer.check(x)
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (N, ...), got shape {xs.shape}")
    patch, steps, _ = check_regions(spatial_shape(xs.shape), patch, steps)
    targets = _resolve_targets(scorer(xs), target)
    if value_range is None:
        value_range = (float(xs.min()), float(xs.max()))
    results: dict[str, PerturbationResult] = {}
    seconds: dict[str, float] = {}
    names: dict[str, str] = {}
    kw = dict(patch=patch, steps=steps, perturbation=perturbation, order=order, value_range=value_range,
              blur_sigma=blur_sigma, seed=seed, batch_size=batch_size, output=output)
    for label, method, params in specs:
        if progress is not None:
            progress(label)
        t0 = time.perf_counter()
        if isinstance(method, str) and method.lower() == "random":
            R: Any = "random"
        else:
            if output is not None:
                params.setdefault("output", output)
            R = explain(model, xs, method, targets, params, value_range)
        seconds[label] = time.perf_counter() - t0
        names[label] = method.lower() if isinstance(method, str) else label
        results[label] = region_perturbation(model, xs, R, targets, **kw)
    baseline = None
    if "random" not in names.values():
        baseline = region_perturbation(model, xs, "random", targets, **kw)
    return Comparison(results, seconds, names, baseline)


# ----------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | None, dpi: int = 100) -> Any:
    if path is not None:
        import os

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, format="png", dpi=dpi)
    return fig


def plot_curves(results: Mapping[str, PerturbationResult] | PerturbationResult, path: str | None = None,
                title: str | None = None, dpi: int = 100):
    """Plot region-perturbation curves: mean target score after ``k`` perturbed regions (left) and
    the AOPC up to ``k`` (right), one line per method, labelled with its AOPC. Returns the matplotlib
    Figure (Agg canvas, no pyplot); writes a PNG when ``path`` is given."""
    if isinstance(results, PerturbationResult):
        results = {"relevance": results}
    if not results:
        raise ValueError("nothing to plot")
    fig = _figure(12.0, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    items = sorted(results.items(), key=lambda kv: -kv[1].aopc)
    for label, r in items:
        k = np.arange(r.steps + 1)
        style = dict(color="black", linestyle="--") if label == "random" else {}
        ax1.plot(k, r.curve, linewidth=1.4, **style)
        ax2.plot(k, r.aopc_curve, label=f"{label} ({r.aopc:.3f})", linewidth=1.4, **style)
    first = items[0][1]
    ax1.set_xlabel(f"perturbation steps ({first.region}, {first.order.upper()})")
    ax1.set_ylabel("mean target score f(x) (pre-softmax)")
    ax2.set_xlabel("perturbation steps")
    ax2.set_ylabel("AOPC up to step k")
    ax2.legend(fontsize=7, title="method (AOPC)", title_fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"Region perturbation ({first.perturbation}, {first.scores.shape[0]} samples)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)
