"""interprettensor: Layer-wise Relevance Propagation (LRP) for TensorFlow 2 and Keras 3.

Two ways in, one engine:

* the original API: ``net = it.Sequential([it.Linear(...), ...])``, ``net.forward(x)``,
  ``net.lrp(R, 'epsilon', 0.01)``;
* any Keras model: ``it.lrp(model, x, rule='epsilon_gamma_box', low=0.0, high=1.0)``.
"""

from __future__ import annotations

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"interprettensor needs Keras' TensorFlow backend, but Keras is set to "
        f"{_keras.backend.backend()!r} (KERAS_BACKEND or ~/.keras/keras.json). "
        f"Set KERAS_BACKEND=tensorflow.")

from . import rules  # noqa: E402
from .composites import PRESETS, Composite, get_composite, register_preset  # noqa: E402
from .explain import Explainer, lrp  # noqa: E402
from .handlers import ExplainError, register_handler  # noqa: E402
from .layers import (AvgPool, Convolution, Elu, Flatten, Linear, MaxPool, Module, Relu, ReLU,  # noqa: E402
                     Sigmoid, Softmax, Tanh)
from .rules import register_rule  # noqa: E402
from .sequential import Sequential  # noqa: E402

__version__ = "2.0.0.dev0"

__all__ = [
    "Sequential", "Linear", "Convolution", "MaxPool", "AvgPool", "Flatten", "Softmax", "Relu", "ReLU",
    "Tanh", "Sigmoid", "Elu", "Module", "lrp", "Explainer", "Composite", "PRESETS", "get_composite",
    "register_preset", "register_rule", "register_handler", "rules", "ExplainError",
]
