"""interprettensor: Layer-wise Relevance Propagation (LRP) for TensorFlow 2 and Keras 3.

Two ways in, one engine:

* the original API: ``net = it.Sequential([it.Linear(...), ...])``, ``net.forward(x)``,
  ``net.lrp(R, 'epsilon', 0.01)``;
* any Keras model: ``it.lrp(model, x, rule='epsilon_gamma_box', low=0.0, high=1.0)``.

The package shows the architecture, imports only going downwards:

* :mod:`.engine`: rules, the linear-map core, handlers (one module per layer family), the graph
  walk, composites and the explainer;
* :mod:`.original`: the 2017 API (its modules and ``Sequential``) on top of the engine;
* :mod:`.attribution`: gradient baselines and Deep Taylor;
* :mod:`.analysis`: explanation quality (region perturbation, model randomisation), concepts (CRP)
  and spectral relevance analysis;
* :mod:`.io`: data sets, reading inputs, shards of explained data sets, rendering, TensorBoard;
* :mod:`.apps`: the command line and the demo.

The modules' old flat names (``interprettensor.rules``, ``interprettensor.explain``,
``interprettensor.stream``, ...) still import, as the modules they moved to.

``import interprettensor`` is light: TensorFlow, Keras and the engine are imported on first use of
a name (``it.lrp``, ``it.Sequential``, ``it.rules``, ... and ``from interprettensor import lrp``; PEP
562), so that ``interprettensor --help`` answers at once. That first use checks that Keras runs on
its TensorFlow backend (an :class:`ImportError` saying how to set it otherwise), imports TensorFlow
without its C++ start-up lines and registers the library's Keras layers for
``keras.models.load_model`` (this also happens as soon as Keras is imported, before or after
``interprettensor``).
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
import sys as _sys
from typing import Any as _Any

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "2.0.0.dev0"

#: public names -> the module that defines them
_NAMES = {
    "PRESETS": "engine.composites", "Composite": "engine.composites", "get_composite": "engine.composites",
    "register_preset": "engine.composites",
    "Explainer": "engine.explainer", "lrp": "engine.explainer",
    "ExplainError": "engine.errors", "register_handler": "engine.handlers",
    "register_rule": "engine.rules",
    "AvgPool": "original", "Convolution": "original", "Elu": "original", "Flatten": "original", "Linear": "original",
    "MaxPool": "original", "Module": "original", "Relu": "original", "ReLU": "original", "Sigmoid": "original",
    "Softmax": "original", "Tanh": "original", "Sequential": "original",
    "explain_dataset": "io.dataset_run", "load_relevances": "io.shards", "finalize_run": "io.shards",
    "spray": "analysis.spray", "load_spray": "analysis.spray",
}
#: the modules' flat names (their attributes ``it.rules``, ``it.evaluate``, ... and old import paths)
#: -> where they live
_MOVED = {
    "rules": "engine.rules", "core": "engine.linear", "handlers": "engine.handlers", "graph": "engine.graph",
    "composites": "engine.composites", "explain": "engine.explainer",
    "layers": "original.modules", "sequential": "original.sequential",
    "evaluate": "analysis.evaluate", "concepts": "analysis.concepts",
    "stream": "io.dataset_run", "data": "io.digits", "datasets": "io.downloads", "render": "io.render",
    "render_text": "io.render_text", "summaries": "io.summaries",
    "cli": "apps.cli", "demo": "apps.demo",
}
#: submodules reachable as attributes (``it.rules``, ``it.evaluate``, ``it.engine``, ...)
_SUBMODULES = tuple(sorted(set(_MOVED) | {"engine", "original", "attribution", "analysis", "io", "apps",
                                          "pretrained"}))
#: modules that need neither TensorFlow nor Keras (the command line's start and ``--help``)
_LIGHT = frozenset({"apps", "apps.cli", "apps.commands", "apps.viewer", "io", "io.inputs", "io.render", "__main__",
                    "cli", "engine", "engine.errors", "io.shards", "analysis", "analysis.spray", "io.virelay",
                    "rule_names"})
#: packages whose modules are all light (the command line's subcommand parsers, the viewer)
_LIGHT_PACKAGES = ("apps.commands.", "apps.viewer.")

__all__ = [
    "Sequential", "Linear", "Convolution", "MaxPool", "AvgPool", "Flatten", "Softmax", "Relu", "ReLU",
    "Tanh", "Sigmoid", "Elu", "Module", "lrp", "Explainer", "Composite", "PRESETS", "get_composite",
    "register_preset", "register_rule", "register_handler", "rules", "ExplainError", "attribution", "evaluate",
    "explain_dataset", "load_relevances", "finalize_run", "spray", "load_spray", "concepts", "data", "datasets",
    "pretrained", "render",
    "render_text",
    "summaries",
]


def _configured_backend() -> str:
    """Keras' backend as configured (KERAS_BACKEND, else keras.json), read before importing Keras so
    that a missing JAX or PyTorch does not hide the real problem."""
    import json

    env = _os.environ.get("KERAS_BACKEND")
    if env:
        return env
    home = _os.environ.get("KERAS_HOME", _os.path.join(_os.path.expanduser("~"), ".keras"))
    try:
        with open(_os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _refuse(backend: str) -> None:
    raise ImportError(
        f"interprettensor needs Keras' TensorFlow backend, but Keras is set to {backend!r} "
        f"(KERAS_BACKEND or keras.json); set KERAS_BACKEND=tensorflow")


class _QuietStderr:
    """Point the stderr file descriptor at /dev/null for a while: TensorFlow's C++ start-up lines (the
    oneDNN notice and absl's preamble) reach stderr before any log level applies. A no-op when stderr
    has no descriptor or INTERPRETTENSOR_TF_LOGS is set."""

    def __enter__(self) -> "_QuietStderr":
        self.saved = self.devnull = None
        if _os.environ.get("INTERPRETTENSOR_TF_LOGS"):
            return self
        try:
            fd = _sys.stderr.fileno()
            self.saved = _os.dup(fd)
        except (OSError, ValueError, AttributeError):
            return self
        self.fd = fd
        self.devnull = _os.open(_os.devnull, _os.O_WRONLY)
        _sys.stderr.flush()
        _os.dup2(self.devnull, fd)
        return self

    def __exit__(self, *exc: _Any) -> None:
        if self.saved is not None:
            _os.dup2(self.saved, self.fd)
            _os.close(self.saved)
        if self.devnull is not None:
            _os.close(self.devnull)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow once without its C++ start-up lines (set INTERPRETTENSOR_TF_LOGS=1 to see
    them); any import error surfaces in the real import after it."""
    if "tensorflow" in _sys.modules:
        return
    with _QuietStderr():
        try:
            import tensorflow  # noqa: F401
        except Exception:  # noqa: BLE001
            pass


_prepared = False
_preparing = False


def _prepare() -> None:
    """Everything the engine needs before its first import: the backend check, TensorFlow imported
    quietly, the retracing-log filter, and the library's layers registered with Keras. Idempotent;
    raises ImportError (with the fix) for another Keras backend."""
    global _prepared, _preparing
    if _prepared or _preparing:
        return
    backend = _configured_backend()
    if backend != "tensorflow" and "keras" not in _sys.modules:
        _refuse(backend)
    _preparing = True
    try:
        _import_tensorflow_quietly()
        import keras

        if keras.backend.backend() != "tensorflow":
            _refuse(keras.backend.backend())
        import logging

        if not any(isinstance(f, _OwnRetracingFilter) for f in logging.getLogger("tensorflow").filters):
            logging.getLogger("tensorflow").addFilter(_OwnRetracingFilter())
        # the library's Keras layers and Sequential, registered for keras.models.load_model
        _importlib.import_module(f"{__name__}.original")
        _prepared = True
    finally:
        _preparing = False
    try:
        _sys.meta_path.remove(_FINDER)
    except ValueError:
        pass


class _OwnRetracingFilter:
    """The library compiles one function per rule set and input signature (and the evaluation one per
    model copy) on purpose; TensorFlow's 'triggered tf.function retracing' warning about those
    functions is noise for users."""

    def filter(self, record: _Any) -> bool:
        msg = record.getMessage()
        return not ("tf.function retracing" in msg
                    and any(own in msg for own in ("Sequential.", "Explainer.", "_Scorer.")))


class _AfterKeras:
    """Keras' own loader, followed by :func:`_prepare`: a model with the library's layers loads with
    ``keras.models.load_model`` even when Keras is imported after ``interprettensor``."""

    def __init__(self, loader: _Any):
        self._loader = loader

    def __getattr__(self, name: str) -> _Any:
        return getattr(self._loader, name)

    def create_module(self, spec: _Any) -> _Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: _Any) -> None:
        if "tensorflow" not in _sys.modules and _configured_backend() == "tensorflow":
            with _QuietStderr():  # Keras imports TensorFlow: as quietly as the package does
                self._loader.exec_module(module)
        else:
            self._loader.exec_module(module)
        try:
            _prepare()
        except Exception:  # noqa: BLE001 - another backend or a broken install: reported on first use
            pass


class _PrepareOnImport:
    """A meta path finder that finds nothing itself: it runs :func:`_prepare` before the first heavy
    submodule is imported, whichever way (``it.lrp``, ``from interprettensor.stream import ...``),
    and after Keras is imported. (A plain class: importlib.abc costs more to import than the package.)"""

    _busy = False

    def find_spec(self, fullname: str, path: _Any, target: _Any = None) -> _Any:
        if _prepared or self._busy:
            return None
        parts = fullname.split(".")
        rest = ".".join(parts[1:])
        if len(parts) >= 2 and parts[0] == __name__ and rest not in _LIGHT and not rest.startswith(_LIGHT_PACKAGES):
            _prepare()
        elif fullname == "keras":
            import importlib.util

            self._busy = True
            try:
                spec = importlib.util.find_spec("keras")
            finally:
                self._busy = False
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _AfterKeras(spec.loader)
                return spec
        return None


class _Alias:
    """Loader of a module's old flat name (``interprettensor.rules``): the module it moved to."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: _Any) -> _Any:
        return _importlib.import_module(self.target)

    def exec_module(self, module: _Any) -> None:
        pass


class _MovedModules:
    """A meta path finder for the old flat module names: ``import interprettensor.stream`` gives
    ``interprettensor.io.shards`` (the same module object)."""

    def find_spec(self, fullname: str, path: _Any, target: _Any = None) -> _Any:
        parts = fullname.split(".")
        if len(parts) == 2 and parts[0] == __name__ and parts[1] in _MOVED:
            import importlib.util

            return importlib.util.spec_from_loader(fullname, _Alias(f"{__name__}.{_MOVED[parts[1]]}"))
        return None


_FINDER = _PrepareOnImport()
_sys.meta_path.insert(0, _FINDER)
_sys.meta_path.append(_MovedModules())

if "keras" in _sys.modules:  # Keras (and TensorFlow) are loaded already: nothing left to save
    try:
        _prepare()
    except ImportError:  # another backend: reported on first use, as without Keras loaded
        pass


def __getattr__(name: str) -> _Any:
    """Lazy public names and submodules (PEP 562)."""
    if name in _NAMES:
        value = getattr(_importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        return _importlib.import_module(f"{__name__}.{_MOVED[name]}")
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
