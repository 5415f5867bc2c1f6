"""Data types by name, on every backend: ``'float32'``, ``'bfloat16'``, ``'int32'``, ... as Keras
standardises them (:func:`keras.backend.standardize_dtype` reads TensorFlow's, JAX's, PyTorch's and
NumPy's dtypes alike)."""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["name", "is_floating", "is_integer", "itemsize", "LOW_PRECISION"]

#: the half-precision floats (scaled relevances, float32 accumulation; :mod:`.precision`)
LOW_PRECISION = ("float16", "bfloat16")

_BITS = {"bool": 8, "float16": 16, "bfloat16": 16, "float32": 32, "float64": 64, "int8": 8, "uint8": 8,
         "int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


def name(dtype: Any) -> str:
    """The standard name of ``dtype`` (a backend's dtype, a NumPy dtype or a name)."""
    return keras.backend.standardize_dtype(dtype)


def is_floating(dtype: Any) -> bool:
    return name(dtype).startswith(("float", "bfloat"))


def is_integer(dtype: Any) -> bool:
    return name(dtype).startswith(("int", "uint"))


def itemsize(dtype: Any) -> int:
    """Bytes per element."""
    return _BITS[name(dtype)] // 8
