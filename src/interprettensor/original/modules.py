"""The original interprettensor modules, as Keras 3 layers.

``Linear``, ``Convolution``, ``MaxPool``, ``AvgPool``, ``Flatten``, ``Softmax`` and the activation
modules keep the constructor arguments of the 2017 library. Each one also carries an LRP preset
(:meth:`Module.set_lrp_parameters`) used by :meth:`interprettensor.Sequential.lrp` when no variant
is given to the call. They save and load with Keras (``model.save('net.keras')``).

Example::

    >>> import interprettensor as it
    >>> layer = it.Linear(10, input_dim=784, act='relu')
    >>> layer.set_lrp_parameters('epsilon', 0.01)
"""

from __future__ import annotations

from typing import Any, Callable

import keras
from keras import ops

from ..engine.backend import Tensor
from ..engine.rules import Rule
from .variants import rule_from_variant

__all__ = [
    "Module", "Linear", "Convolution", "MaxPool", "AvgPool", "Flatten", "Softmax",
    "Relu", "ReLU", "Tanh", "Sigmoid", "Elu", "get_activation",
]



def _softmax(x: Tensor) -> Tensor:
    return ops.softmax(x, axis=-1)


# The name of TensorFlow's softmax, which this was until interprettensor ran on other backends: the engine
# recognises activations by name, and a Linear or Convolution with ``act='softmax'`` is explained as it always
# was (its output rather than its logits; not a known non-negative activation).
_softmax.__name__ = _softmax.__qualname__ = "softmax_v2"

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda x: x,
    "relu": ops.relu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "elu": ops.elu,
    "softmax": _softmax,
}


def get_activation(act: str | Callable | None) -> Callable[[Tensor], Tensor]:
    """An activation by the original names (linear, relu, tanh, sigmoid, elu, softmax) or a callable."""
    if act is None:
        return _ACTIVATIONS["linear"]
    if callable(act):
        return act
    if isinstance(act, str) and act.lower() in _ACTIVATIONS:
        return _ACTIVATIONS[act.lower()]
    raise ValueError(f"unknown activation {act!r}; valid: {', '.join(_ACTIVATIONS)} or a callable")


class Module(keras.layers.Layer):
    """Base of the original modules: a Keras layer with an LRP preset."""

    def __init__(self, name: str | None = None, lrp_var: str | None = None,
                 lrp_param: float | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.lrp_var = lrp_var
        self.lrp_param = lrp_param

    def set_lrp_parameters(self, lrp_var: str | None = None, param: float | None = None) -> None:
        """Preset the LRP variant (``'simple'``, ``'epsilon'``, ``'flat'``, ``'ww'``,
        ``'alphabeta'``) and its parameter for this module."""
        if lrp_var is not None:
            rule_from_variant(lrp_var, param)  # validate now, not at lrp time
        self.lrp_var = lrp_var
        self.lrp_param = param

    def preset_rule(self) -> Rule:
        return rule_from_variant(self.lrp_var, self.lrp_param)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"lrp_var": self.lrp_var, "lrp_param": self.lrp_param})
        return config


def _act_config(act: Any) -> Any:
    if isinstance(act, str) or act is None:
        return act
    return keras.saving.serialize_keras_object(act)


def _act_from_config(act: Any) -> Any:
    if isinstance(act, dict):
        return keras.saving.deserialize_keras_object(act)
    return act


class _Weighted(Module):
    """Shared parts of Linear and Convolution: activation, optional batch norm and dropout."""

    def __init__(self, act: str | Callable = "linear", batch_size: int | None = None,
                 keep_prob: float = 1.0, batch_norm: bool = False, name: str | None = None,
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.act = act
        self.act_fn = get_activation(act)
        self.batch_size = batch_size
        if not 0.0 < float(keep_prob) <= 1.0:
            raise ValueError(f"{type(self).__name__}: keep_prob must be in (0, 1], got {keep_prob}")
        self.keep_prob = float(keep_prob)
        self.batch_norm = bool(batch_norm)
        self.bn = (keras.layers.BatchNormalization(name="batch_norm", dtype=self.dtype_policy)
                   if self.batch_norm else None)
        self.dropout = (keras.layers.Dropout(1.0 - self.keep_prob, dtype=self.dtype_policy)
                        if self.keep_prob < 1.0 else None)

    def _finish(self, z: Tensor, training: bool | None) -> Tensor:
        if self.bn is not None:
            z = self.bn(z, training=training)
        a = self.act_fn(z)
        if self.dropout is not None:
            a = self.dropout(a, training=training)
        return a

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"act": _act_config(self.act), "batch_size": self.batch_size,
                       "keep_prob": self.keep_prob, "batch_norm": self.batch_norm})
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "_Weighted":
        config = dict(config)
        config["act"] = _act_from_config(config.get("act"))
        return cls(**config)


@keras.saving.register_keras_serializable(package="interprettensor")
class Linear(_Weighted):
    """Fully connected layer ``act(x W + b)``; an N-D input is flattened to ``(N, -1)`` first.

    Args:
        output_dim: number of output units.
        input_dim: number of inputs (optional; lets the layer build before seeing data).
        act: ``'linear'``, ``'relu'``, ``'tanh'``, ``'sigmoid'``, ``'elu'``, ``'softmax'`` or a callable.
        batch_size: kept for compatibility with the original API (unused).
        keep_prob: dropout keep probability on the output, applied in training only.
        batch_norm: batch normalisation of the pre-activation (moving statistics at inference,
            merged into ``W`` and ``b`` for LRP).
    """

    def __init__(self, output_dim: int, input_dim: int | None = None, act: str | Callable = "linear",
                 batch_size: int | None = None, keep_prob: float = 1.0, batch_norm: bool = False,
                 name: str | None = None, **kwargs: Any):
        super().__init__(act, batch_size, keep_prob, batch_norm, name, **kwargs)
        self.output_dim = int(output_dim)
        self.input_dim = None if input_dim is None else int(input_dim)

    def build(self, input_shape: tuple) -> None:
        d = 1
        for s in input_shape[1:]:
            if s is None:
                raise ValueError(f"{self.name}: Linear needs a known input size, got shape {input_shape}")
            d *= int(s)
        if self.input_dim is not None and d != self.input_dim:
            raise ValueError(f"layer {self.name!r} expects input_dim={self.input_dim} features, "
                             f"got input of shape {tuple(input_shape)} ({d} features)")
        self.input_dim = d
        std = 1.0 / d ** 0.5
        self.kernel = self.add_weight(name="kernel", shape=(d, self.output_dim),
                                      initializer=keras.initializers.TruncatedNormal(stddev=std))
        self.bias = self.add_weight(name="bias", shape=(self.output_dim,), initializer="zeros")
        if self.bn is not None:
            self.bn.build((None, self.output_dim))

    def linear(self, x: Tensor, kernel: Tensor, bias: Tensor | None = None) -> Tensor:
        """The pre-activation ``x W + b`` for given parameters (used by LRP rules)."""
        x = ops.reshape(x, (-1, kernel.shape[0]))
        z = ops.matmul(x, kernel)
        return z if bias is None else z + bias

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        return self._finish(self.linear(x, self.kernel, self.bias), training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"output_dim": self.output_dim, "input_dim": self.input_dim})
        return config


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _padding(pad: str) -> str:
    p = str(pad).upper()
    if p not in ("SAME", "VALID"):
        raise ValueError(f"pad must be 'SAME' or 'VALID', got {pad!r}")
    return p


@keras.saving.register_keras_serializable(package="interprettensor")
class Convolution(_Weighted):
    """2-D convolution ``act(conv(x, W) + b)`` on ``(N, H, W, C)`` inputs.

    A flat ``(N, D)`` input is reshaped to ``(N, input_dim, input_dim, input_depth)`` when
    ``input_dim`` and ``input_depth`` are given (the original examples feed flat MNIST vectors).

    Args:
        output_depth: number of filters.
        input_depth: input channels (optional).
        input_dim: spatial size of the input (int for square or ``(H, W)``), for flat inputs.
        kernel_size: filter size (int or pair).
        stride_size: stride (int or pair; default 2 as in the original library).
        act, batch_size, keep_prob, batch_norm: as for :class:`Linear`.
        pad: ``'SAME'`` or ``'VALID'``.
    """

    def __init__(self, output_depth: int, input_depth: int | None = None, input_dim: Any = None,
                 kernel_size: Any = 5, stride_size: Any = 2, act: str | Callable = "linear",
                 pad: str = "SAME", batch_size: int | None = None, keep_prob: float = 1.0,
                 batch_norm: bool = False, name: str | None = None, **kwargs: Any):
        super().__init__(act, batch_size, keep_prob, batch_norm, name, **kwargs)
        self.output_depth = int(output_depth)
        self.input_depth = None if input_depth is None else int(input_depth)
        self.input_dim = None if input_dim is None else _pair(input_dim)
        self.kernel_size = _pair(kernel_size)
        self.stride_size = _pair(stride_size)
        self.pad = _padding(pad)

    def _image_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) == 4:
            return tuple(input_shape)
        if len(input_shape) == 2 and self.input_dim is not None and self.input_depth is not None:
            h, w = self.input_dim
            if input_shape[1] is not None and input_shape[1] != h * w * self.input_depth:
                raise ValueError(
                    f"layer {self.name!r} reshapes its flat input to ({h}, {w}, {self.input_depth}) "
                    f"= {h * w * self.input_depth} values, got input of shape {tuple(input_shape)}")
            return (input_shape[0], h, w, self.input_depth)
        raise ValueError(
            f"layer {self.name!r} (Convolution) expects input of shape (N, H, W, C), or a flat (N, D) "
            f"input with input_dim and input_depth given; got shape {tuple(input_shape)}")

    def build(self, input_shape: tuple) -> None:
        shape = self._image_shape(input_shape)
        c = shape[-1]
        if c is None:
            raise ValueError(f"{self.name}: unknown number of input channels in shape {input_shape}")
        if self.input_depth is not None and c != self.input_depth:
            raise ValueError(f"layer {self.name!r} expects input_depth={self.input_depth} channels, "
                             f"got input of shape {tuple(input_shape)}")
        self.input_depth = int(c)
        kh, kw = self.kernel_size
        std = 1.0 / (kh * kw * c) ** 0.5
        self.kernel = self.add_weight(name="kernel", shape=(kh, kw, int(c), self.output_depth),
                                      initializer=keras.initializers.TruncatedNormal(stddev=std))
        self.bias = self.add_weight(name="bias", shape=(self.output_depth,), initializer="zeros")
        if self.bn is not None:
            self.bn.build((None, None, None, self.output_depth))

    def linear(self, x: Tensor, kernel: Tensor, bias: Tensor | None = None) -> Tensor:
        """The pre-activation ``conv(x, W) + b`` for given parameters (used by LRP rules)."""
        if len(x.shape) == 2:
            h, w = self.input_dim
            x = ops.reshape(x, (-1, h, w, kernel.shape[2]))
        z = ops.conv(x, kernel, strides=self.stride_size, padding=self.pad.lower(), data_format="channels_last")
        return z if bias is None else z + bias

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        return self._finish(self.linear(x, self.kernel, self.bias), training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, _ = self._image_shape(input_shape)
        return (n,) + _pool_out((h, w), self.kernel_size, self.stride_size, self.pad) + (self.output_depth,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"output_depth": self.output_depth, "input_depth": self.input_depth,
                       "input_dim": self.input_dim, "kernel_size": self.kernel_size,
                       "stride_size": self.stride_size, "pad": self.pad})
        return config


def _pool_out(hw: tuple, k: tuple, s: tuple, pad: str) -> tuple:
    out = []
    for n, kk, ss in zip(hw, k, s):
        if n is None:
            out.append(None)
        elif pad == "SAME":
            out.append(-(-n // ss))
        else:
            out.append((n - kk) // ss + 1)
    return tuple(out)


class _Pool(Module):
    def __init__(self, pool_size: Any = 2, pool_stride: Any = None, pad: str = "SAME",
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.pool_size = _pair(pool_size)
        self.pool_stride = self.pool_size if pool_stride is None else _pair(pool_stride)
        self.pad = _padding(pad)

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 4:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) expects input of shape "
                             f"(N, H, W, C), got shape {tuple(input_shape)}")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        return (n,) + _pool_out((h, w), self.pool_size, self.pool_stride, self.pad) + (c,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "pool_stride": self.pool_stride, "pad": self.pad})
        return config


@keras.saving.register_keras_serializable(package="interprettensor")
class MaxPool(_Pool):
    """Max pooling. LRP: winner-takes-all, except uniform over the window under ``'flat'``/``'ww'``."""

    def call(self, x: Tensor) -> Tensor:
        return ops.max_pool(x, self.pool_size, self.pool_stride, self.pad.lower(), data_format="channels_last")


@keras.saving.register_keras_serializable(package="interprettensor")
class AvgPool(_Pool):
    """Average pooling (padding excluded from the mean). LRP: relevance in proportion to the inputs
    (a linear map with weights ``1/n`` under the active rule)."""

    def call(self, x: Tensor) -> Tensor:
        return ops.average_pool(x, self.pool_size, self.pool_stride, self.pad.lower(), data_format="channels_last")


@keras.saving.register_keras_serializable(package="interprettensor")
class Flatten(Module):
    """Reshape ``(N, ...)`` to ``(N, -1)``; relevance is reshaped back."""

    def call(self, x: Tensor) -> Tensor:
        size = 1
        for d in x.shape[1:]:
            size = None if (d is None or size is None) else size * int(d)
        return ops.reshape(x, (-1, size) if size is not None else (ops.shape(x)[0], -1))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        d = 1
        for s in input_shape[1:]:
            d = None if (s is None or d is None) else d * s
        return (input_shape[0], d)


class _Elementwise(Module):
    """Element-wise activation: relevance passes through unchanged."""

    fn: Callable[[Tensor], Tensor]

    def call(self, x: Tensor) -> Tensor:
        return type(self).fn(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@keras.saving.register_keras_serializable(package="interprettensor")
class Softmax(_Elementwise):
    """Softmax over the last axis. Relevance passes through unchanged."""

    fn = staticmethod(_softmax)


@keras.saving.register_keras_serializable(package="interprettensor")
class Relu(_Elementwise):
    """ReLU activation module."""

    fn = staticmethod(ops.relu)


ReLU = Relu


@keras.saving.register_keras_serializable(package="interprettensor")
class Tanh(_Elementwise):
    """tanh activation module."""

    fn = staticmethod(ops.tanh)


@keras.saving.register_keras_serializable(package="interprettensor")
class Sigmoid(_Elementwise):
    """Logistic sigmoid activation module."""

    fn = staticmethod(ops.sigmoid)


@keras.saving.register_keras_serializable(package="interprettensor")
class Elu(_Elementwise):
    """ELU activation module."""

    fn = staticmethod(ops.elu)
