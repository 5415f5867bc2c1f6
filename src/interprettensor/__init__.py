"""interprettensor: Layer-wise Relevance Propagation (LRP) for Keras 3 on TensorFlow, JAX and PyTorch.

Two ways in, one engine:

* the original API: ``net = it.Sequential([it.Linear(...), ...])``, ``net.forward(x)``,
  ``net.lrp(R, 'epsilon', 0.01)``;
* any Keras model: ``it.lrp(model, x, rule='epsilon_gamma_box', low=0.0, high=1.0)``.

The package's face (``__all__``):

* explaining: :func:`lrp`, :class:`Explainer`, :func:`explain_generation` (a language model's
  generated tokens, each explained), :class:`Composite` and :func:`get_composite`, the rules
  (:mod:`rules`) and the registries :func:`register_rule`, :func:`register_preset`,
  :func:`register_handler`;
* data sets: :func:`explain_dataset`, :func:`load_relevances`; analysis: :mod:`evaluate`, :mod:`metrics`
  (Quantus' metrics),
  :mod:`concepts`, :func:`spray` and :func:`load_spray`; baselines: :mod:`attribution`;
* input and output: :mod:`data` (the embedded digits), :mod:`render` (heatmaps), :mod:`render_text`
  (tokens coloured by relevance);
* :class:`InterpretTensorError`, the root of every error the library raises on purpose;
* the 2017 API: ``Sequential`` and its modules (``Linear``, ``Convolution``, ``MaxPool``, ``AvgPool``,
  ``Flatten``, ``Softmax``, ``Relu``/``ReLU``, ``Tanh``, ``Sigmoid``, ``Elu``, ``Module``), also as
  :mod:`.original`;
* ``__version__``.

The package shows the architecture, imports only going downwards:

* :mod:`.engine`: rules, the linear-map core, handlers (one module per layer family), the graph
  walk, composites and the explainer;
* :mod:`.original`: the 2017 API (its modules and ``Sequential``) on top of the engine;
* :mod:`.attribution`: gradient baselines and Deep Taylor;
* :mod:`.analysis`: explanation quality (region perturbation, model randomisation), concepts (CRP)
  and spectral relevance analysis;
* :mod:`.io`: data sets, reading inputs, shards of explained data sets, rendering, TensorBoard;
* :mod:`.apps`: the command line and the demo.

The other old top-level names (``it.PRESETS``, ``it.datasets``, ``it.handlers``, ...) and the
modules' old flat names (``interprettensor.explain``, ``interprettensor.stream``, ...) still work, as
the same objects, with a DeprecationWarning naming the replacement: :mod:`._legacy` has the table.

``import interprettensor`` is light: TensorFlow, Keras and the engine are imported on first use of
a name (``it.lrp``, ``it.Sequential``, ``it.rules``, ... and ``from interprettensor import lrp``; PEP
562), so that ``interprettensor --help`` answers at once; :mod:`._bootstrap` prepares TensorFlow and
Keras on that first use.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

from . import _bootstrap, _legacy

__version__ = "2.0.0.dev0"

#: public names -> the module that defines them
_NAMES = {
    "Explainer": "engine.explainer", "lrp": "engine.explainer",
    "Composite": "engine.composites", "get_composite": "engine.composites", "register_preset": "engine.composites",
    "register_rule": "engine.rules", "register_handler": "engine.handlers",
    "InterpretTensorError": "engine.errors",
    "explain_generation": "attribution.generation",
    "explain_dataset": "io.dataset_run", "load_relevances": "io.shards",
    "spray": "analysis.spray", "load_spray": "analysis.spray",
    "Sequential": "original", "Module": "original", "Linear": "original", "Convolution": "original",
    "MaxPool": "original", "AvgPool": "original", "Flatten": "original", "Softmax": "original", "Relu": "original",
    "ReLU": "original", "Tanh": "original", "Sigmoid": "original", "Elu": "original",
}
#: public modules -> where they live (also their old flat import paths, ``import interprettensor.rules``)
_MODULES = {name: _legacy.MOVED[name] for name in ("rules", "evaluate", "concepts", "data", "render", "render_text")}
_MODULES["metrics"] = "analysis.metrics"
_MODULES["correction"] = "analysis.correction"
_MODULES["pruning"] = "analysis.pruning"
#: the subpackages, reachable as attributes (``it.engine``, ``it.io``, ``it.pretrained``, ...)
_SUBPACKAGES = ("engine", "original", "attribution", "analysis", "io", "apps", "pretrained")
#: every old flat module name -> where it lives (tests/test_layout.py imports each)
_MOVED = _legacy.MOVED

__all__ = [
    "lrp", "Explainer", "explain_generation", "Composite", "get_composite", "rules", "register_rule", "register_preset",
    "register_handler", "explain_dataset", "load_relevances", "evaluate", "metrics", "correction", "pruning",
    "concepts", "spray", "load_spray", "attribution", "data", "render", "render_text", "InterpretTensorError",
    # the 2017 API
    "Sequential", "Module", "Linear", "Convolution", "MaxPool", "AvgPool", "Flatten", "Softmax", "Relu", "ReLU",
    "Tanh", "Sigmoid", "Elu",
]

_bootstrap.install()
_legacy.install()


def __getattr__(name: str) -> _Any:
    """Lazy public names and submodules (PEP 562); the old names with their DeprecationWarning."""
    if name in _NAMES:
        value = getattr(_importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    if name in _MODULES:
        return _importlib.import_module(f"{__name__}.{_MODULES[name]}")
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"{__name__}.{name}")
    if name in _legacy.DEPRECATED:
        return _legacy.deprecated(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))
