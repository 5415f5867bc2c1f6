"""The randomisation metrics (it.metrics.MPRT, SmoothMPRT, EfficientMPRT, RandomLogit).

Two kinds of reference:

* Quantus 0.6.0's own values on the shared tiny network (tests/data/quantus_reference/randomisation.json,
  made by tests/quantus_reference/make_randomisation.py in Quantus' environment, PyTorch model with the
  same weights): the similarity and complexity functions, RandomLogit, MPRT's "original" entry and
  EfficientMPRT's complexities of the original model. Quantus re-initialises torch layers with torch's
  initialisers, so the randomised stages cannot be compared with it.
* numpy written from the papers for the randomised stages: the weights are permuted here by the
  documented procedure (each array of a layer along its first axis, RandomState(seed + 1) per layer),
  the network is evaluated by hand (forward pass and input x gradient in numpy, no Keras), and the
  similarities come from scipy.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from scipy.stats import entropy as sp_entropy
from scipy.stats import spearmanr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "quantus_reference"))

import interprettensor as it  # noqa: E402
from interprettensor.engine.errors import ExplainError  # noqa: E402
from models import CLASSES, FILTERS, SIZE, inputs, keras_model, weights  # noqa: E402

M = it.metrics
REF = json.load(open(os.path.join(HERE, "data", "quantus_reference", "randomisation.json")))
IXG = {"method": "input_x_gradient"}


@pytest.fixture(scope="module")
def data():
    x, y = inputs(6, seed=1)
    return keras_model(), x, y


# ----------------------------------------------------------------------------- numpy network

def np_conv(x, w):
    """'same' 3x3 convolution, pre-activation (n, 8, 8, F)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    z = np.zeros(x.shape[:3] + (FILTERS,))
    for di in range(3):
        for dj in range(3):
            z += xp[:, di:di + SIZE, dj:dj + SIZE, :] @ w["conv_w"][di, dj].astype(np.float64)
    return z + w["conv_b"]


def np_logits(x, w):
    h = np.maximum(np_conv(x, w), 0)
    p = h.reshape(len(x), SIZE // 2, 2, SIZE // 2, 2, FILTERS).mean((2, 4)).reshape(len(x), -1)
    return p @ w["dense_w"].astype(np.float64) + w["dense_b"]


def np_input_x_gradient(x, t, w):
    """x * d logit_t / d x of the network, by hand (Shrikumar et al. 2016)."""
    z = np_conv(x, w)
    gp = w["dense_w"].astype(np.float64)[:, t].T.reshape(len(x), SIZE // 2, SIZE // 2, FILTERS) / 4.0
    gz = np.repeat(np.repeat(gp, 2, 1), 2, 2) * (z > 0)
    gx = np.zeros((len(x), SIZE + 2, SIZE + 2, x.shape[-1]))
    for di in range(3):
        for dj in range(3):
            gx[:, di:di + SIZE, dj:dj + SIZE, :] += gz @ w["conv_w"][di, dj].astype(np.float64).T
    return x * gx[:, 1:-1, 1:-1, :]


def permuted(w, layers, seed, base=None):
    """The weights with ``layers`` ('conv', 'dense') permuted along their first axis, RandomState(seed + 1)
    per layer, kernel then bias (Quantus' Keras procedure)."""
    out = {k: v.copy() for k, v in (base or w).items()}
    for layer in layers:
        rs = np.random.RandomState(seed + 1)
        out[f"{layer}_w"] = rs.permutation(out[f"{layer}_w"])
        out[f"{layer}_b"] = rs.permutation(out[f"{layer}_b"])
    return out


def stage_weights(order, seed):
    """(layer name, weights) per stage, as MPRT's layer_order says."""
    w = weights()
    names = ["dense", "conv"] if order == "top_down" else ["conv", "dense"]
    out, cur = [], w
    for name in names:
        cur = permuted(w, [name], seed) if order == "independent" else permuted(w, [name], seed, base=cur)
        out.append((name, cur))
    return out


def rows_spearman(a, b):
    return np.array([spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(len(a))])


def by_max_abs(a):
    return np.abs(a / np.abs(a).max())


# ----------------------------------------------------------------------------- equal to Quantus

def test_functions_equal_quantus():
    A, B = np.array(REF["arrays"]["A"]), np.array(REF["arrays"]["B"])
    # float64 arithmetic on the same arrays: equal up to rounding
    np.testing.assert_allclose(M.correlation_spearman(A, B, batched=True), REF["correlation_spearman"],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(M.ssim(A, B, batched=True), REF["ssim"], rtol=0, atol=1e-12)
    np.testing.assert_allclose([M.discrete_entropy(a=a, x=a) for a in A], REF["discrete_entropy_100"],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose([M.discrete_entropy(a=b, x=b, n_bins=10) for b in B], REF["discrete_entropy_10"],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(M.normalise_by_average_second_moment_estimate(A), REF["second_moment"],
                               rtol=0, atol=1e-12)
    assert M.correlation_spearman(A[0], B[0]) == pytest.approx(REF["correlation_spearman"][0], abs=1e-12)


def test_batched_discrete_entropy_is_numpy_histogram_and_scipy_entropy():
    """EfficientMPRT scores every sample's discrete entropy at once: the same counts as
    np.histogram per row (rounding at the bin edges, constant rows, ties) and scipy's entropy."""
    from interprettensor.analysis.metrics.randomisation import _discrete_entropies

    rng = np.random.default_rng(3)
    for t in range(60):
        n, m, bins = int(rng.integers(1, 5)), int(rng.integers(1, 300)), int(rng.integers(1, 220))
        a = rng.standard_normal((n, m))
        if t % 3 == 1:
            a = np.round(a * 3) / 3  # ties on the bin edges
        if t % 3 == 2:
            a[0] = a[0, 0]  # a constant row: np.histogram widens its range by 0.5
        ref = [sp_entropy(np.histogram(row, bins=bins)[0]) for row in a]
        # the same counts; the entropy's float64 sum over at most 220 bins (|p log p| <= 1/e) may be
        # ordered differently: within 220 * 2**-52
        np.testing.assert_allclose(_discrete_entropies(a, bins), ref, rtol=0, atol=220 * 2.0 ** -52)


def test_random_logit_equals_quantus(data):
    model, x, y = data
    ref = REF["random_logit"]
    metric = M.RandomLogit(num_classes=5, seed=42)
    np.testing.assert_array_equal(metric.off_classes(y), ref["off_classes"])
    # Quantus flattened channels-first explanations (a PyTorch model); SSIM of a flattened map depends
    # on the order, so the channels-last rows are put into that order for the comparison
    cf = lambda a: a.reshape(len(a), SIZE, SIZE, 3).transpose(0, 3, 1, 2).reshape(len(a), -1)  # noqa: E731
    metric.similarity_func = lambda a, b, batched=False: M.ssim(cf(a), cf(b), batched=batched)
    scores = metric(model=model, x_batch=x, y_batch=y, explain_func=M.explain, explain_func_kwargs=IXG)
    # float32 explanations (relative error ~1e-6) through SSIM (a smooth function of them, values ~0.1)
    np.testing.assert_allclose(scores, ref["scores"], rtol=0, atol=1e-6)


def test_mprt_original_and_numpy_stages(data):
    """MPRT's "original" entry equals Quantus'; every randomised stage equals numpy (cascading top-down,
    the default)."""
    model, x, y = data
    a_given = np.random.default_rng(3).normal(size=(6, 3, SIZE, SIZE)).transpose(0, 2, 3, 1)
    calls = []

    def explain(model, inputs, targets, **kw):
        calls.append(len(inputs))
        return M.explain(model, inputs, targets, **kw)

    before = [w.copy() for w in model.get_weights()]
    res = M.MPRT()(model=model, x_batch=x, y_batch=y, a_batch=a_given, explain_func=explain, explain_func_kwargs=IXG)
    assert list(res) == ["original", "dense", "conv"]
    # rank correlation of float32 explanations (no near-ties): equal up to float64 rounding
    np.testing.assert_allclose(res["original"], REF["mprt_original"]["scores"], rtol=0, atol=1e-12)
    a_ref = by_max_abs(a_given)
    for name, w in stage_weights("top_down", 42):
        expected = rows_spearman(a_ref, by_max_abs(np_input_x_gradient(x, y, w)))
        np.testing.assert_allclose(res[name], expected, rtol=0, atol=1e-12, err_msg=name)
    assert calls == [6, 6, 6]  # one explanation call of the whole batch per stage
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)  # the model itself is not changed


@pytest.mark.parametrize("order", ["bottom_up", "independent"])
def test_mprt_orders_against_numpy(data, order):
    model, x, y = data
    metric = M.ModelParameterRandomisation(layer_order=order, seed=3, return_last_correlation=(order == "bottom_up"))
    res = metric(model=model, x_batch=x, y_batch=y, explain_func=M.explain, explain_func_kwargs=IXG)
    a0 = by_max_abs(np_input_x_gradient(x, y, weights()))
    stages = stage_weights(order, 3)
    expected = {name: rows_spearman(a0, by_max_abs(np_input_x_gradient(x, y, w))) for name, w in stages}
    if order == "bottom_up":
        np.testing.assert_allclose(res, expected["dense"], rtol=0, atol=1e-12)
    else:
        assert list(res) == ["original", "conv", "dense"]
        np.testing.assert_allclose(res["original"], 1.0, rtol=0, atol=1e-12)
        for name in ("conv", "dense"):
            np.testing.assert_allclose(res[name], expected[name], rtol=0, atol=1e-12)


def test_mprt_average_and_skip_layers(data):
    model, x, y = data
    kw = dict(model=model, x_batch=x, y_batch=y, explain_func=M.explain, explain_func_kwargs=IXG)
    full = M.MPRT()(**kw)
    avg = M.MPRT(return_average_correlation=True)(**kw)
    np.testing.assert_allclose(avg, (np.array(full["dense"]) + np.array(full["conv"])) / 2, rtol=0, atol=1e-12)
    skip = M.MPRT(skip_layers=True)(**kw)
    assert list(skip) == ["original", "conv"]
    np.testing.assert_allclose(skip["conv"], full["conv"], rtol=0, atol=1e-12)
    agg = M.MPRT(return_last_correlation=True, return_aggregate=True)(**kw)
    assert agg == [pytest.approx(np.mean(full["conv"]), abs=1e-12)]


def test_smooth_mprt_against_numpy(data):
    model, x, y = data
    k, mag, seed = 3, 0.2, 5
    res = M.SmoothMPRT(nr_samples=k, noise_magnitude=mag, seed=seed)(
        model=model, x_batch=x, y_batch=y, explain_func=M.explain, explain_func_kwargs=IXG, batch_size=12)
    # the documented noise: default_rng(seed), (k - 1) standard normal copies times 0.2 * (max - min)
    std = mag * (x.max((1, 2, 3), keepdims=True) - x.min((1, 2, 3), keepdims=True))
    eps = np.random.default_rng(seed).standard_normal((k - 1,) + x.shape) * std
    copies = [(x + e).astype(np.float32) for e in eps] + [x]

    def smooth(w):
        a = sum(np_input_x_gradient(c.astype(np.float64), y, w) for c in copies) / k
        return np.abs(a / np.sqrt(np.mean(a ** 2)))

    a0 = smooth(weights())
    assert list(res) == ["original", "conv", "dense"]
    np.testing.assert_allclose(res["original"], 1.0, rtol=0, atol=1e-12)
    for name, w in stage_weights("bottom_up", seed):
        np.testing.assert_allclose(res[name], rows_spearman(a0, smooth(w)), rtol=0, atol=1e-12, err_msg=name)


def test_efficient_mprt_against_quantus_and_numpy(data):
    model, x, y = data
    em = M.EfficientMPRT(compute_extra_scores=True)
    scores = em(model=model, x_batch=x, y_batch=y, explain_func=M.explain, explain_func_kwargs=IXG)
    ref = REF["efficient_mprt_orig"]
    # histogram entropies of float32 explanations (no value on a bin edge): equal up to rounding
    np.testing.assert_allclose(em.explanation_scores_by_layer["orig"], ref["explanation"], rtol=0, atol=1e-12)
    # entropy of the float32 softmax output: ~1e-7 relative
    np.testing.assert_allclose(em.model_scores_by_layer["orig"], ref["model"], rtol=1e-5, atol=0)

    def h(a):
        return np.array([sp_entropy(np.histogram(r, bins=100)[0]) for r in a])

    h0 = h(np_input_x_gradient(x, y, weights()))
    w_full = stage_weights("bottom_up", 42)[-1][1]
    h1 = h(np_input_x_gradient(x, y, w_full))
    np.testing.assert_allclose(scores, (h1 - h0) / h0, rtol=0, atol=1e-12)
    p = np.exp(np_logits(x, w_full))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(em.model_scores_by_layer["dense"], -(p * np.log(p)).sum(1), rtol=1e-5)
    np.testing.assert_allclose(em.scores_extra["scores_delta_explanation"], h1 - h0, rtol=0, atol=1e-12)
    # without a_batch, two explanations per batch: the original and the fully randomised model's
    # (an a_batch it does not read is not made; Quantus makes it)
    calls = []

    def counting(model, inputs, targets, **kw):
        calls.append(len(inputs))
        return M.explain(model, inputs, targets, **kw)

    M.EfficientMPRT()(model=model, x_batch=x, y_batch=y, explain_func=counting, explain_func_kwargs=IXG)
    assert calls == [len(x), len(x)]
    # a rule for the number of bins: sqrt of the values per sample (192), clamped to [10, 200]
    rule = M.EfficientMPRT(complexity_func_kwargs={"rule": "Square Root"})
    rule(model=model, x_batch=x[:2], y_batch=y[:2], explain_func=M.explain, explain_func_kwargs=IXG)
    assert rule.n_bins == int(np.sqrt(SIZE * SIZE * 3)) == 13


@pytest.mark.parametrize("in_place_size", [None, 1])
def test_randomised_layers_are_quantus_permutations(data, in_place_size, monkeypatch):
    """Every stage's weights are numpy's permutations of the original ones, in every order, and the
    originals come back; ``in_place_size=1``: every variable permuted in place by a gather and
    restored by the inverse one (the path of large variables) instead of assigned from the host."""
    if in_place_size is not None:
        monkeypatch.setattr(sys.modules["interprettensor.analysis.metrics.model"], "IN_PLACE_SIZE", in_place_size)
    model, _, _ = data
    mm = M.MetricModel(model)
    assert mm.randomisable_layers() == ["conv", "dense"]
    w = weights()
    stages = list(mm.randomised_layers("top_down", 7))  # runs the generator to its end
    assert len(stages) == 2
    gen = mm.randomised_layers("top_down", 7)
    for (name, m), (ref_name, ref_w) in zip(gen, stage_weights("top_down", 7)):
        assert name == ref_name and m is mm  # the model itself, its variables assigned
        got = m.model.get_weights()
        for got_w, key in zip(got, ["conv_w", "conv_b", "dense_w", "dense_b"]):
            np.testing.assert_array_equal(got_w, ref_w[key])
    assert not np.array_equal(got[0], w["conv_w"])  # the permutation changed the kernel
    for got_w, key in zip(model.get_weights(), ["conv_w", "conv_b", "dense_w", "dense_b"]):
        np.testing.assert_array_equal(got_w, w[key])  # restored at the generator's end
    for order in ("bottom_up", "independent"):
        for (name, m), (ref_name, ref_w) in zip(mm.randomised_layers(order, 7), stage_weights(order, 7)):
            assert name == ref_name
            for got_w, key in zip(m.model.get_weights(), ["conv_w", "conv_b", "dense_w", "dense_b"]):
                np.testing.assert_array_equal(got_w, ref_w[key])
    gen = mm.randomised_layers("bottom_up", 7)
    name, m = next(gen)
    assert name == "conv" and not np.array_equal(model.get_weights()[0], w["conv_w"])
    gen.close()  # stopped before its end: closing restores the weights
    for got_w, key in zip(model.get_weights(), ["conv_w", "conv_b", "dense_w", "dense_b"]):
        np.testing.assert_array_equal(got_w, w[key])


def test_errors(data):
    model, x, y = data
    with pytest.raises(ExplainError, match="needs explain_func"):
        M.MPRT()(model=model, x_batch=x, y_batch=y, a_batch=np.ones_like(x))
    with pytest.raises(ExplainError, match="num_classes=1000 but the model has 5 outputs"):
        M.RandomLogit()(model=model, x_batch=x, y_batch=y, explain_func=M.explain)
    with pytest.raises(ValueError, match="layer_order"):
        M.MPRT(layer_order="sideways")
    with pytest.raises(ValueError, match="return_aggregate"):
        M.SmoothMPRT(return_aggregate=True)
    with pytest.raises(TypeError, match="unexpected"):
        M.EfficientMPRT(n_bins=3)
    with pytest.raises(ValueError, match="rule"):
        M.EfficientMPRT(complexity_func_kwargs={"rule": "Mine"})
    with pytest.raises(ExplainError, match="values per sample"):
        M.MPRT()(model=model, x_batch=x, y_batch=y, a_batch=np.ones(x.shape[:3]), explain_func=M.explain)
    assert [M.MPRT.higher_is_better, M.SmoothMPRT.higher_is_better, M.EfficientMPRT.higher_is_better,
            M.RandomLogit.higher_is_better] == [False, False, True, False]
    assert CLASSES == 5


def test_mprt_randomises_the_model_in_place_and_restores_it(data):
    """The stages assign permuted weights into the model's own variables (one compiled explainer
    serves every stage: the LRP explainer of the model is traced once) and the original weights come
    back, also when an explanation fails half way."""
    explain_module = sys.modules["interprettensor.analysis.metrics.explain"]  # the module, not the function

    model, x, y = data
    before = [w.copy() for w in model.get_weights()]
    seen = []

    def explain(model, inputs, targets, **kw):
        seen.append(model)
        return M.explain(model, inputs, targets, method="epsilon")

    M.MPRT()(model=model, x_batch=x, y_batch=y, explain_func=explain)
    assert all(m is model for m in seen) and len(seen) == 4  # a_batch, original, dense, conv
    explainers = [e for (ref, e) in explain_module._RECENT.values() if ref() is model]
    assert len(explainers) == 1 and len(explainers[0]._functions) == 1

    def failing(model, inputs, targets, **kw):
        if len(seen) == 6:
            raise RuntimeError("explanation failed")
        seen.append(model)
        return M.explain(model, inputs, targets, method="epsilon")

    with pytest.raises(RuntimeError, match="explanation failed"):
        M.MPRT()(model=model, x_batch=x, y_batch=y, explain_func=failing)
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)

    # a similarity measured on the worker thread that fails stops the stages with its error; the
    # weights come back as well
    compared = []

    def similarity(a, b, batched=True):
        compared.append(len(a))
        if len(compared) == 2:
            raise ValueError("similarity failed")
        return np.zeros(len(a))

    with pytest.raises(ValueError, match="similarity failed"):
        M.MPRT(similarity_func=similarity)(model=model, x_batch=x, y_batch=y, explain_func=explain)
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)


def test_constant_explanations_are_scored_and_named(data):
    """A constant map has no ranking: its Spearman correlation with anything is 0 (scipy and Quantus:
    NaN) and MPRT warns, naming the sample; SSIM of two identical constant maps is 1 (their data range
    is 0, where the formula is 0/0); eMPRT's relative rise from a constant explanation (entropy 0) is
    undefined: NaN, with a warning naming the sample."""
    model, x, y = data
    A = np.random.default_rng(0).normal(size=(3, 20))
    B = A[::-1].copy()
    B[1] = 2.0
    r = M.correlation_spearman(A, B, batched=True)
    assert r[1] == 0.0
    np.testing.assert_allclose(r[[0, 2]], rows_spearman(A[[0, 2]], B[[0, 2]]), rtol=0, atol=1e-12)
    assert M.correlation_spearman(A[0], B[1]) == 0.0
    assert M.ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), batched=True) == [1.0, 1.0]

    def zero_for_sample_4(model, inputs, targets, **kw):  # batches of 4 and 2: sample 4 is in the second
        a = M.explain(model, inputs, targets, **IXG)
        a[np.all(inputs == x[4], axis=(1, 2, 3))] = 0.0
        return a

    kw = dict(model=model, x_batch=x, y_batch=y, explain_func=zero_for_sample_4, batch_size=4)
    with pytest.warns(RuntimeWarning, match=r"MPRT: samples \[4\] have a constant explanation"):
        res = M.MPRT()(**kw)
    assert all(res[k][4] == 0.0 for k in res) and np.isfinite([v for k in res for v in res[k]]).all()
    with pytest.warns(RuntimeWarning, match=r"EfficientMPRT: the scores of samples \[4\] are undefined"):
        scores = M.EfficientMPRT()(**kw)
    assert np.isnan(scores[4]) and np.isfinite(np.delete(scores, 4)).all()
