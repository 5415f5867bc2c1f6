"""What the compiled LRP pass computes before the relevance exists: the forward pass only.

A rule's modified forward passes (``f(x; W^+)`` for z+ / gamma / alpha-beta, ``f(|x|; |W|)`` for the
generalised gamma, ``f(l; W^+)`` for the bounded rule), modified inputs and modified weights depend on
forward values only; a graph executor (TensorFlow's runs every op once its inputs exist) would compute
them during the forward pass and hold every layer's results until the backward pass reaches the layer:
activation-sized tensors for all layers at once, where gradient x input holds none. The engine orders
them after the relevance that reaches the layer (``backend.after``), so each lives only while its layer
is explained.

Checked on the traced graph of the explainer's compiled function that takes the starting relevance
``R0`` as an argument: every operation the function's outputs need either runs after ``R0`` (it
depends on it, through data or ordering) or belongs to the forward pass (the model's outputs depend
on it), apart from integer shape bookkeeping. A modified forward pass scheduled early breaks this.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

import interprettensor as it

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="inspects the traced TensorFlow graph (other backends schedule by data)")


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, activation="relu"),
                             L.Conv2D(4, 3, activation="relu"), L.Flatten(), L.Dense(6, activation="relu"),
                             L.Dense(3)])


def _ancestors(ops_):
    seen, stack = set(), list(ops_)
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack += [t.op for t in op.inputs] + list(op.control_inputs)
    return seen


def _descendants(g, start):
    """The operations of graph ``g`` that depend on ``start`` (through data or ordering), ``start`` included."""
    consumers: dict = {}
    for op in g.get_operations():
        for src in [t.op for t in op.inputs] + list(op.control_inputs):
            consumers.setdefault(src, []).append(op)
    seen, stack = set(), [start]
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack += consumers.get(op, [])
    return seen


def _early_float_ops(explainer, x):
    """Live operations computing a floating tensor that neither depend on ``R0`` nor feed the model's
    outputs."""
    explainer._activate_for([x])
    cf = explainer._function([x], "relevance", False).get_concrete_function()
    g = cf.graph
    after_r0 = _descendants(g, g.inputs[1].op)  # the graph's inputs: x, then R0, then captured variables
    flat = cf.outputs  # relevance, explained output, model outputs
    live = _ancestors([t.op for t in flat])
    forward = _ancestors([t.op for t in flat[1:]])
    return sorted(op.name for op in live - after_r0 - forward
                  if op.inputs and any(t.dtype.is_floating for t in op.outputs))  # constants are no computation


@pytest.mark.parametrize("rule,params", [
    ("epsilon", {}),
    ("epsilon_plus", {}),  # z+ : f(x; W^+)
    ("epsilon_gamma_box", {"low": -1.0, "high": 1.0}),  # generalised gamma f(|x|; |W|), z^B f(l; W^+)
    ("preset_b", {}),  # alpha-beta: x^+, x^-, four modified terms on the signed first layer
])
def test_nothing_for_the_relevance_is_computed_with_the_forward_pass(cnn, rule, params):
    import tensorflow as tf

    x = tf.zeros((2, 8, 8, 3))
    assert _early_float_ops(it.Explainer(cnn, rule, **params), x) == []


def test_alpha_beta_groups_run_one_after_the_other():
    """The two groups of alpha-beta (positive and negative contributions) are evaluated in turn: every
    matrix product computed for the relevance (the modified forward terms and each group's transposed
    products) is ordered before or after every other, so no two groups' activation-sized intermediates
    coexist."""
    import tensorflow as tf

    from interprettensor.engine.linear import LinearMap, linear_relevance
    from interprettensor.engine.rules import AlphaBeta

    w = tf.constant(np.random.default_rng(0).normal(size=(5, 4)), tf.float32)
    lm = LinearMap(lambda xs, p: tf.matmul(xs[0], p["kernel"]), {"kernel": w})
    for nonneg in (True, False):  # x^+ only (two terms), or x^+ and x^- (four terms)
        fn = tf.function(lambda x, R: linear_relevance(lm, [x], R, AlphaBeta(2.0, 1.0), tf.matmul(x, w),
                                                       nonneg=nonneg), autograph=False)
        g = fn.get_concrete_function(tf.TensorSpec((3, 5), tf.float32), tf.TensorSpec((3, 4), tf.float32)).graph
        after_r = _descendants(g, g.inputs[1].op)
        live = _ancestors([t.op for t in g.outputs])
        products = [op for op in live & after_r if op.type == "MatMul"]
        assert len(products) >= 3
        for a in products:
            for b in products:
                assert a is b or a in _ancestors([b]) or b in _ancestors([a]), (nonneg, a.name, b.name)


def test_merged_batchnorm_weights_are_made_again_for_the_relevance():
    """A convolution's weights with the BatchNorm after it merged (``W * s``) are a computed copy: the
    pass makes them for the forward pass and again once the relevance reaches the layer, instead of
    holding every layer's copy from one pass to the other. Every transposed convolution reads a kernel
    computed after ``R0`` (or a variable as it is)."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.BatchNormalization(), L.ReLU(),
                              L.Conv2D(4, 3), L.BatchNormalization(), L.ReLU(), L.Flatten(), L.Dense(3)])
    e = it.Explainer(model, "epsilon_gamma_box", low=-1.0, high=1.0)
    x = tf.zeros((2, 8, 8, 3))
    e._activate_for([x])
    g = e._function([x], "relevance", False).get_concrete_function().graph
    after_r0 = _descendants(g, g.inputs[1].op)
    live = _ancestors([t.op for t in g.outputs])
    transposed = [op for op in live if op.type == "Conv2DBackpropInput"]
    assert len(transposed) >= 2
    for op in transposed:
        kernel = op.inputs[1].op
        assert kernel in after_r0 or kernel.type == "ReadVariableOp", (op.name, kernel.name, kernel.type)


def test_box_bounds_forward_terms_run_on_one_sample():
    """z^B's terms ``f(l; W^+)`` and ``f(h; W^-)`` read inputs filled with the bounds, the same for every
    sample when the bounds have no batch axis: each is computed for one sample (and broadcast); with
    per-sample bounds, for every sample. The relevance equals the rule's equation in numpy (float64)
    either way."""
    import tensorflow as tf

    from interprettensor.engine.linear import LinearMap, linear_relevance
    from interprettensor.engine.rules import ZBox

    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4))
    b = rng.normal(size=4)
    x = rng.uniform(-1, 1, (3, 5))
    R = rng.normal(size=(3, 4))
    lm = LinearMap(lambda xs, p: tf.matmul(xs[0], p["kernel"]) + p.get("bias", 0.0),
                   {"kernel": tf.constant(w), "bias": tf.constant(b)})
    for low, high in ((-1.0, 1.0), (-np.ones((3, 1)), np.linspace(1, 2, 3)[:, None])):
        fn = tf.function(lambda x_, R_: linear_relevance(lm, [x_], R_, ZBox(low, high), tf.matmul(x_, w) + b),
                         autograph=False)
        cf = fn.get_concrete_function(tf.TensorSpec((3, 5), tf.float64), tf.TensorSpec((3, 4), tf.float64))
        after_r = _descendants(cf.graph, cf.graph.inputs[1].op)
        batches = [op.outputs[0].shape[0] for op in _ancestors([t.op for t in cf.graph.outputs]) & after_r
                   if op.type == "MatMul" and not op.name.startswith("gradient")]
        assert batches == ([1, 1] if np.ndim(low) == 0 else [3, 3])
        # R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / sum_i' (x_i' w_i'j - l_i' w_i'j^+ - h_i' w_i'j^-) R_j
        lo, hi = np.broadcast_to(low, x.shape), np.broadcast_to(high, x.shape)
        zij = x[:, :, None] * w - lo[:, :, None] * np.maximum(w, 0) - hi[:, :, None] * np.minimum(w, 0)
        den = zij.sum(1)
        den = den + 1e-12 * np.where(den >= 0, 1, -1)
        ref = (zij * (R / den)[:, None, :]).sum(2)
        out = np.asarray(fn(tf.constant(x), tf.constant(R))[0])
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def _transposes(g, after_r):
    """The transposed matrix products in ``g`` computed for the relevance (``s @ W'^T``)."""
    live = _ancestors([t.op for t in g.outputs])
    return [op for op in live & after_r if op.type == "MatMul" and op.get_attr("transpose_b")]


def _matmul_relevance_graph(rule, nonneg, positive_outputs_only=False):
    import tensorflow as tf

    from interprettensor.engine.linear import LinearMap, linear_relevance

    w = tf.constant(np.random.default_rng(0).normal(size=(5, 4)), tf.float32)
    b = tf.constant(np.random.default_rng(1).normal(size=4), tf.float32)
    lm = LinearMap(lambda xs, p: tf.matmul(xs[0], p["kernel"]) + p.get("bias", 0.0), {"kernel": w, "bias": b})
    fn = tf.function(lambda x, R: linear_relevance(lm, [x], R, rule, tf.matmul(x, w) + b, nonneg=nonneg,
                                                   positive_outputs_only=positive_outputs_only), autograph=False)
    return fn.get_concrete_function(tf.TensorSpec((3, 5), tf.float32), tf.TensorSpec((3, 4), tf.float32)).graph


def test_alpha_beta_on_nonnegative_inputs_divides_before_any_transpose():
    """On a non-negative input, alpha-beta's two denominators are sums of the same forward values
    (``f(x; W^+) + b^+`` and ``z - b - f(x; W^+) + b^-``): both ratios are made while the incoming
    relevance and those values are alive, and every transposed product runs after they have been read
    for the last time. (Dividing for the second group after the first group's transpose kept the
    relevance, the forward term and the first transpose's result and working memory alive at once:
    VGG16's first block under preset_b peaked 1.44x above gradient x input.)"""
    from interprettensor.engine.rules import AlphaBeta

    g = _matmul_relevance_graph(AlphaBeta(2.0, 1.0), nonneg=True)
    after_r = _descendants(g, g.inputs[1].op)
    transposes = _transposes(g, after_r)
    assert len(transposes) == 2
    live = _ancestors([t.op for t in g.outputs])
    readers = [op for op in live if any(t is g.inputs[1] for t in op.inputs)]
    forward_terms = [op for op in live & after_r if op.type == "MatMul" and not op.get_attr("transpose_b")]
    assert readers and len(forward_terms) == 1  # f(x; W^+): f(x; W^-) is derived from z
    term_readers = [c for t in forward_terms[0].outputs for c in t.consumers() if c in live]
    for op in readers + term_readers:
        for t in transposes:
            assert op in _ancestors([t]), (op.name, t.name)


def test_parallel_branches_are_explained_one_after_the_other():
    """The walk explains the steps one after the other, also where the graph would allow two at once
    (a residual block's shortcut and its main branch both receive relevance from the sum): every
    transposed convolution is ordered before or after every other, so no two layers' working sets
    (ratios, modified forward passes, transposes) are alive together."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, activation="relu")(inp)
    a = L.Conv2D(4, 3, padding="same")(h)
    b = L.Conv2D(4, 1)(h)
    out = L.Dense(3)(L.Flatten()(L.ReLU()(L.Add()([a, b]))))
    model = keras.Model(inp, out)
    for rule, params in (("epsilon", {}), ("epsilon_gamma_box", {"low": -1.0, "high": 1.0})):
        e = it.Explainer(model, rule, **params)
        x = tf.zeros((2, 8, 8, 3))
        e._activate_for([x])
        g = e._function([x], "relevance", False).get_concrete_function().graph
        after_r0 = _descendants(g, g.inputs[1].op)
        live = _ancestors([t.op for t in g.outputs])
        transposed = [op for op in live & after_r0 if op.type == "Conv2DBackpropInput"]
        assert len(transposed) >= 3, (rule, [op.name for op in transposed])
        for p in transposed:
            for q in transposed:
                assert p is q or p in _ancestors([q]) or q in _ancestors([p]), (rule, p.name, q.name)
