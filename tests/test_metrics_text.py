"""TokenFlipping (it.metrics.TokenFlipping): token-deletion curves on a keras_hub BERT classifier, a
keras_hub GPT-2 causal LM and a plain Keras sequence model, against the same deletions written by hand
and passed through the model one input at a time; and, on a toy task trained here, AttnLRP's MoRF
curve falls faster than a random order's.

Tolerance: the stacked and the one-at-a-time calls differ by float32 rounding only, through 2 blocks of
width <= 32: ``1e-5`` (about 2**-23 * 32 * 2 * 2) relative to the largest score."""

from __future__ import annotations

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import interprettensor as it  # noqa: E402
from interprettensor.engine.errors import ExplainError  # noqa: E402

SMALL = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)
pytestmark = pytest.mark.slow


def _louder(model, scale=15.0):
    """keras_hub's initialisers (std 0.02) make tiny logits that deletions barely move: scale the kernels
    and embeddings up so that the curves differ well above float32 rounding."""
    for v in model.weights:
        if "kernel" in v.path or "embeddings" in v.path:
            v.assign(v * scale)
    return model


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _by_hand(model, x, a, y, delete, steps, pos=None, softmax=False, key="token_ids", tokens_in_step=1,
             order="morf"):
    """Each sample alone: its deletable tokens sorted by relevance (ties by position), deleted
    ``tokens_in_step`` at a time by ``delete(x_i, positions)``, the model called on each version."""
    curves = []
    n, t = x[key].shape if isinstance(x, dict) else x.shape
    for i in range(n):
        xi = {k: v[i:i + 1].copy() for k, v in x.items()} if isinstance(x, dict) else x[i:i + 1].copy()
        valid = [j for j in range(t) if (x["padding_mask"][i, j] if isinstance(x, dict) and "padding_mask" in x
                                         else True) and (pos is None or j <= pos[i])]
        sign = -1 if order == "morf" else 1
        ranked = sorted(valid, key=lambda j: (sign * a[i, j], j))
        curve = []
        for s in range(0, len(ranked) + tokens_in_step, tokens_in_step):
            xs = delete(xi, ranked[:s])
            out = np.asarray(model(xs), np.float64)[0]
            out = out[pos[i]] if pos is not None else out
            out = _softmax(out) if softmax else out
            curve.append(out[y[i]])
            if s >= len(ranked):
                break
        curves.append(np.array(curve))
    return curves


def _assert_curves(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5 * max(1.0, np.abs(e).max()))


@pytest.fixture(scope="module")
def bert():
    keras.utils.set_random_seed(0)
    b = keras_hub.models.BertBackbone(vocabulary_size=50, max_sequence_length=16, **SMALL)
    model = _louder(keras_hub.models.BertTextClassifier(backbone=b, num_classes=3, preprocessor=None))
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(5, 50, (2, 8)).astype("int32"), "padding_mask": np.ones((2, 8), "int32"),
         "segment_ids": np.zeros((2, 8), "int32")}
    x["padding_mask"][-1, 6:] = 0
    x["token_ids"][-1, 6:] = 0
    return model, x


def test_bert_morf_masking_equals_the_deletions_one_at_a_time(bert):
    model, x = bert
    metric = it.metrics.TokenFlipping(order="morf", deletion="mask", batch_size=64)
    a = it.lrp(model, x, rule="attnlrp")   # a dict like x (the causal-LM test checks the default path)
    curves = metric(model, x, a_batch=a)   # y: the predicted class
    a = a["token_ids"]
    y = np.asarray(model(x)).argmax(-1)

    def mask(xi, positions):
        xs = {k: v.copy() for k, v in xi.items()}
        xs["padding_mask"][0, positions] = 0
        return xs

    expected = _by_hand(model, x, a, y, mask, None)
    assert [len(c) for c in expected] == [9, 7]  # 8 and 6 valid tokens, plus the undeleted score
    _assert_curves(curves, expected)
    assert np.ptp(expected[0]) > 1e-2  # the deletions move the logit well above the tolerance
    # all 14 deletions and the 2 originals: 2 stacked calls (originals, then all steps), not 16
    assert metric.calls == 2
    np.testing.assert_allclose(metric.auc, [np.trapezoid(c, dx=1 / (len(c) - 1)) for c in expected],
                               atol=1e-5 * max(1.0, max(np.abs(c).max() for c in expected)))


def test_bert_lerf_replacing_with_probabilities(bert):
    model, x = bert
    a = np.random.default_rng(3).normal(size=(2, 8))
    a[0, 2] = a[0, 5]  # a tie: broken by position
    y = np.array([2, 0])
    metric = it.metrics.TokenFlipping(order="lerf", deletion="replace", replacement_token_id=1, tokens_in_step=3,
                                      softmax=True, batch_size=5)

    def replace(xi, positions):
        xs = {k: v.copy() for k, v in xi.items()}
        xs["token_ids"][0, positions] = 1
        return xs

    curves = metric(model, x, y, a_batch=a)
    expected = _by_hand(model, x, a, y, replace, None, softmax=True, tokens_in_step=3, order="lerf")
    assert [len(c) for c in expected] == [4, 3]  # ceil(8 / 3) and ceil(6 / 3) steps
    _assert_curves(curves, expected)
    assert metric.calls == 1 + int(np.ceil(3 * 2 / 5))  # 6 stacked rows in calls of 5


def test_causal_lm_explained_next_token_masked_and_replaced():
    """GPT-2: the next token at the last position of each sample (the second padded at the end); only
    tokens up to it are deleted."""
    keras.utils.set_random_seed(1)
    b = keras_hub.models.GPT2Backbone(vocabulary_size=50, max_sequence_length=16, **SMALL)
    lm = _louder(keras_hub.models.GPT2CausalLM(backbone=b, preprocessor=None), 8.0)
    rng = np.random.default_rng(1)
    x = {"token_ids": rng.integers(5, 50, (2, 8)).astype("int32"), "padding_mask": np.ones((2, 8), "int32")}
    x["padding_mask"][1, 5:] = 0
    pos = np.array([7, 4])
    y = np.asarray(lm(x))[np.arange(2), pos].argmax(-1)
    a = it.lrp(lm, x, rule="attnlrp", position=pos, target=y)["token_ids"]
    for deletion in ("mask", "replace"):
        metric = it.metrics.TokenFlipping(deletion=deletion, replacement_token_id=0 if deletion == "replace" else None)
        # the default relevance (AttnLRP of the predicted next token at the last valid position) once
        curves = metric(lm, x) if deletion == "mask" else metric(lm, x, y, a_batch=a)

        def delete(xi, positions):
            xs = {k: v.copy() for k, v in xi.items()}
            if deletion == "mask":
                xs["padding_mask"][0, positions] = 0
            else:
                xs["token_ids"][0, positions] = 0
            return xs

        np.testing.assert_allclose(metric.relevance, a, rtol=1e-6, atol=1e-9)
        expected = _by_hand(lm, x, a, y, delete, None, pos=pos)
        assert [len(c) for c in expected] == [9, 6]
        _assert_curves(curves, expected)


@pytest.fixture(scope="module")
def toy():
    """A task with a known answer: the class is which marker token (1, 2, 3) occurs among filler
    tokens; Embedding -> self-attention -> mean -> Dense, trained a few seconds."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, t = 900, 8
    x = rng.integers(4, 50, (n, t)).astype("int32")
    y = rng.integers(0, 3, n)
    x[np.arange(n), rng.integers(0, t, n)] = y + 1
    L = keras.layers
    ids = keras.Input((t,), dtype="int32")
    h = L.Embedding(50, 16)(ids)
    h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 8)(h, h))
    model = keras.Model(ids, L.Dense(3)(L.GlobalAveragePooling1D()(h)))
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:800], y[:800], epochs=4, batch_size=64, verbose=0)
    return model, x[800:832], y[800:832]


def test_plain_keras_model_replacing_equals_the_deletions_one_at_a_time(toy):
    model, x, y = toy
    a = it.lrp(model, x[:3], rule="attnlrp", target=y[:3])
    metric = it.metrics.TokenFlipping(deletion="replace", replacement_token_id=0, tokens_in_step=2)
    curves = metric(model, x[:3], y[:3])

    def replace(xi, positions):
        xs = xi.copy()
        xs[0, positions] = 0
        return xs

    _assert_curves(curves, _by_hand(model, x[:3], a, y[:3], replace, None, tokens_in_step=2))
    with pytest.raises(ExplainError, match="padding_mask"):
        it.metrics.TokenFlipping(deletion="mask")(model, x[:3], y[:3], a_batch=a)
    with pytest.raises(ExplainError, match="replacement_token_id"):
        it.metrics.TokenFlipping(deletion="replace")
    with pytest.raises(ExplainError, match="one relevance per token"):
        metric(model, x[:3], y[:3], a_batch=a[:, :5])


def test_attnlrp_morf_falls_faster_than_a_random_order(toy):
    """On the trained toy task (accuracy checked), AttnLRP's MoRF curve has a smaller area than the
    random order's (mean over 32 sentences, 3 seeds), and its LeRF curve a larger one."""
    model, x, y = toy
    acc = (np.asarray(model(x)).argmax(-1) == y).mean()
    assert acc >= 0.9, acc
    a = it.lrp(model, x, rule="attnlrp", target=y)
    kw = dict(deletion="replace", replacement_token_id=0, return_auc=True)
    morf = np.mean(it.metrics.TokenFlipping(order="morf", **kw)(model, x, y, a_batch=a))
    lerf = np.mean(it.metrics.TokenFlipping(order="lerf", **kw)(model, x, y, a_batch=a))
    rand = [np.mean(it.metrics.TokenFlipping(order="random", seed=s, **kw)(model, x, y, a_batch=a)) for s in range(3)]
    assert morf < min(rand) and lerf > max(rand), (morf, rand, lerf)
    # the random order is reproducible and depends on the seed
    r0 = it.metrics.TokenFlipping(order="random", seed=0, **kw)(model, x, y, a_batch=a)
    assert np.mean(r0) == rand[0]
