"""Two memory savings of the backward walk, each checked against the computation without it.

* One position explained (``position=``, a language model's next-token logits): where the layer that
  writes the explained output maps every position on its own (a dense layer on a sequence, a language
  model's output projection), its relevance is computed at the explained position only
  (``engine.graph.interpret.start_at_position``) instead of over a ``(N, T, vocabulary)`` tensor. It must
  equal the explanation started at the whole output with a relevance that is zero at every other
  position (``relevance=``, the path that does not cut).
* Values of cheap element-wise steps (a scaling by a constant, an activation) are computed again in the
  backward pass from their input instead of kept (``interpret._Remade``, on backends that free what
  nothing reads). The relevance must be that of the walk that reads the kept values.

Both claims are exact (the same operations on the same numbers), so the models are float64 and the
tolerance is float64's rounding.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L
from keras import ops

import interprettensor as it
from interprettensor.engine import backend
from interprettensor.engine import explainer as explainer_module
from interprettensor.engine.graph import interpret

T, V = 6, 9
RTOL = 1e-10  # float64: sums of a few dozen terms, far above their rounding (2e-16 each)


def _language_model(head: str) -> keras.Model:
    keras.utils.set_random_seed(5)
    ids = keras.Input((T,), dtype="int32")
    h = L.Embedding(13, 8, dtype="float64")(ids)
    h = L.Dense(10, activation="relu", dtype="float64")(h)
    if head == "dense":
        out = L.Dense(V, dtype="float64", name="head")(h)
    else:  # mixes neighbouring positions: not a map of each position on its own
        out = L.Conv1D(V, 3, padding="same", dtype="float64", name="head")(h)
    return keras.Model(ids, out)


def _full_start(model, x, pos, target):
    logits = np.asarray(model.predict(x, verbose=0), np.float64)
    R0 = np.zeros_like(logits)
    rows = np.arange(len(x))
    R0[rows, pos, target] = logits[rows, pos, target]
    return R0


@pytest.fixture
def spy(monkeypatch):
    used = []
    original = explainer_module.start_at_position

    def watch(*args, **kwargs):
        result = original(*args, **kwargs)
        used.append(result is not None)
        return result

    monkeypatch.setattr(explainer_module, "start_at_position", watch)
    return used


@pytest.mark.parametrize("rule", ["epsilon", "gamma", "alpha1beta0"])
def test_one_position_explained_there_only_equals_the_start_at_the_whole_output(rule, spy):
    model = _language_model("dense")
    x = np.random.default_rng(0).integers(0, 13, (4, T)).astype("int32")
    pos, target = np.array([5, 0, 3, 5]), np.array([2, 8, 0, 4])
    cut = it.Explainer(model, rule, dtype="float64")(x, target, position=pos)
    assert spy == [True]  # the head was explained at the positions alone
    whole = it.Explainer(model, rule, dtype="float64")(x, relevance=_full_start(model, x, pos, target))
    assert np.abs(whole).max() > 0
    np.testing.assert_allclose(cut, whole, rtol=RTOL, atol=RTOL * np.abs(whole).max())


def test_a_contrast_at_one_position_is_cut_too(spy):
    model = _language_model("dense")
    x = np.random.default_rng(1).integers(0, 13, (3, T)).astype("int32")
    pos, target, other = np.array([1, 5, 2]), np.array([3, 3, 7]), np.array([0, 6, 1])
    cut = it.Explainer(model, "epsilon", dtype="float64")(x, target, position=pos, contrast=other)
    assert spy == [True]
    R0 = _full_start(model, x, pos, target) - _full_start(model, x, pos, other)
    whole = it.Explainer(model, "epsilon", dtype="float64")(x, relevance=R0)
    np.testing.assert_allclose(cut, whole, rtol=RTOL, atol=RTOL * np.abs(whole).max())


def test_a_head_that_mixes_positions_is_not_cut(spy):
    model = _language_model("conv")
    x = np.random.default_rng(2).integers(0, 13, (2, T)).astype("int32")
    pos, target = np.array([2, 4]), np.array([1, 5])
    got = it.Explainer(model, "epsilon", dtype="float64")(x, target, position=pos)
    assert spy == [False]
    whole = it.Explainer(model, "epsilon", dtype="float64")(x, relevance=_full_start(model, x, pos, target))
    np.testing.assert_allclose(got, whole, rtol=RTOL, atol=RTOL * np.abs(whole).max())


def _attention_model() -> keras.Model:
    """One attention head from keras ops: scores scaled by a constant (a cheap step whose input, the
    scores, the score product's rule reads anyway), a softmax, the value product, a SiLU."""
    keras.utils.set_random_seed(7)
    x = keras.Input((5, 4), dtype="float64")
    q, k, v = (L.Dense(4, dtype="float64")(x) for _ in range(3))
    scores = ops.multiply(ops.matmul(q, ops.transpose(k, (0, 2, 1))), 0.5)
    att = ops.matmul(L.Softmax(dtype="float64")(scores), v)
    h = L.Activation("silu", dtype="float64")(L.Dense(6, dtype="float64")(att))
    return keras.Model(x, L.Dense(3, dtype="float64")(L.Flatten(dtype="float64")(h)))


def test_values_computed_again_give_the_relevance_of_the_kept_ones(monkeypatch):
    model = _attention_model()
    x = np.random.default_rng(3).normal(size=(3, 5, 4))
    made = []
    recompute = backend.recompute

    def counting(deps, inputs, fn):
        made.append(len(inputs))
        return recompute(deps, inputs, fn)

    monkeypatch.setattr(interpret.backend, "recompute", counting)
    monkeypatch.setattr(interpret.backend, "FREES_UNREAD", True)
    again = it.Explainer(model, "attnlrp", dtype="float64")(x)
    assert made  # the scaled scores and the SiLU's output were made again
    made.clear()
    monkeypatch.setattr(interpret.backend, "FREES_UNREAD", False)
    kept = it.Explainer(model, "attnlrp", dtype="float64")(x)
    assert not made
    assert np.abs(kept).max() > 0
    np.testing.assert_allclose(again, kept, rtol=RTOL, atol=RTOL * np.abs(kept).max())


def _residual_model() -> keras.Model:
    """Four residual blocks ``relu(conv(h) + h)`` on a convolution's output: each sum and ReLU is
    cheap, and the block input a sum reads is the ReLU of the sum before it, so the values between the
    convolutions form a chain of cheap steps back to the first convolution."""
    keras.utils.set_random_seed(11)
    x = keras.Input((6, 6, 2), dtype="float64")
    h = L.Conv2D(4, 3, padding="same", dtype="float64")(x)
    for _ in range(4):
        h = L.ReLU(dtype="float64")(L.Add(dtype="float64")([L.Conv2D(4, 3, padding="same", dtype="float64")(h), h]))
    return keras.Model(x, L.Dense(3, dtype="float64")(L.GlobalAveragePooling2D(dtype="float64")(h)))


@pytest.mark.parametrize("rule", ["epsilon", "alpha1beta0", "epsilon_gamma_box"])
@pytest.mark.parametrize("depth", [12, 2])
def test_chains_of_cheap_steps_made_again_give_the_relevance_of_the_kept_values(monkeypatch, rule, depth):
    model = _residual_model()
    x = np.random.default_rng(8).normal(size=(3, 6, 6, 2))
    levels, outputs = [], []  # of each value made again: how many cheap steps it was made through
    recompute = backend.recompute

    def counting(deps, inputs, fn):
        levels.append(1 + max((lv for y, lv in zip(outputs, levels) if any(x is y for x in inputs)),
                              default=0))
        outputs.append(recompute(deps, inputs, fn))
        return outputs[-1]

    monkeypatch.setattr(interpret.backend, "recompute", counting)
    monkeypatch.setattr(interpret._Remade, "DEPTH", depth)
    monkeypatch.setattr(interpret.backend, "FREES_UNREAD", True)
    params = {"low": -3.0, "high": 3.0} if rule == "epsilon_gamma_box" else {}
    again = it.Explainer(model, rule, dtype="float64", **params)(x)
    # the last ReLU's output made from the sum, made from the ReLU before it, ...: 4 blocks are 8 cheap
    # steps back to the first convolution (depth 2: a ReLU of a sum of kept values)
    assert max(levels) == min(depth, 8)
    monkeypatch.setattr(interpret.backend, "FREES_UNREAD", False)
    kept = it.Explainer(model, rule, dtype="float64", **params)(x)
    assert np.abs(kept).max() > 0
    np.testing.assert_allclose(again, kept, rtol=RTOL, atol=RTOL * np.abs(kept).max())


def test_outputs_are_returned_where_asked_for_and_the_relevance_is_the_same():
    model = _language_model("dense")
    x = np.random.default_rng(4).integers(0, 13, (2, T)).astype("int32")
    explainer = it.Explainer(model, "epsilon", dtype="float64")
    first = explainer(x, position=-1)  # checks the forward pass: the outputs are returned to it
    again = explainer(x, position=-1)  # the outputs as shapes only
    rel, out = explainer(x, position=-1, return_output=True)
    logits = np.asarray(model.predict(x, verbose=0), np.float64)
    np.testing.assert_allclose(out, logits, rtol=RTOL, atol=RTOL * np.abs(logits).max())
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(rel, first)
    assert {key[3] for key in explainer._functions} == {True, False}
