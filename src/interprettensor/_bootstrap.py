"""The TensorFlow bootstrap: what the engine needs before its first import, done on first use so that
``import interprettensor`` stays light.

:func:`install` (called once by the package) puts a meta path finder in front of the import system;
before the first heavy submodule is imported (``it.lrp``, ``from interprettensor.io.dataset_run import ...``)
or Keras is imported, :func:`prepare` checks that Keras runs on a backend the engine supports
(TensorFlow, JAX or PyTorch, with its framework installed; an :class:`ImportError` saying what to set
or install otherwise), imports TensorFlow (on its backend) without its C++ start-up lines (INTERPRETTENSOR_TF_LOGS=1 shows them), filters TensorFlow's retracing warning about the
library's own compiled functions, and registers the library's Keras layers for
``keras.models.load_model``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

PACKAGE = __name__.rpartition(".")[0]

#: modules that need neither TensorFlow nor Keras (the command line's start and ``--help``)
LIGHT = frozenset({"apps", "apps.cli", "apps.commands", "apps.viewer", "io", "io.inputs", "io.render", "__main__",
                   "cli", "engine", "engine.errors", "io.shards", "io.digits", "analysis", "analysis.spray", "io.virelay",
                   "_bootstrap", "_legacy", "rule_names"})
#: modules that define (and register with Keras) the library's saveable layers: imported by :func:`prepare`, so
#: that ``keras.models.load_model`` reads a model with them after a plain ``import interprettensor`` (the 2017
#: API's layers and Sequential; P-ClArC's projection and A-ClArC's augmentation, with the projection's handler)
KERAS_LAYER_MODULES = ("original", "analysis.correction.projection")
#: packages whose modules are all light (the command line's subcommand parsers, the viewer, SpRAy)
LIGHT_PACKAGES = ("apps.commands.", "apps.viewer.", "analysis.spray.")


def quiet_tf_logs() -> None:
    """TensorFlow's Python-side start-up logs off unless the user chose a level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configured_backend() -> str:
    """Keras' backend as configured (KERAS_BACKEND, else keras.json), read before importing Keras so
    that a missing JAX or PyTorch does not hide the real problem."""
    import json

    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


#: Keras' backends the engine runs on -> the package each needs and the extra that installs it
BACKENDS = {"tensorflow": ("tensorflow", "cpu"), "jax": ("jax", "jax"), "torch": ("torch", "torch")}


def _refuse(backend: str) -> None:
    raise ImportError(
        f"interprettensor runs on Keras' TensorFlow, JAX and PyTorch backends, but Keras is set to {backend!r} "
        f"(KERAS_BACKEND or keras.json); set KERAS_BACKEND to one of {', '.join(BACKENDS)}")


def _check_installed(backend: str) -> None:
    """An ImportError naming the extra to install when the backend's framework is missing."""
    import importlib.util

    package, extra = BACKENDS[backend]
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"Keras is set to its {backend!r} backend (KERAS_BACKEND or keras.json), but {package} "
                          f"is not installed; install interprettensor[{extra}]")


class _QuietStderr:
    """Point the stderr file descriptor at /dev/null for a while: TensorFlow's C++ start-up lines (the
    oneDNN notice and absl's preamble) reach stderr before any log level applies. A no-op when stderr
    has no descriptor or INTERPRETTENSOR_TF_LOGS is set."""

    def __enter__(self) -> "_QuietStderr":
        self.saved = self.devnull = None
        if os.environ.get("INTERPRETTENSOR_TF_LOGS"):
            return self
        try:
            fd = sys.stderr.fileno()
            self.saved = os.dup(fd)
        except (OSError, ValueError, AttributeError):
            return self
        self.fd = fd
        self.devnull = os.open(os.devnull, os.O_WRONLY)
        sys.stderr.flush()
        os.dup2(self.devnull, fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            os.dup2(self.saved, self.fd)
            os.close(self.saved)
        if self.devnull is not None:
            os.close(self.devnull)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow once without its C++ start-up lines (set INTERPRETTENSOR_TF_LOGS=1 to see
    them); any import error surfaces in the real import after it."""
    if "tensorflow" in sys.modules:
        return
    with _QuietStderr():
        try:
            import tensorflow  # noqa: F401
        except Exception:  # noqa: BLE001
            pass


_prepared = False
_preparing = False


def prepare() -> None:
    """Everything the engine needs before its first import: the backend check, TensorFlow imported
    quietly, the retracing-log filter, and the library's layers registered with Keras. Idempotent;
    raises ImportError (with the fix) for another Keras backend."""
    global _prepared, _preparing
    if _prepared or _preparing:
        return
    backend = configured_backend()
    if "keras" not in sys.modules:
        if backend not in BACKENDS:
            _refuse(backend)
        _check_installed(backend)
    _preparing = True
    try:
        if backend == "tensorflow" or "keras" in sys.modules:
            _import_tensorflow_quietly()
        import keras

        if keras.backend.backend() not in BACKENDS:
            _refuse(keras.backend.backend())
        import logging

        if not any(isinstance(f, _OwnRetracingFilter) for f in logging.getLogger("tensorflow").filters):
            logging.getLogger("tensorflow").addFilter(_OwnRetracingFilter())
        # the library's Keras layers and Sequential, registered for keras.models.load_model
        for module in KERAS_LAYER_MODULES:
            importlib.import_module(f"{PACKAGE}.{module}")
        _prepared = True
    finally:
        _preparing = False
    try:
        sys.meta_path.remove(_FINDER)
    except ValueError:
        pass


class _OwnRetracingFilter:
    """The library compiles one function per rule set and input signature (and the evaluation one per
    model copy) on purpose; TensorFlow's 'triggered tf.function retracing' warning about those
    functions is noise for users."""

    def filter(self, record: Any) -> bool:
        msg = record.getMessage()
        return not ("tf.function retracing" in msg
                    and any(own in msg for own in ("Sequential.", "Explainer.", "_Scorer.")))


class _AfterKeras:
    """Keras' own loader, followed by :func:`prepare`: a model with the library's layers loads with
    ``keras.models.load_model`` even when Keras is imported after ``interprettensor``."""

    def __init__(self, loader: Any):
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        if "tensorflow" not in sys.modules and configured_backend() == "tensorflow":
            with _QuietStderr():  # Keras imports TensorFlow: as quietly as the package does
                self._loader.exec_module(module)
        else:
            self._loader.exec_module(module)
        try:
            prepare()
        except Exception:  # noqa: BLE001 - another backend or a broken install: reported on first use
            pass


class _PrepareOnImport:
    """A meta path finder that finds nothing itself: it runs :func:`prepare` before the first heavy
    submodule is imported, whichever way (``it.lrp``, ``from interprettensor.io.dataset_run import ...``),
    and after Keras is imported. (A plain class: importlib.abc costs more to import than the package.)"""

    _busy = False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if _prepared or self._busy:
            return None
        parts = fullname.split(".")
        rest = ".".join(parts[1:])
        if len(parts) >= 2 and parts[0] == PACKAGE and rest not in LIGHT and not rest.startswith(LIGHT_PACKAGES):
            prepare()
            if fullname in sys.modules:  # prepare() imported it: hand that module on, never a second copy
                return _existing_spec(sys.modules[fullname])
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


class _AlreadyLoaded:
    """The loader of a module that :func:`prepare` imported while the import system was looking for it
    (``from interprettensor import rules`` before anything heavy): the import gets that module instead
    of executing the file a second time, so its classes exist once (``isinstance`` against the engine's
    own). CPython's ``_find_spec`` hands on the ``__spec__`` of a module that is already in
    ``sys.modules``, so that spec is swapped for this loader's until the import is done."""

    def __init__(self, module: Any, spec: Any):
        self.module, self.spec = module, spec

    def create_module(self, spec: Any) -> Any:
        return self.module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self.spec  # nothing to run: restore the module's own spec


def _existing_spec(module: Any) -> Any:
    import importlib.machinery

    old = getattr(module, "__spec__", None)
    spec = importlib.machinery.ModuleSpec(module.__name__, _AlreadyLoaded(module, old),
                                          origin=getattr(old, "origin", None),
                                          is_package=getattr(old, "submodule_search_locations", None) is not None)
    if old is not None:
        spec.submodule_search_locations = old.submodule_search_locations
    module.__spec__ = spec
    return spec


_FINDER = _PrepareOnImport()


def install() -> None:
    """Put the finder in front of the import system (once); prepare at once if Keras (and TensorFlow)
    are loaded already, since there is nothing left to save."""
    quiet_tf_logs()
    if not _prepared and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    if "keras" in sys.modules:
        try:
            prepare()
        except ImportError:  # another backend: reported on first use, as without Keras loaded
            pass
