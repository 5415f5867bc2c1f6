"""Seeded random Keras models for the property tests (tests/test_properties.py).

``build(seed, kind)`` returns a :class:`Spec`: a small Keras functional model built from every layer
type of the README's coverage table (with branches, merges, a tensor merged with itself, nested
Sequential / Functional models, multi-input models, Keras ops on symbolic tensors), random or
degenerate weights (zero, 1e4 and 1e-6 scaled layers), an input batch (random, with exact zeros, an
all-zero sample, 1e4 / 1e-6 scales, non-negative), the pre-softmax logits and a compact description
(one entry per block) for assertion messages. Everything is a function of ``(seed, kind)`` only: the
same seed gives the same model, weights and inputs in any process and in any test order.

Kinds:

* ``'general'``: anything the engine claims to support (biases, BatchNorm with mean and beta, all
  activations, offsets, gates, ops, self-merges); float64 for some seeds.
* ``'conserve'`` with a ``profile``: bias-free models built only from layers through which the rules
  of that profile conserve relevance (see the table in tests/test_properties.py):

  - ``'any'``: every conserving layer (z-rule family);
  - ``'nopad'``: as ``'any'`` without explicit ZeroPadding (flat / w^2 send relevance to padded zeros);
  - ``'relu'``: every layer with weights followed by a ReLU, no pass-through activations other than
    ReLU, no SeparableConv (its depthwise factor has no ReLU) (z+ / alpha1-beta0 / gamma / box
    presets);
  - ``'relu+nopad+first'``: both, and a layer with weights first on every input (presets with flat
    on the first layer: flat there sends relevance to zero-valued units, which a proportional layer
    before it would drop where its ``z = 0``);
  - ``'nopad+ww'``: no zeroed or 1e-6 scaled weights (``toolbox_ww``: w^2 gives relevance to units
    whatever their value, and a zeroed kernel cannot pass it on (its denominators are 0); w^2 of
    1e-6 weights is at the scale of the stabiliser 1e-12, which absorbs it);
  - ``'+first'`` on the box presets: the inputs' only consumer is a layer with weights, and
    preprocessing has no offsets (an offset much larger than tiny inputs leaves float32 too few digits
    for ``x - low``), so that z^B applies only where the box is the model input's (a later layer that an input reaches through a
    skip path is a "first layer" too, and gets bounds mapped through the layers with weights on the
    other path, which do not bound its input);
  - ``'relu+dt'``: as ``'relu'`` without Add / Subtract / ``x + y`` / standalone BatchNorm / average
    pooling / Average / bilinear upsampling (Deep Taylor passes them by their transposed Jacobian:
    it copies relevance at sums and spreads it onto zero-valued inputs at averages);
  - ``'relu+nonneg'``: as ``'relu'`` with non-negative model inputs and no layer that makes them
    signed (offsets, Normalization, standalone BatchNorm, Subtract) (``zplus_fast``).

Reproduce a failure with ``python -c "import sys; sys.path.insert(0, 'tests'); import property_models as pm;
s = pm.build(SEED, KIND, PROFILE); print(s.describe())"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from typing import Any, Callable, Iterator

import keras
import numpy as np
from keras import ops

L = keras.layers

FAMILIES = ("1d", "2d", "3d", "dense", "multi")

#: activations whose value at 0 is 0: relevance that passes them lands only on units whose
#: pre-activation is non-zero (the z-rule family conserves through them)
ZERO_AT_ZERO = ("relu", "tanh", "elu", "selu", "gelu", "silu", "relu6", "leaky_relu", "linear", "softsign")
#: all the element-wise activations the general models use
ALL_ACTIVATIONS = ZERO_AT_ZERO + ("sigmoid", "softplus", "hard_sigmoid", "mish")


@dataclasses.dataclass
class Spec:
    seed: int
    kind: str
    profile: str
    family: str
    dtype: str
    model: keras.Model
    xs: list
    logits_fn: Callable[[list], np.ndarray]
    desc: list
    bias_free: bool
    input_mode: str
    weight_mode: str
    has_self_merge: bool = False

    @property
    def x(self) -> Any:
        """The input as ``it.lrp`` takes it (one array, or a list for multi-input models)."""
        return self.xs[0] if len(self.xs) == 1 else list(self.xs)

    @property
    def low(self) -> float:
        return float(min(a.min() for a in self.xs))

    @property
    def high(self) -> float:
        return float(max(a.max() for a in self.xs))

    def logits(self) -> np.ndarray:
        """The model's output before a final softmax, (N, classes)."""
        return np.asarray(self.logits_fn(self.xs))

    def describe(self) -> str:
        shapes = [tuple(a.shape) for a in self.xs]
        return (f"build({self.seed}, {self.kind!r}, {self.profile!r}): family={self.family} dtype={self.dtype} "
                f"inputs={shapes} input_mode={self.input_mode} weight_mode={self.weight_mode}\n  layers: "
                + " -> ".join(self.desc))


@contextlib.contextmanager
def dtype_scope(dtype: str) -> Iterator[None]:
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy().name
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


def _seed_of(seed: int, kind: str, profile: str) -> int:
    return zlib.crc32(f"{kind}/{profile}/{seed}".encode()) ^ (seed * 7919)


class _Builder:
    """Appends random blocks to a symbolic tensor, recording a description of each."""

    def __init__(self, rng: np.random.Generator, kind: str, profile: str):
        self.rng = rng
        self.kind = kind
        self.profile = profile
        self.cons = kind == "conserve"
        self.desc: list[str] = []
        self.self_merge = False
        self.weighted: list = []  # layers whose weights may be made degenerate

    # ------------------------------------------------------------------ helpers
    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    @property
    def relu_only(self) -> bool:
        return "relu" in self.profile.split("+")

    @property
    def nopad(self) -> bool:
        return "nopad" in self.profile.split("+")

    @property
    def deep_taylor(self) -> bool:
        return "dt" in self.profile.split("+")

    @property
    def nonneg(self) -> bool:
        """Every layer with weights sees non-negative inputs (no offsets, standalone BatchNorm, Subtract)."""
        return "nonneg" in self.profile.split("+")

    @property
    def first_weighted(self) -> bool:
        """A layer with weights comes first on every input (after preprocessing)."""
        return "first" in self.profile.split("+")

    @property
    def bias(self) -> bool:
        return not self.cons and self.chance(0.8)

    def activation(self) -> str:
        """An activation name for ``activation=`` or Activation()."""
        if self.relu_only:
            return "relu"
        if self.cons:
            return self.choice(ZERO_AT_ZERO)
        return self.choice(ALL_ACTIVATIONS)

    def act_layer(self, h, desc_prefix: str = ""):
        """An element-wise activation as a layer (or a keras op)."""
        if self.relu_only:
            kind = self.choice(["relu", "ReLU", "ReLU6", "op_relu"])
        elif self.cons:
            kind = self.choice(["act", "ReLU", "ReLU6", "LeakyReLU", "ELU", "PReLU", "op_relu", "op_tanh"])
        else:
            kind = self.choice(["act", "ReLU", "ReLU6", "ReLU_thr", "LeakyReLU", "ELU", "PReLU", "op_relu", "op_tanh",
                                "op_sigmoid", "Softmax"])
        if kind == "relu":
            self.desc.append(desc_prefix + "Activation(relu)")
            return L.Activation("relu")(h)
        if kind == "act":
            a = self.activation()
            self.desc.append(desc_prefix + f"Activation({a})")
            return L.Activation(a)(h)
        if kind == "ReLU":
            self.desc.append(desc_prefix + "ReLU()")
            return L.ReLU()(h)
        if kind == "ReLU6":
            self.desc.append(desc_prefix + "ReLU(max_value=6)")
            return L.ReLU(max_value=6.0)(h)
        if kind == "ReLU_thr":
            self.desc.append(desc_prefix + "ReLU(negative_slope=0.1, threshold=0.2)")
            return L.ReLU(negative_slope=0.1, threshold=0.2)(h)
        if kind == "LeakyReLU":
            self.desc.append(desc_prefix + "LeakyReLU(0.2)")
            return L.LeakyReLU(negative_slope=0.2)(h)
        if kind == "ELU":
            self.desc.append(desc_prefix + "ELU()")
            return L.ELU()(h)
        if kind == "PReLU":
            self.desc.append(desc_prefix + "PReLU()")
            return L.PReLU()(h)
        if kind == "op_relu":
            self.desc.append(desc_prefix + "ops.relu")
            return ops.relu(h)
        if kind == "op_tanh":
            self.desc.append(desc_prefix + "ops.tanh")
            return ops.tanh(h)
        if kind == "op_sigmoid":
            self.desc.append(desc_prefix + "ops.sigmoid")
            return ops.sigmoid(h)
        if int(h.shape[-1]) == 1:  # a softmax over one channel is the constant 1
            self.desc.append(desc_prefix + "ops.sigmoid")
            return ops.sigmoid(h)
        self.desc.append(desc_prefix + "Softmax()")
        return L.Softmax()(h)

    def track(self, layer):
        self.weighted.append(layer)
        return layer

    # ------------------------------------------------------------------ spatial blocks
    def spatial(self, h):
        r = len(h.shape) - 2
        sizes = list(h.shape[1:-1])
        c = int(h.shape[-1])
        small = min(sizes)
        options = ["conv", "conv", "conv_bn", "pool", "act", "passthrough", "route", "residual", "dense_nd"]
        if r == 2:
            options += ["depthwise"]
        if r in (1, 2) and not self.relu_only:  # no ReLU between its two factors (see test_properties)
            options += ["separable"]
        if small <= 4:
            options += ["upsample", "transpose"]
        options += ["nested"]
        if self.relu_only:
            options += ["relu_bn"]
        elif not self.cons or self.chance(0.5):
            options += ["relu_bn"]
        if r in (1, 2):
            options += ["gate"]
        if not self.cons:
            options += ["ops", "self_merge"]
        block = self.choice(options)
        return getattr(self, "b_" + block)(h, r, sizes, c)

    def _conv_kwargs(self, r, sizes, allow_causal=True, allow_groups=True, c=1, filters=1):
        k = int(self.rng.integers(1, 4))
        small = min(sizes)
        pads = ["same", "valid"] + (["causal"] if (r == 1 and allow_causal) else [])
        padding = self.choice(pads)
        strides, dilation = 1, 1
        mode = self.choice(["plain", "stride", "dilate"])
        if mode == "stride" and small >= 4:
            strides = 2
        elif mode == "dilate" and k > 1 and small >= 5:
            dilation = 2
        if padding == "valid" and (k - 1) * dilation + 1 > small:
            padding = "same"
        kw = dict(kernel_size=k, strides=strides, padding=padding, dilation_rate=dilation)
        if allow_groups:
            g = self.choice([1, 1, 2])
            if c % g == 0 and filters % g == 0:
                kw["groups"] = g
        return kw

    def _conv(self, h, r, sizes, c, activation):
        filters = int(self.rng.integers(2, 5))
        if self.chance(0.3) and c % 2 == 0:
            filters = 2 * int(self.rng.integers(1, 3))
        kw = self._conv_kwargs(r, sizes, c=c, filters=filters)
        cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[r]
        bias = self.bias
        layer = self.track(cls(filters, activation=activation, use_bias=bias, **kw))
        text = (f"k={kw['kernel_size']},s={kw['strides']},d={kw['dilation_rate']},{kw['padding']},"
                f"groups={kw.get('groups', 1)}")
        self.desc.append(f"{cls.__name__}({filters},{text},act={activation},bias={bias})")
        return layer(h)

    def b_conv(self, h, r, sizes, c):
        act = self.activation() if self.chance(0.7) else None
        h = self._conv(h, r, sizes, c, act)
        if self.relu_only and act != "relu":
            h = self.act_layer(h)
        return h

    def _bn(self, merged: bool):
        layer = L.BatchNormalization()
        self.bns.append(layer)
        self.desc.append("BatchNormalization(merged)" if merged else "BatchNormalization(standalone)")
        return layer

    def b_conv_bn(self, h, r, sizes, c):
        """Linear convolution + BatchNorm (merged by the engine) + activation layer."""
        h = self._conv(h, r, sizes, c, None)
        h = self._bn(True)(h)
        return self.act_layer(h)

    def b_relu_bn(self, h, r, sizes, c):
        """ReLU then a standalone BatchNorm (an affine layer under the rule)."""
        if self.relu_only:
            h = self._conv(h, r, sizes, c, "relu")
        else:
            self.desc.append("ReLU()")
            h = L.ReLU()(h)
        if self.deep_taylor or self.nonneg:
            return h
        return self._bn(False)(h)

    def b_depthwise(self, h, r, sizes, c):
        kw = self._conv_kwargs(r, sizes, allow_causal=False, allow_groups=False)
        mult = int(self.rng.integers(1, 3))
        bias = self.bias
        act = "relu" if self.relu_only else (self.activation() if self.chance(0.5) else None)
        self.desc.append(f"DepthwiseConv2D(k={kw['kernel_size']},s={kw['strides']},d={kw['dilation_rate']},"
                         f"{kw['padding']},mult={mult},act={act},bias={bias})")
        return self.track(L.DepthwiseConv2D(depth_multiplier=mult, activation=act, use_bias=bias, **kw))(h)

    def b_separable(self, h, r, sizes, c):
        kw = self._conv_kwargs(r, sizes, allow_causal=False, allow_groups=False)
        mult = int(self.rng.integers(1, 3))
        filters = int(self.rng.integers(2, 5))
        bias = self.bias
        act = "relu" if self.relu_only else (self.activation() if self.chance(0.6) else None)
        cls = L.SeparableConv1D if r == 1 else L.SeparableConv2D
        self.desc.append(f"{cls.__name__}({filters},k={kw['kernel_size']},s={kw['strides']},d={kw['dilation_rate']},"
                         f"{kw['padding']},mult={mult},act={act},bias={bias})")
        return self.track(cls(filters, depth_multiplier=mult, activation=act, use_bias=bias, **kw))(h)

    def b_transpose(self, h, r, sizes, c):
        cls = {1: L.Conv1DTranspose, 2: L.Conv2DTranspose, 3: L.Conv3DTranspose}[r]
        filters = int(self.rng.integers(2, 4))
        k = int(self.rng.integers(2, 4))
        strides = self.choice([1, 2])
        padding = self.choice(["same", "valid"])
        bias = self.bias
        act = "relu" if self.relu_only else (self.activation() if self.chance(0.5) else None)
        self.desc.append(f"{cls.__name__}({filters},k={k},s={strides},{padding},act={act},bias={bias})")
        return self.track(cls(filters, k, strides=strides, padding=padding, activation=act, use_bias=bias))(h)

    def b_pool(self, h, r, sizes, c):
        small = min(sizes)
        if small < 2 or (r == 3 and self.no_pool3d):
            return self.b_act(h, r, sizes, c)
        kind = "max" if self.deep_taylor else self.choice(["max", "avg"])
        padding = self.choice(["valid", "same"])
        pool = self.choice([2, 2, 3]) if small >= 3 else 2
        strides = self.choice([None, 1]) if small <= 4 else None
        cls = {("max", 1): L.MaxPooling1D, ("max", 2): L.MaxPooling2D, ("max", 3): L.MaxPooling3D,
               ("avg", 1): L.AveragePooling1D, ("avg", 2): L.AveragePooling2D, ("avg", 3): L.AveragePooling3D}[(kind, r)]
        self.desc.append(f"{cls.__name__}({pool},strides={strides},{padding})")
        return cls(pool, strides=strides, padding=padding)(h)

    def b_upsample(self, h, r, sizes, c):
        cls = {1: L.UpSampling1D, 2: L.UpSampling2D, 3: L.UpSampling3D}[r]
        if r == 2 and self.chance(0.4) and not self.deep_taylor:
            self.desc.append("UpSampling2D(2,bilinear)")
            return L.UpSampling2D(2, interpolation="bilinear")(h)
        self.desc.append(f"{cls.__name__}(2)")
        return cls(2)(h)

    def b_act(self, h, r, sizes, c):
        return self.act_layer(h)

    def b_passthrough(self, h, r, sizes, c):
        opts = ["Dropout", "GaussianNoise", "Identity", "SpatialDropout", "GaussianDropout"]
        kind = self.choice(opts)
        self.desc.append(kind)
        if kind == "Dropout":
            return L.Dropout(0.5)(h)
        if kind == "GaussianNoise":
            return L.GaussianNoise(0.3)(h)
        if kind == "Identity":
            return L.Identity()(h)
        if kind == "GaussianDropout":
            return L.GaussianDropout(0.3)(h)
        return {1: L.SpatialDropout1D, 2: L.SpatialDropout2D, 3: L.SpatialDropout3D}[r](0.5)(h)

    def b_route(self, h, r, sizes, c):
        opts = ["permute", "reshape", "crop"]
        if not self.nopad:
            opts.append("pad")
        if not self.cons:
            opts += ["op_reshape", "op_transpose", "op_expand_squeeze"]
        kind = self.choice(opts)
        if kind == "permute":
            perm = list(range(1, r + 2))
            i, j = (0, 1) if r == 1 else tuple(sorted(self.rng.choice(r + 1, 2, replace=False)))
            perm[i], perm[j] = perm[j], perm[i]
            self.desc.append(f"Permute({tuple(perm)})")
            return L.Permute(tuple(perm))(h)
        if kind == "reshape":
            shape = list(sizes)[::-1] + [c]
            self.desc.append(f"Reshape({tuple(shape)})")
            return L.Reshape(tuple(shape))(h)
        if kind == "crop":
            if min(sizes) < 3:
                return self.b_passthrough(h, r, sizes, c)
            cls = {1: L.Cropping1D, 2: L.Cropping2D, 3: L.Cropping3D}[r]
            crop = ((1, 0),) * r if r > 1 else (1, 0)
            self.desc.append(f"{cls.__name__}({crop})")
            return cls(crop)(h)
        if kind == "pad":
            cls = {1: L.ZeroPadding1D, 2: L.ZeroPadding2D, 3: L.ZeroPadding3D}[r]
            self.desc.append(f"{cls.__name__}(1)")
            return cls(1)(h)
        if kind == "op_reshape":
            shape = (-1,) + tuple(sizes[1:]) + (sizes[0], c) if r > 1 else (-1, sizes[0], c)
            self.desc.append(f"ops.reshape({shape})")
            return ops.reshape(h, shape)
        if kind == "op_transpose":
            axes = [0] + list(range(1, r + 1))[::-1] + [r + 1]
            self.desc.append(f"ops.transpose({axes})")
            return ops.transpose(h, axes)
        self.desc.append("ops.expand_dims(1) + ops.squeeze(1)")
        return ops.squeeze(ops.expand_dims(h, 1), 1)

    def b_dense_nd(self, h, r, sizes, c):
        units = int(self.rng.integers(2, 5))
        bias = self.bias
        act = "relu" if self.relu_only else (self.activation() if self.chance(0.6) else None)
        if self.chance(0.5):
            self.desc.append(f"Dense({units},act={act},bias={bias}) on N-D")
            return self.track(L.Dense(units, activation=act, use_bias=bias))(h)
        # explicit letters: with '...' Keras 3.15 reports a reversed symbolic shape on rank >= 4 inputs
        lead = "abcde"[: r + 1]
        eq = f"{lead}y,yz->{lead}z"
        self.desc.append(f"EinsumDense('{eq}',{units},act={act},bias={bias}) on N-D")
        return self.track(L.EinsumDense(eq, output_shape=tuple(sizes) + (units,), activation=act,
                                        bias_axes="z" if bias else None))(h)

    def _same_shape_branch(self, h, r, sizes, c):
        """A branch that keeps h's shape (a 'same' convolution or Dense on the channels)."""
        act = "relu" if self.relu_only else (self.activation() if self.chance(0.7) else None)
        bias = self.bias
        if self.chance(0.6):
            k = int(self.rng.integers(1, 4))
            cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[r]
            self.desc.append(f"branch[{cls.__name__}({c},k={k},same,act={act},bias={bias})]")
            return self.track(cls(c, k, padding="same", activation=act, use_bias=bias))(h)
        self.desc.append(f"branch[Dense({c},act={act},bias={bias})]")
        return self.track(L.Dense(c, activation=act, use_bias=bias))(h)

    def _merge(self, a, b):
        if self.deep_taylor:
            opts = ["Concatenate", "Multiply_gate"]
        elif self.cons:
            opts = ["Add", "Average", "Subtract", "Concatenate", "op_add", "Multiply_gate"]
            if self.nonneg:
                opts.remove("Subtract")
        else:
            opts = ["Add", "Average", "Subtract", "Concatenate", "op_add", "op_sub", "op_mul", "op_concat",
                    "Multiply_gate", "Add3"]
        kind = self.choice(opts)
        self.desc.append(f"merge[{kind}]")
        if kind == "Add":
            return L.Add()([a, b])
        if kind == "Add3":
            return L.Add()([a, b, a])
        if kind == "Average":
            return L.Average()([a, b])
        if kind == "Subtract":
            return L.Subtract()([a, b])
        if kind == "Concatenate":
            return L.Concatenate()([a, b])
        if kind == "op_add":
            return a + b
        if kind == "op_sub":
            return a - b
        if kind == "op_mul":
            return a * b
        if kind == "op_concat":
            return ops.concatenate([a, b], axis=-1)
        return L.Multiply()([a, b])  # same shapes: the first input is the signal

    def b_residual(self, h, r, sizes, c):
        b = self._same_shape_branch(h, r, sizes, c)
        return self._merge(h, b)

    def b_gate(self, h, r, sizes, c):
        """Squeeze-excitation: h * sigmoid(Dense(GlobalAveragePooling(h))); the gate gets no relevance."""
        g = (L.GlobalAveragePooling1D if r == 1 else L.GlobalAveragePooling2D)(keepdims=True)(h)
        g = self.track(L.Dense(c, activation="sigmoid", use_bias=self.bias))(g)
        self.desc.append("gate[GlobalAveragePooling(keepdims) -> Dense(sigmoid)] Multiply()([h, gate])")
        return L.Multiply()([h, g])

    def b_nested(self, h, r, sizes, c):
        shape = tuple(h.shape[1:])
        cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[r]
        bias = self.bias
        act = "relu" if self.relu_only else self.activation()
        if self.chance(0.5):
            inner = keras.Sequential([keras.Input(shape), self.track(cls(c, 3, padding="same", use_bias=bias)),
                                      L.Activation(act)])
            self.desc.append(f"nested Sequential[{cls.__name__}({c},3,same,bias={bias}) -> Activation({act})]")
            return inner(h)
        i = keras.Input(shape)
        t = self.track(cls(c, 3, padding="same", activation=act, use_bias=bias))(i)
        if self.deep_taylor:
            o = L.Concatenate()([t, i])
            merge = "Concatenate"
        else:
            o = L.Add()([t, i])
            merge = "Add"
        if self.chance(0.5):  # a nested model inside the nested model
            inner2 = keras.Sequential([keras.Input(tuple(o.shape[1:])), L.Identity(), L.Dropout(0.2)])
            o = inner2(o)
            merge += " -> nested Sequential[Identity, Dropout]"
        inner = keras.Model(i, o)
        self.desc.append(f"nested Functional[{cls.__name__}({c},3,same,act={act},bias={bias}) + input: {merge}]")
        return inner(h)

    def b_ops(self, h, r, sizes, c):
        kind = self.choice(["shift", "scale", "relu", "add_branch"])
        if kind == "shift":
            self.desc.append("h + 0.5 (op)")
            return h + 0.5
        if kind == "scale":
            self.desc.append("2.0 * h (op)")
            return 2.0 * h
        if kind == "relu":
            self.desc.append("ops.relu")
            return ops.relu(h)
        b = self._same_shape_branch(h, r, sizes, c)
        self.desc.append("h + branch (op)")
        return h + b

    def b_self_merge(self, h, r, sizes, c):
        return self.self_merge_block(h, self.choice(SELF_MERGES))

    def self_merge_block(self, h, kind):
        self.self_merge = True
        self.desc.append(f"self-merge[{kind}]")
        return SELF_MERGE_FNS[kind](h)

    # ------------------------------------------------------------------ flat blocks
    def flat(self, h):
        options = ["dense", "dense", "einsum", "dense_bn", "act", "passthrough", "residual", "nested", "relu_bn",
                   "gate"]
        if not self.cons:
            options += ["self_merge", "ops"]
        block = self.choice(options)
        return getattr(self, "f_" + block)(h, int(h.shape[-1]))

    def f_dense(self, h, d, act="random"):
        units = int(self.rng.integers(3, 7))
        bias = self.bias
        if act == "random":
            act = "relu" if self.relu_only else (self.activation() if self.chance(0.7) else None)
        self.desc.append(f"Dense({units},act={act},bias={bias})")
        return self.track(L.Dense(units, activation=act, use_bias=bias))(h)

    def f_einsum(self, h, d):
        units = int(self.rng.integers(3, 7))
        bias = self.bias
        act = "relu" if self.relu_only else (self.activation() if self.chance(0.5) else None)
        self.desc.append(f"EinsumDense('ab,bc->ac',{units},act={act},bias={bias})")
        return self.track(L.EinsumDense("ab,bc->ac", output_shape=units, activation=act,
                                        bias_axes="c" if bias else None))(h)

    def f_dense_bn(self, h, d):
        h = self.f_dense(h, d, act=None)
        h = self._bn(True)(h)
        return self.act_layer(h)

    def f_relu_bn(self, h, d):
        if self.relu_only:
            h = self.f_dense(h, d, act="relu")
        else:
            self.desc.append("ReLU()")
            h = L.ReLU()(h)
        if self.deep_taylor or self.nonneg:
            return h
        return self._bn(False)(h)

    def f_act(self, h, d):
        return self.act_layer(h)

    def f_passthrough(self, h, d):
        kind = self.choice(["Dropout", "GaussianNoise", "Identity", "AlphaDropout", "ActivityRegularization"])
        self.desc.append(kind)
        return {"Dropout": lambda: L.Dropout(0.5), "GaussianNoise": lambda: L.GaussianNoise(0.2),
                "Identity": L.Identity, "AlphaDropout": lambda: L.AlphaDropout(0.3),
                "ActivityRegularization": lambda: L.ActivityRegularization(0.01)}[kind]()(h)

    def f_residual(self, h, d):
        act = "relu" if self.relu_only else (self.activation() if self.chance(0.7) else None)
        bias = self.bias
        self.desc.append(f"branch[Dense({d},act={act},bias={bias})]")
        b = self.track(L.Dense(d, activation=act, use_bias=bias))(h)
        return self._merge(h, b)

    def f_gate(self, h, d):
        g = self.track(L.Dense(d, activation="sigmoid", use_bias=self.bias))(h)
        self.desc.append("gate[Dense(sigmoid)] Multiply()([h, gate])")
        return L.Multiply()([h, g])

    def f_nested(self, h, d):
        act = "relu" if self.relu_only else self.activation()
        bias = self.bias
        units = int(self.rng.integers(3, 6))
        inner = keras.Sequential([keras.Input((d,)), self.track(L.Dense(units, use_bias=bias)), L.Activation(act),
                                  self.track(L.Dense(units, activation=act, use_bias=bias))])
        self.desc.append(f"nested Sequential[Dense({units},bias={bias}) -> Activation({act}) -> "
                         f"Dense({units},act={act})]")
        return inner(h)

    def f_self_merge(self, h, d):
        return self.self_merge_block(h, self.choice(SELF_MERGES))

    def f_ops(self, h, d):
        kind = self.choice(["shift", "sub_branch", "softmax_mid"])
        if kind == "shift":
            self.desc.append("h - 0.25 (op)")
            return h - 0.25
        if kind == "softmax_mid":
            self.desc.append("Softmax() (hidden)")
            return L.Softmax()(h)
        b = self.track(L.Dense(d, use_bias=self.bias))(h)
        self.desc.append(f"h - Dense({d})(h) (op)")
        return h - b

    # ------------------------------------------------------------------ heads / transitions
    def to_flat(self, h):
        r = len(h.shape) - 2
        opts = ["Flatten", "GlobalAveragePooling", "GlobalMaxPooling", "Reshape"]
        if self.deep_taylor:
            opts.remove("GlobalAveragePooling")
        if not self.cons:
            opts.append("op_reshape")
        kind = self.choice(opts)
        self.desc.append(kind + ("" if kind in ("Flatten", "Reshape", "op_reshape") else f"{r}D"))
        if kind == "Flatten":
            return L.Flatten()(h)
        if kind == "Reshape":
            return L.Reshape((-1,))(h)
        if kind == "op_reshape":
            return ops.reshape(h, (-1, int(np.prod(h.shape[1:]))))
        if kind == "GlobalAveragePooling":
            return {1: L.GlobalAveragePooling1D, 2: L.GlobalAveragePooling2D, 3: L.GlobalAveragePooling3D}[r]()(h)
        return {1: L.GlobalMaxPooling1D, 2: L.GlobalMaxPooling2D, 3: L.GlobalMaxPooling3D}[r]()(h)

    def flat_to_seq(self, h):
        d = int(h.shape[-1])
        if self.chance(0.5):
            n = int(self.rng.integers(2, 4))
            self.desc.append(f"RepeatVector({n})")
            return L.RepeatVector(n)(h)
        if d % 2 == 0:
            self.desc.append(f"Reshape((2,{d // 2}))")
            return L.Reshape((2, d // 2))(h)
        self.desc.append(f"Reshape(({d},1))")
        return L.Reshape((d, 1))(h)

    def preprocess(self, h):
        """Optional preprocessing on a model input (they conserve: relevance passes them)."""
        c = int(h.shape[-1])
        kind = self.choice(["none", "none", "Rescaling", "Normalization", "ZeroPadding"])
        if (self.nonneg or self.first_weighted or self.no_offsets) and kind in ("Rescaling", "Normalization"):
            scale = float(self.rng.uniform(0.5, 2.0))
            self.desc.append(f"Rescaling({scale:.3g})")
            return L.Rescaling(scale)(h)
        if kind == "Rescaling":
            scale = float(self.rng.uniform(0.5, 2.0))
            offset = float(self.rng.normal())
            self.desc.append(f"Rescaling({scale:.3g},offset={offset:.3g})")
            return L.Rescaling(scale, offset=offset)(h)
        if kind == "Normalization":
            mean = self.rng.normal(size=c).round(3)
            var = self.rng.uniform(0.5, 2.0, size=c).round(3)
            self.desc.append(f"Normalization(mean={mean.tolist()},variance={var.tolist()})")
            return L.Normalization(mean=mean, variance=var)(h)
        if kind == "ZeroPadding" and len(h.shape) > 2 and not self.nopad:
            r = len(h.shape) - 2
            self.desc.append(f"ZeroPadding{r}D(1)")
            return {1: L.ZeroPadding1D, 2: L.ZeroPadding2D, 3: L.ZeroPadding3D}[r](1)(h)
        return h

    def head(self, h, classes):
        """Dense logits, optionally followed by a softmax; returns (output, logits tensor or None, Dense)."""
        bias = self.bias
        kind = "linear" if self.cons else self.choice(["linear", "linear", "dense_softmax", "Softmax", "Activation"])
        if kind == "dense_softmax":
            dense = L.Dense(classes, activation="softmax", use_bias=bias)
            self.desc.append(f"Dense({classes},act=softmax,bias={bias})")
            return dense(h), None, dense
        dense = L.Dense(classes, use_bias=bias)
        self.track(dense)
        logits = dense(h)
        self.desc.append(f"Dense({classes},bias={bias})")
        if kind == "Softmax":
            self.desc.append("Softmax()")
            return L.Softmax()(logits), logits, dense
        if kind == "Activation":
            self.desc.append("Activation(softmax)")
            return L.Activation("softmax")(logits), logits, dense
        return logits, logits, dense


SELF_MERGE_FNS: dict[str, Callable] = {
    "Add(h,h)": lambda h: L.Add()([h, h]),
    "Concatenate(h,h)": lambda h: L.Concatenate()([h, h]),
    "h+h": lambda h: h + h,
    "Add(h,Dropout(h))": lambda h: L.Add()([h, L.Dropout(0.5)(h)]),
    "Add(h,Identity(h))": lambda h: L.Add()([h, L.Identity()(h)]),
    "Average(h,h)": lambda h: L.Average()([h, h]),
    "Add(h,h,h)": lambda h: L.Add()([h, h, h]),
    "ops.concatenate(h,h)": lambda h: ops.concatenate([h, h], axis=-1),
    "Concatenate(h,Dropout(h))": lambda h: L.Concatenate()([h, L.Dropout(0.5)(h)]),
    "Add(h,Activation(linear)(h))": lambda h: L.Add()([h, L.Activation("linear")(h)]),
    "Add(h,GaussianNoise(h))": lambda h: L.Add()([h, L.GaussianNoise(0.1)(h)]),
    "Multiply(h,h)": lambda h: L.Multiply()([h, h]),
}
SELF_MERGES = tuple(SELF_MERGE_FNS)


# ----------------------------------------------------------------------------- weights and data

def _weight_layers(model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_weight_layers(layer))
        else:
            out.append(layer)
    return out


def fill_weights(model, rng: np.random.Generator, cons: bool) -> None:
    """Deterministic random weights from ``rng`` (independent of Keras' initialisers). Bias-free
    models (``cons``) get zero BatchNorm means and betas."""
    for layer in _weight_layers(model):
        if isinstance(layer, L.Normalization) or not layer.weights:
            continue
        values = []
        for v in layer.weights:
            name = v.name.split("/")[-1]
            shape = tuple(v.shape)
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                fan = max(1, int(np.prod(shape[:-1])) if len(shape) > 1 else 1)
                if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
                    fan = max(1, int(np.prod(shape[:-2])) * shape[-1])
                val = rng.normal(scale=1.4 / np.sqrt(fan), size=shape)
            elif name == "bias":
                val = rng.normal(scale=0.3, size=shape)
            elif name == "gamma":
                val = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape, p=[0.2, 0.8])
            elif name == "beta":
                val = np.zeros(shape) if cons else rng.normal(scale=0.3, size=shape)
            elif name == "moving_mean":
                val = np.zeros(shape) if cons else rng.normal(scale=0.3, size=shape)
            elif name == "moving_variance":
                val = rng.uniform(0.5, 2.0, size=shape)
            elif name == "alpha":  # PReLU
                val = rng.uniform(0.0, 0.4, size=shape)
            else:
                val = v.numpy()
            values.append(np.asarray(val, dtype=v.dtype))
        layer.set_weights(values)


def degenerate_weights(layers: list, rng: np.random.Generator, mode: str) -> str:
    """Make one layer's weights zero / 1e4 / 1e-6 times larger; returns a description."""
    if mode == "random" or not layers:
        return "random"
    i = int(rng.integers(len(layers)))
    layer = layers[i]
    factor = {"zero": 0.0, "large": 1e4, "tiny": 1e-6}[mode]
    layer.set_weights([w * factor for w in layer.get_weights()])
    return f"{mode}:{layer.name}"


def make_inputs(shapes: list, rng: np.random.Generator, mode: str, dtype: str, n: int = 3) -> list:
    xs = []
    for shape in shapes:
        if mode == "nonneg":
            x = rng.uniform(0.0, 1.0, size=(n,) + shape)
            x[rng.random(x.shape) < 0.2] = 0.0
        else:
            x = rng.normal(size=(n,) + shape)
        if mode == "zeros":
            x[rng.random(x.shape) < 0.3] = 0.0
            x[0] = 0.0
        elif mode == "large":
            x *= 1e4
        elif mode == "tiny":
            x *= 1e-6
        xs.append(x.astype(dtype))
    return xs


# ----------------------------------------------------------------------------- models

def _input_shape(family: str, rng: np.random.Generator) -> tuple:
    if family == "1d":
        return (int(rng.integers(6, 10)), int(rng.integers(1, 4)))
    if family == "2d":
        return (int(rng.integers(5, 8)), int(rng.integers(5, 8)), int(rng.integers(1, 4)))
    if family == "3d":
        return (int(rng.integers(4, 6)), int(rng.integers(4, 6)), int(rng.integers(3, 5)), int(rng.integers(1, 3)))
    return (int(rng.integers(4, 8)),)


def _trunk(b: _Builder, h, depth: int):
    """``depth`` random blocks, then flat features."""
    for _ in range(depth):
        if len(h.shape) > 2:
            h = b.spatial(h)
        else:
            h = b.flat(h)
            if b.chance(0.15):
                h = b.flat_to_seq(h)
    if len(h.shape) > 2:
        h = b.to_flat(h)
    return h


def family_of(seed: int) -> str:
    return FAMILIES[seed % len(FAMILIES)]


def build(seed: int, kind: str = "general", profile: str = "", self_merge: str | None = None,
          dtype: str | None = None) -> Spec:
    """The model of ``seed``. ``kind='conserve'`` builds a bias-free model for ``profile``;
    ``self_merge`` inserts that self-merge block (a key of :data:`SELF_MERGE_FNS`); ``dtype``
    overrides the seed's float type (the same model, weights and inputs in another precision, except
    that float64 3-D models replace pooling)."""
    rng = np.random.default_rng(_seed_of(seed, kind, profile + (self_merge or "")))
    keras.utils.set_random_seed(seed % (2 ** 31))
    family = family_of(seed)
    cons = kind == "conserve"
    if dtype is None:
        dtype = "float64" if (not cons and self_merge is None and seed % 7 == 3) else "float32"
    b = _Builder(rng, kind, profile)
    b.bns = []
    b.no_pool3d = dtype == "float64"  # TensorFlow has no float64 MaxPool3D / AvgPool3D kernels
    # degenerate weights: not the ReLU profiles' zero mode (all relevance would be zero)
    wmodes = ["random", "random", "random", "zero", "large", "tiny"]
    if cons and b.relu_only:
        wmodes = ["random", "random", "large", "tiny"]
    if "ww" in profile.split("+"):
        wmodes = ["random", "random", "large"]
    weight_mode = b.choice(wmodes)
    imodes = ["normal", "normal", "zeros", "large", "tiny", "nonneg"]
    if cons and weight_mode == "tiny":  # tiny inputs and tiny weights: z ~ the stabiliser
        imodes = ["normal", "zeros", "large", "nonneg"]
    input_mode = b.choice(imodes)
    if cons and "nonneg" in profile.split("+"):
        input_mode = "nonneg"
    # tiny inputs plus an offset leave float32 no digits for the inputs' differences
    b.no_offsets = input_mode == "tiny"
    with dtype_scope(dtype):
        n_in = 2 if family == "multi" else 1
        fams = [family] if n_in == 1 else [b.choice(["1d", "2d", "3d", "dense"]), b.choice(["1d", "2d", "dense"])]
        shapes = [_input_shape(f, rng) for f in fams]
        inputs = [keras.Input(s, name=f"in{i}") for i, s in enumerate(shapes)]
        feats = []
        depth = int(rng.integers(1, 4)) if n_in == 1 else int(rng.integers(1, 3))
        for i, inp in enumerate(inputs):
            if n_in > 1:
                b.desc.append(f"[input {i} {shapes[i]}]")
            h = b.preprocess(inp)
            if b.first_weighted:
                if len(h.shape) > 2:
                    h = b._conv(h, len(h.shape) - 2, list(h.shape[1:-1]), int(h.shape[-1]), "relu")
                else:
                    h = b.f_dense(h, int(h.shape[-1]), act="relu")
            if self_merge is not None and i == 0:
                if len(h.shape) > 2:
                    h = b._conv(h, len(h.shape) - 2, list(h.shape[1:-1]), int(h.shape[-1]), "relu")
                else:
                    h = b.f_dense(h, int(h.shape[-1]), act="relu")
                h = b.self_merge_block(h, self_merge)
            feats.append(_trunk(b, h, depth))
        if n_in > 1:
            if int(feats[0].shape[-1]) == int(feats[1].shape[-1]) and b.chance(0.5) and not b.deep_taylor:
                b.desc.append("[merge inputs] Add")
                h = L.Add()(feats)
            else:
                b.desc.append("[merge inputs] Concatenate")
                h = L.Concatenate()(feats)
        else:
            h = feats[0]
        if b.chance(0.4):
            h = b.f_dense(h, int(h.shape[-1]))
        classes = int(rng.integers(2, 5))
        out, logits_t, dense = b.head(h, classes)
        model = keras.Model(inputs if n_in > 1 else inputs[0], out, name=f"prop_{kind}_{seed}")
        fill_weights(model, rng, cons)
        weight_desc = degenerate_weights(b.weighted, rng, weight_mode)
        xs = make_inputs(shapes, rng, input_mode, dtype)
        if logits_t is not None:
            logits_model = keras.Model(inputs if n_in > 1 else inputs[0], logits_t)

            def logits_fn(xs_, m=logits_model):
                return keras.ops.convert_to_numpy(m(xs_[0] if len(xs_) == 1 else list(xs_), training=False))
        else:
            feat_model = keras.Model(inputs if n_in > 1 else inputs[0], h)

            def logits_fn(xs_, m=feat_model, d=dense):
                f = keras.ops.convert_to_numpy(m(xs_[0] if len(xs_) == 1 else list(xs_), training=False))
                w = keras.ops.convert_to_numpy(d.kernel)
                out = f @ w
                if d.use_bias:
                    out = out + keras.ops.convert_to_numpy(d.bias)
                return out
    return Spec(seed=seed, kind=kind, profile=profile, family=family, dtype=dtype, model=model, xs=xs,
                logits_fn=logits_fn, desc=b.desc, bias_free=cons, input_mode=input_mode, weight_mode=weight_desc,
                has_self_merge=b.self_merge)


# ----------------------------------------------------------------------------- unsupported layers

class CustomScale(keras.layers.Layer):
    """A custom layer the engine has no handler for, whose call uses an operation without one (a sort;
    a call made of operations with handlers is traced and explained)."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return ops.sort(x, axis=-1) * self.w


class DoubledDense(keras.layers.Dense):
    """A subclass of a supported layer whose ``call`` differs from its parent's."""

    def call(self, x):
        return super().call(x) * 2.0 + 1.0


def unsupported_models() -> dict[str, tuple[keras.Model, str, np.ndarray]]:
    """``{case: (model, name of the unsupported layer or op, input)}``."""
    rng = np.random.default_rng(0)
    cases = {}

    inp = keras.Input((5, 4, 3))
    h = L.ConvLSTM1D(2, 2, name="my_convlstm")(inp)
    cases["ConvLSTM1D"] = (keras.Model(inp, L.Dense(2)(L.Flatten()(h))), "my_convlstm", rng.normal(size=(2, 5, 4, 3)))

    inp = keras.Input((6,))
    h = L.Dense(4)(inp)
    h = L.GroupNormalization(groups=2, name="my_groupnorm")(h)
    cases["GroupNormalization"] = (keras.Model(inp, L.Dense(2)(h)), "my_groupnorm", rng.normal(size=(2, 6)))

    inp = keras.Input((6,))
    h = CustomScale(name="my_custom_scale")(L.Dense(4)(inp))
    cases["custom Layer"] = (keras.Model(inp, L.Dense(2)(h)), "my_custom_scale", rng.normal(size=(2, 6)))

    inp = keras.Input((6,))
    h = L.Dense(4)(inp)
    h = ops.sin(h)
    model = keras.Model(inp, L.Dense(2)(h))
    sin_name = next(n.operation.name for d in model._nodes_by_depth.values() for n in d
                    if type(n.operation).__name__ == "Sin")
    cases["ops.sin"] = (model, sin_name, rng.normal(size=(2, 6)))

    inp = keras.Input((5, 3))
    h = L.Conv1D(2, 2)(inp)
    h = L.Bidirectional(L.GRU(2), merge_mode="mul", name="my_bigru")(h)
    cases["Bidirectional GRU (mul)"] = (keras.Model(inp, L.Dense(2)(h)), "my_bigru", rng.normal(size=(2, 5, 3)))

    inp = keras.Input((6,))
    h = ops.cumsum(L.Dense(4)(inp), axis=-1)
    model = keras.Model(inp, L.Dense(2)(h))
    name = next(n.operation.name for d in model._nodes_by_depth.values() for n in d
                if type(n.operation).__name__ == "Cumsum")
    cases["ops.cumsum"] = (model, name, rng.normal(size=(2, 6)))
    return {k: (m, n, x.astype("float32")) for k, (m, n, x) in cases.items()}


def subclassed_supported_model() -> tuple[keras.Model, str, np.ndarray]:
    """A model with a subclass of Dense that overrides ``call``."""
    inp = keras.Input((6,))
    h = L.Dense(4, activation="relu")(inp)
    h = DoubledDense(3, name="my_doubled_dense")(h)
    model = keras.Model(inp, h)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    return model, "my_doubled_dense", x
