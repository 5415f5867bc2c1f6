"""The explainer's numeric precision: which dtypes the forward and the backward pass run in, Keras
layers made to compute in them, and float16's power-of-two scaling of the relevance."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import keras
from keras import ops, tree

from . import backend, dtypes
from .backend import Tensor
from .errors import ExplainError
from .graph import Graph

__all__ = ["DTYPES", "model_dtype", "resolve_dtype", "cast_floats", "layer_precision", "scale_up", "scale_down"]

#: ``dtype=`` values of the Explainer: (forward dtype, backward dtype)
DTYPES = {"float64": ("float64", "float64"), "float32": ("float32", "float32"),
          "float16": ("float16", "float16"), "bfloat16": ("bfloat16", "bfloat16"),
          "mixed_float16": ("float16", "float32"), "mixed_bfloat16": ("bfloat16", "float32")}


def model_dtype(model: Any) -> str:
    """The dtype of the model's first floating input, else (token ids, masks: integer inputs only) the
    compute dtype of its first layer that computes in floats (a language model's backbone, an
    embedding), by name (``'float32'``; ``'bfloat16'`` for a model built in bfloat16)."""
    for t in getattr(model, "inputs", None) or []:
        try:
            dt = dtypes.name(t.dtype) if getattr(t, "dtype", None) is not None else ""
        except (TypeError, ValueError):
            continue
        if dtypes.is_floating(dt):
            return dt
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        dt = getattr(layer, "compute_dtype", None)
        if dt and keras.backend.is_float_dtype(dt):
            return dtypes.name(dt)
    return "float32"


def resolve_dtype(model: Any, dtype: Any) -> tuple[str, str]:
    """(forward dtype, backward dtype), by name, from ``dtype=`` or, when None, from the model: a Keras
    ``mixed_float16``/``mixed_bfloat16`` policy on its layers gives the matching mixed mode."""
    if dtype is None:
        for layer in getattr(model, "layers", []):
            name = getattr(getattr(layer, "dtype_policy", None), "name", "")
            if name in ("mixed_float16", "mixed_bfloat16"):
                dtype = name
                break
        else:
            d = model_dtype(model)
            return _computable(d, "the model's dtype"), d
    key = str(getattr(dtype, "name", dtype))
    if key not in DTYPES:
        raise ExplainError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    _computable(DTYPES[key][0], "dtype=")
    return DTYPES[key]


def _computable(dtype: str, what: str) -> str:
    """``dtype``, or an error where Keras' backend would compute it in another precision."""
    if dtype == "float64" and not backend.FLOAT64:
        raise ExplainError(f"{what} float64 needs Keras' TensorFlow backend: Keras' {backend.NAME!r} backend "
                           f"promotes float64 to float32 (keras.backend.result_type), so the explanation would "
                           f"not be computed in float64; use float32, or KERAS_BACKEND=tensorflow")
    return dtype


def cast_floats(structure: Any, dtype: Any) -> Any:
    """Every floating tensor in ``structure`` cast to ``dtype`` (a dtype or its name)."""
    dtype = dtypes.name(dtype)

    def cast(t: Any) -> Any:
        if ops.is_tensor(t) and dtypes.is_floating(t.dtype) and dtypes.name(t.dtype) != dtype:
            return ops.cast(t, dtype)
        return t

    return tree.map_structure(cast, structure)


class ComputePolicy(keras.DTypePolicy):
    """A dtype policy that computes in ``compute`` and keeps the variables in ``variable`` (read as
    ``compute``, like Keras' mixed-precision policies)."""

    def __init__(self, compute: str, variable: str):
        super().__init__(variable)
        self._compute_dtype = compute
        self._name = f"{variable}_computing_in_{compute}"


def _own_policy(layer: Any) -> Any:
    """The layer's dtype policy; for a layer under a ``DTypePolicyMap`` (a model built or loaded with one,
    as keras_hub's quantised presets are), the map's entry for the layer's path."""
    policy = getattr(layer, "dtype_policy", None)
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        return policy[layer.path] if layer.path else policy.default_policy
    return policy


def _saved_policy(layer: Any) -> tuple:
    """What :func:`_restore_policy` needs to undo ``layer.dtype_policy = ...``: the policy, or, under a
    ``DTypePolicyMap`` (whose setter writes the layer's path into the map), the map and the entry it had
    for exactly that path (``None``: none, a pattern or the default applied)."""
    policy = layer.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap) and layer.path:
        return policy, (policy[layer.path] if layer.path in policy else None)
    return policy, None


def _restore_policy(layer: Any, saved: tuple) -> None:
    policy, exact = saved
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap) and layer.path:
        if layer.path in policy:
            del policy[layer.path]
        if exact is not None:
            policy[layer.path] = exact
    else:
        layer.dtype_policy = policy


def _computing_in(policy: Any, dtype: str) -> Any:
    """``policy`` computing in ``dtype``: a :class:`ComputePolicy` for a plain policy (also a mixed one),
    the same quantisation computing in ``dtype`` for a quantised layer's (``model.quantize('int8')`` of a
    bfloat16 model keeps computing in bfloat16: ``'int8_from_bfloat16'``; its integer weights and
    their scales stay as they are); None for another kind of policy (left alone)."""
    if type(policy) is keras.DTypePolicy:
        return ComputePolicy(dtype, policy.variable_dtype)
    if isinstance(policy, keras.dtype_policies.QuantizedDTypePolicy):
        wide = copy.copy(policy)
        wide._compute_dtype = dtype
        wide._name = f"{policy.name}_computing_in_{dtype}"
        return wide
    return None


class layer_precision:  # noqa: N801 - used as a context manager, like a function
    """While tracing in a dtype other than the layers' own, make every tensor of the pass have it:

    * wider (float64 for a float32 model; float32 for the relevance of a model whose layers compute in
      bfloat16 or float16 under a Keras mixed policy): Keras layers compute in the wider dtype instead
      of casting their inputs to their own (which would round the pass at every reshape, pooling or
      activation); their variables are cast on reading, as under mixed precision;
    * narrower (float16/bfloat16 for a float32 model): layers without weights (pooling, activations,
      ...) compute in the low precision instead of autocasting their inputs to float32; layers with
      weights are computed by their handlers in the low precision.

    ``dtype``: a dtype or its name. Use as ``with layer_precision(graph, dtype): ...``;
    :meth:`suspended` undoes it for a while (the forward records that a checkpointed backward pass
    recomputes, in the forward pass's precision).
    """

    def __init__(self, graph: Graph, dtype: Any) -> None:
        self.graph, self.dtype = graph, dtypes.name(dtype)
        self._changed: list = []
        self._unautocast: list = []

    def __enter__(self) -> "layer_precision":
        dtype = self.dtype
        for step in self.graph.steps:
            layer = step.layer
            if not isinstance(layer, keras.layers.Layer) or layer.compute_dtype == dtype \
                    or not keras.backend.is_float_dtype(layer.compute_dtype):
                continue
            if dtypes.itemsize(dtype) > dtypes.itemsize(layer.compute_dtype):
                wide = _computing_in(_own_policy(layer), dtype)
                if wide is not None:
                    self._changed.append((layer, _saved_policy(layer)))
                    layer.dtype_policy = wide
            elif not layer.weights and getattr(layer, "autocast", False):
                layer.autocast = False
                self._unautocast.append(layer)
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer, saved in reversed(self._changed):
            _restore_policy(layer, saved)
        for layer in self._unautocast:
            layer.autocast = True
        self._changed, self._unautocast = [], []

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """The layers' own precision for a while (this context's changes undone, then made again)."""
        self.__exit__(None, None, None)
        try:
            yield
        finally:
            self.__enter__()


def scale_up(R: Tensor) -> tuple[Tensor, Tensor]:
    """float16 has a narrow range: relevance spread over many input elements would underflow. LRP is
    linear in the starting relevance, so each sample's is scaled by a power of two (exact) towards a
    peak of 2**10 (at most: the ratios R / z grow with it); returns the scaled relevance and the
    per-sample factor for :func:`scale_down`."""
    axes = tuple(range(1, len(R.shape)))
    R32 = ops.cast(R, "float32")
    peak = ops.max(ops.abs(R32), axis=axes)
    one, two = (ops.convert_to_tensor(v, dtype="float32") for v in (1.0, 2.0))
    exponent = ops.round(ops.log(1024.0 / ops.maximum(peak, 1e-30)) / ops.log(two))
    scale = ops.where(peak > 0, ops.power(two, ops.clip(exponent, 0.0, 10.0)), one)
    return ops.cast(R32 * ops.reshape(scale, (-1,) + (1,) * len(axes)), R.dtype), scale


def scale_down(t: Any, scale: Tensor) -> Any:
    """Undo :func:`scale_up` on a per-sample relevance, returning float32 (the unscaled values may lie
    outside float16's range)."""
    if not ops.is_tensor(t) or not dtypes.is_floating(t.dtype) or len(t.shape) == 0:
        return t
    return ops.cast(t, "float32") / ops.reshape(scale, (-1,) + (1,) * (len(t.shape) - 1))
