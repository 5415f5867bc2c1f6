"""keras_hub's mixtures of experts (Mixtral, Qwen-MoE, Qwen3-MoE, gpt-oss) under AttnLRP and CP-LRP: the
top-k routing weights are gates held constant, the relevance of a block's output reaches each selected
expert by its share ``g_e z_e / Σ_e g_e z_e``; gpt-oss's attention sinks are softmax logits whose
relevance is dropped. Tiny models from configs (random weights)."""

from __future__ import annotations

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402
from keras import ops  # noqa: E402

import interprettensor as it  # noqa: E402
from interprettensor.engine.rule_algebra import TINY  # noqa: E402

L = keras.layers
M = keras_hub.models
pytestmark = pytest.mark.slow

from keras_hub.src.models.qwen3_moe.qwen3_moe_decoder import Qwen3SparseMoeBlock  # noqa: E402

SEQ, VOCAB, HIDDEN, EXPERTS, TOP_K = 8, 50, 16, 4, 2
_COMMON = dict(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=HIDDEN,
               num_experts=EXPERTS, top_k=TOP_K)


def _lm(kind: str) -> keras.Model:
    if kind == "mixtral":
        return M.MixtralCausalLM(backbone=M.MixtralBackbone(intermediate_dim=32, **_COMMON), preprocessor=None)
    if kind == "qwen_moe":
        b = M.QwenMoeBackbone(intermediate_dim=32, moe_intermediate_dim=8, shared_expert_intermediate_dim=16,
                              **_COMMON)
        return M.QwenMoeCausalLM(backbone=b, preprocessor=None)
    if kind == "qwen3_moe":
        b = M.Qwen3MoeBackbone(intermediate_dim=32, moe_intermediate_dim=8, head_dim=4, norm_top_k_prob=True,
                               **_COMMON)
        return M.Qwen3MoeCausalLM(backbone=b, preprocessor=None)
    b = M.GptOssBackbone(intermediate_dim=8, sliding_window=4, **_COMMON)  # layer 1: a window of 4 tokens
    return M.GptOssCausalLM(backbone=b, preprocessor=None)


def _tokens(seed: int, n: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {"token_ids": rng.integers(1, VOCAB, (n, SEQ)).astype("int32"),
            "padding_mask": np.ones((n, SEQ), "int32")}


@pytest.mark.parametrize("kind", ["mixtral", "qwen_moe", "qwen3_moe", "gpt_oss"])
def test_mixture_of_experts_language_models_explain_a_next_token_logit(kind):
    keras.utils.set_random_seed(3)
    model = _lm(kind)
    x = _tokens(4)
    pos = 5
    for rule in ("attnlrp", "cp_lrp"):
        r = it.lrp(model, x, rule=rule, position=pos, target=7)["token_ids"]
        assert r.shape == (2, SEQ) and np.isfinite(r).all()
        assert np.all(r[:, pos + 1:] == 0), "a causal model's later tokens cannot explain an earlier position"
        assert np.all(np.abs(r[:, : pos + 1]).sum(axis=1) > 0)


# ----------------------------------------------------------------------------- the rule, from its equation
def _silu(t):
    return t / (1.0 + np.exp(-t))


def _moe_reference(h, w_router, w_gate_up, w_out, top_k, start, gate_share):
    """LRP of ``y = Σ_e g_e z_e`` (Qwen3-MoE's block, float64 numpy) with the routing weights ``g`` held
    constant: ``R_{z_e} = g_e z_e / y · R_y`` (the sum's z-rule), then the expert ``z_e = W_o (u ⊙ silu(a))``
    with ``[a, u] = W_gu h``: the z-rule on each ``einsum``, and the product ``u ⊙ silu(a)`` split
    ``gate_share`` to the SiLU factor (AttnLRP's uniform rule: 1/2; CP-LRP's gate rule: 0). ``start``: the
    relevance of ``y``. Returns the relevance of ``h`` and an upper bound of the magnitudes summed
    (the same chain on absolute values)."""
    logits = h @ w_router
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    idx = np.argsort(-probs, axis=-1)[:, :top_k]
    top = np.take_along_axis(probs, idx, -1)
    top /= top.sum(-1, keepdims=True)  # norm_top_k_prob
    g = np.zeros_like(probs)
    np.put_along_axis(g, idx, top, -1)
    g = g.T  # (experts, tokens)
    gu = np.einsum("th,ehm->etm", h, w_gate_up)
    half = gu.shape[-1] // 2
    a, u = gu[..., :half], gu[..., half:]
    hid = u * _silu(a)
    z = np.einsum("eti,eih->eth", hid, w_out)
    w = z * g[:, :, None]
    y = w.sum(0)

    def stab(t):  # the stabiliser of the z-rule and of the product rules: t + TINY sign0(t)
        return t + TINY * np.where(t >= 0, 1.0, -1.0)

    def chain(absolute):
        f = np.abs if absolute else (lambda t: t)
        r_w = f(w) * f(start / stab(y))[None]                 # the sum over experts: z-rule
        r_z = f(w) * f(r_w / stab(w))                         # the constant gate: all to the expert's output
        r_hid = f(hid) * np.einsum("eih,eth->eti", f(w_out), f(r_z / stab(z)))
        r_prod = f(hid) * f(r_hid / stab(hid))                # u ⊙ silu(a), each factor's share of it
        r_gu = np.concatenate([gate_share * r_prod, (1 - gate_share) * r_prod], -1)  # [a (through SiLU), u]
        return f(h) * np.einsum("ehm,etm->th", f(w_gate_up), f(r_gu / stab(gu)))

    return chain(False), chain(True)


@pytest.mark.parametrize("rule, gate_share", [("attnlrp", 0.5), ("cp_lrp", 0.0)])
def test_moe_block_relevance_is_the_gated_sum_split_with_constant_routing(rule, gate_share):
    keras.utils.set_random_seed(6)
    inter = 8
    block = Qwen3SparseMoeBlock(hidden_dim=HIDDEN, moe_intermediate_dim=inter, num_experts=EXPERTS, top_k=TOP_K,
                                norm_top_k_prob=True, dtype="float64")
    # one sequence, its batch size fixed: the block reshapes to the batch size it reads from its input's
    # shape, which a graph traced for any batch size would hold as unknown (the tokens are the block's batch)
    inp = keras.Input(batch_shape=(1, SEQ, HIDDEN), dtype="float64")
    model = keras.Model(inp, block(inp)[0])
    x = np.random.default_rng(7).normal(size=(1, SEQ, HIDDEN))
    pos, unit = 4, 3
    got = it.lrp(model, x, rule=rule, position=pos, target=unit)
    y = np.asarray(model(x))
    start = np.zeros((SEQ, HIDDEN))
    start[pos, unit] = y[0, pos, unit]
    w_router = block._sparse_feedforward_gate_dense.kernel.numpy()
    w_gate_up = block.expert_bank._expert_feedforward_gate_dense.numpy()
    w_out = block.expert_bank._expert_feedforward_output_dense.numpy()
    want, bound = _moe_reference(x.reshape(-1, HIDDEN), w_router, w_gate_up, w_out, TOP_K, start, gate_share)
    want = want.reshape(1, SEQ, HIDDEN)
    # float64 rounding: eps per operation along the chain, times the terms summed (experts, expert units,
    # hidden units), times the largest magnitude the chain meets
    terms = EXPERTS + EXPERTS * 2 * inter + EXPERTS * HIDDEN
    np.testing.assert_allclose(got, want, rtol=0, atol=2.0**-52 * terms * bound.max())
    # the block treats each token on its own: only the explained token gets relevance
    others = np.delete(got, pos, axis=1)
    assert np.abs(want).sum() > 0 and np.all(others == 0)


# ----------------------------------------------------------------------------- gpt-oss's attention sinks
def _softmax_rule(x, r, axis=-1):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1) at the logits ``x``: ``x ⊙ (R − s Σ R)``."""
    s = np.exp(x - x.max(axis, keepdims=True))
    s /= s.sum(axis, keepdims=True)
    return x * (r - s * r.sum(axis, keepdims=True))


def test_attention_sinks_and_the_max_shift_give_the_softmax_rule_at_the_unshifted_logits():
    """gpt-oss's attention: ``softmax([x, sink] − stop_gradient(max))[..., :-1]`` (its operations, in a
    functional model, float64). The logits get the softmax rule at the unshifted logits (the shift by the
    row's maximum is invisible, as the softmax's value is); the sink column's relevance is dropped."""
    heads, b = 2, 2
    rng = np.random.default_rng(8)
    sink = rng.normal(size=heads) * 2.0
    scores = keras.Input(batch_shape=(b, heads, SEQ, SEQ), dtype="float64")
    sinks = ops.zeros_like(scores[..., :1]) + sink.reshape(1, heads, 1, 1)  # one sink logit per head and row
    combined = ops.concatenate([scores, sinks], axis=-1)
    shifted = combined - ops.stop_gradient(ops.max(combined, axis=-1, keepdims=True))
    probs = L.Softmax(axis=-1, dtype="float64")(shifted)
    model = keras.Model(scores, probs[..., :-1])
    x = rng.normal(size=(b, heads, SEQ, SEQ)) * 3.0
    x[..., 0, 0] = 0.5 + np.abs(x).max()  # a row whose maximum is a token, the others mostly the sink's
    r = rng.normal(size=(b, heads, SEQ, SEQ))
    explainer = it.Explainer(model, "attnlrp")
    got = explainer(x, relevance=r)
    full = np.concatenate([x, np.broadcast_to(sink.reshape(1, heads, 1, 1), (b, heads, SEQ, 1))], -1)
    r_full = np.concatenate([r, np.zeros((b, heads, SEQ, 1))], -1)  # the sink's probability is dropped: R = 0
    want = _softmax_rule(full, r_full)[..., :-1]
    # the z-rule at the subtraction d = x − m (stabiliser TINY) passes x_j / (d_j + TINY) of each share
    # R_in_j = d_j (R_j − p_j ΣR), and m / (d_j + TINY) of it returns through max to the row's maximum: each
    # differs from the ideal by |x_j or m| |R_j − p_j ΣR| TINY / |d_j|; float64 rounds sums of SEQ + 1 terms
    p = np.exp(full - full.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    share = np.abs(r_full - p * r_full.sum(-1, keepdims=True))
    d = full - full.max(-1, keepdims=True)
    inv_d = np.where(d == 0, 0.0, 1 / np.where(d == 0, 1, np.abs(d)))
    top = np.abs(full).max(-1, keepdims=True)
    stab = TINY * (np.abs(full) * inv_d * share + top * (inv_d * share).sum(-1, keepdims=True))[..., :-1]
    rounding = 2.0**-52 * (SEQ + 1) * top * 2 * np.abs(r).sum(-1, keepdims=True)
    np.testing.assert_array_less(np.abs(got - want), stab + rounding)
    assert np.abs(got[..., 0, 0]).max() > 0, "the row's maximum keeps its relevance"


# ----------------------------------------------------------------------------- Mixtral written by hand
def _rope_tables(seq: int, head_dim: int, wavelength: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """RoPE's cos and sin (Su et al. 2021) per position and feature, halves rotated together:
    ``(1, seq, 1, head_dim)``."""
    inv = wavelength ** -(np.arange(0, head_dim, 2, dtype="float32") / head_dim)
    freq = np.arange(seq, dtype="float32")[:, None] * inv[None, :]
    emb = np.concatenate([freq, freq], -1)[None, :, None, :]
    return np.cos(emb).astype("float32"), np.sin(emb).astype("float32")


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = ops.concatenate([ops.negative(x[..., half:]), x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _hand_written_mixtral(hub: keras.Model) -> keras.Model:
    """keras_hub's Mixtral causal LM as keras.layers and keras.ops, with its weights; each expert its own
    Dense layers (keras_hub stacks them in one einsum), the routing weights from top_k."""
    bb = hub.backbone
    heads, kv_heads, hidden = bb.num_query_heads, bb.num_key_value_heads, bb.hidden_dim
    head_dim = hidden // heads
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    pad = keras.Input((SEQ,), dtype="int32", name="padding_mask")
    emb = L.Embedding(VOCAB, hidden)
    x = emb(ids)
    copies = [(emb, [bb.token_embedding.embeddings.numpy()])]
    cos, sin = _rope_tables(SEQ, head_dim)
    causal = np.tril(np.ones((SEQ, SEQ), "int32"))[None]
    mask = ops.minimum(ops.expand_dims(pad, 1), causal)  # (batch, query, key); the window (512) covers all
    for block in bb.transformer_layers:
        att, moe = block._self_attention_layer, block._sparse_moe_block
        norm1 = L.RMSNormalization(epsilon=block.layer_norm_epsilon)
        q_d = L.EinsumDense("bqm,muh->bquh", output_shape=(SEQ, heads, head_dim))
        k_d = L.EinsumDense("bkm,mvh->bkvh", output_shape=(SEQ, kv_heads, head_dim))
        v_d = L.EinsumDense("bkm,mvh->bkvh", output_shape=(SEQ, kv_heads, head_dim))
        o_d = L.EinsumDense("bquh,uhm->bqm", output_shape=(SEQ, hidden))
        h = norm1(x)
        q, k, v = _rope(q_d(h), cos, sin), _rope(k_d(h), cos, sin), v_d(h)
        k, v = ops.repeat(k, heads // kv_heads, axis=2), ops.repeat(v, heads // kv_heads, axis=2)
        scores = ops.einsum("bquh,bkuh->buqk", q, k) * float(1.0 / np.sqrt(head_dim))
        probs = L.Softmax(axis=-1)(scores, mask=ops.expand_dims(mask, 1))
        x = x + o_d(ops.einsum("buqk,bkuh->bquh", probs, v))
        norm2 = L.RMSNormalization(epsilon=block.layer_norm_epsilon)
        t = ops.reshape(norm2(x), (-1, hidden))  # the tokens of the batch
        router = L.Dense(EXPERTS, use_bias=False)
        top_p, top_i = ops.top_k(L.Softmax()(router(t)), k=TOP_K)
        top_p = top_p / ops.sum(top_p, axis=-1, keepdims=True)
        routing = ops.sum(ops.one_hot(top_i, EXPERTS) * top_p[..., None], axis=1)  # (tokens, experts)
        bank = moe.expert_bank
        gate_w = bank._expert_feedforward_gate_dense.numpy()
        up_w = bank._expert_feedforward_intermediate_dense.numpy()
        out_w = bank._expert_feedforward_output_dense.numpy()
        outs = []
        for e in range(EXPERTS):
            gate = L.Dense(gate_w.shape[-1], use_bias=False, activation="silu")
            up = L.Dense(up_w.shape[-1], use_bias=False)
            down = L.Dense(hidden, use_bias=False)
            outs.append(down(L.Multiply()([up(t), gate(t)])) * routing[:, e:e + 1])
            copies += [(gate, [gate_w[e]]), (up, [up_w[e]]), (down, [out_w[e]])]
        x = x + ops.reshape(L.Add()(outs), (-1, SEQ, hidden))
        copies += [(norm1, [block._self_attention_layernorm.scale.numpy()]),
                   (q_d, [att.query_dense.kernel.numpy()]), (k_d, [att.key_dense.kernel.numpy()]),
                   (v_d, [att.value_dense.kernel.numpy()]), (o_d, [att.output_dense.kernel.numpy()]),
                   (norm2, [block._feedforward_layernorm.scale.numpy()]),
                   (router, [moe._sparse_feedforward_gate_dense.kernel.numpy()])]
    norm = L.RMSNormalization(epsilon=bb.layer_norm_epsilon)
    head = L.Dense(VOCAB, use_bias=False)
    model = keras.Model([ids, pad], head(norm(x)))
    copies += [(norm, [bb.layer_norm.scale.numpy()]), (head, [bb.token_embedding.reverse_embeddings.numpy()])]
    for layer, weights in copies:
        layer.set_weights(weights)
    return model


def test_keras_hub_mixtral_equals_mixtral_written_by_hand():
    keras.utils.set_random_seed(9)
    hub = _lm("mixtral")
    hand = _hand_written_mixtral(hub)
    x = _tokens(10)
    x["padding_mask"][1, -2:] = 0
    args = [x["token_ids"], x["padding_mask"]]
    out_hub, out_hand = np.asarray(hub(x)), np.asarray(hand(args))
    np.testing.assert_allclose(out_hand, out_hub, rtol=0, atol=2.0**-23 * HIDDEN * 8 * np.abs(out_hub).max())
    # epsilon = the z-rule's stabiliser: keras_hub's experts are einsums with constant weights (the rule of
    # linear operations, z), the hand-written ones Dense layers (epsilon): one equation then
    for rule in ("attnlrp", "cp_lrp"):
        got = it.lrp(hub, x, rule=rule, position=5, target=7, epsilon=TINY)["token_ids"]
        want = it.lrp(hand, args, rule=rule, position=5, target=7, epsilon=TINY)[0]
        # float32 rounding: eps times the lengths of the sums along the chain (per layer: q/k/v and output
        # projections, scores, softmax, A·V, the experts' three projections, the experts' sum, residuals;
        # then the head), times the largest relevance
        chain = 2 * (4 * HIDDEN + HIDDEN // 4 + 2 * SEQ + 2 * HIDDEN + 32 + EXPERTS + 2) + HIDDEN
        np.testing.assert_allclose(got, want, rtol=0, atol=2.0**-23 * chain * np.abs(want).max())
        assert np.abs(want[:, :6]).sum() > 0 and np.all(want[:, 6:] == 0)
