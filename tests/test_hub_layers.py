"""Layers recognised by what they compute, not by class: normalisations (the statistic held constant,
:mod:`interprettensor.engine.graph.statistics`), layer scales, drop paths, rotary tables, ALiBi, the
Fourier mixing of FNet; each against numpy written from its equation, and tiny keras_hub models of
the families that use them (Qwen 3, Phi-3, RoFormer v2, DINOv2, DINOv3, MiT, Bloom, FNet) under
``attnlrp`` and ``cp_lrp``."""

from __future__ import annotations

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402
from keras import ops  # noqa: E402

import interprettensor as it  # noqa: E402
from interprettensor.engine.errors import ExplainError  # noqa: E402
from interprettensor.engine.rules import Epsilon, Z  # noqa: E402

L = keras.layers
M = keras_hub.models
pytestmark = pytest.mark.slow
EPS = 1e-6  # the norms' own epsilon
U64, U32 = 2.0 ** -52, 2.0 ** -23
#: epsilon on layers with weights, the z-rule on fixed linear maps: every rule below is written out
COMPOSITE = dict(default=Epsilon(1e-7), merge=Z())


# ----------------------------------------------------------------------------- normalisations
class _Norm(keras.layers.Layer):
    """A normalisation written out in keras operations, in one of several spellings (no handler is
    registered for it: the engine traces it and recognises the statistic)."""

    def __init__(self, spelling, **kw):
        super().__init__(**kw)
        self.spelling = spelling

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer=keras.initializers.RandomUniform(0.5, 1.5))
        self.b = self.add_weight(shape=(shape[-1],), initializer=keras.initializers.RandomNormal(0, 0.1))

    def call(self, x):
        s = self.spelling
        if s == "rsqrt":
            return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + EPS) * self.w
        if s == "reciprocal_sqrt_one_plus_w":  # Gemma's (1 + w)
            return x * ops.reciprocal(ops.sqrt(ops.mean(ops.power(x, 2), axis=-1, keepdims=True) + EPS)) * (1 + self.w)
        if s == "power_half":
            return self.w * (x * ops.power(ops.mean(x * x, axis=-1, keepdims=True) + EPS, -0.5))
        if s == "divide_sqrt":
            return x / ops.sqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + EPS) * self.w
        if s == "l2":
            return x / ops.norm(x, axis=-1, keepdims=True)
        if s == "layer_norm":
            c = x - ops.mean(x, axis=-1, keepdims=True)
            return c * ops.rsqrt(ops.mean(ops.square(c), axis=-1, keepdims=True) + EPS) * self.w + self.b
        if s == "layer_norm_var":
            return (x - ops.mean(x, axis=-1, keepdims=True)) / ops.sqrt(ops.var(x, axis=-1, keepdims=True) + EPS) \
                * self.w + self.b
        raise ValueError(s)


def _norm_np(spelling, x, w, b):
    """The spellings' equations in float64."""
    ms = np.mean(x ** 2, -1, keepdims=True)
    if spelling in ("rsqrt", "power_half", "divide_sqrt"):
        return x / np.sqrt(ms + EPS) * w
    if spelling == "reciprocal_sqrt_one_plus_w":
        return x / np.sqrt(ms + EPS) * (1 + w)
    if spelling == "l2":
        return x / np.sqrt(np.sum(x ** 2, -1, keepdims=True))
    c = x - x.mean(-1, keepdims=True)
    return c / np.sqrt(np.mean(c ** 2, -1, keepdims=True) + EPS) * w + b


def _sandwich(norm, d=16, dtype="float64"):
    """Dense(d) -> norm -> Dense(3), named d1, norm, d2."""
    inp = keras.Input((d,), dtype=dtype)
    out = L.Dense(3, dtype=dtype, name="d2")(norm(L.Dense(d, dtype=dtype, name="d1")(inp)))
    return keras.Model(inp, out)


def _upper_relevance(model, x, y, target):
    """Relevance at the norm's output ``y`` by the epsilon rule of d2 (float64), and the size its rounding
    errors are relative to: each term ``|y_i W_ij s_j|`` times the condition of ``out_j`` (its
    denominator ``s_j = R_j / out_j`` inherits the rounding of the sum ``out_j``)."""
    W2, b2 = (v.astype("float64") for v in model.get_layer("d2").get_weights())
    out = y @ W2 + b2
    R_out = np.zeros_like(out)
    R_out[:, target] = out[:, target]
    s = R_out / (out + 1e-7 * np.where(out >= 0, 1, -1))
    cond = 1 + (np.abs(y) @ np.abs(W2) + np.abs(b2)) / np.abs(out)
    return y * (s @ W2.T), np.abs(y) * ((np.abs(s) * cond) @ np.abs(W2).T)


@pytest.mark.parametrize("spelling", ["rsqrt", "reciprocal_sqrt_one_plus_w", "power_half", "divide_sqrt", "l2"])
def test_rms_norm_in_any_spelling_passes_relevance(spelling):
    """x · s(x) with s = rsqrt(mean(x²) + ε) (or 1/‖x‖): the statistic held constant, the map is diagonal,
    relevance passes unchanged (AttnLRP Sec. 3.3, LXT's identity rule for RMSNorm)."""
    keras.utils.set_random_seed(0)
    norm = _Norm(spelling, dtype="float64", name="norm")
    model = _sandwich(norm)
    x = np.random.default_rng(0).normal(size=(2, 16))
    ex = it.Explainer(model, it.Composite(**COMPOSITE))
    _, lw = ex(x, target=1, layerwise=True)
    cats = [(s.type_name, s.category) for s in ex.graph.steps if s.name.startswith("norm/")]
    assert sum(c == "norm" for _, c in cats) == 1, cats  # the scaling by the statistic is recognised as a normalisation
    W1, b1 = model.get_layer("d1").get_weights()
    h = x @ W1 + b1
    w, b = (v.numpy() for v in (norm.w, norm.b))
    R_y, bound = _upper_relevance(model, x, _norm_np(spelling, h, w, b), 1)
    # the relevance at the norm's input (d1's output) is the relevance at its output
    np.testing.assert_array_less(np.abs(np.asarray(lw["d1"]) - R_y), 64 * U64 * bound + 1e-300)
    np.testing.assert_allclose(np.asarray(lw["d1"]), np.asarray(lw["norm"]), rtol=0, atol=64 * U64 * bound.max())


@pytest.mark.parametrize("spelling", ["layer_norm", "layer_norm_var"])
def test_layer_norm_written_out_is_linear_with_its_std_held(spelling):
    """(x − mean x) / sqrt(var + ε) · γ + β: the statistic held, the scale diagonal, the shift a constant,
    and the centring the z-rule of the linear map ``c = (I − 11ᵀ/n) x``:
    ``R_x = x ⊙ (I − 11ᵀ/n)(R_c / c)``."""
    keras.utils.set_random_seed(1)
    norm = _Norm(spelling, dtype="float64", name="norm")
    model = _sandwich(norm)
    x = np.random.default_rng(1).normal(size=(2, 16))
    ex = it.Explainer(model, it.Composite(**COMPOSITE))
    _, lw = ex(x, target=2, layerwise=True)
    W1, b1 = model.get_layer("d1").get_weights()
    h = x @ W1 + b1
    w, b = (v.numpy() for v in (norm.w, norm.b))
    R_c, bound = _upper_relevance(model, x, _norm_np(spelling, h, w, b), 2)
    m = h.mean(-1, keepdims=True)
    c = h - m
    g = R_c / c
    ref = h * (g - g.mean(-1, keepdims=True))
    # rounding (float64, 16 terms) and the z-rule's stabiliser 1e-12 at c and at the mean m
    scale = np.abs(h) * (np.abs(g) + np.abs(g).mean(-1, keepdims=True))
    tol = (64 * U64 * (1 + bound.max() / np.abs(R_c).max()) + 4e-12 / min(np.abs(c).min(), np.abs(m).min())) * scale.max()
    np.testing.assert_allclose(np.asarray(lw["d1"]), ref, rtol=0, atol=tol)


def test_a_function_of_each_element_is_not_a_statistic():
    """x · rsqrt(x² + ε) is sign(x), element-wise (no reduction): not a normalisation; the square of a
    computed tensor has no rule, and the error names it."""

    class Sign(keras.layers.Layer):
        def call(self, x):
            return x * ops.rsqrt(ops.square(x) + EPS)

    model = _sandwich(Sign(name="norm"), dtype="float32")
    with pytest.raises(ExplainError, match="norm/.*Square.*nonlinear operation|norm/.*Rsqrt.*nonlinear"):
        it.Explainer(model, "attnlrp")


def test_a_gate_computed_by_layers_is_not_a_statistic():
    """x · sigmoid(mean(x) W): a squeeze-and-excitation gate, not a normalisation; the gate keeps its rule
    (under cp_lrp the signal takes all: relevance at x equals relevance at the product)."""
    inp = keras.Input((4, 6))
    h = L.Dense(6, name="d1")(inp)
    gate = L.Dense(6, activation="sigmoid", name="gate")(ops.mean(h, axis=1, keepdims=True))
    model = keras.Model(inp, L.Dense(2, name="d2")(ops.sum(L.Multiply(name="prod")([h, gate]), axis=1)))
    ex = it.Explainer(model, "cp_lrp")
    assert all(s.category != "norm" for s in ex.graph.steps)
    assert ex.graph.find("prod").category == "gate"


# keras_hub's RMS norms, named in the class table (relevance passes) ...
_TABLE = [("keras_hub.src.layers.modeling.rms_normalization", "RMSNormalization", dict(input_dim=16)),
          ("keras_hub.src.models.llama.llama_layernorm", "LlamaLayerNorm", {}),
          ("keras_hub.src.models.qwen.qwen_layernorm", "QwenLayerNorm", {}),
          ("keras_hub.src.models.mistral.mistral_layer_norm", "MistralLayerNormalization", {}),
          ("keras_hub.src.models.gemma.rms_normalization", "RMSNormalization", {}),
          ("keras_hub.src.models.gemma3.gemma3_layers", "RMSNormalization", {})]
# ... and those named nowhere in the engine
_UNNAMED = [("keras_hub.src.models.qwen3.qwen3_layernorm", "Qwen3LayerNorm"),
            ("keras_hub.src.models.qwen_moe.qwen_moe_layernorm", "QwenMoeLayerNorm"),
            ("keras_hub.src.models.qwen3_moe.qwen3_moe_layernorm", "Qwen3MoeLayerNorm"),
            ("keras_hub.src.models.mixtral.mixtral_layer_norm", "MixtralLayerNormalization"),
            ("keras_hub.src.models.phi3.phi3_layernorm", "Phi3LayerNorm"),
            ("keras_hub.src.models.gpt_oss.gpt_oss_layer_norm", "GptOssLayerNormalization"),
            ("keras_hub.src.models.roformer_v2.roformer_v2_attention", "RoformerNorm"),
            ("keras_hub.src.models.gemma4.gemma4_layers", "RMSNormalization"),
            ("keras_hub.src.models.qwen3_5.qwen3_5_layers", "Qwen3_5LayerNorm"),
            ("keras_hub.src.models.t5.t5_layer_norm", "T5LayerNorm")]


def _hub_class(module, name):
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        pytest.skip(f"this keras_hub has no {module}.{name}")


def _scaled(norm):
    """The norm built with a random scale (keras_hub initialises it to ones or zeros)."""
    norm.build((None, 16))
    for v in norm.weights:
        v.assign(np.random.default_rng(5).uniform(0.5, 1.5, v.shape).astype(v.dtype))
    return norm


@pytest.mark.parametrize("module,name", _UNNAMED, ids=[n for _, n in _UNNAMED])
def test_keras_hub_norms_named_nowhere_pass_relevance(module, name):
    """Qwen 3's, Phi-3's, Mixtral's, RoFormer v2's, gpt-oss's, ... RMS norms are traced and recognised:
    relevance at the norm's input equals the relevance at its output (float32 rounding of the scale's
    element-wise product under the product rules)."""
    keras.utils.set_random_seed(2)
    norm = _scaled(_hub_class(module, name)(name="norm"))
    model = _sandwich(norm, dtype="float32")
    x = np.random.default_rng(2).normal(size=(2, 16)).astype("float32")
    for rule in ("attnlrp", "cp_lrp"):
        ex = it.Explainer(model, rule)
        _, lw = ex(x, target=0, layerwise=True)
        assert any(s.category == "norm" for s in ex.graph.steps if s.name.startswith("norm/")), name
        R_in, R_out = np.asarray(lw["d1"]), np.asarray(lw["norm"])
        # the scale's product z = h·w, R·z/(z + 1e-12 sign z) in float32: a few roundings per element
        np.testing.assert_allclose(R_in, R_out, rtol=8 * U32, atol=1e-30)


@pytest.mark.parametrize("module,name,kw", _TABLE, ids=[f"{m.split('.')[-2]}.{n}" for m, n, _ in _TABLE])
def test_generic_path_equals_the_class_table(module, name, kw):
    """A keras_hub norm that the class table names (relevance passes) and the same computation traced
    (a subclass whose ``call`` calls the parent's: the table does not serve it) explain alike."""
    cls = _hub_class(module, name)

    class Traced(cls):
        def call(self, x):
            return super().call(x)

    keras.utils.set_random_seed(3)
    a, b = _scaled(cls(**kw)), _scaled(Traced(**kw))
    m1, m2 = _sandwich(a, dtype="float32"), _sandwich(b, dtype="float32")
    m2.set_weights(m1.get_weights())
    x = np.random.default_rng(3).normal(size=(2, 16)).astype("float32")
    for rule in ("attnlrp", "cp_lrp"):
        e1, e2 = it.Explainer(m1, rule), it.Explainer(m2, rule)
        R1, R2 = e1(x, target=1), e2(x, target=1)
        assert [s.type_name for s in e1.graph.steps if s.name.startswith(a.name)] == [cls.__name__]
        inner = [s.category for s in e2.graph.steps if s.name.startswith(b.name + "/")]
        assert inner.count("norm") == 1 and len(inner) > 1  # traced into operations, the statistic recognised
        # the traced scale's product: a few float32 roundings per element, then d1's epsilon rule (16 terms)
        W1 = m1.get_layer("d1").get_weights()[0]
        z = x @ W1 + m1.get_layer("d1").get_weights()[1]
        _, lw = e1(x, target=1, layerwise=True)
        bound = np.abs(x) * ((np.abs(np.asarray(lw["d1"])) / np.abs(z)) @ np.abs(W1).T)
        np.testing.assert_array_less(np.abs(np.asarray(R1) - np.asarray(R2)), 64 * U32 * bound + 1e-30)


# ----------------------------------------------------------------------------- layer scale, drop path
@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
def test_layer_scale_is_a_diagonal_map(family):
    """DINOv2's and DINOv3's LayerScale ``x · γ`` (one weight, element-wise): traced into a product with a
    constant; under CP-LRP (gate: the signal takes all) relevance passes, ``R_x = x γ R / (x γ)``."""
    mod = __import__(f"keras_hub.src.models.{family}.{family}_layers", fromlist=["x"])
    ls = getattr(mod, f"{family.upper()}LayerScale")(hidden_dim=16, init_values=0.5, name="ls")
    model = _sandwich(_scaled(ls), dtype="float32")
    x = np.random.default_rng(4).normal(size=(2, 16)).astype("float32")
    _, lw = it.Explainer(model, "cp_lrp")(x, target=0, layerwise=True)
    np.testing.assert_allclose(np.asarray(lw["d1"]), np.asarray(lw["ls"]), rtol=8 * U32, atol=1e-30)


@pytest.mark.parametrize("where", ["mit", "dinov2"])
def test_drop_path_is_the_identity_at_inference(where):
    """MiT's DropPath and DINOv2's (rate 0.5): traced with ``training=False``, they return their input;
    the model explains as the one without them."""
    if where == "mit":
        from keras_hub.src.models.mit.mit_layers import DropPath
        layer = DropPath(0.5, name="dp")
    else:
        from keras_hub.src.models.dinov2.dinov2_layers import DINOV2DropPath
        layer = DINOV2DropPath(0.5, name="dp")
    keras.utils.set_random_seed(5)
    inp = keras.Input((16,))
    d1, d2 = L.Dense(16, name="d1"), L.Dense(3, name="d2")
    with_dp, without = keras.Model(inp, d2(layer(d1(inp)))), keras.Model(inp, d2(d1(inp)))
    x = np.random.default_rng(5).normal(size=(2, 16)).astype("float32")
    for rule in ("attnlrp", "cp_lrp"):
        np.testing.assert_array_equal(it.lrp(with_dp, x, rule=rule, target=1), it.lrp(without, x, rule=rule, target=1))


# ----------------------------------------------------------------------------- ALiBi, rotary tables
def test_alibi_shift_passes_relevance_into_the_softmax_rule():
    """Bloom's ALiBi adds ``m_h · (k − K + 1)`` (slopes ``m_h = 2^(−8h/H)``, Press et al. 2022) to the
    scores: a constant shift, which passes relevance unchanged (as additive masks do, and LXT's gradient
    through ``x + const``); AttnLRP's softmax rule sees the shifted logits
    ``R_x = x ⊙ (R − p Σ R)``."""
    from keras_hub.src.layers.modeling.alibi_bias import AlibiBias

    H, T = 4, 5
    s_in, v_in = keras.Input((H, T, T)), keras.Input((H, T, 3))
    p = L.Softmax(axis=-1, name="softmax")(AlibiBias(name="alibi")(s_in))
    out = L.Dense(2, name="d")(L.Flatten()(ops.einsum("bhts,bhsd->bhtd", p, v_in)))
    model = keras.Model([s_in, v_in], out)
    rng = np.random.default_rng(6)
    s, v = rng.normal(size=(2, H, T, T)).astype("float32"), rng.normal(size=(2, H, T, 3)).astype("float32")
    (R_s, _), lw = it.Explainer(model, "attnlrp")([s, v], target=0, layerwise=True)
    slopes = 2.0 ** (-8.0 * np.arange(1, H + 1) / H)
    x = s.astype("float64") + (slopes[:, None] * np.arange(1 - T, 1))[None, :, None, :]
    p_np = np.exp(x - x.max(-1, keepdims=True))
    p_np /= p_np.sum(-1, keepdims=True)
    R_p = np.asarray(lw["softmax"], "float64")
    ref = x * (R_p - p_np * R_p.sum(-1, keepdims=True))
    np.testing.assert_array_equal(np.asarray(R_s), np.asarray(lw["alibi"]))  # the shift passes it unchanged
    tol = 16 * U32 * (np.abs(x) * (np.abs(R_p) + p_np * np.abs(R_p).sum(-1, keepdims=True))).max()
    np.testing.assert_allclose(np.asarray(R_s), ref, rtol=0, atol=tol)


def test_dinov3_rotary_table_is_a_constant_and_its_rotation_linear():
    """DINOv3's RoPE layer computes cos/sin from the image's shape only: traced, it is a constant. The
    rotation that applies them, ``q·cos + rot(q)·sin`` with ``rot(q) = [−q₂, q₁]`` (keras_hub's own
    ``_apply_rotary``, traced), is explained as one linear map by the z-rule:
    ``R_q = q ⊙ (g·cos + rotᵀ(g·sin))``, ``g = R_z / z``, ``rotᵀ(u) = [u₂, −u₁]``."""
    from keras_hub.src.models.dinov3.dinov3_layers import DINOV3Attention, DINOV3RopePositionEmbedding

    class Rotary(keras.layers.Layer):
        def call(self, q, cos, sin):
            return DINOV3Attention._apply_rotary(self, q, q, cos, sin, 0)[0]

    img, q_in = keras.Input((16, 16, 3)), keras.Input((16, 2, 8))
    cos, sin = DINOV3RopePositionEmbedding(16, 2, 100.0, 4, name="rope")(img)
    z = Rotary(name="rot")(q_in, cos, sin)
    model = keras.Model([img, q_in], L.Dense(3, name="d")(L.Flatten()(z)))
    rng = np.random.default_rng(11)
    x_img, q = rng.random((2, 16, 16, 3)).astype("float32"), rng.normal(size=(2, 16, 2, 8)).astype("float32")
    ex = it.Explainer(model, it.Composite(**COMPOSITE))
    (R_img, R_q), lw = ex([x_img, q], target=0, layerwise=True)
    rope = ex.graph.find("rope")
    assert rope.category == "constant" and not rope.handler.depends_on_values and np.all(np.asarray(R_img) == 0)
    c, s_ = (np.asarray(t, "float64")[None, :, None, :] for t in DINOV3RopePositionEmbedding(16, 2, 100.0, 4)(x_img))
    q64 = q.astype("float64")
    z_np = q64 * c + np.concatenate([-q64[..., 4:], q64[..., :4]], -1) * s_
    g = np.asarray(lw["rot"], "float64") / z_np
    u = g * s_
    ref = q64 * (g * c + np.concatenate([u[..., 4:], -u[..., :4]], -1))
    tol = 16 * U32 * (np.abs(q64) * (np.abs(g) * (np.abs(c) + np.abs(s_)))).max()
    np.testing.assert_allclose(np.asarray(R_q), ref, rtol=0, atol=tol)


def test_roformer_rotation_of_queries_and_keys_is_linear():
    """RoFormer v2's rotary layer rotates queries and keys in one call (two outputs): one linear map, the
    z-rule on both outputs, ``R_t = t ⊙ (g·cos + Pᵀ(g·sin))`` per tensor with ``g = R / z`` and the pair
    rotation ``P t = [−t₁, t₀, −t₃, t₂, ...]``, ``Pᵀu = [u₁, −u₀, u₃, −u₂, ...]``; angles
    ``p · 10000^(−2i/d)`` (Su et al. 2021)."""
    from keras_hub.src.models.roformer_v2.roformer_v2_attention import RoformrPositionalEmbedding

    T, H, D = 8, 2, 8
    q_in, k_in = keras.Input((T, H, D)), keras.Input((T, H, D))
    rq, rk = RoformrPositionalEmbedding(D, name="rope")([q_in, k_in])
    model = keras.Model([q_in, k_in], L.Dense(3, name="d")(L.Flatten()(ops.concatenate([rq, 2.0 * rk], axis=-1))))
    rng = np.random.default_rng(12)
    q, k = (rng.normal(size=(2, T, H, D)).astype("float32") for _ in range(2))
    ex = it.Explainer(model, it.Composite(**COMPOSITE))
    (R_q, R_k), lw = ex([q, k], target=1, layerwise=True)
    assert ex.graph.find("rope").category == "linear"
    angles = np.arange(T)[:, None] * 10000.0 ** (-2 * np.arange(D // 2) / D)
    cos = np.repeat(np.cos(angles), 2, -1)[None, :, None, :]
    sin = np.repeat(np.sin(angles), 2, -1)[None, :, None, :]

    def pair(t):
        out = np.empty_like(t)
        out[..., 0::2], out[..., 1::2] = -t[..., 1::2], t[..., 0::2]
        return out

    def pair_t(u):
        out = np.empty_like(u)
        out[..., 0::2], out[..., 1::2] = u[..., 1::2], -u[..., 0::2]
        return out

    R_out = lw["rope"]
    for t, R_t, R_z in ((q, R_q, R_out[0]), (k, R_k, R_out[1])):
        t64 = t.astype("float64")
        g = np.asarray(R_z, "float64") / (t64 * cos + pair(t64) * sin)
        ref = t64 * (g * cos + pair_t(g * sin))
        tol = 16 * U32 * (np.abs(t64) * np.abs(g)).max() * (1 + T)  # float32 angles of up to T radians: cos, sin off by T·2^-23
        np.testing.assert_allclose(np.asarray(R_t), ref, rtol=0, atol=tol)


def test_fourier_mixing_is_linear():
    """FNet's mixing ``Re(DFT₂(x))`` over (tokens, features) is linear and symmetric (``Aᵀ = A``: the DFT
    matrix is symmetric): the z-rule, ``R_x = x ⊙ Re(DFT₂(R_z / z))``."""
    inp = keras.Input((8, 16), dtype="float32")
    z = ops.fft2((inp, ops.zeros_like(inp)))[0]
    model = keras.Model(inp, L.Dense(3, name="d")(L.Flatten(name="flat")(z)))
    x = np.random.default_rng(7).normal(size=(2, 8, 16)).astype("float32")
    R, lw = it.Explainer(model, it.Composite(**COMPOSITE))(x, target=2, layerwise=True)
    z_np = np.fft.fft2(x.astype("float64"), axes=(-2, -1)).real
    R_z = np.asarray(lw["flat"], "float64").reshape(z_np.shape)  # relevance at the flattened mixing output
    g = R_z / z_np
    ref = x * np.fft.fft2(g, axes=(-2, -1)).real
    # float32 transforms of 128 terms, each term bounded by |x| Σ|g|
    tol = 4 * 128 * U32 * np.abs(x).max() * np.abs(g).sum(axis=(-2, -1)).max()
    np.testing.assert_allclose(np.asarray(R), ref, rtol=0, atol=tol)


# ----------------------------------------------------------------------------- tiny keras_hub models
def _text(seq=8, vocab=50, n=2, keys=("token_ids", "padding_mask")):
    rng = np.random.default_rng(8)
    x = {"token_ids": rng.integers(5, vocab, (n, seq)).astype("int32"), "padding_mask": np.ones((n, seq), "int32"),
         "segment_ids": np.zeros((n, seq), "int32")}
    return {k: x[k] for k in keys}


def _image():
    return np.random.default_rng(9).random((2, 16, 16, 3)).astype("float32")


#: families with a layer recognised here (Qwen 3, Phi-3, DINOv2 and Bloom are in tests/test_hub_families.py)
_FAMILIES = {
    "DINOv3": lambda: (M.DINOV3Backbone(patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                                        image_shape=(16, 16, 3)), _image(), {}),
    "FNet": lambda: (M.FNetTextClassifier(backbone=M.FNetBackbone(
        vocabulary_size=50, num_layers=2, hidden_dim=16, intermediate_dim=32, dropout=0.0, max_sequence_length=16),
        num_classes=3, preprocessor=None), _text(keys=("token_ids", "segment_ids")), {}),
    "RoformerV2": lambda: (M.RoformerV2TextClassifier(backbone=M.RoformerV2Backbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, head_size=8, dropout=0.0),
        num_classes=3, preprocessor=None), _text(keys=("token_ids", "segment_ids")), {}),
    "MiT": lambda: (M.MiTImageClassifier(backbone=M.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.1, layerwise_patch_sizes=[3, 3], layerwise_strides=[2, 2], image_shape=(16, 16, 3),
        hidden_dims=[8, 16]), num_classes=3, preprocessor=None), _image(), {}),
}


def _explains(make):
    keras.utils.set_random_seed(10)
    model, x, kw = make()
    for rule in ("attnlrp", "cp_lrp"):
        R = it.lrp(model, x, rule=rule, **kw)
        r, shape = (R["token_ids"], x["token_ids"].shape) if isinstance(x, dict) else (R, x.shape)
        assert r.shape == shape and np.isfinite(r).all() and np.abs(r).sum() > 0, rule


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_keras_hub_family_explains(family):
    _explains(_FAMILIES[family])


def test_gemma3_interleave_routes_relevance_to_where_each_embedding_came_from():
    """Gemma 3 scatters the image embeddings into the text embeddings at ``vision_indices`` (integer,
    constant): each output position is exactly one input element, so its relevance goes back to that
    element (the image embedding placed there, or the text embedding kept there); a text embedding
    overwritten by an image one gets none. The relevances are copies: exact."""
    from keras_hub.src.models.gemma3.gemma3_layers import Gemma3InterleaveEmbeddings

    B, N, S, D = 2, 3, 6, 4
    img_in, txt_in, idx_in = keras.Input((N, D)), keras.Input((S, D)), keras.Input((N,), dtype="int32")
    z = Gemma3InterleaveEmbeddings(N, name="interleave")(img_in, txt_in, idx_in)
    # per position, then averaged (keras_hub's spec of the layer's output is the image embeddings' shape)
    model = keras.Model([img_in, txt_in, idx_in], ops.mean(L.Dense(2, name="d")(z), axis=1))
    rng = np.random.default_rng(12)
    img, txt = rng.normal(size=(B, N, D)).astype("float32"), rng.normal(size=(B, S, D)).astype("float32")
    idx = np.array([[1, 3, 4], [2, 3, 5]], "int32")  # no 0: keras_hub pads with 0 and restores position 0
    (R_img, R_txt, _), lw = it.Explainer(model, "attnlrp")([img, txt, idx], target=0, layerwise=True)
    R_out = np.asarray(lw["interleave"])
    rows = np.arange(B)[:, None]
    ref_img = R_out[rows, idx]
    ref_txt = R_out.copy()
    ref_txt[rows, idx] = 0
    np.testing.assert_array_equal(np.asarray(R_img), ref_img)
    np.testing.assert_array_equal(np.asarray(R_txt), ref_txt)
    # the layer's own output: the embeddings placed as the reference says
    placed = txt.copy()
    placed[rows, idx] = img
    np.testing.assert_array_equal(np.asarray(model.get_layer("interleave")(img, txt, idx)), placed)


def test_deberta_expansion_computes_the_layers_own_scores():
    """DeBERTa-v3's disentangled attention (content-to-content, content-to-position and
    position-to-content scores, He et al. 2021 eq. 4) expanded with ``take_along_axis`` for the relative
    gathers gives the layer's own output (keras_hub's ``tf.gather`` path on TensorFlow)."""
    from keras_hub.src.models.deberta_v3.disentangled_self_attention import DisentangledSelfAttention

    from interprettensor.engine.expand import _EXPANSIONS

    layer = DisentangledSelfAttention(num_heads=2, hidden_dim=8, max_position_embeddings=16, bucket_size=4)
    rng = np.random.default_rng(13)
    x, rel = rng.normal(size=(2, 6, 8)).astype("float32"), rng.normal(size=(1, 8, 8)).astype("float32")
    mask = np.ones((2, 6, 6), "int32")
    mask[1, :, 4:] = 0  # the second sample padded after 4 tokens
    want = np.asarray(layer(x, rel_embeddings=rel, attention_mask=mask))
    got = np.asarray(_EXPANSIONS["DisentangledSelfAttention"](layer, x, rel_embeddings=rel, attention_mask=mask))
    # the same float32 operations in the same order, the gathers exact
    np.testing.assert_array_equal(got, want)
