"""LRP for SimpleRNN, LSTM, GRU and Bidirectional (Arras et al. 2017) against the numpy reference of
tests/reference_rnn.py, in float64: epsilon and the z-rule, masking, return_sequences, go_backwards,
stacking, conservation, and the refusals (stateful, custom cells, Bidirectional 'mul')."""

import keras
import numpy as np
import pytest
import reference_rnn as ref

import interprettensor as it
from interprettensor.engine.operation_rules import CellRule

L = keras.layers
pytestmark = pytest.mark.usefixtures("float64")

T, F, U, B = 6, 3, 4, 3
RTOL = 1e-5


def _layer(kind, reset_after=True, **kw):
    if kind == "simple":
        return L.SimpleRNN(U, **kw)
    if kind == "lstm":
        return L.LSTM(U, **kw)
    return L.GRU(U, reset_after=reset_after, **kw)


def _randomize(layer, scale=0.6):
    rng = np.random.default_rng(7)
    layer.set_weights([rng.normal(scale=scale, size=w.shape) for w in layer.get_weights()])


def _inputs(masked=False):
    x = np.random.default_rng(3).normal(size=(B, T, F))
    mask = np.ones((B, T), bool)
    if masked:
        mask[0, 4:] = False   # padding at the end
        mask[1, :2] = False   # padding at the start
        mask[2, 3] = False    # a gap
        x[~mask] = 0.0
    return x, mask


def _close(got, want, rtol=RTOL):
    got, want = np.asarray(got), np.asarray(want)
    scale = np.abs(want).max()
    err = np.abs(got - want).max() / scale
    print(f"max relative error {err:.3g}")
    assert err < rtol, f"max relative error {err:.3g}"
    return err


def _model(rnn, masked):
    inp = keras.Input((T, F))
    h = L.Masking(0.0)(inp) if masked else inp
    return keras.Model(inp, rnn(h))


KINDS = [("simple", True), ("lstm", True), ("gru", True), ("gru", False)]


@pytest.mark.parametrize("kind,reset_after", KINDS, ids=["simple", "lstm", "gru", "gru_reset_before"])
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_last_output_matches_reference(kind, reset_after, masked, go_backwards):
    rnn = _layer(kind, reset_after, go_backwards=go_backwards)
    model = _model(rnn, masked)
    _randomize(rnn)
    x, mask = _inputs(masked)
    target = 1
    for rule, eps in (("epsilon", 0.01), ("simple", 0.0)):
        params = {"epsilon": eps} if rule == "epsilon" else {}
        R, y = it.Explainer(model, rule=rule, dtype="float64", **params)(x, target, return_output=True)
        R = np.asarray(R)
        want = []
        for n in range(B):
            outs, _ = ref.rnn_lrp(kind, rnn, x[n], None if False else np.zeros(U), eps,
                                  mask[n] if masked else None, reset_after)
            R0 = np.eye(U)[target] * outs[-1]
            _, Rx = ref.rnn_lrp(kind, rnn, x[n], R0, eps, mask[n] if masked else None, reset_after)
            want.append(Rx)
            np.testing.assert_allclose(np.asarray(y)[n], outs[-1], rtol=1e-10, atol=1e-12)
        _close(R, np.array(want))
        if masked:
            assert np.all(R[~mask] == 0.0), "padding steps must get exactly zero relevance"


@pytest.mark.parametrize("kind,reset_after", KINDS, ids=["simple", "lstm", "gru", "gru_reset_before"])
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_sequence_outputs_with_custom_start(kind, reset_after, masked):
    """return_sequences: a relevance at every output step (custom ``relevance=``), and a class at the
    last step (``position=-1``)."""
    rnn = _layer(kind, reset_after, return_sequences=True)
    model = _model(rnn, masked)
    _randomize(rnn)
    x, mask = _inputs(masked)
    R0 = np.random.default_rng(5).normal(size=(B, T, U))
    R = np.asarray(it.lrp(model, x, rule="epsilon", epsilon=0.01, relevance=R0, dtype="float64"))
    want = [ref.rnn_lrp(kind, rnn, x[n], R0[n], 0.01, mask[n] if masked else None, reset_after)[1] for n in range(B)]
    _close(R, np.array(want))
    R = np.asarray(it.lrp(model, x, rule="simple", target=2, position=-1, dtype="float64"))
    want = []
    for n in range(B):
        outs, _ = ref.rnn_lrp(kind, rnn, x[n], np.zeros((T, U)), 0.0, mask[n] if masked else None, reset_after)
        start = np.zeros((T, U))
        start[-1, 2] = outs[-1, 2]
        want.append(ref.rnn_lrp(kind, rnn, x[n], start, 0.0, mask[n] if masked else None, reset_after)[1])
    _close(R, np.array(want))


def test_embedding_mask_zero_per_token():
    """Token ids with ``Embedding(mask_zero=True)``: one relevance per token, zero at padding, equal to
    the reference's relevance of the embedded vectors summed over the features (Sequential model: the
    mask travels on the tensor)."""
    ids = np.array([[3, 4, 1, 2, 0, 0], [5, 1, 2, 3, 4, 6], [0, 0, 7, 2, 2, 1]])
    emb = L.Embedding(8, F, mask_zero=True)
    rnn = L.LSTM(U)
    model = keras.Sequential([keras.Input((T,), dtype="int32"), emb, rnn])
    _randomize(rnn)
    R = np.asarray(it.lrp(model, ids, rule="epsilon", epsilon=0.01, target=0, dtype="float64"))
    E = np.asarray(emb.embeddings)
    want = []
    for n in range(3):
        x = E[ids[n]]
        outs, _ = ref.rnn_lrp("lstm", rnn, x, np.zeros(U), 0.01, ids[n] != 0)
        want.append(ref.rnn_lrp("lstm", rnn, x, np.eye(U)[0] * outs[-1], 0.01, ids[n] != 0)[1].sum(-1))
    assert R.shape == ids.shape
    _close(R, np.array(want))
    assert np.all(R[ids == 0] == 0.0)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave"])
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_bidirectional(merge_mode, masked):
    bi = L.Bidirectional(L.GRU(U), merge_mode=merge_mode)
    model = _model(bi, masked)
    _randomize(bi.forward_layer)
    _randomize(bi.backward_layer, 0.5)
    x, mask = _inputs(masked)
    eps, target = 0.01, 1
    R, y = it.Explainer(model, rule="epsilon", epsilon=eps, dtype="float64")(x, target, return_output=True)
    want = []
    for n in range(B):
        mk = mask[n] if masked else None
        yf = ref.rnn_lrp("gru", bi.forward_layer, x[n], np.zeros(U), eps, mk)[0][-1]
        yb = ref.rnn_lrp("gru", bi.backward_layer, x[n], np.zeros(U), eps, mk)[0][-1]
        if merge_mode == "concat":
            out = np.concatenate([yf, yb])
            R0 = np.eye(2 * U)[target] * out
            Rf, Rb = R0[:U], R0[U:]
        else:
            c = 1.0 if merge_mode == "sum" else 0.5
            out = c * (yf + yb)
            R0 = np.eye(U)[target] * out
            s = R0 / ref.stab(out, eps)
            Rf, Rb = c * yf * s, c * yb * s
        np.testing.assert_allclose(np.asarray(y)[n], out, rtol=1e-10, atol=1e-12)
        want.append(ref.rnn_lrp("gru", bi.forward_layer, x[n], Rf, eps, mk)[1]
                    + ref.rnn_lrp("gru", bi.backward_layer, x[n], Rb, eps, mk)[1])
    _close(R, np.array(want))


def test_bidirectional_sequences_in_sequential():
    """Bidirectional(return_sequences=True) inside a Sequential, explained per step (the backward
    direction's outputs are flipped back by Keras)."""
    bi = L.Bidirectional(L.LSTM(U, return_sequences=True))
    model = keras.Sequential([keras.Input((T, F)), bi])
    _randomize(bi.forward_layer)
    _randomize(bi.backward_layer, 0.5)
    x, _ = _inputs()
    R0 = np.random.default_rng(1).normal(size=(B, T, 2 * U))
    R = np.asarray(it.lrp(model, x, rule="epsilon", epsilon=0.01, relevance=R0, dtype="float64"))
    want = [ref.rnn_lrp("lstm", bi.forward_layer, x[n], R0[n, :, :U], 0.01)[1]
            + ref.rnn_lrp("lstm", bi.backward_layer, x[n], R0[n, ::-1, U:], 0.01)[1] for n in range(B)]
    _close(R, np.array(want))


@pytest.mark.parametrize("kind,reset_after", KINDS, ids=["simple", "lstm", "gru", "gru_reset_before"])
def test_conservation_bias_free_stacked(kind, reset_after):
    """Bias-free cells, epsilon = 0, zero initial state: the input relevance sums to the logit (two
    stacked recurrent layers, a masked input and a Dense head)."""
    inp = keras.Input((T, F))
    h = L.Masking(0.0)(inp)
    h = _layer(kind, reset_after, use_bias=False, return_sequences=True)(h)
    h = _layer(kind, reset_after, use_bias=False)(h)
    model = keras.Model(inp, L.Dense(3, use_bias=False)(h))
    x, mask = _inputs(masked=True)
    R, y = it.Explainer(model, rule="simple", dtype="float64")(x, return_output=True)
    R, y = np.asarray(R), np.asarray(y)
    np.testing.assert_allclose(R.sum(axis=(1, 2)), y.max(-1), rtol=1e-9, atol=1e-12)
    assert np.all(R[~mask] == 0.0)


def test_return_state():
    """The final states as outputs: their relevance enters the backward recurrence."""
    inp = keras.Input((T, F))
    rnn = L.LSTM(U, use_bias=False, return_state=True)
    o, _, cs = rnn(inp)
    model = keras.Model(inp, L.Dense(2, use_bias=False)(L.Concatenate()([o, cs])))
    x, _ = _inputs()
    R, y = it.Explainer(model, rule="simple", dtype="float64")(x, return_output=True)
    np.testing.assert_allclose(np.asarray(R).sum(axis=(1, 2)), np.asarray(y).max(-1), rtol=1e-9)


def test_refusals():
    x, _ = _inputs()
    inp = keras.Input((T, F), batch_size=B)
    model = keras.Model(inp, L.LSTM(U, stateful=True, name="my_stateful")(inp))
    with pytest.raises(it.ExplainError, match="my_stateful.*stateful=True"):
        it.lrp(model, x)

    class MyCell(L.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.units = self.state_size = U

        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], U))

        def call(self, x, states):
            h = keras.ops.matmul(x, self.w) + states[0]
            return h, [h]

    inp = keras.Input((T, F))
    model = keras.Model(inp, L.RNN(MyCell(), name="my_rnn")(inp))
    with pytest.raises(it.ExplainError, match="my_rnn.*MyCell"):
        it.lrp(model, x)
    inp = keras.Input((T, F))
    model = keras.Model(inp, L.Bidirectional(L.GRU(U), merge_mode="mul", name="my_bi")(inp))
    with pytest.raises(it.ExplainError, match="my_bi.*mul"):
        it.lrp(model, x)


def test_box_rule_is_not_applied_to_a_recurrent_first_layer():
    """epsilon_gamma_box's z^B bounds hold for x_t, not for the state h_{t-1}: a recurrent first layer
    gets the preset's rule for its kind, and z^B assigned to it by hand is an error."""
    import keras

    inp = keras.Input((5, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.LSTM(4, name="rec")(inp)))
    x = np.random.default_rng(0).random((2, 5, 3)).astype("float32")
    ex = it.Explainer(model, "epsilon_gamma_box", low=0.0, high=1.0)
    assert not isinstance(ex.rule_map()["rec"], it.rules.ZBox)
    assert np.isfinite(ex(x)).all()
    with pytest.raises(it.ExplainError, match="z\\^B"):
        it.Explainer(model, it.Composite(default="epsilon", name_map={"rec": it.rules.ZBox(0.0, 1.0)}))


# --------------------------------------------------------------------------- gate rules (Arras et al. 2019)
GATED = [("lstm", True), ("gru", True), ("gru", False)]
GATE_RULES = ["half", "proportional", "proportional_abs"]


@pytest.mark.parametrize("gates", GATE_RULES)
@pytest.mark.parametrize("kind,reset_after", GATED, ids=["lstm", "gru", "gru_reset_before"])
def test_gate_rules_match_reference(kind, reset_after, gates):
    """``gates=`` swaps the product rule of every gate ⊙ signal product: relevance at every output
    step, a masked input, against the numpy reference written from Arras et al. 2019's shares."""
    rnn = _layer(kind, reset_after, return_sequences=True)
    model = _model(rnn, True)
    _randomize(rnn)
    x, mask = _inputs(True)
    R0 = np.random.default_rng(5).normal(size=(B, T, U))
    ex = it.Explainer(model, rule="epsilon", epsilon=0.01, gates=gates, dtype="float64")
    assert ex.rule_map()[rnn.name] == CellRule(it.rules.Epsilon(0.01), gates)
    R = np.asarray(ex(x, relevance=R0))
    want = [ref.rnn_lrp(kind, rnn, x[n], R0[n], 0.01, mask[n], reset_after, gates=gates) for n in range(B)]
    _close(R, np.array([w[1] for w in want]))
    assert np.all(R[~mask] == 0.0)
    default = np.asarray(it.lrp(model, x, rule="epsilon", epsilon=0.01, relevance=R0, dtype="float64"))
    assert np.abs(default - R).max() > 1e-3 * np.abs(default).max(), "the gate rule must change the result"


@pytest.mark.parametrize("gates", GATE_RULES)
@pytest.mark.parametrize("kind,reset_after", GATED, ids=["lstm", "gru", "gru_reset_before"])
def test_gate_rules_conserve_bias_free(kind, reset_after, gates):
    """Every gate rule splits a product's relevance into shares summing to 1 and the gates' relevance
    goes on through their linear maps: bias-free stacked cells under the z-rule conserve."""
    inp = keras.Input((T, F))
    h = L.Masking(0.0)(inp)
    h = _layer(kind, reset_after, use_bias=False, return_sequences=True)(h)
    h = _layer(kind, reset_after, use_bias=False)(h)
    model = keras.Model(inp, L.Dense(3, use_bias=False)(h))
    x, mask = _inputs(masked=True)
    R, y = it.Explainer(model, rule="simple", gates=gates, dtype="float64")(x, return_output=True)
    R, y = np.asarray(R), np.asarray(y)
    np.testing.assert_allclose(R.sum(axis=(1, 2)), y.max(-1), rtol=1e-7, atol=1e-10)
    assert np.all(R[~mask] == 0.0)


def test_cell_rule_per_layer_and_bidirectional():
    """A CellRule given to one layer by name (Bidirectional LSTM, its two directions) equals the
    reference; the composite's other recurrent layer keeps signal-take-all."""
    inp = keras.Input((T, F))
    bi = L.Bidirectional(L.LSTM(U, return_sequences=True), name="bi")
    gru = L.GRU(U, name="plain")
    model = keras.Model(inp, gru(bi(inp)))
    for layer in (bi.forward_layer, bi.backward_layer, gru):
        _randomize(layer)
    x, _ = _inputs()
    comp = it.Composite(default=it.rules.Epsilon(0.01), name_map={"bi": CellRule(it.rules.Epsilon(0.01), "half")})
    ex = it.Explainer(model, comp, dtype="float64")
    assert isinstance(ex.rule_map()["plain"], it.rules.Epsilon)
    R = np.asarray(ex(x, target=1))
    want = []
    for n in range(B):
        fw = ref.rnn_lrp("lstm", bi.forward_layer, x[n], np.zeros((T, U)), 0.01)[0]
        bw = ref.rnn_lrp("lstm", bi.backward_layer, x[n], np.zeros((T, U)), 0.01)[0]
        seq = np.concatenate([fw, bw[::-1]], -1)
        outs, _ = ref.rnn_lrp("gru", gru, seq, np.zeros(U), 0.01)
        R_seq = ref.rnn_lrp("gru", gru, seq, np.eye(U)[1] * outs[-1], 0.01)[1]
        want.append(ref.rnn_lrp("lstm", bi.forward_layer, x[n], R_seq[:, :U], 0.01, gates="half")[1]
                    + ref.rnn_lrp("lstm", bi.backward_layer, x[n], R_seq[::-1, U:], 0.01, gates="half")[1])
    _close(R, np.array(want))


def test_proportional_rule_on_elementwise_gate():
    """The same rule objects on a Multiply outside a recurrent cell: ``a ⊙ σ(b)`` under
    'proportional' splits each element by the factors' values (numpy, epsilon rule)."""
    rng = np.random.default_rng(11)
    inp = keras.Input((5,))
    a = L.Dense(4, name="a")(inp)
    g = L.Dense(4, activation="sigmoid", name="g")(inp)
    out = L.Dense(3, name="out")(L.Multiply(name="mul")([a, g]))
    model = keras.Model(inp, out)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    x = rng.normal(size=(2, 5))
    eps = 0.01
    comp = it.Composite(default=it.rules.Epsilon(eps), layer_map={"gate": "proportional"}, merge="z")
    R = np.asarray(it.lrp(model, x, comp, target=0, dtype="float64"))
    Wa, ba, Wg, bg, Wo, bo = [np.asarray(w, np.float64) for w in model.get_weights()]
    za, zg = x @ Wa + ba, x @ Wg + bg
    av, gv = za, ref.sigmoid(zg)
    p = av * gv
    y = p @ Wo + bo
    Ry = np.zeros_like(y)
    Ry[:, 0] = y[:, 0]
    Rp = p * ((Ry / ref.stab(y, eps)) @ Wo.T)
    share = Rp / ref.stab(p, ref.TINY)
    d = ref.stab(av + gv, ref.TINY)
    Ra, Rg = av * gv * (av / d) * share, av * gv * (gv / d) * share
    want = x * ((Ra / ref.stab(za, eps)) @ Wa.T) + x * ((Rg / ref.stab(zg, eps)) @ Wg.T)
    _close(R, want)


def test_gate_rule_errors():
    inp = keras.Input((T, F))
    model = keras.Model(inp, L.Dense(2, name="head")(L.LSTM(U)(inp)))
    x, _ = _inputs()
    with pytest.raises(ValueError, match="gates must be a rule for products.*'epsilon'"):
        it.lrp(model, x, gates="epsilon")
    with pytest.raises(it.ExplainError, match="'head'.*CellRule applies to recurrent layers"):
        it.lrp(model, x, it.Composite(name_map={"head": CellRule("epsilon", "half")}))
    with pytest.raises(ValueError, match="gates=.*Composite"):
        it.lrp(model, x, it.Composite(), gates="half")
    # a contraction of two computed tensors cannot split by values
    q = keras.Input((3, 4))
    k = L.Dense(4)(q)
    scores = keras.ops.einsum("bqd,bkd->bqk", q, k)
    att = keras.Model(q, L.Dense(2)(L.Flatten()(scores)))
    with pytest.raises(it.ExplainError, match="contracts its factors.*'proportional'"):
        it.lrp(att, np.ones((1, 3, 4), "float32"), it.Composite(layer_map={"product": "proportional"}))


def test_cli_explains_recurrent_sequences(tmp_path, monkeypatch, capsys):
    """``interprettensor explain`` on a saved LSTM model and a ``.npy`` of sequences (N, T, C): one strip
    picture per sequence and the relevance of ``it.lrp`` in relevances.npz."""
    from interprettensor.apps.cli import main

    monkeypatch.chdir(tmp_path)
    model = keras.Sequential([keras.Input((T, F)), L.LSTM(U), L.Dense(2)])
    model.save("rnn.keras")
    x, _ = _inputs()
    np.save("s.npy", x.astype("float32"))
    assert main(["explain", "rnn.keras", "s.npy", "--out", "out", "-q"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"s_{i}_strip.png" for i in range(B)]
    with np.load(tmp_path / "out" / "relevances.npz") as z:
        got = z["relevance"]
    want = np.asarray(it.lrp(keras.models.load_model("rnn.keras"), x.astype("float32")))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_cli_gates_option_swaps_the_gate_rule(tmp_path, monkeypatch, capsys):
    """``explain --gates half`` gives ``it.lrp(..., gates='half')``, which differs from the default."""
    from interprettensor.apps.cli import main

    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((T, F)), L.LSTM(U), L.Dense(2)])
    model.save("rnn.keras")
    x = _inputs()[0].astype("float32")
    np.save("s.npy", x)
    assert main(["explain", "rnn.keras", "s.npy", "--out", "out", "-q", "--no-png", "--gates", "half"]) == 0, \
        capsys.readouterr().err
    with np.load(tmp_path / "out" / "relevances.npz") as z:
        got = z["relevance"]
    loaded = keras.models.load_model("rnn.keras")
    np.testing.assert_allclose(got, it.lrp(loaded, x, gates="half"), rtol=1e-4, atol=1e-6)
    assert np.abs(got - it.lrp(loaded, x)).max() > 1e-4
    with pytest.raises(SystemExit) as e:  # argparse: a usage error
        main(["explain", "rnn.keras", "s.npy", "--out", "out2", "-q", "--gates", "bogus"])
    assert e.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
