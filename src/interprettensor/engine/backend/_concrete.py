"""What the JAX and PyTorch modules share, as both run on concrete shapes (JAX traces once per shape,
PyTorch runs eagerly): signatures as plain records, errors read by their text, and no separately
fused kernels (XLA fuses inside ``jax.jit``; PyTorch runs op by op); and :func:`conv`, Keras' own
convolution, which TensorFlow and JAX use as it is (PyTorch's module wraps it)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence


class Spec(NamedTuple):
    """The signature of one argument of a compiled function (``None``: any size)."""
    shape: Any
    dtype: Any


def spec(shape: Sequence[int | None] | None, dtype: Any) -> Spec:
    return Spec(None if shape is None else tuple(shape), dtype)


def error_message(e: BaseException) -> str:
    return str(e)


#: per-sample size from which the engine fuses its element-wise kernels (never here: see :func:`use_fused`)
FUSED_MIN_ELEMENTS = 2 ** 19


def fused(fn: Callable) -> Callable:
    return fn


def use_fused(z: Any, min_elements: int) -> bool:
    return False


def conv(x: Any, kernel: Any, strides: Sequence[int], padding: str, dilation_rate: Sequence[int],
         data_format: str) -> Any:
    """``keras.ops.conv`` (what a Keras convolution layer's ``convolution_op`` computes)."""
    from keras import ops

    return ops.conv(x, kernel, strides=list(strides), padding=padding, dilation_rate=dilation_rate,
                    data_format=data_format)
