"""Transformers: the operation rules (softmax, uniform product, gate, layer normalisation, embeddings)
against numpy written from the AttnLRP / CP-LRP equations, conservation, Keras' attention layers on
both of their paths, masks, positions, and clear errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import interprettensor as it
from interprettensor.engine.errors import ExplainError

L = keras.layers
TINY = 1e-12


def stab(z: np.ndarray, eps: float = TINY) -> np.ndarray:
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1)


# ----------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7)])
def test_softmax_rule_matches_attnlrp_proposition(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32") * 2
    R = rng.normal(size=shape).astype("float32")
    inp = keras.Input(shape[1:])
    model = keras.Model(inp, L.Softmax()(inp))
    got = it.lrp(model, x, rule=it.Composite(layer_map={"softmax": "softmax"}), relevance=R, probability=True)
    s = softmax(x.astype("float64"))
    want = x * (R - s * R.sum(-1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_softmax_rule_gives_masked_positions_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 6)).astype("float32")
    mask = rng.random((2, 3, 6)) > 0.4
    mask[..., 0] = True
    R = rng.normal(size=x.shape).astype("float32")
    xi, mi = keras.Input((3, 6)), keras.Input((3, 6), dtype="bool")
    model = keras.Model([xi, mi], L.Softmax()(xi, mask=mi))
    ex = it.Explainer(model, it.Composite(layer_map={"softmax": "softmax"}), probability=True)
    got = ex([x, mask], relevance=R * mask)[0]
    s = np.where(mask, np.exp(x - np.where(mask, x, -np.inf).max(-1, keepdims=True)), 0.0)
    s = s / s.sum(-1, keepdims=True)
    Rm = R * mask
    want = np.where(mask, x * (Rm - s * Rm.sum(-1, keepdims=True)), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.all(got[~mask] == 0)


# ----------------------------------------------------------------------------- products
def _two_input_product(equation: str, sa: tuple, sb: tuple) -> keras.Model:
    a, b = keras.Input(sa), keras.Input(sb)
    return keras.Model([a, b], ops.einsum(equation, a, b))


def _uniform_rule_error_bound(a: np.ndarray, b: np.ndarray, R: np.ndarray, eps: float) -> tuple:
    """Rounding bounds of the uniform rule on ``z = einsum('bij,bjk->bik', a, b)`` computed in a float type
    of machine epsilon ``eps``: per element of ``Ra`` and ``Rb``, and for the conservation sum.

    The engine divides by its own ``z``, whose error is at most ``(J + 1) eps sum_j |a_ij b_jk|``, so the
    ratio ``s = R / z`` is off by ``eps |s| ((J + 1) c + 2)`` with ``c = sum_j |a_ij b_jk| / |z|`` (the
    condition of the product; large where ``z`` is near 0); the sums over ``k`` and ``i`` that give ``Ra``
    and ``Rb`` add ``(K + 1) eps`` and ``(I + 1) eps`` of the sum of their terms' magnitudes. Summed over
    both factors the ratio's error counts once per score: ``sum_ik ds_ik |z_ik|``, as the two halves of
    each score add up to ``z`` (the test sums in float64)."""
    a64, b64, R64 = a.astype("float64"), b.astype("float64"), R.astype("float64")
    J = a.shape[-1]
    z = np.einsum("bij,bjk->bik", a64, b64)
    c = np.einsum("bij,bjk->bik", np.abs(a64), np.abs(b64)) / np.abs(z)
    s = np.abs(R64 / z)
    ds = eps * s * ((J + 1) * c + 2)
    K, I = b.shape[-1], a.shape[-2]
    round_a = 0.5 * np.abs(a64) * (K + 1) * eps * np.einsum("bik,bjk->bij", s, np.abs(b64))
    round_b = 0.5 * np.abs(b64) * (I + 1) * eps * np.einsum("bik,bij->bjk", s, np.abs(a64))
    dRa = 0.5 * np.abs(a64) * np.einsum("bik,bjk->bij", ds, np.abs(b64)) + round_a
    dRb = 0.5 * np.abs(b64) * np.einsum("bik,bij->bjk", ds, np.abs(a64)) + round_b
    # summed over both factors, the ratio's error enters as sum_ik ds_ik |z_ik| (the halves add up to z)
    dsum = float((ds * np.abs(z)).sum() + round_a.sum() + round_b.sum())
    return dRa, dRb, dsum


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_rule_on_einsum_matches_numpy(dtype, request):
    """Seed 2 puts one score at |z| = 4e-4 (R / z about 2000 there): the halves of the conservation sum
    cancel, so the tolerance follows the data's condition (``_uniform_rule_error_bound``); in float64 the
    same bound is 2^29 times tighter."""
    if dtype == "float64":
        request.getfixturevalue("float64")
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 4, 3)).astype(dtype)
    b = rng.normal(size=(2, 3, 5)).astype(dtype)
    R = rng.normal(size=(2, 4, 5)).astype(dtype)
    model = _two_input_product("bij,bjk->bik", (4, 3), (3, 5))
    Ra, Rb = it.lrp(model, [a, b], rule="attnlrp", relevance=R)
    assert Ra.dtype == Rb.dtype == np.dtype(dtype)
    z = np.einsum("bij,bjk->bik", a.astype("float64"), b)
    s = R / stab(z)
    dRa, dRb, dsum = _uniform_rule_error_bound(a, b, R, float(np.finfo(dtype).eps))
    assert np.all(np.abs(Ra - 0.5 * a * np.einsum("bik,bjk->bij", s, b)) <= dRa)
    assert np.all(np.abs(Rb - 0.5 * b * np.einsum("bik,bij->bjk", s, a)) <= dRb)
    # a bilinear product conserves: each factor receives half of R * z / stab(z) (stab's 1e-12 is far
    # below the bound)
    assert abs(float(Ra.astype("float64").sum() + Rb.sum()) - float((R * z / stab(z)).sum())) <= dsum


def test_uniform_rule_on_matmul_and_multiply():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 4, 6)).astype("float32")
    b = rng.normal(size=(3, 6, 2)).astype("float32")
    ai, bi = keras.Input((4, 6)), keras.Input((6, 2))
    model = keras.Model([ai, bi], ops.matmul(ai, bi))
    R = rng.normal(size=(3, 4, 2)).astype("float32")
    Ra, Rb = it.lrp(model, [a, b], rule="attnlrp", relevance=R)
    s = R / stab(a.astype("float64") @ b)
    np.testing.assert_allclose(Ra, 0.5 * a * (s @ np.swapaxes(b, 1, 2)), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(Rb, 0.5 * b * (np.swapaxes(a, 1, 2) @ s), rtol=1e-3, atol=1e-5)
    # element-wise gated unit a * silu(b): half to each factor (AttnLRP), all to the signal (CP-LRP)
    x, g = rng.normal(size=(3, 5)).astype("float32"), rng.normal(size=(3, 5)).astype("float32")
    xi, gi = keras.Input((5,)), keras.Input((5,))
    glu = keras.Model([xi, gi], ops.multiply(xi, ops.silu(gi)))
    R = rng.normal(size=(3, 5)).astype("float32")
    Rx, Rg = it.lrp(glu, [x, g], rule="attnlrp", relevance=R)
    z = x * (g / (1 + np.exp(-g)))
    np.testing.assert_allclose(Rx, 0.5 * R * z / stab(z), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(Rg, 0.5 * R * z / stab(z), rtol=1e-4, atol=1e-6)
    Rx, Rg = it.lrp(glu, [x, g], rule="cp_lrp", relevance=R)
    np.testing.assert_allclose(Rx, R, rtol=1e-4, atol=1e-6)
    assert np.all(Rg == 0)


def test_product_of_a_tensor_with_itself_and_unequal_shares():
    """``x * x`` (one tensor as both factors): with the gate rule's shares the signal occurrence gets
    all of the relevance with the other occurrence held (``x ⊙ x ⊙ R / stab(x²)``, not twice that);
    under AttnLRP half to each occurrence, summed at ``x``. Shares that differ per factor each weigh
    their factor's relevance."""
    from interprettensor.engine.operation_rules import product_relevance

    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 5)).astype("float32")
    R = rng.normal(size=(3, 5)).astype("float32")
    x64 = x.astype("float64")
    want = R * x64 * x64 / stab(x64 * x64)
    xi = keras.Input((5,))
    for square in (ops.multiply(xi, xi), L.Multiply()([xi, xi])):
        for rule in ("attnlrp", "cp_lrp"):  # through the model: each occurrence of x takes its own value
            np.testing.assert_allclose(it.lrp(keras.Model(xi, square), x, rule=rule, relevance=R), want,
                                       rtol=1e-5, atol=1e-6, err_msg=rule)
    xt, Rt = ops.convert_to_tensor(x), ops.convert_to_tensor(R)
    Rx, held = product_relevance(lambda fs: fs[0] * fs[1], [xt, xt], xt * xt, Rt, [1.0, 0.0], 1e-12)
    assert held is None
    np.testing.assert_allclose(ops.convert_to_numpy(Rx), want, rtol=1e-5, atol=1e-6)
    a, b = rng.normal(size=(3, 5)).astype("float32"), rng.normal(size=(3, 5)).astype("float32")
    Ra, Rb = product_relevance(lambda fs: fs[0] * fs[1], [ops.convert_to_tensor(a), ops.convert_to_tensor(b)],
                               ops.convert_to_tensor(a * b), Rt, [0.25, 0.75], 1e-12)
    z = a.astype("float64") * b
    np.testing.assert_allclose(ops.convert_to_numpy(Ra), 0.25 * R * z / stab(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(Rb), 0.75 * R * z / stab(z), rtol=1e-5, atol=1e-6)


def test_gate_rule_holds_attention_weights_constant():
    """A·V under CP-LRP: the softmax output is a constant, V gets all the relevance by epsilon."""
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(2, 3, 4)).astype("float32")
    v = rng.normal(size=(2, 4, 5)).astype("float32")
    si, vi = keras.Input((3, 4)), keras.Input((4, 5))
    model = keras.Model([si, vi], ops.einsum("bts,bsh->bth", L.Softmax()(si), vi))
    R = rng.normal(size=(2, 3, 5)).astype("float32")
    Rs, Rv = it.lrp(model, [scores, v], rule="cp_lrp", relevance=R)
    A = softmax(scores.astype("float64"))
    z = np.einsum("bts,bsh->bth", A, v)
    np.testing.assert_allclose(Rv, v * np.einsum("bth,bts->bsh", R / stab(z), A), rtol=1e-3, atol=1e-5)
    assert np.all(Rs == 0)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("center", [True, False])
def test_layer_norm_is_linear_with_constant_std(center):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 8)).astype("float32") + 0.3
    inp = keras.Input((4, 8))
    ln = L.LayerNormalization(epsilon=1e-3, center=center)
    model = keras.Model(inp, ln(inp))
    ln.gamma.assign(rng.normal(size=8).astype("float32"))
    if center:
        ln.beta.assign(rng.normal(size=8).astype("float32") * 0.1)
    R = rng.normal(size=x.shape).astype("float32")
    got = it.lrp(model, x, rule="attnlrp", epsilon=0.01, relevance=R)
    x64 = x.astype("float64")
    mu, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    gamma = ln.gamma.numpy().astype("float64")
    beta = ln.beta.numpy().astype("float64") if center else 0.0
    y = (x64 - mu) / np.sqrt(var + 1e-3) * gamma + beta
    u = gamma / np.sqrt(var + 1e-3) * (R / stab(y, 0.01))  # J^T s with J = diag(gamma/sigma)(I - 11^T/N)
    want = x64 * (u - u.mean(-1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)
    if not center:  # bias-free: conserved up to the stabiliser
        np.testing.assert_allclose(got.sum(), (R * y / stab(y, 0.01)).sum(), rtol=1e-3)


def test_rms_normalization_passes_relevance():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3, 6)).astype("float32")
    inp = keras.Input((3, 6))
    model = keras.Model(inp, L.Dense(4)(L.RMSNormalization()(inp)))
    R, lw = it.lrp(model, x, rule="attnlrp", layerwise=True)
    name = next(k for k in lw if "rms_normalization" in k)
    np.testing.assert_allclose(R, lw[name], rtol=1e-6)


# ----------------------------------------------------------------------------- embeddings and blocks
def _encoder(vocab=30, seq=7, dim=8, heads=2, bias=True, dropout=0.0, causal=False, classes=3) -> keras.Model:
    ids = keras.Input((seq,), dtype="int32")
    tok = L.Embedding(vocab, dim, name="tokens")(ids)
    pos = L.Embedding(seq, dim, name="positions")(ops.zeros_like(ids) + ops.arange(seq))
    h = L.Add()([tok, pos])
    a = L.MultiHeadAttention(heads, dim // heads, use_bias=bias, dropout=dropout, name="mha")(
        h, h, use_causal_mask=causal)
    h = L.LayerNormalization(center=bias, name="ln1")(L.Add()([h, a]))
    f = L.Dense(2 * dim, activation="gelu", use_bias=bias)(h)
    f = L.Dense(dim, use_bias=bias)(f)
    h = L.LayerNormalization(center=bias, name="ln2")(h + f)
    out = L.Dense(classes, use_bias=bias)(ops.mean(h, axis=1))
    return keras.Model(ids, out)


def test_cp_lrp_conserves_on_bias_free_encoder():
    model = _encoder(bias=False)
    x = np.random.default_rng(7).integers(0, 30, (4, 7))
    R, lw, logits = it.Explainer(model, "cp_lrp", epsilon=0)(x, layerwise=True, return_output=True)
    assert R.shape == x.shape and np.isfinite(R).all()
    # the tokens' and the position embedding's shares add up to the logit
    positions = lw["positions"].sum((1, 2))
    np.testing.assert_allclose(R.sum(1) + positions, logits.max(1), rtol=1e-4, atol=1e-5)
    assert np.abs(positions).max() > 1e-3


def test_attnlrp_conserves_except_at_the_softmax():
    """Bias-free: everything conserves but the softmax rule, which changes the total by
    Σ x ⊙ (R − s ΣR) − Σ R at each softmax (AttnLRP, Prop. 3.1)."""
    model = _encoder(bias=False)
    x = np.random.default_rng(8).integers(0, 30, (3, 7))
    ex = it.Explainer(model, "attnlrp", epsilon=0)
    R, lw, logits = ex(x, layerwise=True, return_output=True)
    soft = next(s for s in ex.graph.steps if s.category == "softmax")
    scale = next(s for s in ex.graph.steps if s.outputs == soft.inputs[:1])
    lost = lw[soft.name].reshape(3, -1).sum(1) - lw[scale.name].reshape(3, -1).sum(1)
    positions = lw["positions"].sum((1, 2))
    np.testing.assert_allclose(R.sum(1) + positions, logits.max(1) - lost, rtol=1e-3, atol=1e-4)
    assert np.abs(lost).max() > 1e-4  # the softmax rule does change the total here


def test_token_relevance_is_embedding_relevance_summed():
    model = _encoder()
    x = np.random.default_rng(9).integers(0, 30, (2, 7))
    R, lw = it.lrp(model, x, rule="attnlrp", layerwise=True)
    np.testing.assert_allclose(R, lw["tokens"].sum(-1), rtol=1e-5, atol=1e-7)


def test_both_keras_attention_paths_agree():
    """MultiHeadAttention with dropout 0 takes the fused ops.dot_product_attention, with dropout > 0
    the explicit einsum path; at inference they compute the same, and so must their explanations."""
    fused, explicit = _encoder(dropout=0.0), _encoder(dropout=0.3)
    explicit.set_weights(fused.get_weights())
    names = lambda m: {s.type_name for s in it.Explainer(m, "attnlrp").graph.steps}
    assert "Einsum" in names(fused) and "Dropout" in names(explicit)
    x = np.random.default_rng(10).integers(0, 30, (3, 7))
    for rule in ("attnlrp", "cp_lrp"):
        np.testing.assert_allclose(it.lrp(fused, x, rule=rule), it.lrp(explicit, x, rule=rule), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
def test_causal_mask_and_position_give_no_relevance_to_later_tokens(rule):
    seq, vocab = 6, 12
    ids = keras.Input((seq,), dtype="int32")
    h = L.Embedding(vocab, 8)(ids)
    h = h + L.MultiHeadAttention(2, 4)(h, h, use_causal_mask=True)
    logits = L.Dense(vocab)(L.LayerNormalization()(h))
    model = keras.Model(ids, logits)
    x = np.random.default_rng(11).integers(0, vocab, (3, seq))
    for pos in (0, 2, -1):
        R = it.lrp(model, x, rule=rule, position=pos, target=5)
        p = pos % seq
        assert np.all(R[:, p + 1:] == 0) and np.abs(R[:, : p + 1]).sum() > 0
    logits_np = model.predict(x, verbose=0)
    R = it.Explainer(model, "cp_lrp", epsilon=0)(x, position=[1, 3, 5], target=[2, 4, 6])
    assert R.shape == x.shape and np.isfinite(R).all()
    del logits_np


def test_attention_mask_key_value_dims_and_grouped_heads():
    rng = np.random.default_rng(12)
    q_in, kv_in, m_in = keras.Input((5, 6)), keras.Input((4, 10)), keras.Input((5, 4), dtype="bool")
    a = L.MultiHeadAttention(3, key_dim=4, value_dim=7)(q_in, kv_in, attention_mask=m_in)
    g = L.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2)(a, a)
    model = keras.Model([q_in, kv_in, m_in], L.Dense(2)(ops.mean(g, axis=1)))
    q, kv = rng.normal(size=(2, 5, 6)).astype("float32"), rng.normal(size=(2, 4, 10)).astype("float32")
    mask = rng.random((2, 5, 4)) > 0.3
    mask[..., 0] = True
    for rule in ("attnlrp", "cp_lrp"):
        Rq, Rkv, Rm = it.lrp(model, [q, kv, mask], rule=rule)
        assert np.isfinite(Rq).all() and np.isfinite(Rkv).all() and np.all(Rm == 0)
        assert np.abs(Rkv).sum() > 0
    # a key position masked for every query receives no relevance through the attention
    mask2 = mask.copy()
    mask2[:, :, 3] = False
    Rq, Rkv, _ = it.lrp(model, [q, kv, mask2], rule="cp_lrp")
    assert np.all(Rkv[:, 3] == 0)


def test_keras_ops_in_a_functional_model():
    rng = np.random.default_rng(13)
    inp = keras.Input((4, 6))
    q, k, v = L.Dense(6, name="q")(inp), L.Dense(6, name="k")(inp), L.Dense(6, name="v")(inp)
    att = ops.softmax(ops.einsum("btd,bsd->bts", q, k) / 6 ** 0.5, axis=-1)
    h = ops.add(ops.matmul(att, v), inp)
    out = L.Dense(3)(ops.multiply(h, ops.sigmoid(L.Dense(6)(h)))[:, 0])
    model = keras.Model(inp, out)
    x = rng.normal(size=(3, 4, 6)).astype("float32")
    for rule in ("attnlrp", "cp_lrp"):
        R = it.lrp(model, x, rule=rule)
        assert R.shape == x.shape and np.isfinite(R).all() and np.abs(R).sum() > 0


def test_unsupported_operation_is_named():
    inp = keras.Input((5,))
    model = keras.Model(inp, L.Dense(2)(ops.sort(inp)))
    with pytest.raises(ExplainError, match="sort.*no LRP handler|no LRP handler.*Sort"):
        it.Explainer(model, "attnlrp")


def test_integer_inputs_must_be_integers():
    model = _encoder()
    with pytest.raises(ExplainError, match="integer"):
        it.lrp(model, np.full((1, 7), 1.5), rule="attnlrp")


def test_layerwise_relevance_of_a_traced_block_under_its_name():
    model = _encoder()
    x = np.random.default_rng(14).integers(0, 30, (2, 7))
    ex = it.Explainer(model, "attnlrp")
    _, lw = ex(x, layerwise=True)
    assert "mha" in lw and lw["mha"].shape == (2, 7, 8)
    inner = [s for s in ex.graph.steps if s.name.startswith("mha/")]
    assert inner and lw["mha"] is not None
    np.testing.assert_allclose(lw["mha"], lw[inner[-1].name])
    # a hidden block can also start the explanation
    assert it.lrp(model, x, rule="attnlrp", layer="mha", target=0).shape == x.shape


def test_fully_masked_rows_masked_pooling_and_rectangular_causal_mask():
    """Padding rows masked for every key (Keras' fused kernel then attends uniformly, its einsum path
    gives zeros), a masked average over tokens, and a causal mask between 3 queries and 5 keys: the
    explanation follows what the model computes (the forward check) and stays finite."""
    ids = keras.Input((6,), dtype="int32")
    valid = ops.not_equal(ids, 0)
    mask = ops.logical_and(ops.expand_dims(valid, 1), ops.expand_dims(valid, 2))
    h = L.Embedding(10, 8)(ids)
    pooled = [L.GlobalAveragePooling1D()(L.MultiHeadAttention(2, 4, dropout=d)(h, h, attention_mask=mask), mask=valid)
              for d in (0.0, 0.2)]
    model = keras.Model(ids, L.Dense(3)(L.Concatenate()(pooled)))
    x = np.array([[1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 1]])
    for rule in ("attnlrp", "cp_lrp"):
        R = it.lrp(model, x, rule=rule)
        assert np.isfinite(R).all() and np.all(R[0, 4:] == 0) and np.abs(R[0, :4]).sum() > 0
    q_in, kv_in = keras.Input((3, 4)), keras.Input((5, 4))
    rect = keras.Model([q_in, kv_in], L.Dense(2)(ops.mean(L.MultiHeadAttention(2, 2)(q_in, kv_in, use_causal_mask=True),
                                                          axis=1)))
    rng = np.random.default_rng(15)
    _, Rkv = it.lrp(rect, [rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))], rule="cp_lrp")
    assert np.all(Rkv[:, 3:] == 0), "query t sees keys s <= t"


def test_token_ids_beyond_the_vocabulary_are_named():
    model = _encoder(vocab=30)
    with pytest.raises(ExplainError, match="index 30.*'tokens'.*30 rows"):
        it.lrp(model, np.full((1, 7), 30), rule="attnlrp")
    with pytest.raises(ExplainError, match="index -1"):
        it.lrp(model, np.full((1, 7), -1), rule="attnlrp")


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
def test_compiled_with_xla_equals_the_plain_pass(rule):
    """``jit_compile=True`` (XLA fuses the element-wise steps; benchmarks/bench_transformer.py times it)
    computes the same relevance: each relevance here passes through about ten steps, each a sum of at
    most 16 products (hidden 8, feed-forward 16), and each float32 sum XLA makes in another order errs by
    at most 2^-24 of the magnitude summed."""
    model = _encoder(causal=True)
    x = np.random.default_rng(11).integers(0, 30, (4, 7))
    R, lw = it.Explainer(model, rule)(x, layerwise=True)
    Rj, lwj = it.Explainer(model, rule, jit_compile=True)(x, layerwise=True)
    tol = 2.0 ** -23 * 16 * 10
    np.testing.assert_allclose(Rj, R, rtol=0, atol=tol * np.abs(R).max())
    for name in ("tokens", "mha", "ln1"):
        np.testing.assert_allclose(lwj[name], lw[name], rtol=0, atol=tol * np.abs(lw[name]).max())
    assert np.abs(R[:, -1]).max() > 0 and np.isfinite(R).all()
