"""How each layer type takes part in LRP: its linear map (for rules) or how it routes relevance.

A :class:`Handler` does two things for a layer: the forward computation (recording what the
backward pass needs, e.g. the pre-activation), and the relevance pass given the rule that the
composite assigned to the layer. Layers with weights, pooling, sums and standalone BatchNorm expose a
:class:`~interprettensor.core.LinearMap` and share :func:`~interprettensor.core.linear_relevance`;
reshapes and concatenation route relevance by their (exact, permutation-like) gradient; element-wise
activations pass it through.

Register a handler for your own layer type with :func:`register_handler`::

    it.register_handler(MyDense, it.handlers.LinearHandler(
        params=lambda layer: {"kernel": layer.w, "bias": layer.b},
        fn=lambda layer, xs, p: tf.matmul(xs[0], p["kernel"]) + p.get("bias", 0.0)))
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Sequence

import keras
import tensorflow as tf
from keras import ops

from . import layers as itl
from .core import LinearMap, Product, distinct, interval_bounds, linear_relevance
from .rules import LinearRule, Pass, Rule, WinnerTakesAll, ZBox

# categories decide which rule a composite gives a layer by default
WEIGHTED = "weighted"    # dense, convolutions: the composite's main rules
LINEAR = "linear"        # sums, average pooling, standalone BatchNorm, upsampling: rule.merge_rule()
MAXPOOL = "maxpool"      # winner-takes-all unless a rule says otherwise
ROUTE = "route"          # reshapes, padding, cropping, concatenation: exact routing
ELEMENTWISE = "elementwise"  # activations, dropout, rescaling: relevance passes unchanged
GATE = "gate"            # multiply: relevance to the signal input


_ACTIVATION_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar("activation_override", default=None)
#: steps with a built-in ReLU whose output relevance is provably zero wherever the pre-activation is
#: ``<= 0`` (see :func:`interprettensor.graph.relu_denominator_steps`): their ReLU output stands in for
#: the pre-activation in denominators, and rule groups for negative outputs are skipped; set by the
#: Explainer while tracing
RELU_DENOMINATOR: contextvars.ContextVar = contextvars.ContextVar("relu_denominator", default=frozenset())
#: while set, layers keep a final activation that the explanation strips (used to check the graph's
#: forward pass against the model's own)
KEEP_ACTIVATIONS: contextvars.ContextVar = contextvars.ContextVar("keep_activations", default=False)


def strips_activation(step: Any) -> bool:
    """Whether ``step`` leaves out its activation in this forward pass (a final softmax/sigmoid)."""
    return bool(step.strip_activation) and not KEEP_ACTIVATIONS.get()


@contextlib.contextmanager
def override_activations(fn: Callable[[Any, Callable | None, tf.Tensor], tf.Tensor | None]) -> Iterator[None]:
    """Within this context, the graph's forward pass asks ``fn(layer, activation, z)`` for every
    activation (the ``activation=`` of layers with weights, and element-wise activation layers, with
    ``activation=None`` for those); a tensor it returns replaces the activation's output, ``None``
    keeps it. Gradient baselines (guided backprop, deconvnet) use this to change ReLU's gradient."""
    token = _ACTIVATION_OVERRIDE.set(fn)
    try:
        yield
    finally:
        _ACTIVATION_OVERRIDE.reset(token)


def apply_activation(layer: Any, act: Callable | None, z: tf.Tensor) -> tf.Tensor:
    override = _ACTIVATION_OVERRIDE.get()
    if override is not None:
        out = override(layer, act, z)
        if out is not None:
            return out
    return z if act is None else act(z)


class ExplainError(ValueError):
    """A model or layer that the engine cannot explain, or bad input to an explanation."""


class Handler:
    """Base class. ``forward`` returns ``(outputs, state)``; ``relevance`` returns one relevance per
    input of the layer."""

    category: str = ELEMENTWISE
    #: ``relevance`` accepts unevaluated :class:`~interprettensor.core.Product` relevances
    accepts_lazy: bool = False

    def forward(self, layer: Any, xs: Sequence[tf.Tensor], step: Any) -> tuple[list, dict]:
        return step.call(xs), {}

    def output_nonneg(self, layer: Any, inputs_nonneg: Sequence[bool], step: Any) -> bool:
        """Whether the layer's output is known to be >= 0 (lets rules skip negative-input terms)."""
        return False

    def relevance(self, layer: Any, xs: Sequence[tf.Tensor], ys: Sequence[tf.Tensor], state: dict,
                  Rs: Sequence[tf.Tensor], rule: Rule, step: Any) -> list[tf.Tensor]:
        raise NotImplementedError


_NONNEG_ACTIVATIONS = {"relu", "relu6", "sigmoid", "softmax", "softplus", "exponential", "hard_sigmoid",
                       "Relu", "Relu6", "Sigmoid", "Softmax", "Softplus", "Exp"}


def is_nonneg_activation(act: Any) -> bool:
    """True for activations whose output is never negative (relu, relu6, sigmoid, softmax, ...)."""
    return act is not None and getattr(act, "__name__", "") in _NONNEG_ACTIVATIONS


def _nonneg_layer(layer: Any) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) == 0.0 and float(layer.threshold) >= 0.0
    if isinstance(layer, (keras.layers.Activation,)):
        return is_nonneg_activation(layer.activation)
    if isinstance(layer, (keras.layers.Softmax, itl.Relu, itl.Sigmoid, itl.Softmax)):
        return True
    return type(layer).__name__ in _NONNEG_ACTIVATIONS


def _cast_params(params: dict, dtype: tf.DType) -> dict:
    return {k: tf.cast(ops.convert_to_tensor(v), dtype) for k, v in params.items() if v is not None}


def _cached(lm: LinearMap | None, xs: Sequence[tf.Tensor]) -> LinearMap | None:
    """The linear map the forward pass built, if its parameters have the inputs' dtype (under mixed
    precision the backward pass runs in another dtype than the forward)."""
    if lm is None or any(v.dtype != xs[0].dtype for v in lm.params.values()):
        return None
    return lm


def _check_linear_rule(rule: Rule, step: Any) -> LinearRule:
    if not isinstance(rule, LinearRule):
        raise ExplainError(f"layer {step.name!r} ({step.type_name}) cannot use rule {rule!r}: it needs a "
                           f"rule that modifies inputs/weights (epsilon, alphabeta, gamma, ...)")
    return rule


def _like(R: "tf.Tensor | Product", z: tf.Tensor) -> "tf.Tensor | Product":
    """``R`` shaped like ``z`` (a lazy product stays lazy when the shapes already agree)."""
    if isinstance(R, Product):
        if R.shape.is_fully_defined() and z.shape.is_fully_defined() and R.shape == z.shape:
            return R
        if R.shape[1:] == z.shape[1:] and R.shape[1:].is_fully_defined():
            return R
        R = R.value()
    return tf.reshape(R, tf.shape(z))


def _pass(xs: Sequence[tf.Tensor], Rs: Sequence[tf.Tensor], step: Any) -> list[tf.Tensor]:
    if len(xs) != 1 or len(Rs) != 1 or xs[0].shape.rank != Rs[0].shape.rank:
        raise ExplainError(f"rule 'pass' needs a layer whose input and output have the same shape; "
                           f"layer {step.name!r} ({step.type_name}) maps {[tuple(x.shape) for x in xs]} "
                           f"to {[tuple(r.shape) for r in Rs]}")
    return [tf.reshape(Rs[0], tf.shape(xs[0]))]


class LinearHandler(Handler):
    """A layer ``act(f(x; W, b))`` with weights. ``params(layer)`` gives the weights (``'bias'`` for
    the bias) and ``fn(layer, xs, params)`` the pre-activation; ``activation(layer)`` the activation."""

    category = WEIGHTED
    accepts_lazy = True

    def __init__(self, params: Callable[[Any], dict], fn: Callable[[Any, Sequence[tf.Tensor], dict], tf.Tensor],
                 activation: Callable[[Any], Callable | None] = lambda layer: getattr(layer, "activation", None),
                 channel_axis: int | None = -1):
        self._params, self._fn, self._activation = params, fn, activation
        #: axis of the kernel that indexes output channels (for BatchNorm merging); None: cannot merge
        self.channel_axis = channel_axis

    def linear_map(self, layer: Any, step: Any, dtype: tf.DType) -> LinearMap:
        params = _cast_params(self._params(layer), dtype)
        for bn in getattr(step, "fused", ()):
            params = merge_batchnorm(params, bn, self.channel_axis, dtype)

        def fn(xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
            return self._fn(layer, xs, p)

        return LinearMap(fn, params, 1 if getattr(layer, "data_format", None) == "channels_first" else -1)

    def forward(self, layer: Any, xs: Sequence[tf.Tensor], step: Any) -> tuple[list, dict]:
        lm = self.linear_map(layer, step, xs[0].dtype)
        z = lm(xs)
        act = self._activation(layer)
        y = z if strips_activation(step) else apply_activation(layer, act, z)
        if step in RELU_DENOMINATOR.get():
            # z and relu(z) differ only where the relevance is provably zero; keeping only the
            # activation lets the forward pass use the fused convolution + bias + ReLU kernel
            return [y], {"z": y, "map": lm}
        return [y], {"z": z, "map": lm}

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        if isinstance(rule, Pass):
            return _pass(xs, Rs, step)
        rule = _check_linear_rule(rule, step)
        R = _like(Rs[0], state["z"])
        lm = _cached(state.get("map"), xs) or self.linear_map(layer, step, xs[0].dtype)
        return linear_relevance(lm, xs, R, rule, state["z"], step.nonneg,
                                lazy=True, positive_outputs_only=step in RELU_DENOMINATOR.get())

    def output_nonneg(self, layer, inputs_nonneg, step):
        return not step.strip_activation and is_nonneg_activation(self._activation(layer))


def merge_batchnorm(params: dict, bn: Any, channel_axis: int | None, dtype: tf.DType) -> dict:
    """Fold an inference-mode BatchNormalization into the preceding layer's kernel and bias:
    ``W' = W * s``, ``b' = b * s + t`` (see :func:`batchnorm_affine`)."""
    s, t = batchnorm_affine(bn, dtype)
    out = dict(params)
    weight_names = [k for k in params if k != "bias"]
    name = weight_names[-1]  # the last weight produces the output channels (pointwise for separable)
    kernel = params[name]
    rank = kernel.shape.rank
    axis = channel_axis % rank
    if kernel.shape[axis] == s.shape[0]:
        shape = [1] * rank
        shape[axis] = -1
        out[name] = kernel * tf.reshape(s, shape)
    else:  # depthwise (kh, kw, in, multiplier): output channel c*mult + m
        shape = [1] * (rank - 2) + list(kernel.shape[-2:])
        out[name] = kernel * tf.reshape(s, shape)
    bias = params.get("bias")
    out["bias"] = t if bias is None else bias * s + t
    return out


def batchnorm_affine(bn: Any, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
    """An inference-mode BatchNormalization as ``y = x * s + t``: ``s = gamma / sqrt(var + eps)``,
    ``t = beta - mean * s``."""
    mean = tf.cast(ops.convert_to_tensor(bn.moving_mean), dtype)
    var = tf.cast(ops.convert_to_tensor(bn.moving_variance), dtype)
    gamma = tf.cast(ops.convert_to_tensor(bn.gamma), dtype) if bn.scale else tf.ones_like(mean)
    beta = tf.cast(ops.convert_to_tensor(bn.beta), dtype) if bn.center else tf.zeros_like(mean)
    s = gamma * tf.math.rsqrt(var + tf.cast(bn.epsilon, dtype))
    return s, beta - mean * s


def _bias_add(z: tf.Tensor, p: dict, channels_first: bool = False) -> tf.Tensor:
    b = p.get("bias")
    if b is None:
        return z
    if channels_first:
        b = tf.reshape(b, [1, -1] + [1] * (z.shape.rank - 2))
    return z + b


def _kernel_params(layer: Any, *names: str) -> dict:
    p = {n: getattr(layer, n) for n in names}
    p["bias"] = layer.bias if getattr(layer, "use_bias", True) else None
    return p


def _dense_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    return _bias_add(ops.matmul(xs[0], p["kernel"]), p)


def _conv_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    x = xs[0]
    if getattr(layer, "padding", None) == "causal":  # Conv1D causal: left padding, then valid
        pad = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        x = ops.pad(x, [[0, 0], [pad, 0], [0, 0]] if layer.data_format == "channels_last" else [[0, 0], [0, 0], [pad, 0]])
        z = ops.conv(x, p["kernel"], strides=list(layer.strides), padding="valid",
                     dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    else:
        z = layer.convolution_op(x, p["kernel"])
    return _bias_add(z, p, layer.data_format == "channels_first")


def _depthwise_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    z = ops.depthwise_conv(xs[0], p["kernel"], strides=layer.strides, padding=layer.padding,
                           dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    return _bias_add(z, p, layer.data_format == "channels_first")


def _conv_transpose_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    z = ops.conv_transpose(xs[0], p["kernel"], strides=list(layer.strides), padding=layer.padding,
                           output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
                           data_format=layer.data_format)
    return _bias_add(z, p, layer.data_format == "channels_first")


def _einsum_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    z = ops.einsum(layer.equation, xs[0], p["kernel"])
    return z if p.get("bias") is None else z + p["bias"]


class SeparableHandler(Handler):
    """SeparableConv: depthwise then pointwise convolution, the rule applied to each in turn."""

    category = WEIGHTED
    channel_axis = -1

    def maps(self, layer: Any, step: Any, dtype: tf.DType) -> tuple[LinearMap, LinearMap]:
        params = _cast_params({"kernel": layer.pointwise_kernel,
                               "bias": layer.bias if layer.use_bias else None}, dtype)
        for bn in getattr(step, "fused", ()):
            params = merge_batchnorm(params, bn, -1, dtype)
        axis = 1 if layer.data_format == "channels_first" else -1
        dw = LinearMap(lambda xs_, p: ops.depthwise_conv(
            xs_[0], p["kernel"], strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format),
            _cast_params({"kernel": layer.depthwise_kernel}, dtype), axis)
        pw = LinearMap(lambda xs_, p: _bias_add(ops.conv(xs_[0], p["kernel"], strides=1, padding="valid",
                                                         data_format=layer.data_format), p,
                                                layer.data_format == "channels_first"), params, axis)
        return dw, pw

    def forward(self, layer, xs, step):
        dw, pw = self.maps(layer, step, xs[0].dtype)
        t = dw(xs)
        z = pw([t])
        y = z if strips_activation(step) else apply_activation(layer, layer.activation, z)
        return [y], {"t": t, "z": z, "maps": (dw, pw)}

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        rule = _check_linear_rule(rule, step)
        maps = state.get("maps")
        dw, pw = maps if maps and _cached(maps[0], xs) else self.maps(layer, step, xs[0].dtype)
        R = tf.reshape(Rs[0], tf.shape(state["z"]))
        pw_rule = rule
        if isinstance(rule, ZBox):
            # the depthwise output's values lie in the interval image of the input's box: the pointwise
            # factor gets those bounds, not the input's (its input has other channels)
            pw_rule = ZBox(*interval_bounds(dw, xs[0], rule.low, rule.high))
        Rt = linear_relevance(pw, [state["t"]], R, pw_rule, state["z"])[0]
        return linear_relevance(dw, xs, Rt, rule, state["t"], step.nonneg)

    def output_nonneg(self, layer, inputs_nonneg, step):
        return not step.strip_activation and is_nonneg_activation(layer.activation)


class FixedLinearHandler(Handler):
    """A linear layer without trainable weights (sums, average pooling, upsampling, affine BatchNorm).
    ``fn(layer, xs, params)`` with ``params = weights(layer, xs)``."""

    category = LINEAR
    accepts_lazy = True

    def __init__(self, fn: Callable, weights: Callable[[Any, Sequence[tf.Tensor]], dict] | None = None,
                 sign_preserving: bool = True):
        self._fn = fn
        self._weights = weights or (lambda layer, xs: {"kernel": tf.ones((), xs[0].dtype)})
        #: non-negative inputs give a non-negative output (pooling, sums; not BatchNorm, Subtract)
        self.sign_preserving = sign_preserving

    def linear_map(self, layer: Any, xs: Sequence[tf.Tensor]) -> LinearMap:
        return LinearMap(lambda xs_, p: self._fn(layer, xs_, p), self._weights(layer, xs), None)

    def output_nonneg(self, layer, inputs_nonneg, step):
        return self.sign_preserving and all(inputs_nonneg)

    def forward(self, layer, xs, step):
        lm = self.linear_map(layer, xs)
        z = lm(xs)
        return [z], {"z": z, "map": lm}

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        if isinstance(rule, Pass):
            return _pass(xs, Rs, step)
        rule = _check_linear_rule(rule, step)
        lm = _cached(state.get("map"), xs) or self.linear_map(layer, xs)
        return linear_relevance(lm, xs, _like(Rs[0], state["z"]), rule, state["z"], step.nonneg, lazy=True)


class MaxPoolHandler(Handler):
    """Max pooling: winner-takes-all (the gradient routes each window's relevance to its maximum);
    under a rule with ``uniform_max_pool`` (flat, w^2) the window's relevance spreads uniformly, via
    the average-pooling map ``avg_fn`` with the same windows."""

    category = MAXPOOL

    def __init__(self, avg_fn: Callable[[Any, tf.Tensor], tf.Tensor],
                 window: Callable[[Any], tuple] | None = None,
                 winner: Callable[[Any, tf.Tensor, tf.Tensor], tf.Tensor] | None = None):
        self._avg_fn = avg_fn
        #: ``(ksize, strides, padding)`` of a 2-D channels-last pooling: winner-takes-all then uses
        #: the forward output directly (one MaxPoolGrad op, no recomputed forward)
        self._window = window
        #: ``winner(layer, x, R)``: winner-takes-all by another route than the layer's gradient
        self._winner = winner

    def output_nonneg(self, layer, inputs_nonneg, step):
        return all(inputs_nonneg)

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        if isinstance(rule, Pass):
            return _pass(xs, Rs, step)
        if isinstance(rule, LinearRule) and rule.uniform_max_pool:
            lm = LinearMap(lambda xs_, p: p["kernel"] * self._avg_fn(layer, xs_[0]),
                           {"kernel": tf.ones((), xs[0].dtype)}, None)
            return linear_relevance(lm, xs, Rs[0], rule)
        if not isinstance(rule, (LinearRule, WinnerTakesAll)):
            _check_linear_rule(rule, step)
        if self._winner is not None:
            return [self._winner(layer, xs[0], Rs[0])]
        window = self._window(layer) if self._window is not None else None
        if window is not None and xs[0].dtype in (tf.float32, tf.float16, tf.bfloat16, tf.float64):
            ksize, strides, padding = window
            y = tf.cast(ys[0], xs[0].dtype)
            return [tf.raw_ops.MaxPoolGrad(orig_input=xs[0], orig_output=y, grad=tf.reshape(tf.cast(Rs[0], y.dtype), tf.shape(y)),
                                             ksize=[1, *ksize, 1], strides=[1, *strides, 1], padding=padding)]
        return route(step, xs, Rs)


def route(step: Any, xs: Sequence[tf.Tensor], Rs: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """Relevance through a map that moves, copies or selects values: its vector-Jacobian product."""
    with tf.GradientTape() as tape:
        xs = distinct(xs)
        tape.watch(xs)
        ys = step.call(xs)
    grads = tape.gradient(ys, xs, output_gradients=list(Rs)[: len(ys)],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return list(grads)


class RouteHandler(Handler):
    """Reshape, Flatten, Permute, padding, cropping, Concatenate: relevance follows the values."""

    category = ROUTE

    def output_nonneg(self, layer, inputs_nonneg, step):
        return all(inputs_nonneg)

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        return route(step, xs, Rs)


class ElementwiseHandler(Handler):
    """Activations, dropout and noise, rescaling: relevance passes through unchanged."""

    category = ELEMENTWISE
    accepts_lazy = True

    def output_nonneg(self, layer, inputs_nonneg, step):
        if _nonneg_layer(layer):
            return True
        identity_at_inference = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                                 keras.layers.SpatialDropout3D, keras.layers.GaussianNoise,
                                 keras.layers.GaussianDropout, keras.layers.ActivityRegularization)
        return isinstance(layer, identity_at_inference) and all(inputs_nonneg)

    def forward(self, layer, xs, step):
        if _ACTIVATION_OVERRIDE.get() is not None and len(xs) == 1:
            out = _ACTIVATION_OVERRIDE.get()(layer, None, xs[0])
            if out is not None:
                return [out], {}
        return step.call(xs), {}

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        return [_like(Rs[0], xs[0])] + [tf.zeros_like(x) for x in xs[1:]]


class GateHandler(Handler):
    """Multiply treated as a gate: the relevance goes to the signal input, i.e. the first input whose
    shape equals the output's (the gate, e.g. a squeeze-excitation or attention weight, is broadcast);
    the other inputs get none."""

    category = GATE

    def output_nonneg(self, layer, inputs_nonneg, step):
        return all(inputs_nonneg)

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        out_shape = ys[0].shape
        signal = next((i for i, x in enumerate(xs) if x.shape == out_shape), 0)
        return [tf.reshape(Rs[0], tf.shape(x)) if i == signal else tf.zeros_like(x)
                for i, x in enumerate(xs)]


# ----------------------------------------------------------------------------- registry

_REGISTRY: list[tuple[type, Handler]] = []


def register_handler(layer_type: type, handler: Handler) -> None:
    """Tell the engine how ``layer_type`` takes part in LRP. The handler also serves subclasses of
    ``layer_type`` that do not override ``call`` (a subclass that computes something else needs its own
    handler). Later registrations win over earlier ones for the same type."""
    _REGISTRY.insert(0, (layer_type, handler))


def _inherits_call(cls: type, base: type) -> bool:
    """``cls`` computes what ``base`` computes: it is ``base`` or no class between them defines
    ``call``."""
    return cls is base or getattr(cls, "call", None) is getattr(base, "call", None)


def get_handler(layer: Any) -> Handler | None:
    """The handler registered for ``type(layer)``, or for the nearest base class whose ``call`` the
    layer inherits unchanged; ``None`` if there is none."""
    cls = type(layer)
    best: tuple[int, Handler] | None = None
    for layer_type, handler in _REGISTRY:
        if isinstance(layer, layer_type) and _inherits_call(cls, layer_type):
            depth = cls.__mro__.index(layer_type)
            if best is None or depth < best[0]:
                best = (depth, handler)
    return None if best is None else best[1]


def overridden_parent(layer: Any) -> type | None:
    """The registered class that ``layer`` subclasses while overriding its ``call`` (for errors)."""
    for layer_type, _ in _REGISTRY:
        if isinstance(layer, layer_type) and not _inherits_call(type(layer), layer_type):
            return layer_type
    return None


def _public_keras_subclasses(base: type) -> list[type]:
    """The classes of ``keras.layers`` that derive from ``base`` (Keras' own layers: their handlers
    know their variants, e.g. Conv1D's causal padding, even where they override ``call``)."""
    import inspect

    return [c for c in vars(keras.layers).values()
            if inspect.isclass(c) and issubclass(c, base) and c is not base]


def _bn_affine_weights(layer: Any, xs: Sequence[tf.Tensor]) -> dict:
    s, t = batchnorm_affine(layer, xs[0].dtype)
    rank = xs[0].shape.rank
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    shape = [1] * rank
    shape[axis % rank] = -1
    return {"kernel": tf.reshape(s, shape), "bias": tf.reshape(t, shape)}


def _affine_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    z = xs[0] * p["kernel"]
    return z if p.get("bias") is None else z + p["bias"]


def _merge_weights(signs: Callable[[int], list[float]]) -> Callable:
    def weights(layer: Any, xs: Sequence[tf.Tensor]) -> dict:
        return {"kernel": tf.constant(signs(len(xs)), xs[0].dtype)}

    return weights


def _merge_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    z = None
    for i, x in enumerate(xs):
        t = p["kernel"][i] * x
        z = t if z is None else z + t
    return z


def _avg_pool_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    return p["kernel"] * tf.cast(layer(xs[0]), xs[0].dtype)


def _keras_avg_for_max(layer: Any, x: tf.Tensor) -> tf.Tensor:
    return ops.average_pool(x, layer.pool_size, layer.strides, layer.padding, layer.data_format)


def _keras_window_2d(layer: Any) -> tuple | None:
    if layer.data_format != "channels_last":
        return None
    return tuple(layer.pool_size), tuple(layer.strides), layer.padding.upper()


def _argmax_pool_2d(x: tf.Tensor, R: tf.Tensor, ksize: Sequence[int], strides: Sequence[int], padding: str,
                    ) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """2-D max pooling of ``x`` (N, H, W, C) with its argmax, and the map that sends a relevance shaped
    like the output to the one winner of each window."""
    y, argmax = tf.nn.max_pool_with_argmax(x, [1, *ksize, 1], [1, *strides, 1], padding,
                                           include_batch_in_index=True)

    def back(r: tf.Tensor) -> tf.Tensor:
        return tf.raw_ops.MaxPoolGradWithArgmax(input=x, grad=tf.reshape(tf.cast(r, x.dtype), tf.shape(y)),
                                                argmax=argmax, ksize=[1, *ksize, 1], strides=[1, *strides, 1],
                                                padding=padding, include_batch_in_index=True)

    return y, back


def _winner_takes_all_3d(layer: Any, x: tf.Tensor, R: tf.Tensor) -> tf.Tensor:
    """Winner-takes-all through a 3-D max pooling, exactly: TensorFlow's MaxPool3DGrad kernel gives
    a window's relevance to every input *close* to the maximum (seen on CPU: two values 6e-6 apart
    both received it). The maximum over a box is the maximum over depth of the maxima over height
    and width, so two 2-D poolings with argmax route each window's relevance to one input."""
    channels_first = layer.data_format == "channels_first"
    if channels_first:
        x = tf.transpose(x, [0, 2, 3, 4, 1])
    (kd, kh, kw), (sd, sh, sw) = layer.pool_size, layer.strides
    padding = layer.padding.upper()
    shape = tf.shape(x)
    n, d, c = shape[0], shape[1], shape[4]
    planes = tf.reshape(x, tf.concat([[n * d], shape[2:]], 0))            # (N*D, H, W, C)
    t, back_hw = _argmax_pool_2d(planes, None, (kh, kw), (sh, sw), padding)
    hw = tf.shape(t)[1:3]
    cols = tf.reshape(t, tf.stack([n, d, 1, hw[0] * hw[1] * c]))        # (N, D, 1, H'W'C)
    y, back_d = _argmax_pool_2d(cols, None, (kd, 1), (sd, 1), padding)
    r = R if not channels_first else tf.transpose(R, [0, 2, 3, 4, 1])
    r_t = tf.reshape(back_d(tf.reshape(r, tf.shape(y))), tf.shape(t))
    out = tf.reshape(back_hw(r_t), shape)
    return tf.transpose(out, [0, 4, 1, 2, 3]) if channels_first else out


def _global_mean_for_max(layer: Any, x: tf.Tensor) -> tf.Tensor:
    rank = x.shape.rank
    axes = list(range(1, rank - 1)) if layer.data_format == "channels_last" else list(range(2, rank))
    return ops.mean(x, axis=axes, keepdims=layer.keepdims)


def _upsampling_fn(layer: Any, xs: Sequence[tf.Tensor], p: dict) -> tf.Tensor:
    return p["kernel"] * tf.cast(layer(xs[0]), xs[0].dtype)


L = keras.layers
_KERAS_SUBCLASSES: list[tuple[type, Handler]] = []
_dense = LinearHandler(lambda l: _kernel_params(l, "kernel"), _dense_fn)
_conv = LinearHandler(lambda l: _kernel_params(l, "kernel"), _conv_fn)
_depthwise = LinearHandler(lambda l: _kernel_params(l, "kernel"), _depthwise_fn)
_conv_transpose = LinearHandler(lambda l: _kernel_params(l, "kernel"), _conv_transpose_fn, channel_axis=-2)


class _ModuleHandler(LinearHandler):
    """interprettensor's Linear/Convolution: their own batch norm is merged for LRP."""

    def linear_map(self, layer, step, dtype):
        lm = super().linear_map(layer, step, dtype)
        if layer.bn is not None:
            return LinearMap(lm.fn, merge_batchnorm(dict(lm.params), layer.bn, -1, dtype))
        return lm


_it_weighted = _ModuleHandler(
    lambda l: {"kernel": l.kernel, "bias": l.bias},
    lambda l, xs, p: l.linear(xs[0], p["kernel"], p.get("bias")),
    activation=lambda l: l.act_fn)

for _t, _h in [
    # layers with weights
    (L.Dense, _dense),
    (L.EinsumDense, LinearHandler(lambda l: _kernel_params(l, "kernel") if getattr(l, "bias", None) is not None
                                  else {"kernel": l.kernel}, _einsum_fn, channel_axis=None)),
    (keras.src.layers.convolutional.base_conv.BaseConv, _conv),
    (keras.src.layers.convolutional.base_depthwise_conv.BaseDepthwiseConv, _depthwise),
    (keras.src.layers.convolutional.base_conv_transpose.BaseConvTranspose, _conv_transpose),
    (keras.src.layers.convolutional.base_separable_conv.BaseSeparableConv, SeparableHandler()),
    (itl.Linear, _it_weighted),
    (itl.Convolution, _it_weighted),
    # linear maps without trainable weights
    (L.BatchNormalization, FixedLinearHandler(_affine_fn, _bn_affine_weights, sign_preserving=False)),
    (L.Add, FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0] * n))),
    (L.Average, FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0 / n] * n))),
    (L.Subtract, FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0, -1.0]), sign_preserving=False)),
    (keras.src.layers.pooling.base_pooling.BasePooling, FixedLinearHandler(_avg_pool_fn)),
    (keras.src.layers.pooling.base_global_pooling.BaseGlobalPooling, FixedLinearHandler(_avg_pool_fn)),
    (itl.AvgPool, FixedLinearHandler(_avg_pool_fn)),
    (L.UpSampling1D, FixedLinearHandler(_upsampling_fn)),
    (L.UpSampling2D, FixedLinearHandler(_upsampling_fn)),
    (L.UpSampling3D, FixedLinearHandler(_upsampling_fn)),
    # max pooling
    (L.MaxPooling1D, MaxPoolHandler(_keras_avg_for_max)),
    (L.MaxPooling2D, MaxPoolHandler(_keras_avg_for_max, _keras_window_2d)),
    (L.MaxPooling3D, MaxPoolHandler(_keras_avg_for_max, winner=_winner_takes_all_3d)),
    (L.GlobalMaxPooling1D, MaxPoolHandler(_global_mean_for_max)),
    (L.GlobalMaxPooling2D, MaxPoolHandler(_global_mean_for_max)),
    (L.GlobalMaxPooling3D, MaxPoolHandler(_global_mean_for_max)),
    (itl.MaxPool, MaxPoolHandler(lambda l, x: tf.nn.avg_pool2d(x, l.pool_size, l.pool_stride, l.pad),
                                 lambda l: (l.pool_size, l.pool_stride, l.pad))),
    # routing
    (L.Flatten, RouteHandler()),
    (L.Reshape, RouteHandler()),
    (L.Permute, RouteHandler()),
    (L.ZeroPadding1D, RouteHandler()),
    (L.ZeroPadding2D, RouteHandler()),
    (L.ZeroPadding3D, RouteHandler()),
    (L.Cropping1D, RouteHandler()),
    (L.Cropping2D, RouteHandler()),
    (L.Cropping3D, RouteHandler()),
    (L.Concatenate, RouteHandler()),
    (L.RepeatVector, RouteHandler()),
    (L.Identity, RouteHandler()),
    (itl.Flatten, RouteHandler()),
    # element-wise: relevance unchanged
    (L.Activation, ElementwiseHandler()),
    (L.ReLU, ElementwiseHandler()),
    (L.LeakyReLU, ElementwiseHandler()),
    (L.ELU, ElementwiseHandler()),
    (L.PReLU, ElementwiseHandler()),
    (L.Softmax, ElementwiseHandler()),
    (L.Dropout, ElementwiseHandler()),
    (L.SpatialDropout1D, ElementwiseHandler()),
    (L.SpatialDropout2D, ElementwiseHandler()),
    (L.SpatialDropout3D, ElementwiseHandler()),
    (L.GaussianNoise, ElementwiseHandler()),
    (L.GaussianDropout, ElementwiseHandler()),
    (L.AlphaDropout, ElementwiseHandler()),
    (L.ActivityRegularization, ElementwiseHandler()),
    (L.Rescaling, ElementwiseHandler()),
    (L.Normalization, ElementwiseHandler()),
    (itl.Softmax, ElementwiseHandler()),
    (itl.Relu, ElementwiseHandler()),
    (itl.Tanh, ElementwiseHandler()),
    (itl.Sigmoid, ElementwiseHandler()),
    (itl.Elu, ElementwiseHandler()),
    # gates
    (L.Multiply, GateHandler()),
]:
    register_handler(_t, _h)
    _KERAS_SUBCLASSES.extend((c, _h) for c in _public_keras_subclasses(_t))
_registered = {t for t, _ in _REGISTRY}
for _t, _h in reversed(_KERAS_SUBCLASSES):  # explicit registrations of a subclass keep priority
    if _t not in _registered:
        _REGISTRY.append((_t, _h))
        _registered.add(_t)

# keras.ops called on symbolic tensors inside functional models (``x + y``, ``ops.reshape`` ...)
_OPS_BY_NAME: dict[str, Handler] = {
    "Add": FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0] * n)),
    "Subtract": FixedLinearHandler(_merge_fn, _merge_weights(lambda n: [1.0, -1.0]), sign_preserving=False),
    "Multiply": GateHandler(),
    "Reshape": RouteHandler(),
    "Transpose": RouteHandler(),
    "ExpandDims": RouteHandler(),
    "Squeeze": RouteHandler(),
    "Concatenate": RouteHandler(),
    "Flatten": RouteHandler(),
    "Relu": ElementwiseHandler(),
    "Relu6": ElementwiseHandler(),
    "Sigmoid": ElementwiseHandler(),
    "Silu": ElementwiseHandler(),
    "Swish": ElementwiseHandler(),
    "Tanh": ElementwiseHandler(),
    "Gelu": ElementwiseHandler(),
    "Elu": ElementwiseHandler(),
    "LeakyRelu": ElementwiseHandler(),
    "Softmax": ElementwiseHandler(),
    "Cast": ElementwiseHandler(),
}


def handler_for(op: Any) -> Handler | None:
    """The handler of a layer or keras operation, or None if the engine cannot explain it."""
    h = get_handler(op)
    if h is not None:
        return h
    if not isinstance(op, keras.layers.Layer):
        return _OPS_BY_NAME.get(type(op).__name__)
    return None
