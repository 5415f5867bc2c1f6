"""The explainer's numeric precision: which dtypes the forward and the backward pass run in, Keras
layers made to compute in them, and float16's power-of-two scaling of the relevance."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras
import tensorflow as tf

from .errors import ExplainError
from .graph import Graph

__all__ = ["DTYPES", "model_dtype", "resolve_dtype", "cast_floats", "layer_precision", "scale_up", "scale_down"]

#: ``dtype=`` values of the Explainer: (forward dtype, backward dtype)
DTYPES = {"float64": ("float64", "float64"), "float32": ("float32", "float32"),
          "float16": ("float16", "float16"), "bfloat16": ("bfloat16", "bfloat16"),
          "mixed_float16": ("float16", "float32"), "mixed_bfloat16": ("bfloat16", "float32")}


def model_dtype(model: Any) -> tf.DType:
    """The dtype of the model's (first) input, else of its first layer's computation."""
    inputs = getattr(model, "inputs", None)
    if inputs:
        try:
            return tf.as_dtype(inputs[0].dtype)
        except TypeError:
            pass
    for layer in getattr(model, "layers", []):
        dt = getattr(layer, "compute_dtype", None)
        if dt:
            return tf.as_dtype(dt)
    return tf.float32


def resolve_dtype(model: Any, dtype: Any) -> tuple[tf.DType, tf.DType]:
    """(forward dtype, backward dtype) from ``dtype=`` or, when None, from the model: a Keras
    ``mixed_float16``/``mixed_bfloat16`` policy on its layers gives the matching mixed mode."""
    if dtype is None:
        for layer in getattr(model, "layers", []):
            name = getattr(getattr(layer, "dtype_policy", None), "name", "")
            if name in ("mixed_float16", "mixed_bfloat16"):
                dtype = name
                break
        else:
            d = model_dtype(model)
            return d, d
    key = str(getattr(dtype, "name", dtype))
    if key not in DTYPES:
        raise ExplainError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    fwd, bwd = DTYPES[key]
    return tf.as_dtype(fwd), tf.as_dtype(bwd)


def cast_floats(structure: Any, dtype: tf.DType) -> Any:
    """Every floating tensor in ``structure`` cast to ``dtype``."""
    def cast(t: Any) -> Any:
        if tf.is_tensor(t) and t.dtype.is_floating and t.dtype != dtype:
            return tf.cast(t, dtype)
        return t

    return tf.nest.map_structure(cast, structure)


class ComputePolicy(keras.DTypePolicy):
    """A dtype policy that computes in ``compute`` and keeps the variables in ``variable`` (read as
    ``compute``, like Keras' mixed-precision policies)."""

    def __init__(self, compute: str, variable: str):
        super().__init__(variable)
        self._compute_dtype = compute
        self._name = f"{variable}_computing_in_{compute}"


@contextlib.contextmanager
def layer_precision(graph: Graph, dtype: tf.DType) -> Iterator[None]:
    """While tracing in a dtype other than the layers' own, make every tensor of the pass have it:

    * wider (float64 for a float32 model): Keras layers compute in float64 instead of casting their
      inputs to float32 (which would round the pass at every reshape, pooling or activation); their
      variables are cast on reading, as under mixed precision;
    * narrower (float16/bfloat16 for a float32 model): layers without weights (pooling, activations,
      ...) compute in the low precision instead of autocasting their inputs to float32; layers with
      weights are computed by their handlers in the low precision.
    """
    changed, unautocast = [], []
    for step in graph.steps:
        layer = step.layer
        if not isinstance(layer, keras.layers.Layer) or layer.compute_dtype == dtype.name \
                or not keras.backend.is_float_dtype(layer.compute_dtype):
            continue
        policy = getattr(layer, "dtype_policy", None)
        if dtype.size > tf.as_dtype(layer.compute_dtype).size:
            if type(policy) is keras.DTypePolicy:
                changed.append((layer, policy))
                layer.dtype_policy = ComputePolicy(dtype.name, policy.variable_dtype)
        elif not layer.weights and getattr(layer, "autocast", False):
            layer.autocast = False
            unautocast.append(layer)
    try:
        yield
    finally:
        for layer, policy in reversed(changed):
            layer.dtype_policy = policy
        for layer in unautocast:
            layer.autocast = True


def scale_up(R: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """float16 has a narrow range: relevance spread over many input elements would underflow. LRP is
    linear in the starting relevance, so each sample's is scaled by a power of two (exact) towards a
    peak of 2**10 (at most: the ratios R / z grow with it); returns the scaled relevance and the
    per-sample factor for :func:`scale_down`."""
    axes = list(range(1, R.shape.rank))
    peak = tf.reduce_max(tf.abs(tf.cast(R, tf.float32)), axis=axes)
    exponent = tf.round(tf.math.log(1024.0 / tf.maximum(peak, 1e-30)) / tf.math.log(2.0))
    scale = tf.where(peak > 0, tf.pow(2.0, tf.clip_by_value(exponent, 0.0, 10.0)), 1.0)
    return tf.cast(tf.cast(R, tf.float32) * tf.reshape(scale, [-1] + [1] * len(axes)), R.dtype), scale


def scale_down(t: Any, scale: tf.Tensor) -> Any:
    """Undo :func:`scale_up` on a per-sample relevance, returning float32 (the unscaled values may lie
    outside float16's range)."""
    if not tf.is_tensor(t) or not t.dtype.is_floating or t.shape.rank == 0:
        return t
    return tf.cast(t, tf.float32) / tf.reshape(scale, [-1] + [1] * (t.shape.rank - 1))
