"""Keras' layers and operations, each with its handler: the linear map of layers with weights, the
weights of fixed linear maps, the windows of poolings. Importing this module registers them."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
from keras import ops

from .. import backend
from ..backend import Tensor
from .attention import ContractionHandler, MultiOutputLinearHandler, OpLinearHandler, SoftmaxHandler
from .elementwise import ElementwiseHandler
from .embedding import ConstantHandler, EmbeddingHandler, ReversibleEmbeddingHandler
from .fixed_linear import FixedLinearHandler
from .normalization import LayerNormHandler, StatisticOpHandler
from .pooling import MaxPoolHandler, winner_takes_all_3d
from .quantised import dequantised_kernel
from .registry import register_keras_family, register_op_handler
from .routing import GateHandler, RouteHandler, RoutingDecisionHandler
from .time_distributed import TimeDistributedDispatch
from .weighted import LinearHandler, SeparableHandler, batchnorm_affine, bias_add

L = keras.layers
_conv_base = keras.src.layers.convolutional


# ----------------------------------------------------------------------------- layers with weights
def _kernel_params(layer: Any, *names: str) -> dict:
    p = {n: getattr(layer, n) for n in names}
    p["bias"] = layer.bias if getattr(layer, "use_bias", True) else None
    return p


def _dense_params(layer: Any) -> dict:
    """A Dense or EinsumDense layer's kernel (dequantised where the layer is quantised) and bias."""
    p = {"kernel": dequantised_kernel(layer)}
    if getattr(layer, "bias", None) is not None and getattr(layer, "use_bias", True):
        p["bias"] = layer.bias
    return p


def _dense_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    return bias_add(ops.matmul(xs[0], p["kernel"]), p)


def _einsum_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    z = ops.einsum(layer.equation, xs[0], p["kernel"])
    return z if p.get("bias") is None else z + p["bias"]


def _conv_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    x = xs[0]
    if getattr(layer, "padding", None) == "causal":  # Conv1D causal: left padding, then valid
        pad = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        x = ops.pad(x, [[0, 0], [pad, 0], [0, 0]] if layer.data_format == "channels_last" else [[0, 0], [0, 0], [pad, 0]])
        z = ops.conv(x, p["kernel"], strides=list(layer.strides), padding="valid",
                     dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    elif type(layer).convolution_op is _BASE_CONVOLUTION_OP:  # ops.conv: the backend's, as the rules call it often
        z = backend.conv(x, p["kernel"], layer.strides, layer.padding, layer.dilation_rate, layer.data_format)
    else:  # a layer's own convolution
        z = layer.convolution_op(x, p["kernel"])
    return bias_add(z, p, layer.data_format == "channels_first")


#: Keras' convolution (``ops.conv``), which a layer may override
_BASE_CONVOLUTION_OP = _conv_base.base_conv.BaseConv.convolution_op


def _depthwise_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    z = ops.depthwise_conv(xs[0], p["kernel"], strides=layer.strides, padding=layer.padding,
                           dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    return bias_add(z, p, layer.data_format == "channels_first")


def _conv_transpose_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    z = ops.conv_transpose(xs[0], p["kernel"], strides=list(layer.strides), padding=layer.padding,
                           output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
                           data_format=layer.data_format)
    return bias_add(z, p, layer.data_format == "channels_first")


# ----------------------------------------------------------------------------- fixed linear maps
def _bn_affine_weights(layer: Any, xs: Sequence[Tensor]) -> dict:
    s, t = batchnorm_affine(layer, xs[0].dtype)
    rank = len(xs[0].shape)
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    shape = [1] * rank
    shape[axis % rank] = -1
    return {"kernel": ops.reshape(s, shape), "bias": ops.reshape(t, shape)}


def _affine_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    z = xs[0] * p["kernel"]
    return z if p.get("bias") is None else z + p["bias"]


def _merge_weights(signs: Callable[[int], list[float]]) -> Callable:
    def weights(layer: Any, xs: Sequence[Tensor]) -> dict:
        return {"kernel": ops.convert_to_tensor(signs(len(xs)), dtype=xs[0].dtype)}

    return weights


def _merge_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    z = None
    for i, x in enumerate(xs):
        t = p["kernel"][i] * x
        z = t if z is None else z + t
    return z


def _merge_transpose(layer: Any, xs: Sequence[Tensor], p: dict, s: Tensor) -> list:
    """``J^T s`` of :func:`_merge_fn` (inputs shaped like the output): each input's weight times ``s``."""
    return [p["kernel"][i] * s for i in range(len(xs))]


def _own_call_fn(layer: Any, xs: Sequence[Tensor], p: dict) -> Tensor:
    """Average pooling, upsampling: the layer's own (linear) call, times a scalar kernel (a second input
    is the mask of a masked global average)."""
    kwargs = {"mask": xs[1]} if len(xs) > 1 else {}
    return p["kernel"] * ops.cast(layer(xs[0], **kwargs), xs[0].dtype)


# ----------------------------------------------------------------------------- max pooling
def _avg_for_max(layer: Any, x: Tensor) -> Tensor:
    return ops.average_pool(x, layer.pool_size, layer.strides, layer.padding, layer.data_format)


def _window_2d(layer: Any) -> tuple | None:
    if layer.data_format != "channels_last":
        return None
    return tuple(layer.pool_size), tuple(layer.strides), layer.padding.upper()


def _global_mean_for_max(layer: Any, x: Tensor) -> Tensor:
    rank = len(x.shape)
    axes = list(range(1, rank - 1)) if layer.data_format == "channels_last" else list(range(2, rank))
    return ops.mean(x, axis=axes, keepdims=layer.keepdims)


_sum = FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0] * n), transpose=_merge_transpose)
_difference = FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0, -1.0]), sign_preserving=False,
                                 transpose=_merge_transpose)
_own_linear_call = FixedLinearHandler(_own_call_fn)
#: RMS normalisation (Keras >= 3.9): relevance passes through (the scale 1/rms is a constant)
_RMS_NORMALIZATION = tuple(t for t in (getattr(L, "RMSNormalization", None),) if t is not None)
_route, _pass, _gate = RouteHandler(), ElementwiseHandler(), GateHandler()
_softmax, _contraction, _op_linear, _constant = SoftmaxHandler(), ContractionHandler(), OpLinearHandler(), ConstantHandler()


class _ScaleHandler(ContractionHandler):
    """``x / c`` with a constant ``c``: linear; a division of two computed tensors has no rule."""

    def for_inputs(self, n_float: int):
        return super().for_inputs(n_float) if n_float <= 1 else None


_scale = _ScaleHandler()

register_keras_family([
    # layers with weights
    (L.Dense, LinearHandler(_dense_params, _dense_fn, kind="dense", per_position=True)),
    (L.EinsumDense, LinearHandler(_dense_params, _einsum_fn, channel_axis=None, kind="dense")),
    (_conv_base.base_conv.BaseConv, LinearHandler(lambda l: _kernel_params(l, "kernel"), _conv_fn)),
    (_conv_base.base_depthwise_conv.BaseDepthwiseConv, LinearHandler(lambda l: _kernel_params(l, "kernel"),
                                                                     _depthwise_fn)),
    (_conv_base.base_conv_transpose.BaseConvTranspose, LinearHandler(lambda l: _kernel_params(l, "kernel"),
                                                                     _conv_transpose_fn, channel_axis=-2)),
    (_conv_base.base_separable_conv.BaseSeparableConv, SeparableHandler()),
    # linear maps without trainable weights
    (L.BatchNormalization, FixedLinearHandler(_affine_fn, _bn_affine_weights, sign_preserving=False)),
    (L.Add, _sum),
    (L.Average, FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0 / n] * n), transpose=_merge_transpose)),
    (L.Subtract, _difference),
    (keras.src.layers.pooling.base_pooling.BasePooling, _own_linear_call),
    (keras.src.layers.pooling.base_global_pooling.BaseGlobalPooling, _own_linear_call),
    (L.UpSampling1D, _own_linear_call),
    (L.UpSampling2D, _own_linear_call),
    (L.UpSampling3D, _own_linear_call),
    # max pooling
    (L.MaxPooling1D, MaxPoolHandler(_avg_for_max)),
    (L.MaxPooling2D, MaxPoolHandler(_avg_for_max, _window_2d)),
    (L.MaxPooling3D, MaxPoolHandler(_avg_for_max, winner=winner_takes_all_3d)),
    (L.GlobalMaxPooling1D, MaxPoolHandler(_global_mean_for_max)),
    (L.GlobalMaxPooling2D, MaxPoolHandler(_global_mean_for_max)),
    (L.GlobalMaxPooling3D, MaxPoolHandler(_global_mean_for_max)),
    # routing
    *[(t, _route) for t in (L.Flatten, L.Reshape, L.Permute, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
                            L.Cropping1D, L.Cropping2D, L.Cropping3D, L.Concatenate, L.RepeatVector, L.Identity)],
    # element-wise: relevance unchanged
    *[(t, _pass) for t in (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.PReLU, L.Dropout,
                           L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
                           L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Rescaling,
                           L.Normalization) + _RMS_NORMALIZATION],
    # gates
    (L.Multiply, _gate),
    # transformers: softmax, normalisation, embeddings
    (L.Softmax, _softmax),
    (L.LayerNormalization, LayerNormHandler()),
    (L.Embedding, EmbeddingHandler()),
    (L.TimeDistributed, TimeDistributedDispatch()),
    *[(t, ReversibleEmbeddingHandler()) for t in (getattr(L, "ReversibleEmbedding", None),) if t is not None],
])

# keras.ops called on symbolic tensors inside functional models (``x + y``, ``ops.reshape`` ...)
for _name, _handler in [("Add", _sum), ("Subtract", _difference), ("Multiply", _gate),
                        *[(n, _route) for n in ("Reshape", "Transpose", "ExpandDims", "Squeeze", "Concatenate",
                                                "Flatten", "GetItem", "Slice", "Take", "TakeAlongAxis", "Repeat",
                                                "Tile", "BroadcastTo", "Split", "Stack", "Unstack", "Swapaxes",
                                                "Moveaxis", "Roll", "Pad", "Flip", "Ravel", "Where")],
                        *[(n, _pass) for n in ("Relu", "Relu6", "Sigmoid", "Silu", "Swish", "Tanh", "Gelu", "Elu",
                                               "LeakyRelu", "Cast", "Selu", "Celu", "Softplus", "Softsign",
                                               "HardSigmoid", "HardSilu", "HardTanh", "RMSNorm", "StopGradient")],
                        ("Softmax", _softmax),
                        *[(n, _contraction) for n in ("Einsum", "Matmul", "Tensordot", "Dot", "Inner")],
                        *[(n, _op_linear) for n in ("Mean", "Sum", "Negative")],
                        # discrete Fourier transforms: linear in the (real, imaginary) parts
                        *[(n, MultiOutputLinearHandler()) for n in ("FFT", "FFT2", "IFFT2", "RFFT", "IRFFT")],
                        *[(n, _scale) for n in ("Divide", "TrueDivide")],
                        *[(n, _constant) for n in ("ZerosLike", "OnesLike", "FullLike", "OneHot")],
                        *[(n, _route) for n in ("Max", "Min")],
                        ("Clip", _pass), ("TopK", RoutingDecisionHandler()),
                        # made into statistics of normalisations (graph.statistics), nowhere else
                        *[(n, StatisticOpHandler()) for n in ("Square", "Power", "Sqrt", "Rsqrt", "Reciprocal", "Var",
                                                              "Std", "Norm", "Abs")]]:
    register_op_handler(_name, _handler)
