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
from interprettensor.engine.handlers import ElementwiseHandler  # noqa: E402
from interprettensor.engine.rule_algebra import TINY  # noqa: E402

L = keras.layers
M = keras_hub.models
pytestmark = pytest.mark.slow

# the RMS normalisations of these models have no handler on this branch (another branch recognises norms
# generically): relevance passes them, as for keras_hub's QwenLayerNorm
from keras_hub.src.models.gpt_oss.gpt_oss_layer_norm import GptOssLayerNormalization  # noqa: E402
from keras_hub.src.models.mixtral.mixtral_layer_norm import MixtralLayerNormalization  # noqa: E402
from keras_hub.src.models.qwen3_moe.qwen3_moe_decoder import Qwen3SparseMoeBlock  # noqa: E402
from keras_hub.src.models.qwen3_moe.qwen3_moe_layernorm import Qwen3MoeLayerNorm  # noqa: E402
from keras_hub.src.models.qwen_moe.qwen_moe_layernorm import QwenMoeLayerNorm  # noqa: E402

for _norm in (MixtralLayerNormalization, QwenMoeLayerNorm, Qwen3MoeLayerNorm, GptOssLayerNormalization):
    it.register_handler(_norm, ElementwiseHandler())

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
    want = _softmax_rule(full, np.concatenate([r, np.zeros((b, heads, SEQ, 1))], -1))[..., :-1]
    # the z-rule at the subtraction x − m (stabiliser TINY) gives x_j/(d_j + TINY) of each share
    # R_in_j = d_j (R_j − s_j ΣR), d = x − m; the rest, through max, returns to the row's maximum:
    # each share differs from the ideal by |x_j R_in_j| TINY / d_j², and float64 rounds sums of SEQ + 1 terms
    d = full - full.max(-1, keepdims=True)
    share = np.abs(_softmax_rule(full, np.concatenate([r, np.zeros((b, heads, SEQ, 1))], -1)) / np.where(d == 0, 1, full))
    inv_d = np.where(d == 0, 0.0, 1 / np.where(d == 0, 1, np.abs(d)))
    top = np.abs(full).max(-1, keepdims=True)
    stab = TINY * (np.abs(full) * inv_d * share + top * (inv_d * share).sum(-1, keepdims=True))[..., :-1]
    rounding = 2.0**-52 * (SEQ + 1) * np.abs(full).max() * 2 * np.abs(r).sum(-1, keepdims=True)
    np.testing.assert_array_less(np.abs(got - want), stab + rounding)
    assert np.abs(got[..., 0, 0]).max() > 0, "the row's maximum keeps its relevance"
