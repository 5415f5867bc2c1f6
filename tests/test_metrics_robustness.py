"""The robustness metrics (interprettensor.analysis.metrics.robustness) against Quantus 0.6.0's scores
on the same model, inputs, perturbations and explanations (tests/data/quantus_reference/robustness.json,
made by tests/quantus_reference/make_robustness.py in Quantus' own environment), and with real noise
against numpy written from the metric's definition and Quantus' mean within standard errors.

Both sides perturb by the same fixed arrays (robustness_inputs.deltas; Quantus' perturb_func replaced,
ours given the same arrays for all steps stacked), and explain either with a numpy function of the
inputs (elementwise_explain) or gradient x input of the logits (torch autograd there,
it.metrics.explain(method='input_x_gradient') here).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import interprettensor as it
from interprettensor.analysis.metrics import robustness
from interprettensor.engine.errors import ExplainError

sys.path.insert(0, str(Path(__file__).parent / "quantus_reference"))
from models import CHANNELS, SIZE, inputs, keras_model  # noqa: E402
from robustness_inputs import (consistency_attributions, deltas, elementwise_explain, gated_explain,  # noqa: E402
                               zero_sample)

REF = json.loads((Path(__file__).parent / "data" / "quantus_reference" / "robustness.json").read_text())
K, N, D = REF["steps"], 4, SIZE * SIZE * CHANNELS
EPS32 = 2.0 ** -23
# Inputs-only cases (numpy explanations of identical float32 inputs): Quantus sums d = 192 float32
# squares (its distances on float32 inputs), so scores agree to about d * eps32.
RTOL_INPUTS = D * EPS32
# Cases through the float32 model (explanations by autograd, logits, hidden layers): each output or
# gradient is a float32 sum over at most 27 (conv) + 64 (dense) terms in each framework, so they agree
# to ~100 eps32 = 1.2e-5 of their size; the metrics divide by differences between inputs 5-25 % apart,
# amplifying that up to ~10 times.
RTOL_MODEL = 10 * 100 * EPS32
CASES = {c["name"]: c for c in REF["cases"]}


def _fixed_perturb(scale):
    d = deltas(K, N, scale, channels_last=True).reshape(K * N, D)

    def perturb(arr, indices=None, **kwargs):  # Quantus' batched signature, all K steps stacked
        assert arr.shape == d.shape, arr.shape
        return (arr + d).astype(arr.dtype)

    return perturb


def _explain_kwargs(name):
    if name == "elementwise":
        return {"explain_func": elementwise_explain}
    if name == "gated":
        return {"explain_func": gated_explain}
    if name == "input_x_gradient":
        return {"explain_func": it.metrics.explain, "explain_func_kwargs": {"method": "input_x_gradient"}}
    return {}


@pytest.fixture(scope="module")
def model():
    return keras_model()


def _ours(case, model):
    init = dict(case["init"])
    if case["fixed_perturbation"]:
        init["perturb_func"] = _fixed_perturb(case["delta_scale"])
    metric = getattr(it.metrics, case["metric"])(**init)
    call = dict(case["call"], **_explain_kwargs(case["explain"]))
    zero = case.get("a_batch_zero_sample")
    if case["metric"] == "Consistency":
        x, y = inputs(9, seed=5)
        a = consistency_attributions(9)
        return metric(model=model, x_batch=x, y_batch=y, a_batch=a if zero is None else zero_sample(a, zero), **call)
    x, y = inputs(N)
    if zero is not None:  # a given a_batch with one zero sample
        call["a_batch"] = zero_sample(elementwise_explain(inputs=x, targets=y), zero)
    return metric(model=model, x_batch=x, y_batch=y, **call)


@pytest.mark.parametrize("name", [n for n in CASES if n != "avg_sensitivity_random"])
def test_equals_quantus(model, name):
    case = CASES[name]
    ours = np.asarray(_ours(case, model), np.float64)
    ref = np.array([np.nan if v is None else v for v in case["scores"]])
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))  # NaN where the class changed, as Quantus
    if case["metric"] == "Consistency":
        rtol = 1e-12  # ratios of counts
    elif case["explain"] == "elementwise" and case["metric"] not in ("RelativeOutputStability",
                                                                     "RelativeRepresentationStability"):
        rtol = RTOL_INPUTS
    else:
        rtol = RTOL_MODEL
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", ["max_sensitivity_gated", "avg_sensitivity_gated", "MaxSensitivity_zero_given",
                                  "AvgSensitivity_zero_given"])
def test_zero_norm_explanations_score_nan_and_are_named(model, name):
    """A sample whose explanation has norm 0 has no relative sensitivity: NaN (Quantus: NaN for 0/0, inf
    where the re-explanation is not zero; both stored as null), with a warning naming the samples."""
    case = CASES[name]
    with pytest.warns(RuntimeWarning, match=r"samples \[1(, 2)?\] are undefined \(NaN\) \(their explanations "
                                            r"have norm 0"):
        ours = _ours(case, model)
    assert np.isnan(ours[1]) and np.isfinite(ours[0])


def test_a_dead_model_against_the_definitions(model):
    """Every explanation zero (a dead model; Quantus raises an AssertionError on the batch): the
    sensitivities are undefined (NaN, named); the other metrics' quotients have zero numerators (or,
    for Consistency, every explanation has the same label), so numpy from their definitions gives 0
    and the shares of same-class samples."""
    x, y = inputs(N)
    dead = {"explain_func": lambda model=None, inputs=None, targets=None, **kw: np.zeros(np.shape(inputs))}
    kw = dict(model=model, x_batch=x, y_batch=y, **dead)
    for cls in ("MaxSensitivity", "AvgSensitivity"):
        with pytest.warns(RuntimeWarning, match=r"samples \[0, 1, 2, 3\] are undefined"):
            assert np.isnan(getattr(it.metrics, cls)(nr_samples=3)(**kw)).all()
    off = {"return_nan_when_prediction_changes": False}
    for metric in (it.metrics.LocalLipschitzEstimate(nr_samples=3), it.metrics.Continuity(nr_steps=5),
                   it.metrics.RelativeInputStability(nr_samples=3, **off),
                   it.metrics.RelativeOutputStability(nr_samples=3, **off),
                   it.metrics.RelativeRepresentationStability(nr_samples=3, layer_names=["pool"], **off)):
        assert np.asarray(metric(**kw)).tolist() == [0.0] * N, type(metric).__name__
    # Consistency: every top_n_sign label is the same, so each sample's score is the share of the other
    # samples the model puts in its class (Dasgupta et al. 2022, def. 2)
    xk, _ = inputs(9, seed=5)
    pred = np.asarray(model(xk)).argmax(-1)
    same = (pred[:, None] == pred[None]) & ~np.eye(9, dtype=bool)
    got = it.metrics.Consistency()(model=model, x_batch=xk, y_batch=pred, a_batch=np.zeros(xk.shape[:-1]))
    np.testing.assert_allclose(got, same.sum(1) / 8, rtol=1e-8)  # Quantus' 1e-9 in the share's divisor


def test_cases_cover_nan_and_values():
    """The reference holds both NaN (class changed) and finite scores, and consistencies other than 0/1."""
    assert any(v is None for v in CASES["ros_nan_softmax"]["scores"])
    assert any(v is not None for v in CASES["ros_nan_softmax"]["scores"])
    assert 0.4 < CASES["consistency_batch_64"]["scores"][3] < 0.6


def test_avg_sensitivity_with_noise_matches_definition_and_quantus(model):
    """Real noise: ours (seeded) equals numpy from Yeh et al.'s definition on the same draws, and
    Quantus' mean (its own np.random noise) lies within 4 standard errors of ours (per sample)."""
    case = CASES["avg_sensitivity_random"]
    k = case["init"]["nr_samples"]
    x, y = inputs(N)
    calls = []

    def explain(model=None, inputs=None, targets=None, **kw):
        calls.append(len(inputs))
        return it.metrics.explain(model, inputs, targets, method="input_x_gradient")

    ours = np.asarray(it.metrics.AvgSensitivity(nr_samples=k, seed=0)(model=model, x_batch=x, y_batch=y,
                                                                      explain_func=explain))
    assert calls == [N, k * N]  # x, then all k perturbed versions in one call
    # numpy: the same draws (k steps of N samples, U(-0.2, 0.2) on every feature)
    noise = np.random.default_rng(0).uniform(-0.2, 0.2, (k * N, D))
    xs = (np.tile(x.reshape(N, D), (k, 1)) + noise).astype(np.float32).reshape((k * N,) + x.shape[1:])
    a = it.metrics.explain(model, x, y, method="input_x_gradient").reshape(N, D)
    ap = it.metrics.explain(model, xs, np.tile(y, k), method="input_x_gradient").reshape(k, N, D)
    ratios = np.linalg.norm(ap - a[None], axis=-1) / np.linalg.norm(a, axis=-1)[None]  # (k, N)
    np.testing.assert_allclose(ours, ratios.mean(0), rtol=1e-9)
    se = ratios.std(0, ddof=1) / np.sqrt(k)
    quantus = np.asarray(case["scores"])
    assert np.all(np.abs(quantus - ours) < 4 * np.sqrt(2) * se), (quantus, ours, se)


def test_seeded_and_reproducible(model):
    x, y = inputs(N)
    kw = dict(model=model, x_batch=x, y_batch=y, explain_func=elementwise_explain)
    a1 = it.metrics.MaxSensitivity(nr_samples=6, seed=3)(**kw)
    a2 = it.metrics.MaxSensitivity(nr_samples=6, seed=3)(**kw)
    b = it.metrics.MaxSensitivity(nr_samples=6, seed=4)(**kw)
    m = it.metrics.LocalLipschitzEstimate(nr_samples=6, seed=3)
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, b)
    np.testing.assert_array_equal(m(**kw), m(**kw))  # each call starts the stream anew


def test_batches_and_chunks_do_not_change_scores(model, monkeypatch):
    """Per-sample scores do not depend on batch_size, nor on splitting the stacked steps into several
    explain calls (MAX_STACKED_FEATURES)."""
    x, y = inputs(N)
    case = CASES["max_sensitivity_input_x_gradient"]
    full = np.asarray(_ours(case, model))
    calls = []

    def explain(model=None, inputs=None, targets=None, **kw):
        calls.append(len(inputs))
        return elementwise_explain(inputs=inputs, targets=targets)

    metric = it.metrics.AvgSensitivity(nr_samples=4, seed=1)
    one = metric(model=model, x_batch=x, y_batch=y, explain_func=explain)
    assert calls == [N, 4 * N]
    assert full.shape == (N,)
    halves = []
    for s in (slice(0, 2), slice(2, 4)):
        d = deltas(K, N, case["delta_scale"], True)[:, s].reshape(-1, D)
        m = it.metrics.MaxSensitivity(nr_samples=K, perturb_func=lambda arr, indices=None, d=d, **kw: (arr + d)
                                      .astype(arr.dtype))
        halves += m(model=model, x_batch=x[s], y_batch=y[s], explain_func=it.metrics.explain,
                    explain_func_kwargs={"method": "input_x_gradient"})
    np.testing.assert_allclose(halves, full, rtol=RTOL_MODEL)
    monkeypatch.setattr(robustness, "MAX_STACKED_FEATURES", 2 * N * D)  # 2 steps per call
    calls.clear()
    two = metric(model=model, x_batch=x, y_batch=y, explain_func=explain)
    assert calls == [N, 2 * N, 2 * N]
    np.testing.assert_allclose(two, one, rtol=1e-12)


def test_continuity_translation_matches_numpy():
    """batched_translation (channels-last): shifted along the width, uncovered pixels the sample's min."""
    x, _ = inputs(2)
    for dx in (-9, -3, 0, 2, 8):
        out = robustness.batched_translation(x, "black", dx)
        for i in range(2):
            for w in range(SIZE):
                src = w - dx
                want = x[i, :, src] if 0 <= src < SIZE else np.full((SIZE, CHANNELS), x[i].min())
                np.testing.assert_array_equal(out[i, :, w], want)
    np.testing.assert_array_equal(robustness.batched_translation(x, 0.5, 2, direction="y")[:, :2], 0.5)


def test_functions_are_batched_as_quantus():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    np.testing.assert_allclose(robustness.fro_norm(a), [np.sqrt((r ** 2).sum()) for r in a])
    np.testing.assert_allclose(robustness.distance_manhattan(a, b), np.abs(a - b).sum(1))
    np.testing.assert_allclose(robustness.lipschitz_constant(a, b, a, 2 * b),
                               np.abs(a - b).sum(1) / (np.sqrt(((a - 2 * b) ** 2).sum(1)) + 1e-10))
    noisy = robustness.uniform_noise(np.zeros((2, 1000), np.float32), lower_bound=0.1, upper_bound=0.3,
                                     rng=np.random.default_rng(0))
    assert noisy.dtype == np.float32 and 0.1 <= noisy.min() and noisy.max() < 0.3
    # every feature named (the metrics' broadcast indices: added at once) or some of them (added where
    # named): the same as numpy adding the same draws where the indices say
    arr = rng.uniform(size=(3, 7)).astype(np.float32)
    every = np.broadcast_to(np.arange(7), (3, 7))
    some = np.array([[0, 2, 6], [1, 1, 3], [5, 4, 0]])
    for idx in (every, every.copy(), some):
        draws = np.random.default_rng(5).uniform(-0.1, 0.1, arr.shape)
        want = arr.copy()
        np.put_along_axis(want, idx, np.take_along_axis(arr + draws, idx, 1), 1)
        got = robustness.uniform_noise(arr, idx, lower_bound=0.1, rng=np.random.default_rng(5))
        np.testing.assert_array_equal(got, want)
    sm = it.metrics.normalise_by_average_second_moment_estimate(a)
    np.testing.assert_allclose(np.mean(sm ** 2), 1.0)
    np.testing.assert_array_equal(robustness.top_n_sign(np.array([[1.0, -2, 0, 3, 4, 5]]), n=3), [[1, -1, 0]])


def test_bad_arguments_raise(model):
    x, y = inputs(N)
    kw = dict(model=model, x_batch=x, y_batch=y, explain_func=elementwise_explain)

    def per_sample_noise(arr, indices, indexed_axes, **kwargs):  # Quantus' per-sample signature
        return arr

    with pytest.raises(ExplainError, match="per-sample"):
        it.metrics.MaxSensitivity(perturb_func=per_sample_noise)
    with pytest.raises(ExplainError, match=r"norm_numerator.*\(N,\)"):
        it.metrics.MaxSensitivity(nr_samples=2, norm_numerator=lambda a: float(np.linalg.norm(a)))(**kw)
    with pytest.raises(ExplainError, match="discretise_func"):
        it.metrics.Consistency(discretise_func=lambda a: hash(bytes(np.sign(a)[:5])))(
            model=model, x_batch=x, y_batch=y, a_batch=np.ones(x.shape[:-1]))
    with pytest.raises(ExplainError, match="nr_steps=28"):
        it.metrics.Continuity()(**kw)  # 8 pixels wide: 17 translations at most
    with pytest.raises(ExplainError, match="explain_func"):
        it.metrics.AvgSensitivity(nr_samples=2)(model=model, x_batch=x, y_batch=y, a_batch=np.ones_like(x))
    with pytest.raises(TypeError, match="unexpected"):
        it.metrics.RelativeInputStability(lower_bound=0.1)  # not one of Quantus' arguments for RIS
    with pytest.raises(ExplainError, match="layer_names or layer_indices"):
        it.metrics.RelativeRepresentationStability(layer_names=["pool"], layer_indices=[0])


def test_quantus_defaults():
    m = it.metrics.MaxSensitivity()
    assert (m.nr_samples, m.normalise, m.abs) == (200, False, False)
    assert m.perturb_func_kwargs == {"lower_bound": 0.2, "upper_bound": None}
    lle = it.metrics.LocalLipschitzEstimate()
    assert lle.normalise and lle.perturb_func is robustness.gaussian_noise
    assert lle.perturb_func_kwargs == {"perturb_mean": 0.0, "perturb_std": 0.1}
    ris = it.metrics.RelativeInputStability(perturb_func_kwargs={"lower_bound": 0.05})
    assert ris.perturb_func_kwargs == {"upper_bound": 0.2, "lower_bound": 0.05}
    assert ris.return_nan_when_prediction_changes and ris._eps_min == 1e-6
    c = it.metrics.Continuity()
    assert (c.nr_steps, c.abs, c.normalise) == (28, True, True)
    assert it.metrics.Consistency().discretise_func is robustness.top_n_sign


def _channels_first_model():
    """The reference network taking channels-first inputs (a Permute in front of the same layers)."""
    import keras

    base = keras_model()
    inp = keras.Input((CHANNELS, SIZE, SIZE))
    h = keras.layers.Permute((2, 3, 1))(inp)
    for name in ("conv", "pool", "flatten", "dense"):
        h = base.get_layer(name)(h)
    return keras.Model(inp, h)


@pytest.mark.parametrize("name", ["ris_elementwise", "ros_elementwise", "rrs_elementwise",
                                  "max_sensitivity_normalised_abs", "continuity_input_x_gradient"])
def test_channels_first_equals_quantus(name):
    """channel_first=True: a channels-first model and inputs give Quantus' scores (perturb_func sees
    channels-last rows, so the same deltas apply)."""
    case = CASES[name]
    init = dict(case["init"])
    if case["fixed_perturbation"]:
        init["perturb_func"] = _fixed_perturb(case["delta_scale"])
    x, y = inputs(N)
    ours = getattr(it.metrics, case["metric"])(**init)(
        model=_channels_first_model(), x_batch=x.transpose(0, 3, 1, 2), y_batch=y, channel_first=True,
        **_explain_kwargs(case["explain"]))
    np.testing.assert_allclose(ours, case["scores"], rtol=RTOL_MODEL)


def test_continuity_own_perturbation_and_nan_where_the_prediction_changes(model):
    """Continuity honours perturb_func (Quantus 0.6 ignores it) and, with
    return_nan_when_prediction_changes, scores NaN where a step changes the predicted class (compared
    with the unperturbed prediction, not y_batch as Quantus 0.6 does); the other scores follow
    Montavon et al.'s ratio, in numpy."""
    n = 8
    x, y = inputs(n)

    pattern = deltas(1, n, 1.0, channels_last=True)[0].reshape(x.shape)

    def wobble(arr, perturb_dx=0, **kw):  # channels-last batch, shift-dependent amplitude
        return (arr + 0.04 * perturb_dx * pattern).astype(arr.dtype)

    metric = it.metrics.Continuity(nr_steps=4, perturb_func=wobble, return_nan_when_prediction_changes=True)
    got = np.asarray(metric(model=model, x_batch=x, y_batch=y, explain_func=elementwise_explain))
    shifts = (-4, 0, 4, 8)  # dx = 17 // 4
    xs = np.stack([wobble(x, s) for s in shifts])
    pred = np.asarray(model(x)).argmax(-1)
    changed = (np.asarray(model(xs.reshape((-1,) + x.shape[1:]))).argmax(-1).reshape(4, n) != pred).any(0)
    assert changed.any() and not changed.all()
    np.testing.assert_array_equal(np.isnan(got), changed)

    def prepared(v):  # normalised by each step's batch maximum, absolute (Continuity's defaults)
        a = elementwise_explain(inputs=v, targets=y).reshape(n, -1)
        return np.abs(a / np.abs(a).max())

    a0 = prepared(x)
    ratios = np.stack([np.abs(prepared(v) - a0).sum(1)
                       / (np.linalg.norm((v.astype(np.float64) - x).reshape(n, -1), axis=1) + 1e-9) for v in xs])
    np.testing.assert_allclose(got[~changed], ratios.max(0)[~changed], rtol=1e-9)


def test_score_directions():
    assert not any(getattr(it.metrics, c)().higher_is_better for c in (
        "MaxSensitivity", "AvgSensitivity", "LocalLipschitzEstimate", "Continuity", "RelativeInputStability",
        "RelativeOutputStability", "RelativeRepresentationStability"))
    assert it.metrics.Consistency().higher_is_better  # Dasgupta et al.: agreeing explanations, agreeing classes
