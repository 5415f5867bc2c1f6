"""Whole models: nesting, several inputs and outputs, BatchNorm canonisation, hidden-layer targets,
layer-wise relevances, and composites' rule assignment."""

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor import rules as R_

L = keras.layers


pytestmark = pytest.mark.usefixtures("float64")


def randomize(model, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.random(v.shape) + 0.5)
        else:
            v.assign(rng.normal(size=v.shape) * scale)


def backbone():
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="b_conv1")(inp)
    h = L.MaxPooling2D(name="b_pool")(h)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="b_conv2")(h)
    return keras.Model(inp, h, name="backbone")


def head():
    return keras.Sequential([keras.Input((4, 4, 6)), L.GlobalAveragePooling2D(name="h_gap"), L.Dense(5, name="h_out")],
                            name="head")


def test_nested_models_equal_the_flat_model():
    bb, hd = backbone(), head()
    inp = keras.Input((8, 8, 3))
    nested = keras.Model(inp, hd(bb(inp)))
    randomize(nested)
    # the same network written flat, sharing the weights
    flat_in = keras.Input((8, 8, 3))
    h = flat_in
    for layer in [bb.get_layer("b_conv1"), bb.get_layer("b_pool"), bb.get_layer("b_conv2"),
                  hd.get_layer("h_gap"), hd.get_layer("h_out")]:
        h = layer(h)
    flat = keras.Model(flat_in, h)
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3))
    for rule in ["epsilon", "alphabeta", "epsilon_gamma_box"]:
        kw = {"low": -4.0, "high": 4.0} if rule == "epsilon_gamma_box" else {}
        np.testing.assert_allclose(it.lrp(nested, x, rule=rule, **kw), it.lrp(flat, x, rule=rule, **kw), rtol=1e-10)
    names = it.Explainer(nested).graph.layer_names()
    assert "backbone/b_conv1" in names and "head/h_out" in names


def test_transfer_learning_shape_with_hidden_target_by_inner_name():
    bb = backbone()
    inp = keras.Input((8, 8, 3))
    h = bb(inp)
    out = L.Dense(3, name="top")(L.Flatten()(h))
    model = keras.Model(inp, out)
    randomize(model, 2)
    x = np.abs(np.random.default_rng(3).normal(size=(2, 8, 8, 3)))
    got = it.lrp(model, x, rule="simple", layer="b_conv2", target=4)
    # independent: truncated model, starting relevance = the activation of channel 4
    trunc = keras.Model(bb.inputs, bb.get_layer("b_conv2").output)
    a = trunc(x).numpy()
    R0 = np.zeros_like(a)
    R0[..., 4] = a[..., 4]
    np.testing.assert_allclose(got, it.lrp(trunc, x, rule="simple", relevance=R0), rtol=1e-10)
    with pytest.raises(it.ExplainError, match="no layer 'b_conv9'.*b_conv2"):
        it.lrp(model, x, layer="b_conv9")
    with pytest.raises(it.ExplainError, match=r"target out of range.*6 channels.*0\.\.5"):
        it.lrp(model, x, layer="b_conv2", target=6)


def test_multi_input_model_gets_one_relevance_per_input_and_conserves():
    a, b = keras.Input((6,), name="a"), keras.Input((4, 4, 2), name="b")
    ha = L.Dense(5, activation="relu", use_bias=False)(a)
    hb = L.Flatten()(L.Conv2D(3, 3, use_bias=False, activation="relu")(b))
    h = L.Concatenate()([ha, hb])
    out = L.Dense(3, use_bias=False)(h)
    model = keras.Model([a, b], out)
    randomize(model, 4)
    rng = np.random.default_rng(5)
    xa, xb = np.abs(rng.normal(size=(2, 6))), np.abs(rng.normal(size=(2, 4, 4, 2)))
    (ra, rb), logits = it.Explainer(model, rule="simple")([xa, xb], return_output=True)
    assert ra.shape == xa.shape and rb.shape == xb.shape
    np.testing.assert_allclose(ra.sum(1) + rb.sum((1, 2, 3)), logits.max(1), rtol=1e-8)
    with pytest.raises(it.ExplainError, match="takes 2 inputs, got 1"):
        it.lrp(model, xa)


def test_multi_output_model_explains_the_named_output():
    inp = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="shared")(inp)
    o1 = L.Dense(3, name="o1")(h)
    o2 = L.Dense(4, activation="softmax", name="o2")(h)
    model = keras.Model(inp, [o1, o2])
    randomize(model, 6)
    x = np.random.default_rng(7).normal(size=(2, 6))
    single2 = keras.Model(inp, L.Dense(4, name="o2_logits")(h))
    single2.get_layer("o2_logits").set_weights(model.get_layer("o2").get_weights())
    np.testing.assert_allclose(it.lrp(model, x, output="o2"), it.lrp(single2, x), rtol=1e-10)
    np.testing.assert_allclose(it.lrp(model, x, output=1), it.lrp(single2, x), rtol=1e-10)
    with pytest.raises(it.ExplainError, match="no output 'o3'"):
        it.lrp(model, x, output="o3")


def conv_bn_model(activation_between=False):
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, padding="same", name="conv")(inp)
    if activation_between:
        h = L.ReLU()(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU()(h)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.Flatten()(h)
    h = L.Dense(4, name="dense")(h)
    h = L.BatchNormalization(name="bn3")(h)
    return keras.Model(inp, h)


def test_batchnorm_merging_keeps_outputs_and_equals_explicitly_merged_model():
    model = conv_bn_model()
    randomize(model, 8)
    x = np.random.default_rng(9).normal(size=(3, 6, 6, 2))
    ex = it.Explainer(model, rule="epsilon", epsilon=0.01)
    assert [s.name for s in ex.graph.steps if isinstance(s.layer, L.BatchNormalization)] == []
    R, out = ex(x, return_output=True)
    np.testing.assert_allclose(out, model(x, training=False).numpy(), rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(R))
    # explicitly merged copy, weights folded by hand in numpy
    merged_in = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, padding="same", name="conv")(merged_in)
    h = L.ReLU()(h)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(h)
    h = L.Flatten()(h)
    h = L.Dense(4, name="dense")(h)
    merged = keras.Model(merged_in, h)
    for name, bn in [("conv", "bn"), ("dw", "bn2"), ("dense", "bn3")]:
        W, b = model.get_layer(name).get_weights()
        g, beta, mean, var = model.get_layer(bn).get_weights()
        s = g / np.sqrt(var + model.get_layer(bn).epsilon)
        Ws = W * s if name != "dw" else W * s.reshape(W.shape[-2], W.shape[-1])
        merged.get_layer(name).set_weights([Ws, (b - mean) * s + beta])
    np.testing.assert_allclose(merged(x).numpy(), out, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(R, it.lrp(merged, x, rule="epsilon", epsilon=0.01), rtol=1e-6, atol=1e-10)


def test_batchnorm_without_preceding_linear_layer_is_affine_and_finite():
    model = conv_bn_model(activation_between=True)
    randomize(model, 10)
    model.get_layer("bn").set_weights([np.zeros(4), np.zeros(4), np.zeros(4), np.ones(4)])  # kills the signal
    ex = it.Explainer(model, rule="epsilon")
    kept = [s.name for s in ex.graph.steps if isinstance(s.layer, L.BatchNormalization)]
    assert kept == ["bn"]
    x = np.random.default_rng(11).normal(size=(2, 6, 6, 2))
    for rule in ["simple", "epsilon", "alphabeta", "gamma", "flat", "preset_b", "epsilon_gamma_box"]:
        kw = {"low": -4.0, "high": 4.0} if rule == "epsilon_gamma_box" else {}
        assert np.all(np.isfinite(it.lrp(model, x, rule=rule, **kw))), rule


def test_layerwise_relevances_come_from_the_same_pass_and_conserve():
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, use_bias=False, activation="relu", name="c1")(inp)
    skip = h
    h = L.Conv2D(4, 3, padding="same", use_bias=False, activation="relu", name="c2")(h)
    h = L.Add(name="add")([h, skip])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(3, use_bias=False, name="fc")(h)
    model = keras.Model(inp, out)
    randomize(model, 12)
    x = np.abs(np.random.default_rng(13).normal(size=(2, 6, 6, 2)))
    R, lw, logits = it.Explainer(model, rule="simple")(x, layerwise=True, return_output=True)
    np.testing.assert_array_equal(lw[model.inputs[0].name], R)
    total = logits.max(1)
    for name in ["fc", "gap", "add", "c1"]:  # c1's output gets the skip's share and c2's share
        np.testing.assert_allclose(lw[name].reshape(2, -1).sum(1), total, rtol=1e-8)
    assert 0 < np.abs(lw["c2"]).sum() < np.abs(lw["add"]).sum() + 1e-12
    np.testing.assert_allclose(R.sum((1, 2, 3)), total, rtol=1e-8)


# ---------------------------------------------------------------------- composites
def vgg_like():
    inp = keras.Input((8, 8, 3))
    h = L.Rescaling(1 / 255.0, name="scale")(inp)
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(h)
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(6, activation="relu", name="fc1")(h)
    h = L.Dense(3, name="fc2")(h)
    return keras.Model(inp, h)


@pytest.mark.parametrize("preset,expected", [
    ("epsilon_plus", {"conv1": R_.ZPlus(), "conv2": R_.ZPlus(), "fc1": R_.Epsilon(1e-6), "fc2": R_.Epsilon(1e-6)}),
    ("epsilon_plus_flat", {"conv1": R_.Flat(), "conv2": R_.ZPlus(), "fc1": R_.Epsilon(1e-6)}),
    ("epsilon_alpha2_beta1", {"conv1": R_.AlphaBeta(2, 1), "conv2": R_.AlphaBeta(2, 1), "fc2": R_.Epsilon(1e-6)}),
    ("epsilon_alpha2_beta1_flat", {"conv1": R_.Flat(), "conv2": R_.AlphaBeta(2, 1)}),
    ("preset_a", {"conv1": R_.AlphaBeta(1, 0), "conv2": R_.AlphaBeta(1, 0), "fc1": R_.Epsilon(0.1)}),
    ("preset_b", {"conv1": R_.AlphaBeta(2, 1), "fc2": R_.Epsilon(0.1)}),
    ("preset_a_flat", {"conv1": R_.Flat(), "conv2": R_.AlphaBeta(1, 0), "fc1": R_.Epsilon(0.1)}),
    ("preset_b_flat", {"conv1": R_.Flat(), "conv2": R_.AlphaBeta(2, 1), "fc1": R_.Epsilon(0.1)}),
])
def test_presets_assign_documented_rules(preset, expected):
    rm = it.Explainer(vgg_like(), rule=preset).rule_map()
    for name, rule in expected.items():
        assert rm[name] == rule, (name, rm[name])
    assert isinstance(rm["pool"], R_.WinnerTakesAll)
    assert isinstance(rm["flat"], R_.Pass) and isinstance(rm["scale"], R_.Pass)


def test_epsilon_gamma_box_maps_bounds_through_preprocessing():
    model = vgg_like()
    ex = it.Explainer(model, rule="epsilon_gamma_box", low=0.0, high=255.0, gamma=0.5)
    rm = ex.rule_map()
    assert isinstance(rm["conv1"], R_.ZBox) and rm["conv2"] == R_.Gamma(0.5) and rm["fc1"] == R_.Epsilon(1e-6)
    randomize(model, 14)
    x = np.random.default_rng(15).random((2, 8, 8, 3)) * 255
    # same as z^B with bounds [0, 1] on the model without the Rescaling layer
    inner_in = keras.Input((8, 8, 3))
    h = inner_in
    for name in ["conv1", "conv2", "pool", "flat", "fc1", "fc2"]:
        h = model.get_layer(name)(h)
    inner = keras.Model(inner_in, h)
    scale = model.get_layer("scale")
    want = it.lrp(inner, scale(x).numpy(), rule="epsilon_gamma_box", low=0.0, high=float(scale(np.array(255.0))),
                  gamma=0.5)
    np.testing.assert_allclose(ex(x), want, rtol=1e-4, atol=1e-9)  # Rescaling computes in float32
    unmapped = it.lrp(inner, scale(x).numpy(), rule="epsilon_gamma_box", low=0.0, high=255.0, gamma=0.5)
    assert np.abs(unmapped - want).max() > 1e-2 * np.abs(want).max()


def test_composite_by_type_name_and_position():
    model = vgg_like()
    comp = it.Composite(default="epsilon", layer_map={L.Conv2D: "gamma", "Dense": "zplus"},
                        name_map={"conv2": R_.AlphaBeta(3, 2)}, first="flat", last=(1, "simple"), epsilon=0.2)
    rm = it.Explainer(model, rule=comp).rule_map()
    assert rm["conv1"] == R_.Flat()                      # position: first beats type
    assert rm["conv2"] == R_.AlphaBeta(3, 2)             # name beats everything
    assert rm["fc1"] == R_.ZPlus() and rm["fc2"] == R_.Z()  # type; last n
    assert isinstance(rm["pool"], R_.WinnerTakesAll)


def test_unknown_preset_and_rule_errors():
    with pytest.raises(ValueError, match="unknown rule or preset 'preset_c'.*presets:.*preset_a"):
        it.Explainer(vgg_like(), rule="preset_c")
    with pytest.raises(ValueError, match="does not take the parameters"):
        it.lrp(vgg_like(), np.zeros((1, 8, 8, 3)), rule="flat", gamma=3)


def test_layer_without_handler_error_and_registering_a_handler():
    class Scale(L.Layer):
        """x · w through an operation without a handler (traced, it names the operation and the layer)."""

        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return keras.ops.convert_to_tensor(x) * self.w

    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2, name="d")(Scale(name="my_scale")(inp)))
    x = np.random.default_rng(16).normal(size=(2, 4))
    with pytest.raises(it.ExplainError, match=r"ConvertToTensor.*'my_scale' of type Scale.*register_handler\(Scale"):
        it.lrp(model, x)
    it.register_handler(Scale, it.handlers.LinearHandler(
        params=lambda layer: {"kernel": layer.w}, fn=lambda layer, xs, p: xs[0] * p["kernel"],
        activation=lambda layer: None))
    got = it.lrp(model, x, rule="simple")
    assert got.shape == x.shape and np.all(np.isfinite(got))


def test_layer_of_keras_operations_is_traced_without_a_handler():
    """A layer without sub-layers whose call is keras operations (a layer scale ``x · w``) is traced into
    them: under the z-rule its diagonal map passes relevance, as a registered linear handler's does."""

    class Scale(L.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer=keras.initializers.RandomUniform(0.5, 2.0))

        def call(self, x):
            return x * self.w

    class Registered(Scale):
        pass

    it.register_handler(Registered, it.handlers.LinearHandler(
        params=lambda layer: {"kernel": layer.w}, fn=lambda layer, xs, p: xs[0] * p["kernel"],
        activation=lambda layer: None))
    inp = keras.Input((4,))
    traced = keras.Model(inp, L.Dense(2, name="d")(Scale(name="s")(inp)))
    registered = keras.Model(inp, L.Dense(2, name="d")(Registered(name="s")(inp)))
    registered.set_weights(traced.get_weights())
    x = np.random.default_rng(17).normal(size=(2, 4))
    # R·xw/(xw) in float32: a few roundings per element
    np.testing.assert_allclose(it.lrp(traced, x, rule="simple"), it.lrp(registered, x, rule="simple"),
                               rtol=8 * 2.0 ** -23, atol=1e-30)


def test_custom_rule_interface():
    rule = R_.CustomRule([R_.Group((R_.Term(input=R_.positive, kernel=R_.positive, bias=None),))], name="mine")
    R_.register_rule("mine_plus", lambda: rule)
    model = vgg_like()
    randomize(model, 17)
    x = np.random.default_rng(18).random((2, 8, 8, 3)) * 255
    np.testing.assert_allclose(it.lrp(model, x, rule="mine_plus"), it.lrp(model, x, rule="zplus_fast"), rtol=1e-10)
