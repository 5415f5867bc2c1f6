"""The original (2017) interprettensor API on top of the engine: its modules (``Linear``,
``Convolution``, pooling, activations) as Keras layers, and ``Sequential`` with ``forward``,
``fit``, ``lrp`` and ``lrp_layerwise``."""

from . import handlers  # noqa: F401 - registers the modules' LRP handlers
from .modules import AvgPool, Convolution, Elu, Flatten, Linear, MaxPool, Module, Relu, ReLU, Sigmoid, Softmax, Tanh
from .sequential import Sequential

__all__ = ["Sequential", "Module", "Linear", "Convolution", "MaxPool", "AvgPool", "Flatten", "Softmax", "Relu", "ReLU",
           "Tanh", "Sigmoid", "Elu"]
