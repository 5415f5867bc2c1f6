"""Several attribution methods through the same region perturbation (:func:`compare`): the methods
(:data:`DEFAULT_METHODS`, the specifications :func:`_method_list` accepts), how each is explained for the
measurement (:func:`explain`: box rules get the value range, :data:`MAGNITUDE_METHODS` are ranked by
``|R|``) and the result (:class:`Comparison`: rows, table, CSV and plot, against the random baseline)."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from ...rule_names import needs_box
from .curves import PerturbationResult, region_perturbation
from .plots import plot_curves
from .regions import check_regions, spatial_shape
from .replacement import Perturbation
from .scoring import ArrayLike, _resolve_targets, _Scorer

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
    from ...attribution import attribute

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
