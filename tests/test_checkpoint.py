"""``checkpoint=``: a checkpointed pass (segments' forward records dropped after the forward pass and
recomputed in the backward pass) gives the relevance, and every layer's relevance, of the pass that
keeps all records; segments fall where the docs say; bad values are refused with a clear error.

The checkpointed pass runs the same operations on the same values (the recomputation reads the saved
segment inputs, which are the forward pass's own tensors), so the results agree to float32 rounding of
the largest sum in the model: ``2**-23 * K * max|R|`` with ``K`` the longest contraction (a kernel
that splits its reduction differently between two calls can round differently, nothing more).
"""

from __future__ import annotations

import numpy as np
import pytest

import keras
from keras import layers as L

import interprettensor as it
from interprettensor.engine.errors import ExplainError
from interprettensor.engine.graph import forward, plan_segments
from interprettensor.engine.graph.checkpoint import Dropped, crossing_counts
from interprettensor.engine.handlers import PassOptions

EPS = 2.0 ** -23


def _close(a, b, k):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-30)
    np.testing.assert_allclose(a, b, rtol=0, atol=EPS * k * scale)


def _same_explanations(model, x, k, checkpoints, rule="epsilon", params=None, **call):
    """The checkpointed explainers' relevance and layerwise relevances equal the plain one's (layers
    matched by their position in the step list: op names of traced layers are numbered per trace)."""
    params = params or {}
    plain = it.Explainer(model, rule, **params)
    r0, lw0 = plain(x, layerwise=True, **call)
    names0 = [s.name for s in plain.graph.steps]
    assert not plain.pass_options[True].checkpoints
    for ck in checkpoints:
        e = it.Explainer(model, rule, checkpoint=ck, **params)
        r, lw = e(x, layerwise=True, **call)
        assert e.pass_options[True].checkpoints, f"checkpoint={ck!r} dropped no segment"
        for a, b in zip(tree_leaves(r), tree_leaves(r0)):
            _close(a, b, k)
        names = [s.name for s in e.graph.steps]
        assert len(lw) == len(lw0)
        for n, n0 in zip(names, names0):
            if n0 in lw0:
                for a, b in zip(tree_leaves(lw[n]), tree_leaves(lw0[n0])):
                    _close(a, b, k)
        for n in e.graph.input_names:
            _close(lw[n], lw0[n], k)
    return r0, e


def tree_leaves(x):
    return keras.tree.flatten(x)


def _residual_cnn():
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    for i in range(3):
        y = L.Conv2D(8, 3, padding="same", activation="relu", name=f"block{i}_a")(h)
        y = L.Conv2D(8, 3, padding="same", name=f"block{i}_b")(y)
        h = L.ReLU(name=f"block{i}_out")(L.Add(name=f"block{i}_add")([h, y]))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(5, name="head")(h))


def test_residual_cnn_checkpointed_equals_plain():
    model = _residual_cnn()
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    k = 3 * 3 * 8 * 64  # a 3x3x8 convolution's sum, pooled over 64 positions
    _same_explanations(model, x, k, [True, ["block0_out", "block1_out"]], rule="epsilon_gamma_box",
                       params=dict(low=-3.0, high=3.0))


def test_cnn_segments_cut_between_blocks():
    """Automatic cuts fall where one tensor carries everything: never inside a residual block (where
    the block's input and its branch cross the cut); layer names cut after the named layer."""
    model = _residual_cnn()
    g = it.Explainer(model).graph
    counts = crossing_counts(g)
    for lo, hi in plan_segments(g, 1):
        assert counts[hi] == 1, (hi, g.steps[hi - 1].name)
    names = [s.name for s in g.steps]
    (seg,) = plan_segments(g, ["block1_out"])
    assert seg == (0, names.index("block1_out") + 1)
    assert plan_segments(g, None) == () and plan_segments(g, False) == ()


def test_forward_drops_the_records_and_values_of_checkpointed_segments():
    model = _residual_cnn()
    e = it.Explainer(model, checkpoint=["block0_out"])
    (lo, hi), = e.pass_options[True].checkpoints
    x = keras.ops.convert_to_tensor(np.ones((1, 8, 8, 3), "float32"))
    values, records = forward(e.graph, [x], e.pass_options[True])
    assert all(isinstance(r, Dropped) for r in records[lo:hi])
    assert not any(isinstance(r, Dropped) for r in records[hi:])
    seg = records[lo].segment
    assert list(seg.saved) == e.graph.inputs  # the first segment reads the model input only
    inner = {k for s in e.graph.steps[lo:hi - 1] for k in s.outputs}
    assert not inner & set(values), "values written inside the segment and read only there are kept"
    assert e.graph.steps[hi - 1].outputs[0] in values  # the cut tensor is read after the segment


def _tiny_llama():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(1)
    b = keras_hub.models.Llama3Backbone(vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                        hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.Llama3CausalLM(backbone=b, preprocessor=None)


@pytest.mark.slow
def test_causal_lm_checkpointed_equals_plain():
    model = _tiny_llama()
    rng = np.random.default_rng(1)
    x = {"token_ids": rng.integers(1, 50, (2, 8)).astype("int32"), "padding_mask": np.ones((2, 8), "int32")}
    x["padding_mask"][1, 6:] = 0
    k = 32 * 8  # the longest contraction (intermediate 32), summed over 8 positions
    r, e = _same_explanations(model, x, k, [True], rule="attnlrp", position=-1, target=7)
    assert np.abs(r["token_ids"]).sum() > 0
    # automatic segments end on the residual stream (one carried tensor crosses the cut)
    counts = crossing_counts(e.graph)
    segments = e.pass_options[True].checkpoints
    assert len(segments) >= 2 and [counts[hi] for _, hi in segments] == [1] * len(segments)
    # a decoder block's name cuts after its last step (its second residual add)
    names = [s.name for s in e.graph.steps]
    (seg,) = plan_segments(e.graph, ["transformer_layer_0"])
    assert seg[0] == 0 and "transformer_layer_0/" in names[seg[1] - 1] and "add" in names[seg[1] - 1]
    assert not any("transformer_layer_0/" in n for n in names[seg[1]:])


def test_lstm_checkpointed_equals_plain():
    keras.utils.set_random_seed(2)
    inp = keras.Input((6, 4))
    h = L.LSTM(8, return_sequences=True, name="lstm_a")(inp)
    h = L.LSTM(8, name="lstm_b")(h)
    model = keras.Model(inp, L.Dense(3, name="head")(h))
    x = np.random.default_rng(2).normal(size=(2, 6, 4)).astype("float32")
    _same_explanations(model, x, 4 * 8 * 6, [["lstm_a"]])


@pytest.mark.parametrize("bad", [0, -2, 1.5, [], [3], "no_such_layer", ["stem", "no_such_layer"]])
def test_bad_checkpoint_values_are_refused(bad):
    model = _residual_cnn()
    with pytest.raises(ExplainError, match="checkpoint="):
        it.Explainer(model, checkpoint=bad)


def test_checkpointed_lrp_function_and_custom_relevance():
    model = _residual_cnn()
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    R0 = np.random.default_rng(5).normal(size=(2, 5)).astype("float32")
    k = 3 * 3 * 8 * 64
    _close(it.lrp(model, x, relevance=R0, checkpoint=True), it.lrp(model, x, relevance=R0), k)
    # a hidden layer's unit inside a dropped segment: the start lies in it
    _close(it.lrp(model, x, layer="block0_out", checkpoint=["block1_out"]), it.lrp(model, x, layer="block0_out"), k)


def test_mixed_precision_recomputed_records_are_recast():
    """Under ``mixed_bfloat16`` the forward pass runs in bfloat16 and the relevance in float32: the
    recomputed records are cast like the forward pass's, so the checkpointed pass computes the same
    float32 relevance (to float32 rounding: bfloat16 records left uncast would differ at 2**-8)."""
    model = _residual_cnn()
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 3)).astype("float32")
    a = it.Explainer(model, dtype="mixed_bfloat16")(x, target=2)
    b = it.Explainer(model, dtype="mixed_bfloat16", checkpoint=["block0_out", "block1_out"])(x, target=2)
    assert a.dtype == b.dtype == np.float32
    _close(b, a, 3 * 3 * 8 * 64)
