"""it.pruning: channels and heads removed by surgery, compared with the original model whose removed units are
zeroed where they are read (masking written here by hand on the original weights); criteria against numpy and an
independent gradient; parameter and FLOP counts by hand; arguments; saving."""

import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from interprettensor.analysis import pruning  # noqa: E402
from interprettensor.analysis.pruning import PruningError, count_flops, count_params  # noqa: E402

F64 = 2.0 ** -52


def _cnn(dtype="float64"):
    """Conv -> BN -> depthwise (x2) -> Conv -> ReLU -> MaxPool -> Flatten -> Dense -> Dense (output)."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((7, 7, 3), dtype=dtype)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1", dtype=dtype)(inp)
    h = keras.layers.BatchNormalization(name="bn", dtype=dtype)(h)
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw", dtype=dtype)(h)
    h = keras.layers.Conv2D(5, 1, name="c2", dtype=dtype)(h)
    h = keras.layers.ReLU(name="r", dtype=dtype)(h)
    h = keras.layers.MaxPooling2D(2, name="mp", dtype=dtype)(h)
    h = keras.layers.Flatten(name="f", dtype=dtype)(h)
    h = keras.layers.Dense(6, activation="relu", name="d1", dtype=dtype)(h)
    out = keras.layers.Dense(3, name="d2", dtype=dtype)(h)
    m = keras.Model(inp, out)
    rng = np.random.default_rng(2)
    m.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4),
                                   rng.uniform(0.5, 1.5, 4)])
    for name in ("c1", "dw", "c2", "d1", "d2"):  # non-zero biases: a removed channel's bias must not leak
        w = m.get_layer(name).get_weights()
        m.get_layer(name).set_weights([w[0], rng.normal(size=w[1].shape) * 0.3])
    return m


@pytest.fixture(scope="module")
def cnn():
    return _cnn()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(3).uniform(-1, 1, (5, 7, 7, 3))


def _masked(model, removed):
    """The original with the removed channels zeroed where they are read: the consumers' input weights of
    those channels set to zero (c1 is read by c2 through bn and the depthwise x2 expansion; c2 by d1 through
    the 2 x 2 x 5 flatten (5 x 5 max-pooled by 2); d1 by d2)."""
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    if removed.get("c1"):
        w = m.get_layer("c2").get_weights()
        for c in removed["c1"]:
            w[0][:, :, 2 * c:2 * c + 2, :] = 0.0
        m.get_layer("c2").set_weights(w)
    if removed.get("c2"):
        w = m.get_layer("d1").get_weights()
        rows = w[0].reshape(2, 2, 5, 6)
        for c in removed["c2"]:
            rows[:, :, c, :] = 0.0
        m.get_layer("d1").set_weights([rows.reshape(20, 6), w[1]])
    if removed.get("d1"):
        w = m.get_layer("d2").get_weights()
        w[0][removed["d1"], :] = 0.0
        m.get_layer("d2").set_weights(w)
    return m


def _hand_params(k1, k2, k3):
    """Parameters with k1, k2, k3 channels left in c1, c2, d1 (kernel + bias of each layer)."""
    return ((27 * k1 + k1) + 4 * k1 + (9 * 2 * k1 + 2 * k1) + (2 * k1 * k2 + k2) + (4 * k2 * k3 + k3)
            + (k3 * 3 + 3))


def test_surgery_equals_masking(cnn, x):
    new, report = pruning.prune(cnn, amount=0.4, criterion="magnitude")
    assert report.n_removed == round(0.4 * 15)
    assert {k: len(v) for k, v in report.removed.items()} and report.skipped == {"d2": "a model output"}
    sizes = {name: int(new.get_layer(name).get_weights()[0].shape[-1]) for name in ("c1", "c2", "d1")}
    assert sizes == {k: report.sizes[k] - len(report.removed[k]) for k in sizes}
    assert new.get_layer("bn").get_weights()[0].shape == (sizes["c1"],)
    ref = _masked(cnn, report.removed).predict(x, verbose=0)
    got = new.predict(x, verbose=0)
    # float64; the longest sum is d1's 20 inputs (each a sum of 2 k1 1x1 inputs of 9-term depthwise sums)
    tol = F64 * (27 + 9 + 8 + 20 + 6) * max(1.0, np.abs(ref).max()) * 16
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    assert count_params(new) == _hand_params(*sizes.values()) == report.params_after
    assert count_params(cnn) == _hand_params(4, 5, 6) == report.params_before


def test_every_channel_layer_and_flatten_order(cnn, x):
    """Removing chosen channels of each layer (not the magnitude's choice): c2's channels 0 and 3 reach d1 only
    through every position of the flatten."""
    plan = pruning.plan(cnn)
    removed = {"c1": [1, 2], "c2": [0, 3], "d1": [5]}
    keep = {u.layer.name: np.setdiff1d(np.arange(u.size), removed[u.layer.name]) for u in plan.units}
    new = pruning.surgery.remove(cnn, plan, keep)
    ref = _masked(cnn, removed).predict(x, verbose=0)
    np.testing.assert_allclose(new.predict(x, verbose=0), ref, rtol=0,
                               atol=F64 * 70 * max(1.0, np.abs(ref).max()) * 16)
    assert count_params(new) == _hand_params(2, 3, 5)
    # a mistake in the flatten order (channel-major) would zero other rows: check that it differs
    wrong = _masked(cnn, {"c2": [1, 2]}).predict(x, verbose=0)
    assert not np.allclose(wrong, ref)


def test_count_flops_by_hand(cnn):
    # c1: 5x5x4 outputs, 27 MACs each; dw: 5x5x8 outputs, 9 each; c2: 5x5x5, 8 each; d1: 6 x 20; d2: 3 x 6
    macs = 100 * 27 + 200 * 9 + 125 * 8 + 6 * 20 + 3 * 6
    biases = 100 + 200 + 125 + 6 + 3
    assert count_flops(cnn) == 2 * macs + biases


def _mha_model(dtype="float64"):
    keras.utils.set_random_seed(4)
    t = keras.Input((6, 16), dtype=dtype)
    a = keras.layers.MultiHeadAttention(4, 3, value_dim=2, name="mha", dtype=dtype)(t, t)
    a = keras.layers.GlobalAveragePooling1D(name="gap", dtype=dtype)(a)
    out = keras.layers.Dense(3, name="out", dtype=dtype)(a)
    m = keras.Model(t, out)
    rng = np.random.default_rng(5)
    mha = m.get_layer("mha")
    mha.set_weights([rng.normal(size=w.shape) * 0.5 for w in mha.get_weights()])
    return m


def test_head_removal_equals_masking():
    m = _mha_model()
    x = np.random.default_rng(6).normal(size=(3, 6, 16))
    plan = pruning.plan(m, "head")
    assert [u.layer.name for u in plan.units] == ["mha"]
    new = pruning.surgery.remove(m, plan, {"mha": np.array([0, 2])}, unit="head")
    assert new.get_layer("mha")._num_heads == 2
    masked = keras.models.clone_model(m)
    masked.set_weights(m.get_weights())
    w = masked.get_layer("mha").get_weights()
    paths = [v.path for v in masked.get_layer("mha").weights]
    i = paths.index("mha/attention_output/kernel")
    w[i][[1, 3]] = 0.0  # heads 1 and 3 contribute nothing to the output projection
    masked.get_layer("mha").set_weights(w)
    ref = masked.predict(x, verbose=0)
    np.testing.assert_allclose(new.predict(x, verbose=0), ref, rtol=0,
                               atol=F64 * (16 + 6 + 6 + 8 + 16) * max(1.0, np.abs(ref).max()) * 16)
    # parameters: q, k (16x3 per head + 3), v (16x2 + 2), output (2x16 per head) + 16, dense 16x3 + 3
    per_head = 2 * (16 * 3 + 3) + (16 * 2 + 2) + 2 * 16
    assert count_params(new) == 2 * per_head + 16 + 51 and count_params(m) == 4 * per_head + 16 + 51


def test_head_criteria(tmp_path):
    import interprettensor as it

    m = _mha_model("float32")
    x = np.random.default_rng(7).normal(size=(4, 6, 16)).astype("float32")
    y = np.array([0, 1, 2, 0])
    raw, _ = pruning.scores(m, criterion="magnitude", unit="head")
    ws = {v.path: np.abs(np.asarray(v, dtype="float64")) for v in m.get_layer("mha").weights}
    ref = sum(ws[f"mha/{n}/kernel"].sum(axis=(0, 2)) for n in ("query", "key", "value"))
    ref = ref + ws["mha/attention_output/kernel"].sum(axis=(1, 2))
    np.testing.assert_array_equal(raw["mha"], ref)
    raw, _ = pruning.scores(m, x, y, criterion="lrp", unit="head", rule="epsilon")
    _, lw = it.lrp(m, x, rule="epsilon", target=y, layerwise=True)
    key = [k for k in lw if re.fullmatch(r"mha/dot_product_attention(_\d+)?", k)]  # numbered when traced twice
    assert len(key) == 1 and lw[key[0]].shape == (4, 6, 4, 2)  # (samples, positions, heads, value dim)
    np.testing.assert_allclose(raw["mha"], lw[key[0]].astype("float64").sum(axis=(0, 1, 3)), rtol=1e-6)
    new, report = pruning.prune(m, x, y, amount=0.5, criterion="lrp", unit="head", rule="epsilon")
    assert new.get_layer("mha")._num_heads == 2 and report.n_removed == 2
    assert report.flops_after < report.flops_before
    path = tmp_path / "heads.keras"
    new.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), new.predict(x, verbose=0),
                               rtol=0, atol=0)


@pytest.mark.float64  # float64 tolerances: skipped where Keras computes float64 in float32
def test_head_taylor_scores_from_finite_differences():
    """Taylor of head h = mean_n |dC_n/ds_h| / T for a gate s_h scaling the head's output, which is scaling the
    head's slice of the output kernel: a central difference of the per-sample cross-entropies (numpy) of the
    float64 model (no gradient of the code under test)."""
    m = _mha_model("float64")
    x = np.random.default_rng(13).normal(size=(5, 6, 16)).astype("float32")
    y = np.array([0, 1, 2, 0, 2])
    raw, _ = pruning.scores(m, x, y, criterion="taylor", unit="head", batch_size=3)  # two batches
    mha = m.get_layer("mha")
    i = [v.path for v in mha.weights].index("mha/attention_output/kernel")
    base = mha.get_weights()

    def losses(h, s):
        w = [v.copy() for v in base]
        w[i][h] *= s
        mha.set_weights(w)
        z = m.predict(x.astype("float64"), verbose=0).astype("float64")
        zmax = z.max(axis=1, keepdims=True)
        logp = z - zmax - np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))
        return -logp[np.arange(len(y)), y]

    d = 1e-5  # truncation ~d^2 |C'''| / 6, rounding ~2^-52 |C| / d: both about 1e-10 relative
    try:
        ref = np.array([np.abs((losses(h, 1 + d) - losses(h, 1 - d)) / (2 * d)).mean() / 6 for h in range(4)])
    finally:
        mha.set_weights(base)
    assert np.all(ref > 1e-6)  # every head matters: the comparison is not between zeros
    np.testing.assert_allclose(raw["mha"], ref, rtol=1e-7)
    assert isinstance(mha._output_dense, keras.layers.Layer)  # the hook is gone
    new, report = pruning.prune(m, x, y, amount=0.5, criterion="taylor", unit="head")
    assert new.get_layer("mha")._num_heads == 2
    assert sorted(report.removed["mha"]) == sorted(np.argsort(ref)[:2].tolist())


def test_magnitude_scores_are_l1_norms(cnn):
    raw, plan = pruning.scores(cnn, criterion="magnitude")
    for name in ("c1", "c2", "d1"):
        k = np.abs(cnn.get_layer(name).get_weights()[0])
        np.testing.assert_array_equal(raw[name], k.reshape(-1, k.shape[-1]).sum(axis=0))
    # global ranking of |s| / ||s||_2: the removed units are the lowest normalised ones, one kept per layer
    _, report = pruning.prune(cnn, amount=0.2, criterion="magnitude")
    allnorm = sorted((v / np.sqrt((raw[n] ** 2).sum()), n, i) for n in raw for i, v in enumerate(raw[n]))
    expect = {}
    for _, n, i in allnorm[:3]:
        expect.setdefault(n, []).append(i)
    assert {k: sorted(v) for k, v in report.removed.items() if v} == {k: sorted(v) for k, v in expect.items()}
    # per-layer ranking: round(0.4 * size) lowest of each layer (2 of 4, 2 of 5, 2 of 6)
    _, report = pruning.prune(cnn, amount=0.4, criterion="magnitude", ranking="layer")
    assert report.removed == {n: sorted(np.argsort(raw[n])[:k].tolist()) for n, k in (("c1", 2), ("c2", 2), ("d1", 2))}


@pytest.fixture(scope="module")
def cnn32():
    return _cnn("float32")


def test_taylor_scores_from_an_independent_gradient(cnn32):
    import tensorflow as tf

    x = np.random.default_rng(8).uniform(-1, 1, (4, 7, 7, 3)).astype("float32")
    y = np.array([0, 2, 1, 2])
    raw, _ = pruning.scores(cnn32, x, y, criterion="taylor")
    layers = cnn32.layers[1:]  # a chain: gradient by a tape over the layers called one by one
    for name in ("c1", "c2", "d1"):
        with tf.GradientTape() as tape:
            h = tf.constant(x)
            for layer in layers:
                h = layer(h, training=False)
                if layer.name == name:
                    a = h
                    tape.watch(a)
            loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y, h, from_logits=True))
        g = tape.gradient(loss, a).numpy().astype("float64")
        prod = a.numpy().astype("float64") * g
        ref = np.abs(prod.reshape(4, -1, prod.shape[-1]).mean(axis=1)).mean(axis=0)
        np.testing.assert_allclose(raw[name], ref, rtol=1e-4, atol=1e-7 * np.abs(ref).max())


def test_lrp_scores_sum_layerwise_relevance(cnn32):
    import interprettensor as it

    x = np.random.default_rng(9).uniform(0, 1, (4, 7, 7, 3)).astype("float32")
    y = np.array([1, 0, 2, 1])
    raw, _ = pruning.scores(cnn32, x, y, criterion="lrp", batch_size=3)  # two batches
    _, lw = it.lrp(cnn32, x, rule="epsilon_plus", target=y, layerwise=True)
    for name in ("c1", "c2", "d1"):
        r = lw[name].astype("float64")
        np.testing.assert_allclose(raw[name], r.reshape(-1, r.shape[-1]).sum(axis=0), rtol=1e-5,
                                   atol=1e-6 * np.abs(r).sum())


def test_amount_boundaries_and_bad_arguments(cnn, x):
    same, report = pruning.prune(cnn, amount=0.0, criterion="magnitude")
    assert report.n_removed == 0 and count_params(same) == count_params(cnn)
    np.testing.assert_array_equal(same.predict(x, verbose=0), cnn.predict(x, verbose=0))
    _, report = pruning.prune(cnn, amount=12 / 15, criterion="magnitude")  # 15 units, 3 layers keep one each
    assert report.n_removed == 12 and all(report.sizes[k] - len(v) == 1 for k, v in report.removed.items())
    with pytest.raises(PruningError, match="at most 12"):
        pruning.prune(cnn, amount=0.9, criterion="magnitude")
    for bad in (1.0, -0.1, "lots"):
        with pytest.raises(PruningError, match="amount must be a fraction"):
            pruning.prune(cnn, amount=bad, criterion="magnitude")
    with pytest.raises(PruningError, match="criterion must be one of"):
        pruning.prune(cnn, x, amount=0.3, criterion="weights")
    with pytest.raises(PruningError, match="unit must be one of"):
        pruning.prune(cnn, x, unit="neuron")
    with pytest.raises(PruningError, match="2 labels for 5"):
        pruning.prune(cnn, x, [0, 1], criterion="taylor")
    with pytest.raises(PruningError, match="labels in"):
        pruning.prune(cnn, x, [0, 1, 2, 3, 0], criterion="taylor")
    with pytest.raises(PruningError, match="not layers of the model"):
        pruning.prune(cnn, x, criterion="magnitude", layers=["nope"])
    with pytest.raises(PruningError, match="d2: a model output"):
        pruning.prune(cnn, x, criterion="magnitude", layers=["d2"])
    with pytest.raises(PruningError, match="no prunable heads"):
        pruning.prune(cnn, x, criterion="magnitude", unit="head")
    _, report = pruning.prune(cnn, amount=0.5, criterion="magnitude", layers=["c2"])
    assert list(report.sizes) == ["c2"] and len(report.removed["c2"]) == 3  # 2.5 rounds up


def _residual(dtype="float64"):
    """A residual stream of 4 channels: a -> (+ bn(c(b(a)))) -> relu -> (+ e(relu)) -> GAP -> Dense. The stream's
    channels come from a, c (through bn) and e; b and e read the stream, o reads its pooled end."""
    keras.utils.set_random_seed(14)
    inp = keras.Input((6, 6, 2), dtype=dtype)
    a = keras.layers.Conv2D(4, 3, padding="same", name="a", dtype=dtype)(inp)
    b = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="b", dtype=dtype)(a)
    c = keras.layers.Conv2D(4, 1, name="c", dtype=dtype)(b)
    c = keras.layers.BatchNormalization(name="bn", dtype=dtype)(c)
    s1 = keras.layers.ReLU(name="r1", dtype=dtype)(keras.layers.Add(name="add1", dtype=dtype)([a, c]))
    e = keras.layers.Conv2D(4, 1, name="e", dtype=dtype)(s1)
    s2 = keras.layers.Add(name="add2", dtype=dtype)([s1, e])
    out = keras.layers.Dense(2, name="o", dtype=dtype)(keras.layers.GlobalAveragePooling2D(name="gap", dtype=dtype)(s2))
    m = keras.Model(inp, out)
    rng = np.random.default_rng(15)
    m.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4),
                                   rng.uniform(0.5, 1.5, 4)])
    for name in ("a", "b", "c", "e", "o"):  # non-zero biases: a removed channel's bias must not leak
        w = m.get_layer(name).get_weights()
        m.get_layer(name).set_weights([w[0], rng.normal(size=w[1].shape) * 0.3])
    return m


@pytest.mark.float64  # float64 tolerances: skipped where Keras computes float64 in float32
def test_residual_stream_pruned_jointly_equals_masking():
    """Stream channels 1 and 3 removed from a, c (and bn), e at once equals the original with those channels
    zeroed where the stream is read (b's and e's input weights, o's rows), in float64; b's channel 0 as usual."""
    m = _residual()
    p = pruning.plan(m)
    assert [(u.layer.name, [g.name for g in u.group]) for u in p.units] == [("a", ["c", "e"]), ("b", [])]
    assert p.skipped == {"o": "a model output"}
    new = pruning.surgery.remove(m, p, {"a": np.array([0, 2]), "b": np.array([1, 2])})
    assert [new.get_layer(n).filters for n in ("a", "b", "c", "e")] == [2, 2, 2, 2]
    masked = keras.models.clone_model(m)
    masked.set_weights(m.get_weights())
    for name, axis in (("b", 2), ("e", 2), ("o", 0)):
        w = masked.get_layer(name).get_weights()
        idx = [slice(None)] * w[0].ndim
        idx[axis] = [1, 3]
        w[0][tuple(idx)] = 0.0
        masked.get_layer(name).set_weights(w)
    w = masked.get_layer("c").get_weights()
    w[0][:, :, 0, :] = 0.0  # b's channel 0, read by c
    masked.get_layer("c").set_weights(w)
    x = np.random.default_rng(16).normal(size=(3, 6, 6, 2))
    ref = masked.predict(x, verbose=0)
    # each output sums ~ 3*3*4 + 3*3*3 + 4 + 4 + 4 products in float64 chains of 6 layers
    np.testing.assert_allclose(new.predict(x, verbose=0), ref, rtol=0,
                               atol=F64 * 64 * 36 * max(1.0, np.abs(ref).max()))
    assert abs(ref - m.predict(x, verbose=0)).max() > 1e-3  # the removed channels mattered


@pytest.mark.float64  # float64 tolerances: skipped where Keras computes float64 in float32
def test_residual_group_taylor_from_finite_differences():
    """Taylor of stream channel j = mean_n |dC_n/ds_j| / 36 for a gate s_j scaling channel j of a, c and e's
    outputs at once (their kernels' and biases' channel j scaled): a float64 central difference (numpy loss)."""
    m = _residual()
    x = np.random.default_rng(18).uniform(-1, 1, (5, 6, 6, 2)).astype("float32")
    y = np.array([0, 1, 1, 0, 1])
    raw, _ = pruning.scores(m, x, y, criterion="taylor", batch_size=3)
    base = {n: m.get_layer(n).get_weights() for n in "ace"}

    def losses(j, s):
        for n in "ace":
            w = [v.copy() for v in base[n]]
            w[0][..., j] *= s
            w[1][j] *= s
            m.get_layer(n).set_weights(w)
        z = m.predict(x.astype("float64"), verbose=0).astype("float64")
        zmax = z.max(axis=1, keepdims=True)
        return -(z - zmax - np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))[np.arange(len(y)), y]

    d = 1e-5
    try:
        ref = np.array([np.abs((losses(j, 1 + d) - losses(j, 1 - d)) / (2 * d)).mean() / 36 for j in range(4)])
    finally:
        for n in "ace":
            m.get_layer(n).set_weights(base[n])
    assert np.all(ref > 1e-6)
    np.testing.assert_allclose(raw["a"], ref, rtol=1e-7)


def test_residual_group_scores_and_prune(tmp_path):
    m = _residual("float32")
    raw, _ = pruning.scores(m, criterion="magnitude")
    l1 = {n: np.abs(m.get_layer(n).get_weights()[0].astype("float64")).reshape(-1, 4).sum(axis=0) for n in "ace"}
    np.testing.assert_allclose(raw["a"], l1["a"] + l1["c"] + l1["e"], rtol=1e-12)
    x = np.random.default_rng(17).uniform(-1, 1, (4, 6, 6, 2)).astype("float32")
    y = np.array([0, 1, 1, 0])
    import interprettensor as it

    raw, _ = pruning.scores(m, x, y, criterion="lrp", rule="epsilon")
    _, lw = it.lrp(m, x, rule="epsilon", target=y, layerwise=True)
    ref = sum(lw[n].astype("float64").reshape(-1, 4).sum(axis=0) for n in ("a", "c", "e"))
    np.testing.assert_allclose(raw["a"], ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    new, report = pruning.prune(m, x, y, amount=0.5, criterion="taylor")
    assert report.groups == {"a": ["a", "c", "e"]} and "a (with c, e: residual sum)" in str(report)
    k = 4 - len(report.removed["a"])
    assert [new.get_layer(n).filters for n in ("a", "c", "e")] == [k] * 3
    path = tmp_path / "res.keras"
    new.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), new.predict(x, verbose=0),
                               rtol=0, atol=0)
    with pytest.raises(PruningError, match=r"name all of \['a', 'c', 'e'\]"):
        pruning.plan(m, layers=["a", "c"])
    # an operand from the model input: the stream cannot be pruned
    inp = keras.Input((5, 5, 2))
    h = keras.layers.Conv2D(2, 3, padding="same", name="h")(inp)
    s = keras.layers.Add(name="s")([inp, h])
    bad = keras.Model(inp, keras.layers.Dense(2, name="d")(keras.layers.Flatten()(s)))
    assert "with channels from the model input" in pruning.plan(bad).skipped["h"]


def test_sequential_and_saving(tmp_path):
    seq = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="s1"),
                            keras.layers.Flatten(), keras.layers.Dense(3, name="s2")])
    x = np.random.default_rng(11).uniform(size=(3, 5, 5, 1)).astype("float32")
    new, report = pruning.prune(seq, x, amount=0.5, criterion="taylor")
    assert isinstance(new, keras.Sequential) and new.get_layer("s1").filters == 2
    path = tmp_path / "pruned.keras"
    new.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), new.predict(x, verbose=0))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(PruningError, match="functional"):
        pruning.prune(Sub(), amount=0.3, criterion="magnitude")


def test_attention_flops_by_hand():
    m = _mha_model("float32")
    # 6 positions, model width 16, 4 heads of key 3 / value 2: q, k (16 -> 4x3), v (16 -> 4x2), scores 4x6x6x3,
    # weighted sum 4x6x6x2, output (4x2 -> 16); dense 16 -> 3
    macs = 6 * 16 * 12 * 2 + 6 * 16 * 8 + 4 * 36 * 3 + 4 * 36 * 2 + 6 * 8 * 16 + 16 * 3
    biases = 6 * 12 * 2 + 6 * 8 + 6 * 16 + 3
    assert count_flops(m) == 2 * macs + biases


def test_command_line(tmp_path, capsys, cnn32):
    from interprettensor.apps import cli

    model_path, data, labels = tmp_path / "m.keras", tmp_path / "ref.npy", tmp_path / "y.npy"
    cnn32.save(model_path)
    x = np.random.default_rng(12).uniform(0, 1, (6, 7, 7, 3)).astype("float32")
    np.save(data, x)
    np.save(labels, np.array([0, 1, 2, 0, 1, 2]))
    out = tmp_path / "p.keras"
    code = cli.main(["prune", str(model_path), str(data), "--labels", str(labels), "--amount", "0.4", "--criterion",
                     "lrp", "--out", str(out), "-q"])
    text = capsys.readouterr().out
    assert code == 0 and f"parameters {_hand_params(4, 5, 6)} ->" in text and "saved the pruned model" in text
    _, report = pruning.prune(cnn32, x, [0, 1, 2, 0, 1, 2], amount=0.4, criterion="lrp")
    pruned = keras.models.load_model(out)
    assert count_params(pruned) == report.params_after
    for name, idx in report.removed.items():  # the same channels as the API
        assert f"{name}: removed channels {', '.join(map(str, idx))}" in text or not idx

    def fails(*args, match):
        assert cli.main(list(args)) == 1
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, err

    fails("prune", str(model_path), "--criterion", "lrp", "--out", str(out), "-q", match="needs reference data")
    fails("prune", str(model_path), str(data), "--labels", str(labels), "--layers", "d2", "--out", str(out), "-q",
          match="d2: a model output")
    fails("prune", str(tmp_path / "none.keras"), str(data), "--out", str(out), "-q", match="does not exist")
    fails("prune", str(model_path), str(data), "--criterion", "magnitude", "--epsilon", "0.1", "--out", str(out),
          "-q", match="only apply to --criterion lrp")
    with pytest.raises(SystemExit):
        cli.main(["prune", str(model_path), str(data), "--amount", "1.5"])
    assert "fraction in [0, 1)" in capsys.readouterr().err
