"""interprettensor: Layer-wise Relevance Propagation (LRP) for TensorFlow 2 and Keras 3.

Two ways in, one engine:

* the original API: ``net = it.Sequential([it.Linear(...), ...])``, ``net.forward(x)``,
  ``net.lrp(R, 'epsilon', 0.01)``;
* any Keras model: ``it.lrp(model, x, rule='epsilon_gamma_box', low=0.0, high=1.0)``.
"""

from __future__ import annotations

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")



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
    except (OSError, ValueError):
        return "tensorflow"


def _refuse(backend: str) -> None:
    raise ImportError(
        f"interprettensor needs Keras' TensorFlow backend, but Keras is set to {backend!r} "
        f"(KERAS_BACKEND or keras.json). Set KERAS_BACKEND=tensorflow.")


if _configured_backend() != "tensorflow":
    _refuse(_configured_backend())


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (the oneDNN notice and absl's preamble) reach stderr before any
    log level applies. Import it once with the stderr file descriptor pointed at /dev/null (set
    INTERPRETTENSOR_TF_LOGS=1 to see them); any import error surfaces in the real import below."""
    import sys

    if "tensorflow" in sys.modules or _os.environ.get("INTERPRETTENSOR_TF_LOGS"):
        return
    try:
        fd = sys.stderr.fileno()
        saved = _os.dup(fd)
    except (OSError, ValueError, AttributeError):
        return
    devnull = _os.open(_os.devnull, _os.O_WRONLY)
    try:
        sys.stderr.flush()
        _os.dup2(devnull, fd)
        try:
            import tensorflow  # noqa: F401
        except Exception:  # noqa: BLE001
            pass
        finally:
            _os.dup2(saved, fd)
    finally:
        _os.close(devnull)
        _os.close(saved)


_import_tensorflow_quietly()

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    _refuse(_keras.backend.backend())

import logging as _logging  # noqa: E402


class _OwnRetracingFilter(_logging.Filter):
    """The library compiles one function per rule set and input signature on purpose; TensorFlow's
    'triggered tf.function retracing' warning about those functions is noise for users."""

    def filter(self, record: _logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("tf.function retracing" in msg and ("Sequential." in msg or "Explainer." in msg))


_logging.getLogger("tensorflow").addFilter(_OwnRetracingFilter())

from . import data, datasets, pretrained, render, rules, summaries  # noqa: E402
from . import attribution  # noqa: E402
from . import evaluate  # noqa: E402
from .composites import PRESETS, Composite, get_composite, register_preset  # noqa: E402
from .explain import Explainer, lrp  # noqa: E402
from .handlers import ExplainError, register_handler  # noqa: E402
from .layers import (AvgPool, Convolution, Elu, Flatten, Linear, MaxPool, Module, Relu, ReLU,  # noqa: E402
                     Sigmoid, Softmax, Tanh)
from .rules import register_rule  # noqa: E402
from .sequential import Sequential  # noqa: E402
from .stream import explain_dataset, load_relevances  # noqa: E402

__version__ = "2.0.0.dev0"

__all__ = [
    "Sequential", "Linear", "Convolution", "MaxPool", "AvgPool", "Flatten", "Softmax", "Relu", "ReLU",
    "Tanh", "Sigmoid", "Elu", "Module", "lrp", "Explainer", "Composite", "PRESETS", "get_composite",
    "register_preset", "register_rule", "register_handler", "rules", "ExplainError", "attribution", "evaluate",
    "explain_dataset", "load_relevances", "data", "datasets", "pretrained", "render", "summaries",
]
