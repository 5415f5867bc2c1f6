"""it.lrp on plain Keras 3 models: same engine, same numbers as the numpy reference."""

import keras
import numpy as np
import pytest

import interprettensor as it
import reference_numpy as ref

L = keras.layers


def keras_cnn(functional: bool, final_softmax: str):
    layers = [L.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
              L.MaxPooling2D(2, name="mp"),
              L.Conv2D(6, 3, strides=2, padding="valid", name="c2"), L.Activation("relu", name="act"),
              L.AveragePooling2D(2, strides=1, padding="same", name="ap"),
              L.Flatten(name="fl")]
    if final_softmax == "activation":
        layers += [L.Dense(5, activation="softmax", name="out")]
    elif final_softmax == "layer":
        layers += [L.Dense(5, name="out"), L.Softmax(name="sm")]
    else:
        layers += [L.Dense(5, name="out")]
    if functional:
        inp = keras.Input((10, 10, 2), dtype="float64")
        h = inp
        for layer in layers:
            h = layer(h)
        model = keras.Model(inp, h)
    else:
        model = keras.Sequential([keras.Input((10, 10, 2), dtype="float64")] + layers)
    return model


def ref_layers(model):
    get = model.get_layer
    return [{"type": "conv", "W": get("c1").kernel.numpy(), "b": get("c1").bias.numpy(), "stride": 1,
             "padding": "SAME", "act": "relu"},
            {"type": "maxpool", "k": 2, "s": 2, "padding": "VALID"},
            {"type": "conv", "W": get("c2").kernel.numpy(), "b": get("c2").bias.numpy(), "stride": 2,
             "padding": "VALID", "act": "relu"},
            {"type": "avgpool", "k": 2, "s": 1, "padding": "SAME"},
            {"type": "flatten"},
            {"type": "dense", "W": get("out").kernel.numpy(), "b": get("out").bias.numpy(), "act": "linear"}]


pytestmark = pytest.mark.usefixtures("float64")


def _randomize(model, rng):
    for layer in model.layers:
        for v in layer.weights:
            v.assign(rng.normal(size=v.shape) * 0.4)


@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
@pytest.mark.parametrize("final", ["none", "activation", "layer"])
@pytest.mark.parametrize("rule,kw,ref_kw", [("simple", {}, {}), ("epsilon", {"epsilon": 0.05}, {"epsilon": 0.05}),
                                            ("alphabeta", {"alpha": 2.0}, {"alpha": 2.0}),
                                            ("alphabeta", {"alpha": 1.0}, {"alpha": 1.0})])
def test_keras_cnn_matches_reference(functional, final, rule, kw, ref_kw):
    rng = np.random.default_rng(0)
    model = keras_cnn(functional, final)
    _randomize(model, rng)
    x = rng.normal(size=(3, 10, 10, 2))
    layers = ref_layers(model)
    logits = ref.network_forward(x, layers)
    target = logits.argmax(1)
    R0 = logits * np.eye(5)[target]
    # pooling layers and sums get the z-rule (the rule's stabiliser) when a rule name is given to a model
    per_layer = [(rule, ref_kw), ("simple", {}), (rule, ref_kw), ("epsilon", {"epsilon": kw.get("epsilon", 1e-12)})
                 if rule == "epsilon" else ("simple", {}), ("simple", {}), (rule, ref_kw)]
    want = ref.network_lrp(x, layers, R0, per_layer)
    got = it.lrp(model, x, rule=rule, **kw)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)


def test_targets_int_per_sample_and_custom_relevance():
    rng = np.random.default_rng(1)
    model = keras_cnn(True, "none")
    _randomize(model, rng)
    x = rng.normal(size=(4, 10, 10, 2))
    layers = ref_layers(model)
    logits = ref.network_forward(x, layers)
    for target in [2, np.array([0, 1, 4, 3])]:
        t = np.broadcast_to(target, (4,))
        want = ref.network_lrp(x, layers, logits * np.eye(5)[t], "simple")
        np.testing.assert_allclose(it.lrp(model, x, rule="simple", target=target), want, rtol=1e-6, atol=1e-10)
    R0 = rng.normal(size=(4, 5))
    np.testing.assert_allclose(it.lrp(model, x, rule="simple", relevance=R0), ref.network_lrp(x, layers, R0, "simple"),
                               rtol=1e-6, atol=1e-10)
    with pytest.raises(it.ExplainError, match=r"target out of range.*0\.\.4"):
        it.lrp(model, x, target=5)
    with pytest.raises(it.ExplainError, match="one int per sample"):
        it.lrp(model, x, target=[1, 2])


def test_explainer_does_not_retrace():
    model = keras_cnn(False, "layer")
    explainer = it.Explainer(model, rule="epsilon", epsilon=0.1)
    x = np.random.default_rng(2).normal(size=(3, 10, 10, 2))
    first = explainer(x)
    assert explainer.trace_count == 1
    for n in (3, 5, 1):
        explainer(np.random.default_rng(n).normal(size=(n, 10, 10, 2)), target=1)
    assert explainer.trace_count == 1
    np.testing.assert_allclose(explainer(x), first)
    assert explainer.trace_count == 1


def test_batching_gives_the_same_result():
    model = keras_cnn(True, "none")
    _randomize(model, np.random.default_rng(3))
    x = np.random.default_rng(4).normal(size=(7, 10, 10, 2))
    np.testing.assert_allclose(it.lrp(model, x, rule="epsilon", batch_size=3), it.lrp(model, x, rule="epsilon"),
                               rtol=1e-12)


def test_wrong_input_shape_is_named():
    model = keras_cnn(True, "none")
    with pytest.raises(it.ExplainError, match=r"shape \(2, 9, 10, 2\).*expects \(None, 10, 10, 2\)"):
        it.lrp(model, np.zeros((2, 9, 10, 2)))


def test_unknown_rule_lists_valid_names():
    model = keras_cnn(True, "none")
    with pytest.raises(ValueError, match="unknown rule or preset 'epsilonn'.*epsilon.*presets:.*epsilon_gamma_box"):
        it.lrp(model, np.zeros((1, 10, 10, 2)), rule="epsilonn")


def test_zero_input_and_dead_units_stay_finite():
    model = keras_cnn(False, "activation")
    x = np.zeros((2, 10, 10, 2))
    for rule in ["simple", "epsilon", "flat", "ww", "alphabeta", "gamma", "zplus", "epsilon_gamma_box", "preset_b"]:
        R = it.lrp(model, x, rule=rule, **({"low": -1.0, "high": 1.0} if rule == "epsilon_gamma_box" else {}))
        assert np.all(np.isfinite(R)), rule


def test_unbuilt_sequential_is_built_on_the_input():
    model = keras.Sequential([L.Dense(4, activation="relu"), L.Dense(3)])
    x = np.random.default_rng(5).normal(size=(2, 5))
    R = it.lrp(model, x, rule="simple")
    assert R.shape == x.shape and model.built
    with pytest.raises(it.ExplainError, match="subclassed Keras model.*Sequential or Functional"):
        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.d = L.Dense(3)

            def call(self, t):
                return self.d(t)

        sub = Sub()
        sub(x)
        it.lrp(sub, x)
