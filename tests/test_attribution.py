"""The attribution baselines (it.attribution) against independent computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import interprettensor as it

A = it.attribution


def _mlp(act: str = "relu", bias: bool = True, softmax: bool = True, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation=act, use_bias=bias, bias_initializer="random_normal")(inp)
    h = keras.layers.Dense(4, use_bias=bias, bias_initializer="random_normal")(h)
    if softmax:
        h = keras.layers.Softmax()(h)
    return keras.Model(inp, h)


def _tape_grad(model: keras.Model, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Plain tf.GradientTape gradient of the logit ``target`` (the model's pre-softmax output)."""
    logits = keras.Model(model.inputs[0], model.layers[-2].output) if isinstance(
        model.layers[-1], keras.layers.Softmax) else model
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = logits(xt)
        score = tf.reduce_sum(out * tf.one_hot(target, out.shape[-1], dtype=out.dtype))
    return tape.gradient(score, xt).numpy()


def _logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.inputs[0], model.layers[-2].output)(x))


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).normal(size=(5, 6)).astype("float32")


def test_gradient_matches_tape_and_skips_softmax(data):
    model = _mlp()
    pred = _logits(model, data).argmax(-1)
    np.testing.assert_allclose(A.gradient(model, data), _tape_grad(model, data, pred), rtol=1e-5, atol=1e-6)
    t = np.array([0, 1, 2, 3, 0])
    np.testing.assert_allclose(A.gradient(model, data, target=t), _tape_grad(model, data, t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(A.gradient(model, data, target=2), _tape_grad(model, data, np.full(5, 2)),
                               rtol=1e-5, atol=1e-6)


def test_input_x_gradient_equals_z_rule_on_bias_free_relu_net(data):
    model = _mlp(bias=False)
    np.testing.assert_allclose(A.input_x_gradient(model, data), it.lrp(model, data, rule="simple"),
                               rtol=1e-4, atol=1e-6)
    keras.utils.set_random_seed(1)
    inp = keras.Input((7, 7, 2))
    h = keras.layers.Conv2D(3, 3, activation="relu", use_bias=False)(inp)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    conv = keras.Model(inp, keras.layers.Dense(3, use_bias=False)(h))
    x = np.random.default_rng(1).normal(size=(3, 7, 7, 2)).astype("float32")
    np.testing.assert_allclose(A.input_x_gradient(conv, x), it.lrp(conv, x, rule="simple"), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_is_the_left_riemann_sum(data):
    model = _mlp(softmax=False)
    W1, b1 = (np.asarray(w, np.float64) for w in model.layers[1].get_weights())
    W2, _ = (np.asarray(w, np.float64) for w in model.layers[2].get_weights())
    x = data.astype(np.float64)
    t = np.array([1, 0, 3, 2, 1])
    steps = 16

    def grad(xx):  # d/dx of (relu(x W1 + b1) W2)[t], known in closed form
        mask = (xx @ W1 + b1 > 0).astype(np.float64)
        return (mask * W2[:, t].T) @ W1.T

    ref = x * np.mean([grad(k / steps * x) for k in range(steps)], axis=0)
    got = A.integrated_gradients(model, data, target=t, steps=steps)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # a non-zero baseline
    x0 = np.full_like(data, 0.5)
    ref0 = (x - 0.5) * np.mean([grad(0.5 + k / steps * (x - 0.5)) for k in range(steps)], axis=0)
    np.testing.assert_allclose(A.integrated_gradients(model, data, target=t, steps=steps, baseline=x0), ref0,
                               rtol=1e-4, atol=1e-5)


def test_integrated_gradients_completeness_on_smooth_model(data):
    model = _mlp(act="tanh", softmax=False)
    t = np.array([0, 1, 2, 3, 0])
    R = A.integrated_gradients(model, data, target=t, steps=256, method="trapezoid")
    out = np.asarray(model(data))[np.arange(5), t] - np.asarray(model(np.zeros_like(data)))[np.arange(5), t]
    np.testing.assert_allclose(R.sum(axis=1), out, rtol=1e-3, atol=1e-4)


def test_guided_backprop_and_deconvnet_equal_gradient_without_relu(data):
    model = _mlp(act="tanh")
    g = A.gradient(model, data)
    np.testing.assert_allclose(A.guided_backprop(model, data), g, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(A.deconvnet(model, data), g, rtol=1e-6, atol=1e-7)


def _relu_net(kind: str) -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,))
    if kind == "activation_arg":
        h = keras.layers.Dense(8, activation="relu", name="d1")(inp)
    else:
        h = keras.layers.Dense(8, name="d1")(inp)
        h = keras.layers.ReLU()(h) if kind == "relu_layer" else keras.layers.Activation("relu")(h)
    return keras.Model(inp, keras.layers.Dense(4, name="d2")(h))


@pytest.mark.parametrize("kind", ["activation_arg", "relu_layer", "activation_layer"])
def test_guided_backprop_and_deconvnet_closed_form(kind, data):
    model = _relu_net(kind)
    W1, b1 = model.get_layer("d1").get_weights()
    W2, _ = model.get_layer("d2").get_weights()
    x = data.astype(np.float64)
    t = np.asarray(model(data)).argmax(-1)
    mask = (x @ W1 + b1 > 0)
    back = W2[:, t].T  # gradient arriving at the ReLU
    np.testing.assert_allclose(A.guided_backprop(model, data), (mask * np.maximum(back, 0)) @ W1.T,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(A.deconvnet(model, data), np.maximum(back, 0) @ W1.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(A.gradient(model, data), (mask * back) @ W1.T, rtol=1e-5, atol=1e-6)
    # iNNvestigate's convention: the backward pass starts from the output value
    f_t = np.asarray(model(data))[np.arange(len(t)), t]
    np.testing.assert_allclose(A.guided_backprop(model, data, times_output=True),
                               (mask * np.maximum(f_t[:, None] * back, 0)) @ W1.T, rtol=1e-5, atol=1e-6)


def test_smoothgrad(data):
    linear = _mlp(act="linear")
    g = A.gradient(linear, data)
    np.testing.assert_allclose(A.smoothgrad(linear, data, n=8, noise_scale=0.5, seed=1), g, rtol=1e-4, atol=1e-6)
    model = _mlp()
    np.testing.assert_allclose(A.smoothgrad(model, data, n=1, noise_scale=0.0), A.gradient(model, data),
                               rtol=1e-6, atol=1e-7)
    # reproducible with a seed, the mean over noisy copies (checked against a manual loop), chunked or not
    t = _logits(model, data).argmax(-1)
    s1 = A.smoothgrad(model, data, n=5, noise_scale=0.3, seed=7)
    s2 = A.smoothgrad(model, data, n=5, noise_scale=0.3, seed=7, batch_size=5)
    rng = np.random.default_rng(7)
    noisy = np.concatenate([data + rng.normal(0.0, 0.3, data.shape).astype("float32") for _ in range(5)])
    manual = _tape_grad(model, noisy, np.tile(t, 5)).reshape(5, *data.shape).mean(0)
    np.testing.assert_allclose(s1, manual, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-7)


def test_deep_taylor_is_zplus_and_explains_relu_of_the_score(data):
    model = _mlp(softmax=False)
    logits = np.asarray(model(data))
    R = A.deep_taylor(model, data, target=np.arange(5) % 4)
    ref = it.lrp(model, data, rule="zplus", target=np.arange(5) % 4)
    positive = logits[np.arange(5), np.arange(5) % 4] > 0
    assert positive.any() and (~positive).any()
    np.testing.assert_allclose(R[positive], ref[positive], rtol=1e-5, atol=1e-6)
    assert np.all(R[~positive] == 0)
    np.testing.assert_allclose(R[positive], it.lrp(model, data, rule="deep_taylor", target=np.arange(5) % 4)[positive],
                               rtol=1e-6, atol=1e-7)
    Rb = A.bounded_deep_taylor(model, data, low=-3.0, high=3.0)
    comp = it.Composite(default="zplus", first=it.rules.ZBox(-3.0, 3.0))
    keep = logits.max(-1) > 0
    np.testing.assert_allclose(Rb[keep], it.lrp(model, data, rule=comp)[keep], rtol=1e-5, atol=1e-6)


def test_multi_input_model():
    keras.utils.set_random_seed(5)
    a, b = keras.Input((3,)), keras.Input((4,))
    h = keras.layers.Concatenate()([keras.layers.Dense(5, activation="relu")(a), b])
    model = keras.Model([a, b], keras.layers.Dense(2)(h))
    rng = np.random.default_rng(5)
    xa, xb = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 4)).astype("float32")
    ta, tb = tf.constant(xa), tf.constant(xb)
    with tf.GradientTape() as tape:
        tape.watch([ta, tb])
        out = model([ta, tb])
        score = tf.reduce_sum(out * tf.one_hot(tf.argmax(out, -1), 2))
    ga, gb = tape.gradient(score, [ta, tb])
    got = A.gradient(model, [xa, xb])
    assert isinstance(got, list) and len(got) == 2
    np.testing.assert_allclose(got[0], ga.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], gb.numpy(), rtol=1e-5, atol=1e-6)
    ig = A.integrated_gradients(model, [xa, xb], steps=4)
    assert [r.shape for r in ig] == [xa.shape, xb.shape]


def test_attribute_dispatches_by_name(data):
    model = _mlp()
    np.testing.assert_array_equal(A.attribute(model, data, "gradient"), A.gradient(model, data))
    np.testing.assert_array_equal(A.attribute(model, data, "saliency", target=1), A.gradient(model, data, 1))
    np.testing.assert_allclose(A.attribute(model, data, "epsilon", epsilon=0.01),
                               it.lrp(model, data, rule="epsilon", epsilon=0.01), rtol=1e-6)
    np.testing.assert_allclose(A.attribute(model, data, "preset_a"), it.lrp(model, data, rule="preset_a"), rtol=1e-6)
    for m in A.METHODS:
        assert A.attribute(model, data, m, **({"steps": 4} if m == "integrated_gradients" else
                                              {"n": 2} if m == "smoothgrad" else
                                              {"low": -3.0, "high": 3.0} if m == "bounded_deep_taylor" else {})
                           ).shape == data.shape
    with pytest.raises(ValueError, match="unknown rule or preset"):
        A.attribute(model, data, "no_such_method")


def test_bad_target_raises(data):
    model = _mlp()
    with pytest.raises(it.ExplainError, match="target out of range"):
        A.gradient(model, data, target=9)
