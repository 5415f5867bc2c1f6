"""The original API's five variants (and the modern rules) against the independent numpy reference."""

import numpy as np
import pytest
from keras import ops

import interprettensor as it
from interprettensor.engine import backend
import reference_numpy as ref

RULES = [("simple", None, {}), ("epsilon", 0.01, {"epsilon": 0.01}), ("flat", None, {}), ("ww", None, {}),
         ("alphabeta", 2.0, {"alpha": 2.0}), ("alphabeta", 1.0, {"alpha": 1.0}), ("alphabeta", 3.0, {"alpha": 3.0})]
IDS = ["simple", "epsilon", "flat", "ww", "alpha2beta1", "alpha1beta0", "alpha3beta2"]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def _set(layer, W, b):
    layer.kernel.assign(W.astype(layer.kernel.dtype))
    layer.bias.assign(b.astype(layer.bias.dtype))


def one_layer_net(layer, x):
    net = it.Sequential([layer], dtype=x.dtype.name)
    net.build(x.shape)
    return net


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    return request.param


def tol(dtype):
    return 1e-4 if dtype == "float64" else 1e-3


@pytest.mark.parametrize("var,param,kw", RULES, ids=IDS)
def test_linear(var, param, kw, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 12)).astype(dtype)
    W, b = rng.normal(size=(12, 7)), rng.normal(size=7) * 0.5
    net = one_layer_net(it.Linear(7, input_dim=12, dtype=dtype), x)
    _set(net.modules[0], W, b)
    y = net.forward(x)
    np.testing.assert_allclose(y, ref.dense_forward(x.astype("float64"), W, b), rtol=1e-5, atol=1e-5)
    R = rng.normal(size=(4, 7))
    got = net.lrp(R.astype(dtype), var, param)
    want = ref.dense_lrp(x.astype("float64"), W, b, R, var, **kw)
    assert rel_err(got, want) <= tol(dtype)


@pytest.mark.parametrize("var,param,kw", RULES, ids=IDS)
@pytest.mark.parametrize("pad,stride", [("VALID", 1), ("SAME", 1), ("VALID", 2), ("SAME", 2)])
def test_convolution(var, param, kw, pad, stride, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 8, 3)).astype(dtype)
    W, b = rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4) * 0.5
    net = one_layer_net(it.Convolution(4, kernel_size=3, stride_size=stride, pad=pad, dtype=dtype), x)
    _set(net.modules[0], W, b)
    y = net.forward(x)
    y_ref = ref.conv_forward(x.astype("float64"), W, b, stride, pad)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    R = rng.normal(size=y_ref.shape)
    got = net.lrp(R.astype(dtype), var, param)
    want = ref.conv_lrp(x.astype("float64"), W, b, R, stride, pad, var, **kw)
    assert rel_err(got, want) <= tol(dtype)


@pytest.mark.parametrize("var,param,kw", RULES, ids=IDS)
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("pad,k,s", [("VALID", 2, 2), ("SAME", 3, 2), ("VALID", 3, 1)])
def test_pooling(var, param, kw, pool, pad, k, s, dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 7, 3)).astype(dtype)
    cls = it.MaxPool if pool == "max" else it.AvgPool
    net = one_layer_net(cls(k, s, pad=pad, dtype=dtype), x)
    y = net.forward(x)
    fwd = ref.maxpool_forward if pool == "max" else ref.avgpool_forward
    y_ref = fwd(x.astype("float64"), k, s, pad)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    R = rng.normal(size=y_ref.shape)
    got = net.lrp(R.astype(dtype), var, param)
    lrp = ref.maxpool_lrp if pool == "max" else ref.avgpool_lrp
    want = lrp(x.astype("float64"), R, k, s, pad, var, **kw)
    assert rel_err(got, want) <= tol(dtype)


def _random_net(kind, rng, dtype, bias=True):
    if kind == "mlp":
        layers = [{"type": "dense", "W": rng.normal(size=(20, 16)) / 4, "b": rng.normal(size=16) * 0.1 * bias, "act": "relu"},
                  {"type": "dense", "W": rng.normal(size=(16, 12)) / 4, "b": rng.normal(size=12) * 0.1 * bias, "act": "tanh"},
                  {"type": "dense", "W": rng.normal(size=(12, 5)) / 3, "b": rng.normal(size=5) * 0.1 * bias, "act": "linear"}]
        mods = [it.Linear(16, input_dim=20, act="relu", dtype=dtype), it.Linear(12, act="tanh", dtype=dtype),
                it.Linear(5, dtype=dtype)]
        shape = (3, 20)
    else:
        layers = [{"type": "conv", "W": rng.normal(size=(3, 3, 2, 4)) / 3, "b": rng.normal(size=4) * 0.1 * bias,
                   "stride": 1, "padding": "SAME", "act": "relu"},
                  {"type": "maxpool", "k": 2, "s": 2, "padding": "VALID"},
                  {"type": "conv", "W": rng.normal(size=(3, 3, 4, 6)) / 3, "b": rng.normal(size=6) * 0.1 * bias,
                   "stride": 2, "padding": "VALID", "act": "relu"},
                  {"type": "avgpool", "k": 2, "s": 1, "padding": "SAME"},
                  {"type": "flatten"},
                  {"type": "dense", "W": rng.normal(size=(24, 5)) / 3, "b": rng.normal(size=5) * 0.1 * bias, "act": "linear"}]
        mods = [it.Convolution(4, kernel_size=3, stride_size=1, act="relu", pad="SAME", dtype=dtype),
                it.MaxPool(2, 2, pad="VALID", dtype=dtype),
                it.Convolution(6, kernel_size=3, stride_size=2, act="relu", pad="VALID", dtype=dtype),
                it.AvgPool(2, 1, pad="SAME", dtype=dtype), it.Flatten(dtype=dtype), it.Linear(5, dtype=dtype)]
        shape = (3, 10, 10, 2)
    net = it.Sequential(mods, dtype=dtype)
    net.build(shape)
    weighted = [m for m in mods if isinstance(m, (it.Linear, it.Convolution))]
    for m, L in zip(weighted, [L for L in layers if "W" in L]):
        _set(m, L["W"], L["b"])
    return net, layers, shape


@pytest.mark.parametrize("var,param,kw", RULES, ids=IDS)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_random_networks(var, param, kw, kind, dtype):
    rng = np.random.default_rng(3)
    net, layers, shape = _random_net(kind, rng, dtype)
    x = rng.normal(size=shape)
    y = net.forward(x.astype(dtype))
    np.testing.assert_allclose(y, ref.network_forward(x, layers), rtol=1e-5, atol=1e-5)
    R = np.asarray(y, np.float64) * np.eye(5)[[0, 3, 4]]
    got = net.lrp(R.astype(dtype), var, param)
    want = ref.network_lrp(x, layers, R, var, **kw)
    assert rel_err(got, want) <= tol(dtype)


@pytest.mark.float64
@pytest.mark.parametrize("var,param", [("simple", None), ("epsilon", 1e-9), ("alphabeta", 2.0), ("alphabeta", 1.0),
                                       ("flat", None), ("ww", None)])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_conservation_without_bias(var, param, kind):
    if kind == "cnn" and var == "alphabeta" and param != 1.0:
        # alpha2-beta1 conserves only where a neuron has contributions of both signs; after a ReLU the
        # average pooling sees only positive ones and returns alpha * R (as in the LRP Toolbox)
        pytest.skip("alpha-beta with beta > 0 does not conserve through all-positive pooling windows")
    rng = np.random.default_rng(4)
    net, _, shape = _random_net(kind, rng, "float64", bias=False)
    if kind == "mlp":  # conservation needs activations that keep the sign (relu), not tanh
        net.modules[1].act_fn = ops.relu
    x = np.abs(rng.normal(size=shape))
    y = np.asarray(net.forward(x))
    R = y * np.eye(5)[[0, 3, 4]]
    got = np.asarray(net.lrp(R, var, param))
    np.testing.assert_allclose(got.reshape(3, -1).sum(1), R.sum(1), rtol=1e-6)


@pytest.mark.float64
def test_simple_equals_gradient_times_input_on_bias_free_relu_network():
    rng = np.random.default_rng(5)
    mods = [it.Linear(16, input_dim=10, act="relu", dtype="float64"), it.Linear(8, act="relu", dtype="float64"),
            it.Linear(4, dtype="float64")]
    net = it.Sequential(mods, dtype="float64")
    for m in mods:
        m.bias.assign(np.zeros(m.bias.shape))
    x = ops.convert_to_tensor(rng.normal(size=(6, 10)), dtype="float64")

    def selected(xs):
        y = net(xs[0])
        return ops.sum(y * ops.one_hot(ops.argmax(y, 1), 4, dtype=y.dtype))

    gxi = ops.convert_to_numpy(backend.vjp(selected, [x], ops.ones((), "float64"))[0] * x)
    out = ops.convert_to_numpy(net.forward(x))
    R = net.lrp(np.asarray(out) * np.eye(4)[np.argmax(out, 1)], "simple")
    np.testing.assert_allclose(R, gxi, rtol=1e-6, atol=1e-12)  # z-rule stabiliser: 1e-12 / |z|
    # the Keras path gives the same
    np.testing.assert_allclose(it.lrp(net, ops.convert_to_numpy(x), rule="simple"), gxi, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("var", ["simple", "epsilon", "alphabeta", "flat"])
def test_lrp_layerwise_reproduces_lrp(var):
    rng = np.random.default_rng(6)
    net, _, shape = _random_net("cnn", rng, "float32")
    x = rng.normal(size=shape).astype("float32")
    out = net.forward(x)
    R = out
    layerwise = []
    for layer in net.modules[::-1]:
        R = net.lrp_layerwise(layer, R, var)
        layerwise.append(R)
    assert layerwise[-1].shape == x.shape
    np.testing.assert_allclose(R, net.lrp(out, var), rtol=1e-5, atol=1e-6)


@pytest.mark.float64
def test_presets_apply_per_layer():
    rng = np.random.default_rng(7)
    net, layers, shape = _random_net("mlp", rng, "float64")
    x = rng.normal(size=shape)
    out = net.forward(x)
    R = np.asarray(out) * np.eye(5)[[1, 2, 0]]
    net.set_lrp_parameters("epsilon", 0.1)
    net.modules[0].set_lrp_parameters("alphabeta", 2.0)
    net.modules[2].set_lrp_parameters("flat")
    want = ref.network_lrp(x, layers, R, [("alphabeta", {"alpha": 2.0}), ("epsilon", {"epsilon": 0.1}),
                                          ("flat", {})])
    assert rel_err(net.lrp(R), want) <= 1e-8
    # a variant given to the call overrides the presets
    assert rel_err(net.lrp(R, "simple"), ref.network_lrp(x, layers, R, "simple")) <= 1e-8


@pytest.mark.float64
def test_stabilisers_keep_relevance_finite_for_zero_inputs_and_dead_units():
    net = it.Sequential([it.Linear(8, input_dim=6, act="relu"), it.Linear(3)])
    net.modules[0].kernel.assign(np.zeros((6, 8), "float32"))  # every unit dead
    x = np.zeros((2, 6), "float32")
    out = net.forward(x)
    for var in ["simple", "epsilon", "flat", "ww", "alphabeta"]:
        R = net.lrp(np.ones_like(out), var)
        assert np.all(np.isfinite(R)), var
        assert np.all(np.isfinite(it.lrp(net, x, rule=var if var != "alphabeta" else "alphabeta"))), var


@pytest.mark.float64
@pytest.mark.parametrize("rule", [it.rules.AlphaBeta(2, 1), it.rules.AlphaBeta(1, 0), it.rules.AlphaBeta(3, 1.5, bias=False),
                                  it.rules.ZPlus(), it.rules.Gamma(0.5), it.rules.Epsilon(0.1),
                                  it.rules.Epsilon(0.1, bias=False), it.rules.ZBox(0.0, 2.0), it.rules.Flat()])
def test_non_negative_input_shortcuts_equal_the_full_rule(rule):
    """The engine's shortcuts for inputs known to be >= 0 (skipped terms, weights split by linearity,
    reused pre-activation) give exactly the rule's full computation."""
    from interprettensor.engine.linear import LinearMap, linear_relevance

    rng = np.random.default_rng(8)
    def f64(a):
        return ops.convert_to_tensor(a, dtype="float64")

    x = f64(np.abs(rng.normal(size=(3, 7, 7, 4))))
    W, b = f64(rng.normal(size=(3, 3, 4, 5))), f64(rng.normal(size=5))
    lm = LinearMap(lambda xs, p: ops.conv(xs[0], p["kernel"], 1, "same") + p.get("bias", 0.0),
                   {"kernel": W, "bias": b})
    z = lm([x])
    R = f64(rng.normal(size=tuple(z.shape)))
    fast = linear_relevance(lm, [x], R, rule, z=z, nonneg=True)[0]
    full = linear_relevance(lm, [x], R, rule, z=None, nonneg=False)[0]
    np.testing.assert_allclose(ops.convert_to_numpy(fast), ops.convert_to_numpy(full), rtol=1e-9, atol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("var,param,kw", RULES, ids=IDS)
def test_toolbox_presets_equal_the_sequential_api(var, param, kw):
    """``it.lrp(model, x, rule='toolbox_<variant>')`` applies the variant to every layer, pooling
    included, exactly as ``Sequential.lrp`` does."""
    rng = np.random.default_rng(9)
    net, _, shape = _random_net("cnn", rng, "float64")
    x = rng.normal(size=shape)
    out = np.asarray(net.forward(x))
    R0 = out * np.eye(5)[out.argmax(1)]
    want = net.lrp(R0, var, param)
    got = it.lrp(net, x, rule=f"toolbox_{var}", **kw)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
