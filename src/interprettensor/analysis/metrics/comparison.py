"""Several explanation methods scored by several metrics (:func:`compare`): a table of the mean and
standard error over the samples per method and metric, a CSV, a bar plot and a ranking per metric by
the metric's score direction (:attr:`Metric.higher_is_better`).

With ``out=DIR`` every (method, metric) result is written as soon as it is computed
(``DIR/<method>/<metric>.npz`` with the per-sample values and ``.json`` with what they are, written
last and atomically), as are the explanations (``DIR/<method>/attributions.npz``); a rerun with the
same inputs skips what is stored, so a long comparison can be resumed.

Example::

    res = it.metrics.compare(model, x, y, methods=["epsilon", "gradient"],
                             metrics=["MPRT", it.metrics.RandomLogit(num_classes=10)], out="cmp")
    print(res.table()); res.to_csv("cmp.csv"); res.plot("cmp.png"); res.ranking()
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from ...engine.errors import ExplainError
from .base import Metric
from .explain import explain

__all__ = ["compare", "MetricComparison", "metric_names"]

FORMAT = 1


def metric_names() -> list[str]:
    """The metric classes :func:`compare` builds by name (Quantus' class names)."""
    from .. import metrics as pkg

    out = []
    for name in getattr(pkg, "__all__", []):
        obj = getattr(pkg, name, None)
        if inspect.isclass(obj) and issubclass(obj, Metric) and obj is not Metric and not name.startswith("_"):
            out.append(name)
    return sorted(set(out))


def _build_metric(spec: Any, model: Any, seed: int, x: np.ndarray) -> Metric:
    """A Metric instance as it is, or a class name built with its defaults; ``seed`` for metrics that take
    one and ``num_classes`` (where taken) from the model's outputs (read from its output tensor, or from
    its output on the first input where the model has none: subclassed models, the 2017
    ``Sequential``)."""
    if isinstance(spec, Metric):
        return spec
    if not isinstance(spec, str):
        raise ExplainError(f"metrics are Metric instances or class names, got {type(spec).__name__}")
    valid = metric_names()
    if spec not in valid:
        raise ExplainError(f"unknown metric {spec!r}; the metrics: {', '.join(valid)}")
    from .. import metrics as pkg

    cls = getattr(pkg, spec)
    params = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = {}
    if "seed" in params:
        kw["seed"] = int(seed)
    if "num_classes" in params:
        try:
            outputs = model.outputs
        except (AttributeError, ValueError):
            outputs = None
        if outputs and outputs[0].shape[-1] is not None:
            kw["num_classes"] = int(outputs[0].shape[-1])
        else:
            kw["num_classes"] = int(keras.ops.convert_to_numpy(model(x[:1], training=False)).shape[-1])
    return cls(**kw)


def _methods(methods: Any) -> list[tuple[str, Callable, dict]]:
    """(label, explain_func, explain_func_kwargs) from names, (label, name or function, kwargs)
    triples or a mapping label -> name or function."""
    if isinstance(methods, (str, bytes)) or methods is None:
        raise ExplainError("methods must be a list of method names (or (label, method, params) triples)")
    items = list(methods.items()) if isinstance(methods, Mapping) else list(methods)
    out = []
    for item in items:
        if isinstance(item, str):
            label, fn, kw = item, explain, {"method": item}
        elif isinstance(item, tuple) and len(item) in (2, 3):
            label, spec = item[0], item[1]
            params = dict(item[2]) if len(item) == 3 else {}
            if isinstance(spec, str):
                fn, kw = explain, {"method": spec, **params}
            elif callable(spec):
                fn, kw = spec, params
            else:
                raise ExplainError(f"method {label!r}: give a method name or an explain_func, got "
                                   f"{type(spec).__name__}")
        else:
            raise ExplainError(f"methods: expected a name or a (label, method[, params]) tuple, got {item!r}")
        out.append((str(label), fn, kw))
    labels = [m[0] for m in out]
    dup = sorted({label for label in labels if labels.count(label) > 1})
    if dup:
        raise ExplainError(f"methods: labels {dup} given more than once")
    if not out:
        raise ExplainError("methods: none given")
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", s).strip("_") or "_"


def _describe(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_describe(e) for e in v]
    if isinstance(v, Mapping):
        return {str(k): _describe(e) for k, e in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, np.ndarray):
        return f"array{v.shape}:{hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest()[:12]}"
    return getattr(v, "__qualname__", None) or type(v).__name__


def _settings(metric: Metric) -> dict:
    """The metric's constructor settings (what makes its scores), for the stored runs."""
    skip = {"evaluation_scores", "all_evaluation_scores", "explain_func", "explain_func_kwargs", "channel_first",
            "scores_extra", "explanation_scores_by_layer", "model_scores_by_layer", "n_bins"}
    return {k: _describe(v) for k, v in sorted(vars(metric).items()) if k not in skip and not k.startswith("_")}


def _fingerprint(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class MetricComparison:
    """The outcome of :func:`compare`.

    Attributes:
        methods, metrics: the labels, in the order given.
        values: ``{(method, metric): (n,) per-sample values}`` (the metric's scores, or their summary:
            ``summary[metric]``).
        summary: per metric what a value is (e.g. ``"score"``, ``"mean of curve"``, ``"mean
            similarity over randomised layers"``).
        higher_is_better: per metric its score direction.
        raw: ``{(method, metric): what the metric returned}`` for the results computed by this call.
        computed, loaded: the (method, metric) pairs computed now and read from ``out``.
    """

    methods: list[str]
    metrics: list[str]
    values: dict[tuple[str, str], np.ndarray]
    summary: dict[str, str]
    higher_is_better: dict[str, bool]
    raw: dict[tuple[str, str], Any] = field(default_factory=dict)
    computed: list[tuple[str, str]] = field(default_factory=list)
    loaded: list[tuple[str, str]] = field(default_factory=list)

    def mean(self, method: str, metric: str) -> float:
        """Mean over the samples with a finite value."""
        v = self.values[(method, metric)]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    def se(self, method: str, metric: str) -> float:
        """Standard error of the mean, ``std(ddof=1) / sqrt(n)`` over the finite values (0 for one)."""
        v = self.values[(method, metric)]
        v = v[np.isfinite(v)]
        if v.size < 2:
            return 0.0 if v.size == 1 else float("nan")
        return float(v.std(ddof=1) / np.sqrt(v.size))

    def count(self, method: str, metric: str) -> int:
        """Samples with a finite value."""
        return int(np.isfinite(self.values[(method, metric)]).sum())

    def _head(self, metric: str) -> str:
        return f"{metric} ({self.summary[metric]}, {'higher' if self.higher_is_better[metric] else 'lower'} better)"

    def table(self) -> str:
        """Mean ± standard error per method (rows) and metric (columns) as aligned text."""
        heads = [self._head(k) for k in self.metrics]
        cells = [[f"{self.mean(m, k):.4g} ± {self.se(m, k):.2g}" for k in self.metrics] for m in self.methods]
        w0 = max(6, *(len(m) for m in self.methods))
        ws = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(heads)]
        lines = ["  ".join([f"{'method':<{w0}}"] + [f"{h:>{w}}" for h, w in zip(heads, ws)])]
        for m, row in zip(self.methods, cells):
            lines.append("  ".join([f"{m:<{w0}}"] + [f"{c:>{w}}" for c, w in zip(row, ws)]))
        return "\n".join(lines)

    def to_csv(self, path: str) -> str:
        """One row per method and metric: summary, direction, mean, standard error, samples; returns
        ``path``."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["method", "metric", "summary", "higher_is_better", "mean", "se", "n"])
            for k in self.metrics:
                for m in self.methods:
                    wr.writerow([m, k, self.summary[k], self.higher_is_better[k], f"{self.mean(m, k):.8g}",
                                 f"{self.se(m, k):.8g}", self.count(m, k)])
        return path

    def ranking(self) -> dict[str, list[str]]:
        """Per metric the methods from best to worst by their mean (the metric's direction); methods
        without a finite mean come last."""
        out = {}
        for k in self.metrics:
            sign = -1.0 if self.higher_is_better[k] else 1.0
            out[k] = sorted(self.methods, key=lambda m: (not np.isfinite(self.mean(m, k)),
                                                         sign * np.nan_to_num(self.mean(m, k))))
        return out

    def plot(self, path: str | None = None, title: str | None = None, dpi: int = 100):
        """One panel per metric, the methods as bars with standard-error bars. Returns the matplotlib
        Figure; writes a PNG when ``path`` is given."""
        from ..perturbation.plots import _figure, _save

        k = len(self.metrics)
        cols = min(k, 3)
        rows = (k + cols - 1) // cols
        fig = _figure(max(4.5, 4.2 * cols), 3.6 * rows)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        pos = np.arange(len(self.methods))
        for ax, metric in zip(axes, self.metrics):
            means = [self.mean(m, metric) for m in self.methods]
            ses = [self.se(m, metric) for m in self.methods]
            ax.bar(pos, np.nan_to_num(means), yerr=np.nan_to_num(ses), capsize=3,
                   color=[f"C{i % 10}" for i in range(len(self.methods))])
            ax.set_xticks(pos)
            ax.set_xticklabels(self.methods, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{metric} ({'↑' if self.higher_is_better[metric] else '↓'})", fontsize=9)
            ax.set_ylabel(self.summary[metric], fontsize=8)
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.grid(alpha=0.3, axis="y")
        for ax in axes[k:]:
            ax.set_visible(False)
        fig.suptitle(title or "Explanation methods by metric (mean ± standard error)", fontsize=10)
        fig.tight_layout()
        return _save(fig, path, dpi)


def _save_result(folder: str, name: str, raw: Any, values: np.ndarray, meta: dict) -> None:
    arrays: dict[str, np.ndarray] = {"values": np.asarray(values, np.float64)}
    if isinstance(raw, Mapping):
        for i, (k, v) in enumerate(raw.items()):
            arrays[f"stage{i}"] = np.asarray(v, np.float64)
        meta = {**meta, "stages": [str(k) for k in raw]}
    else:
        rows = [np.asarray(v, np.float64) for v in raw]
        if rows and len({r.shape for r in rows}) == 1:
            arrays["raw"] = np.stack(rows)
    tmp = os.path.join(folder, f".{name}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(folder, f"{name}.npz"))
    tmp = os.path.join(folder, f".{name}.tmp.json")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(folder, f"{name}.json"))  # written last: the result is complete


def _load_result(folder: str, name: str, meta: dict) -> tuple[np.ndarray, dict] | None:
    jpath, npath = os.path.join(folder, f"{name}.json"), os.path.join(folder, f"{name}.npz")
    if not (os.path.exists(jpath) and os.path.exists(npath)):
        return None
    with open(jpath) as f:
        stored = json.load(f)
    keys = ("format", "inputs", "method", "explain_kwargs", "metric", "settings")
    if any(stored.get(k) != meta.get(k) for k in keys):
        diff = [k for k in keys if stored.get(k) != meta.get(k)]
        raise ExplainError(f"{jpath} holds a result for other {', '.join(diff)}; use another out folder or "
                           f"delete it")
    with np.load(npath) as z:
        return np.asarray(z["values"]), stored


def compare(model: Any, x: Any, y: Any = None, methods: Sequence[Any] | Mapping[str, Any] = ("gradient",),
            metrics: Sequence[Any] = (), s: Any = None, seed: int = 0, batch_size: int = 64,
            out: str | None = None, channel_first: bool | None = None,
            progress: Callable[[str], None] | None = None) -> MetricComparison:
    """Score explanation ``methods`` by ``metrics`` on the inputs ``x`` (channels-last, as the model
    takes them; ``channel_first`` as the metrics take it) for the classes ``y`` (default: the
    predicted ones) and masks ``s`` (the localisation metrics).

    Args:
        methods: method names of :func:`~.explain.explain` (LRP rules and presets, ``'gradient'``,
            ...), ``(label, name, params)`` or ``(label, explain_func[, kwargs])`` tuples, or a
            mapping label -> name or explain_func. Each method's explanations are computed once
            (batches of ``batch_size``) and given to every metric as ``a_batch``, with the method as
            ``explain_func`` for the metrics that explain again.
        metrics: :class:`Metric` instances, or Quantus class names (:func:`metric_names`) built with
            their defaults, except ``seed=seed`` where the metric takes a seed and ``num_classes``
            from the model's outputs where it takes that.
        seed: see ``metrics``.
        out: a folder to store every result as it completes and to resume from (see the module).
        progress: called with a line before each (method, metric) is computed.

    Returns:
        :class:`MetricComparison`; a metric's per-sample value is its score, or its summary
        (:meth:`Metric.summarise`, e.g. the mean of a curve) named in ``summary``.
    """

    if not isinstance(model, keras.Model):
        raise ExplainError(f"model must be a Keras model, got {type(model).__name__}")
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ExplainError(f"x must be a non-empty batch (N, ...), got shape {x.shape}")
    if int(batch_size) < 1:
        raise ExplainError(f"batch_size must be >= 1, got {batch_size}")
    specs = _methods(methods)
    built = [_build_metric(m, model, seed, x) for m in metrics]
    if not built:
        raise ExplainError(f"metrics: none given; the metrics: {', '.join(metric_names())}")
    names = []
    for m in built:
        base = type(m).__name__
        label, i = base, 2
        while label in names:
            label, i = f"{base}#{i}", i + 1
        names.append(label)
    missing = [n for n, m in zip(names, built) if m.needs_segmentation and s is None]
    if missing:
        raise ExplainError(f"{', '.join(missing)} need{'s' if len(missing) == 1 else ''} the masks s")
    if y is None:
        from .model import MetricModel

        y = MetricModel(model, channel_first=bool(channel_first), batch_size=int(batch_size)).logits(x).argmax(-1)
    y = np.asarray(y)
    if y.shape[:1] != x.shape[:1]:
        raise ExplainError(f"y must hold one label per sample ({len(x)}), got shape {y.shape}")
    settings = {n: _settings(m) for n, m in zip(names, built)}  # before any call changes their state
    inputs_key = _fingerprint(x, y, None if s is None else np.asarray(s))
    res = MetricComparison([m[0] for m in specs], names, {}, {}, {n: bool(m.higher_is_better)
                                                               for n, m in zip(names, built)})
    say = progress or (lambda msg: None)
    for label, fn, kw in specs:
        folder = None
        if out is not None:
            folder = os.path.join(out, _slug(label))
            os.makedirs(folder, exist_ok=True)
        a = None
        for name, metric in zip(names, built):
            meta = {"format": FORMAT, "inputs": inputs_key, "method": label, "explain_kwargs": _describe(kw),
                    "explain_func": _describe(fn), "metric": type(metric).__name__, "settings": settings[name],
                    "higher_is_better": bool(metric.higher_is_better), "n": int(len(x))}
            if folder is not None:
                stored = _load_result(folder, _slug(name), meta)
                if stored is not None:
                    res.values[(label, name)] = stored[0]
                    res.summary[name] = stored[1]["summary"]
                    res.loaded.append((label, name))
                    continue
            if a is None:
                a = _attributions(model, x, y, fn, kw, int(batch_size), folder, inputs_key)
            say(f"{name} of {label}")
            raw = metric(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=channel_first,
                         explain_func=fn, explain_func_kwargs=dict(kw), batch_size=int(batch_size))
            values, what = metric.summarise(raw)
            values = np.asarray(values, np.float64).reshape(-1)
            res.values[(label, name)] = values
            res.summary[name] = what
            res.raw[(label, name)] = raw
            res.computed.append((label, name))
            if folder is not None:
                _save_result(folder, _slug(name), raw, values, {**meta, "summary": what})
    return res


def _attributions(model: Any, x: np.ndarray, y: np.ndarray, fn: Callable, kw: dict, batch_size: int,
                  folder: str | None, key: str) -> np.ndarray:
    """The method's explanations of ``x`` (batches of ``batch_size``), stored in ``folder``."""
    path = None if folder is None else os.path.join(folder, "attributions.npz")
    if path is not None and os.path.exists(path):
        with np.load(path) as z:
            if str(z["inputs"]) == key and str(z["explain_kwargs"]) == json.dumps(_describe(kw), sort_keys=True):
                return np.asarray(z["a"])
    parts = [np.asarray(fn(model=model, inputs=x[i:i + batch_size], targets=y[i:i + batch_size], **kw), np.float64)
             for i in range(0, len(x), batch_size)]
    a = np.concatenate(parts)
    if path is not None:
        tmp = os.path.join(folder, ".attributions.tmp.npz")
        np.savez(tmp, a=a, inputs=key, explain_kwargs=json.dumps(_describe(kw), sort_keys=True))
        os.replace(tmp, path)
    return a
