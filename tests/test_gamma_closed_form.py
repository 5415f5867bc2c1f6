"""The generalised (sign-aware) gamma rule's closed-form evaluation (``linear.sign_aware_gamma``: one
extra forward pass and two vector-Jacobian products for both sign groups) against

* numpy written from the rule's equations (Gamma's docstring; Andeol et al. 2021), per output and
  input, on convolutions with mixed-sign inputs and outputs, and
* the term-by-term evaluation of the rule's groups (``linear.GENERIC_GAMMA``) on whole models whose
  convolutions feed no ReLU directly (swish, BN-ReLU before the convolution, residual sums,
  depthwise convolutions, squeeze-excitation products).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import interprettensor as it
from interprettensor.engine import linear as L
from interprettensor.engine.rules import TINY, Gamma
from reference_numpy import _windows


@contextlib.contextmanager
def generic_gamma():
    token = L.GENERIC_GAMMA.set(True)
    try:
        yield
    finally:
        L.GENERIC_GAMMA.reset(token)


def dense_gamma_signed(x, W, b, R, gamma, bias=True):
    """Sign-aware gamma through ``z = x W + b`` (x: (N, I), W: (I, K), b: (K,)), written per output
    ``j`` from the equations: where ``z_j >= 0`` inputs ``x_i > 0`` see ``w + g w^+`` and ``x_i < 0``
    see ``w + g w^-``; the denominator adds ``b + g b^+``. Where ``z_j < 0`` the parts are swapped."""
    z = x @ W + b
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    bp, bn = np.maximum(b, 0), np.minimum(b, 0)
    out = np.zeros_like(x)
    N, I = x.shape
    for n in range(N):
        for j in range(W.shape[1]):
            pos_out = z[n, j] >= 0
            contrib = np.empty(I)
            for i in range(I):
                xi = x[n, i]
                push_up = (xi > 0) == pos_out
                contrib[i] = xi * (W[i, j] + gamma * (Wp[i, j] if push_up else Wn[i, j]))
            d = contrib.sum()
            if bias:
                d += b[j] + gamma * (bp[j] if pos_out else bn[j])
            d += TINY * (1.0 if d >= 0 else -1.0)
            out[n] += contrib / d * R[n, j]
    return out


def conv_gamma_signed(x, W, b, R, stride, padding, gamma, bias=True):
    """:func:`dense_gamma_signed` on every window of a 2-D convolution (TensorFlow's geometry)."""
    N, H, Wd, C = x.shape
    kh, kw, _, K = W.shape
    Rx = np.zeros_like(x)
    for i, j, (r0, r1, c0, c1), (a0, a1, b0, b1) in _windows(H, Wd, (kh, kw), stride, padding):
        patch = x[:, r0:r1, c0:c1, :]
        Rp = dense_gamma_signed(patch.reshape(N, -1), W[a0:a1, b0:b1].reshape(-1, K), b, R[:, i, j, :], gamma, bias)
        Rx[:, r0:r1, c0:c1, :] += Rp.reshape(patch.shape)
    return Rx


def conv_map(W, b, stride, padding):
    def fn(xs, p):
        z = tf.nn.conv2d(xs[0], p["kernel"], stride, padding.upper())
        return z + p["bias"] if "bias" in p else z

    return L.LinearMap(fn, {"kernel": tf.constant(W), "bias": tf.constant(b)})


@pytest.fixture
def closed_form_calls(monkeypatch):
    """How often the closed form ran (linear_relevance dispatches through the module attribute)."""
    calls = []
    original = L.sign_aware_gamma

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(L, "sign_aware_gamma", counting)
    return calls


@pytest.mark.parametrize("case", [
    # (inputs, gamma, bias, stride, padding, positive outputs only)
    ("mixed", 0.25, True, 1, "same", False),
    ("mixed", 1.0, False, 2, "same", False),
    ("mixed", 0.25, True, 1, "valid", True),
    ("nonneg", 0.25, True, 1, "same", False),
    ("nonneg", 0.5, True, 2, "valid", True),
    ("mixed", 0.0, True, 1, "same", False),
])
def test_conv_matches_numpy_from_the_equations(case, closed_form_calls):
    inputs, gamma, bias, stride, padding, pos_only = case
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 7, 7, 3))
    x[np.abs(x) < 0.2] = 0.0  # exact zeros too
    if inputs == "nonneg":
        x = np.abs(x)
    W = rng.normal(size=(3, 3, 3, 4))
    b = rng.normal(size=4) * 0.5
    lm = conv_map(W.astype("float32"), b.astype("float32"), stride, padding)
    xt = tf.constant(x.astype("float32"))
    z = lm([xt]).numpy().astype(np.float64)
    assert (z > 0).any() and (z < 0).any()
    R = rng.normal(size=z.shape)
    if pos_only:
        R = R * (z > 0)
    x32 = x.astype("float32").astype(np.float64)
    want = conv_gamma_signed(x32, W.astype("float32").astype(np.float64), b.astype("float32").astype(np.float64), R,
                             stride, padding, gamma, bias)
    for lazy in (False, True):
        got = L.linear_relevance(lm, [xt], tf.constant(R.astype("float32")), Gamma(gamma, bias), tf.constant(z, "float32"),
                                 nonneg=inputs == "nonneg", lazy=lazy, positive_outputs_only=pos_only)[0]
        got = L.materialize(got).numpy()
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    assert len(closed_form_calls) == 2


@pytest.mark.parametrize("nonneg, positive_only, forwards, vjps", [
    (False, False, 1, 2), (True, False, 1, 2), (False, True, 1, 2), (True, True, 1, 1)])
def test_one_forward_pass_and_at_most_two_transposed_convolutions(nonneg, positive_only, forwards, vjps):
    """Traced graph of one layer's relevance (the forward's z given): the closed form's convolutions,
    against the term-by-term groups' (three forward passes and four transposed convolutions on
    mixed-sign inputs and outputs)."""
    rng = np.random.default_rng(0)
    lm = conv_map(rng.normal(size=(3, 3, 4, 5)).astype("float32"), rng.normal(size=5).astype("float32"), 1, "same")
    spec = tf.TensorSpec((2, 6, 6, 4), tf.float32)
    zspec = tf.TensorSpec((2, 6, 6, 5), tf.float32)

    def counts() -> tuple[int, int]:
        fn = tf.function(lambda x, z, R: L.linear_relevance(lm, [x], R, Gamma(0.25), z, nonneg=nonneg,
                                                             positive_outputs_only=positive_only))
        graph = fn.get_concrete_function(spec, zspec, zspec).graph
        # the forward op that a gradient tape records is dead code (nothing reads it): not counted
        live = [op.type for op in graph.get_operations() if any(t.consumers() for t in op.outputs)]
        return live.count("Conv2D"), live.count("Conv2DBackpropInput")

    assert counts() == (forwards, vjps)
    if not nonneg and not positive_only:
        with generic_gamma():
            assert counts() == (3, 4)


def test_product_relevance_and_repeated_inputs_match_the_groups():
    """Relevance arriving as an unevaluated product, and a map that receives one tensor twice (each
    occurrence gets its own share): closed form against the rule's groups term by term."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 5, 5, 3)).astype("float32"))
    W = tf.constant(rng.normal(size=(3, 3, 3, 3)).astype("float32"))
    lm = L.LinearMap(lambda xs, p: tf.nn.conv2d(xs[0], p["kernel"], 1, "SAME") + xs[1] * p["scale"] + p.get("bias", 0.0),
                     {"kernel": W, "scale": tf.constant([0.5, -1.5, 2.0]), "bias": tf.constant([0.3, -0.2, 0.0])})
    z = lm([x, x])
    R = L.Product(tf.constant(rng.normal(size=z.shape).astype("float32")),
                  tf.constant(rng.normal(size=z.shape).astype("float32")))
    got = [L.materialize(r).numpy() for r in L.linear_relevance(lm, [x, x], R, Gamma(0.3), z, lazy=True)]
    with generic_gamma():
        want = [L.materialize(r).numpy() for r in L.linear_relevance(lm, [x, x], R, Gamma(0.3), z, lazy=True)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max())
    assert not np.allclose(got[0], got[1])


def _swish_block_model() -> keras.Model:
    """EfficientNet-like: conv-BN-swish, depthwise conv, squeeze-excitation, linear projection and a
    residual sum (no convolution's output is ReLU'd)."""
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation("swish")(h)
    d = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
    d = keras.layers.BatchNormalization()(d)
    d = keras.layers.Activation("swish")(d)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(d)
    se = keras.layers.Conv2D(2, 1, activation="swish")(se)
    se = keras.layers.Conv2D(8, 1, activation="sigmoid")(se)
    d = keras.layers.Multiply()([d, se])
    p = keras.layers.Conv2D(8, 1, use_bias=False)(d)
    p = keras.layers.BatchNormalization()(p)
    h = keras.layers.Add()([p, h])
    h = keras.layers.Conv2D(6, 3, padding="same", activation="swish")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(4)(h))


def _dense_block_model() -> keras.Model:
    """DenseNet-like: BN-ReLU before each convolution, concatenated features, and a ResNet-like sum."""
    inp = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(6, 3, padding="same")(inp)
    for _ in range(2):
        y = keras.layers.BatchNormalization()(h)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(4, 3, padding="same")(y)
        h = keras.layers.Concatenate()([h, y])
    r = keras.layers.Conv2D(h.shape[-1], 1)(keras.layers.ReLU()(h))
    h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


def _randomise_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(size=c) * 0.3)
            layer.moving_mean.assign(rng.normal(size=c) * 0.3)
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))


@pytest.mark.parametrize("build", [_swish_block_model, _dense_block_model])
@pytest.mark.parametrize("method", ["epsilon_gamma_box", "gamma"])
def test_models_match_the_term_by_term_groups(build, method, closed_form_calls):
    rng = np.random.default_rng(11)
    model = build()
    _randomise_batchnorm(model, rng)
    x = rng.uniform(-1.0, 1.0, size=(3,) + tuple(model.input.shape[1:])).astype("float32")
    kw = {"low": -1.0, "high": 1.0} if method == "epsilon_gamma_box" else {}
    got = it.Explainer(model, method, **kw)(x)
    assert closed_form_calls
    with generic_gamma():
        n = len(closed_form_calls)
        want = it.Explainer(model, method, **kw)(x)
        assert len(closed_form_calls) == n
    got, want = np.asarray(got), np.asarray(want)
    assert np.isfinite(got).all() and np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
