"""The forward pass may keep relu(z) instead of z for the denominators of layers with a built-in ReLU
where the relevance is provably zero at inactive units: results must equal the plain computation.

Each rule runs on one of the four models, dealt in turn (every rule once, every model under three or
four rules); ``pytest --run-exhaustive`` (INTERPRETTENSOR_EXHAUSTIVE=1) runs every rule on every model."""

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.engine import explainer as explain

L = keras.layers


def models():
    inp = keras.Input((12, 12, 3))
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    h = L.MaxPooling2D(name="mp")(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    skip = h
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c3")(h)
    h = L.Add(name="add")([h, skip])
    h = L.Dropout(0.5)(h)
    h = L.AveragePooling2D(2, name="ap")(h)
    h = L.Flatten()(h)
    h = L.Dense(10, activation="relu", name="d1")(h)
    out = L.Dense(4, name="out")(h)
    yield "residual", keras.Model(inp, out)
    yield "vgg_like", keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(4, 3, activation="relu"),
                                        L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                                        L.Dense(8, activation="relu"), L.Dense(3, activation="softmax")])
    inp = keras.Input((12, 12, 3))  # conv-BN, then a ReLU layer, and conv-BN into a residual sum
    h = L.Activation("relu", name="r1")(L.BatchNormalization(name="bn1")(L.Conv2D(6, 3, padding="same", name="k1")(inp)))
    y = L.ReLU(name="r2")(L.BatchNormalization(name="bn2")(L.Conv2D(6, 3, padding="same", name="k2")(h)))
    y = L.BatchNormalization(name="bn3")(L.Conv2D(6, 3, padding="same", name="k3")(y))
    h = L.Activation("relu")(L.Add()([h, y]))
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(np.linspace(-0.5, 0.5, 6))
            layer.beta.assign(np.linspace(0.3, -0.3, 6))
    yield "conv_bn_relu", model
    yield "original", it.Sequential([it.Convolution(4, input_depth=3, kernel_size=3, stride_size=1, act="relu"),
                                     it.AvgPool(), it.Convolution(6, kernel_size=3, stride_size=1, act="relu"),
                                     it.MaxPool(), it.Flatten(), it.Linear(3)])


def test_positive_output_steps_cover_relu_layers_after_linear_ones():
    model = dict(models())["conv_bn_relu"]
    ex = it.Explainer(model, "gamma")
    names = {s.name for s in ex._positive_steps[True]}
    assert {"k1", "k2"} <= names and "k3" not in names and "head" not in names  # k3 feeds the sum


RULES = ["epsilon", "simple", "alphabeta", "zplus", "gamma", "flat", "ww", "epsilon_gamma_box", "epsilon_plus_flat",
         "preset_b", "toolbox_flat", "toolbox_alphabeta", "deep_taylor"]


@pytest.mark.parametrize("rule", RULES)
def test_relu_denominators_give_the_same_relevance(rule, exhaustive):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 12, 12, 3)).astype("float32")
    kw = {"low": -3.0, "high": 3.0} if rule in ("epsilon_gamma_box", "bounded_deep_taylor") else {}
    for i, (name, model) in enumerate(models()):
        if not exhaustive and i != RULES.index(rule) % 4:
            continue
        model(x[:1])
        ex = it.Explainer(model, rule=rule, **kw)
        fast = ex(x)
        fast_hidden = ex.__class__(model, rule=rule, **kw, layer=ex.graph.steps[1].name)(x, target=1)
        R0 = rng.normal(size=ex(x, return_output=True)[1].shape).astype("float32")
        fast_custom = ex(x, relevance=R0)
        explain.FUSE_RELU_DENOMINATORS = False
        try:
            ex2 = it.Explainer(model, rule=rule, **kw)
            np.testing.assert_allclose(fast, ex2(x), rtol=2e-4, atol=1e-6, err_msg=f"{name} {rule}")
            np.testing.assert_allclose(fast_custom, ex2(x, relevance=R0), rtol=2e-4, atol=1e-6)
            slow_hidden = ex.__class__(model, rule=rule, **kw, layer=ex.graph.steps[1].name)(x, target=1)
            np.testing.assert_allclose(fast_hidden, slow_hidden, rtol=2e-4, atol=1e-6)
        finally:
            explain.FUSE_RELU_DENOMINATORS = True


def test_which_layers_keep_only_their_activation():
    name, model = next(models())
    sets = it.Explainer(model, rule="epsilon")._relu_steps
    assert {s.name for s in sets[True]} == {"c1", "c2", "c3", "d1"}
    assert sets[False] == sets[True]  # the start ("out") has no ReLU of its own
    hidden = it.Explainer(model, rule="epsilon", layer="c2")._relu_steps
    assert "c2" in {s.name for s in hidden[True]}
    assert "c2" not in {s.name for s in hidden[False]}  # a custom relevance may be non-zero at inactive units
    flat = it.Explainer(model, rule=it.Composite(default="epsilon", name_map={"c3": "flat"}))._relu_steps[True]
    assert "c2" not in {s.name for s in flat}  # flat at c3 sends relevance to inactive inputs of c2's output
