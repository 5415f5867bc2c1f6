"""FaithfulnessCorrelation, SensitivityN, Infidelity and Sufficiency (it.metrics, faithfulness part B)
against Quantus 0.6.0's scores (tests/data/quantus_reference/faithfulness_sampling.json, made by
tests/quantus_reference/make_faithfulness_sampling.py on the same weights) and against numpy written from
the papers' definitions, the model called one perturbed input at a time.

Tolerances: the Keras and PyTorch models agree to float32 rounding; a score difference (logit) carries
at most ``TOL = 64 * eps32 * max|logit|`` of it, and the tolerance of a derived number follows from it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import interprettensor as it
from interprettensor.engine.errors import ExplainError

sys.path.insert(0, str(Path(__file__).parent / "quantus_reference"))
from models import inputs, keras_model  # noqa: E402

REF = json.loads((Path(__file__).parent / "data" / "quantus_reference" / "faithfulness_sampling.json").read_text())
EPS32 = np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def data():
    x, y = inputs(6, seed=1)
    a = np.random.default_rng(3).normal(size=(6, 1, 8, 8)).transpose(0, 2, 3, 1)
    model = keras_model()
    logits = keras_model(softmax=False)
    return model, logits, x, y, a


def _logit_tol(logits, x):
    return 64 * EPS32 * float(np.abs(np.asarray(logits(x))).max())


def _pearson(a, b):
    return np.array([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b)])


# ---------------------------------------------------------------- FaithfulnessCorrelation


def test_faithfulness_correlation_equals_the_definition_on_its_own_draws(data):
    """Bhatt et al. eq. 2 on the subsets the seeded generator draws (the s smallest of uniform draws),
    each perturbed input through the model alone."""
    model, logits, x, y, a = data
    metric = it.metrics.FaithfulnessCorrelation(nr_runs=12, subset_size=16, return_aggregate=False, seed=7)
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=a, softmax=False)
    an = a / np.abs(a).max()  # normalise=True: the whole batch's maximum
    rng = np.random.default_rng(7)
    u = rng.random((12, 6, 8 * 8 * 3))
    z0 = np.asarray(logits(x), np.float64)[np.arange(6), y]
    expected = []
    for i in range(6):
        sums, drops = [], []
        for r in range(12):
            subset = np.argsort(u[r, i])[:16]
            xi = x[i].reshape(-1).copy()
            xi[subset] = x[i].min()
            drops.append(z0[i] - float(np.asarray(logits(xi.reshape(1, 8, 8, 3)))[0, y[i]]))
            sums.append(np.repeat(an[i].reshape(-1), 3)[subset].sum())   # a broadcast over the channels
        expected.append(np.corrcoef(sums, drops)[0, 1])
    # a correlation of n=12 pairs moves by at most ~ (error / spread of the drops): drops spread >> TOL
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    again = metric(model=model, x_batch=x, y_batch=y, a_batch=a, softmax=False)
    np.testing.assert_array_equal(again, scores)  # reproducible: the generator is made anew per call
    other = it.metrics.FaithfulnessCorrelation(nr_runs=12, subset_size=16, return_aggregate=False, seed=8)(
        model=model, x_batch=x, y_batch=y, a_batch=a, softmax=False)
    assert not np.allclose(other, scores)


def test_faithfulness_correlation_is_batched(data):
    """All nr_runs perturbed versions of a batch go through the model in stacked calls: the model sees
    6 + 6 * nr_runs inputs, in 1 + 1 calls (batch_size large enough)."""
    model, _, x, y, a = data
    metric = it.metrics.FaithfulnessCorrelation(nr_runs=10, subset_size=16, return_aggregate=False)
    seen = []
    original = it.metrics.MetricModel.logits

    def spy(self, xx):
        seen.append(len(xx))
        return original(self, xx)

    it.metrics.MetricModel.logits = spy
    try:
        metric(model=model, x_batch=x, y_batch=y, a_batch=a, batch_size=64)
    finally:
        it.metrics.MetricModel.logits = original
    assert seen == [6, 60]


def test_sensitivity_n_and_infidelity_are_batched(data):
    """Every step's perturbed batch is stacked: SensitivityN's 16 steps in one call after the
    original's; Infidelity's 4 + 16 patches in one call per patch size."""
    model, _, x, y, a = data
    seen = []
    original = it.metrics.MetricModel.logits

    def spy(self, xx):
        seen.append(len(xx))
        return original(self, xx)

    it.metrics.MetricModel.logits = spy
    try:
        it.metrics.SensitivityN(features_in_step=3, n_max_percentage=0.25)(model=model, x_batch=x, y_batch=y,
                                                                           a_batch=a, batch_size=64)
        assert seen == [6, 6 * 16]
        seen.clear()
        it.metrics.Infidelity(perturb_patch_sizes=[4, 2])(model=model, x_batch=x, y_batch=y, a_batch=a)
        assert seen == [6, 6 * 4, 6 * 16]
    finally:
        it.metrics.MetricModel.logits = original


def test_faithfulness_correlation_within_standard_errors_of_quantus(data):
    """Quantus draws from np.random (20 seeds stored); ours from 10 seeds of its own generator: the
    per-sample means agree within 4 combined standard errors."""
    model, _, x, y, a = data
    ref = REF["FaithfulnessCorrelation"]
    q = np.asarray(ref["scores"])
    settings = {k: v for k, v in ref["settings"].items() if k != "disable_warnings"}
    ours = np.asarray([it.metrics.FaithfulnessCorrelation(seed=s, **settings)(
        model=model, x_batch=x, y_batch=y, a_batch=a, softmax=False) for s in range(10)])
    se = np.sqrt(q.var(0, ddof=1) / len(q) + ours.var(0, ddof=1) / len(ours))
    assert np.all(np.abs(ours.mean(0) - q.mean(0)) <= 4 * se), (ours.mean(0), q.mean(0), se)


def test_faithfulness_correlation_names_constant_samples(data):
    """Sample 4's attributions are zero: its sums are constant over the runs, its Pearson correlation is
    undefined, scored 0 (Quantus: NaN) with a warning naming it (batches of 4: it is in the second)."""
    model, _, x, y, a = data
    a = a.copy()
    a[4] = 0.0
    with pytest.warns(RuntimeWarning, match=r"FaithfulnessCorrelation: samples \[4\] have constant"):
        scores = it.metrics.FaithfulnessCorrelation(nr_runs=5, subset_size=8, return_aggregate=False)(
            model=model, x_batch=x, y_batch=y, a_batch=a, batch_size=4)
    assert scores[4] == 0.0 and np.isfinite(scores).all()


def test_faithfulness_correlation_checks_its_arguments(data):
    model, _, x, y, a = data
    with pytest.raises(ExplainError, match="subset_size"):
        it.metrics.FaithfulnessCorrelation()(model=model, x_batch=x, y_batch=y, a_batch=a)  # 224 >= 192
    with pytest.raises(TypeError, match="perturb_func_kwargs"):
        it.metrics.FaithfulnessCorrelation(perturb_func_kwargs={"sigma": 1})
    with pytest.raises(TypeError, match="unexpected"):
        it.metrics.FaithfulnessCorrelation(nr_run=3)
    assert it.metrics.FaithfulnessCorrelation().return_aggregate is True  # Quantus' default


# ---------------------------------------------------------------- SensitivityN


def test_sensitivity_n_steps_equal_quantus_and_the_correlation_the_definition(data):
    """Quantus' raw per-step arrays (stored): our score drops equal them; our attribution sums are
    the cumulative sums of Quantus' per-step sums (the removed set, Ancona et al. Def. 3; Quantus sums
    the last step only); the scores are Pearson's correlation across samples of those."""
    model, _, x, y, _ = data
    ref = REF["SensitivityN"]
    a = np.random.default_rng(4).normal(size=(6, 3, 8, 8)).transpose(0, 2, 3, 1)
    settings = {k: v for k, v in ref["settings"].items() if k != "disable_warnings"}
    metric = it.metrics.SensitivityN(**settings)
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=a)  # softmax=True, Quantus' default
    steps = int(0.8 * 192)
    qd = np.asarray(ref["pred_deltas"])
    qa = np.asarray(ref["att_sums"])
    assert metric.pred_deltas.shape == (6, steps)
    # probabilities in [0, 1]: float32 rounding of the softmax, a few eps
    np.testing.assert_allclose(metric.pred_deltas, qd[:, :steps], atol=64 * EPS32)
    np.testing.assert_allclose(metric.att_sums, np.cumsum(qa, 1)[:, :steps], rtol=1e-12, atol=1e-12)
    expected = _pearson(qd[:, :steps].T, np.cumsum(qa, 1)[:, :steps].T)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    # what Quantus returns: the per-step (not cumulative) sums, over int(0.8 * H * W) steps
    q_steps = int(0.8 * 64)
    np.testing.assert_allclose(ref["scores"], _pearson(qd[:, :q_steps].T, qa[:, :q_steps].T), atol=1e-12)


def test_sensitivity_n_counts_all_batches(data):
    """Quantus correlates over the first batch only; here batch_size does not change the result."""
    model, _, x, y, a = data
    kw = dict(features_in_step=3, n_max_percentage=0.25, return_aggregate=False)
    one = it.metrics.SensitivityN(**kw)(model=model, x_batch=x, y_batch=y, a_batch=a, batch_size=64)
    two = it.metrics.SensitivityN(**kw)(model=model, x_batch=x, y_batch=y, a_batch=a, batch_size=4)
    assert len(one) == int(0.25 * 192 // 3)
    np.testing.assert_allclose(two, one, atol=1e-6)
    agg = it.metrics.SensitivityN(features_in_step=3, n_max_percentage=0.25)(
        model=model, x_batch=x, y_batch=y, a_batch=a)
    np.testing.assert_allclose(agg, [np.mean(one)], atol=1e-6)
    with pytest.raises(ExplainError, match="features_in_step"):
        it.metrics.SensitivityN(features_in_step=5)(model=model, x_batch=x, y_batch=y, a_batch=a)


# ---------------------------------------------------------------- Infidelity


@pytest.mark.parametrize("case", range(3))
def test_infidelity_equals_quantus(data, case):
    model, logits, x, y, a = data
    ref = REF["Infidelity"][case]
    scores = it.metrics.Infidelity(**ref["settings"])(model=model, x_batch=x, y_batch=y, a_batch=a)
    # mse of (drop - b): each drop off by <= TOL, so the mse by <= 2 |drop - b| TOL + TOL^2
    tol = _logit_tol(logits, x)
    bound = 2 * np.sqrt(np.asarray(ref["scores"])) * tol + tol ** 2
    np.testing.assert_allclose(scores, ref["scores"], rtol=0, atol=float(bound.max()) * 4 + 1e-9)


def test_infidelity_equals_the_definition_on_uneven_patches(data):
    """Patches of 3 on 8 x 8 (Quantus 0.6 fails): the grid padded as Quantus pads (the 1 missing row:
    floor(1/2) = 0 before, 1 after), squares cut to the image, replaced cumulatively in raster order."""
    model, logits, x, y, a = data
    scores = it.metrics.Infidelity(perturb_patch_sizes=[3], normalise=False)(
        model=model, x_batch=x, y_batch=y, a_batch=a)
    edges = [(0, 3), (3, 6), (6, 8)]
    z0 = np.asarray(logits(x), np.float64)[np.arange(6), y]
    expected = []
    for i in range(6):
        xi = x[i].astype(np.float64).copy()
        ai = np.broadcast_to(a[i], x[i].shape)
        errs = []
        for r0, r1 in edges:
            for c0, c1 in edges:
                xi[r0:r1, c0:c1] = x[i].min()
                drop = z0[i] - float(np.asarray(logits(xi[None].astype(np.float32)))[0, y[i]])
                errs.append((drop - (ai * (x[i] - xi)).sum()) ** 2)
        expected.append(np.mean(errs))
    tol = _logit_tol(logits, x)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=4 * (2 * np.sqrt(max(expected)) * tol + tol ** 2))


def test_infidelity_uniform_baseline_is_seeded(data):
    model, _, x, y, a = data
    kw = dict(perturb_baseline="uniform", n_perturb_samples=3, perturb_patch_sizes=[4])
    s1 = it.metrics.Infidelity(seed=1, **kw)(model=model, x_batch=x, y_batch=y, a_batch=a)
    s1b = it.metrics.Infidelity(seed=1, **kw)(model=model, x_batch=x, y_batch=y, a_batch=a)
    s2 = it.metrics.Infidelity(seed=2, **kw)(model=model, x_batch=x, y_batch=y, a_batch=a)
    np.testing.assert_array_equal(s1, s1b)
    assert not np.allclose(s1, s2)
    with pytest.raises(ExplainError, match="images"):
        it.metrics.Infidelity()(model=model, x_batch=x.reshape(6, -1), y_batch=y, a_batch=x.reshape(6, -1))


# ---------------------------------------------------------------- Sufficiency


@pytest.mark.parametrize("case", range(4))
def test_sufficiency_equals_quantus(data, case):
    """Deterministic: equal to Quantus exactly (fractions of small counts)."""
    model, _, x, y, _ = data
    ref = REF["Sufficiency"][case]
    r = np.random.default_rng(5)
    a = (r.normal(size=(2, 1, 8, 8))[[0, 0, 1, 0, 1, 1]] + 0.3 * r.normal(size=(6, 1, 8, 8))).transpose(0, 2, 3, 1)
    settings = dict(ref["settings"])
    batch_size = settings.pop("batch_size", 64)
    scores = it.metrics.Sufficiency(**settings)(model=model, x_batch=x - 0.5, y_batch=y, a_batch=a,
                                                batch_size=batch_size)
    np.testing.assert_array_equal(scores, ref["scores"])


def test_sufficiency_ignores_features_that_do_not_vary(data):
    """A zero border in every explanation: its variance is 0; the distances over the other features
    are those of seuclidean on them alone (Quantus divides by the zero variance and scores all 0)."""
    from scipy.spatial.distance import cdist

    model, _, x, y, _ = data
    r = np.random.default_rng(5)
    a = (r.normal(size=(2, 8, 8))[[0, 0, 1, 0, 1, 1]] + 0.3 * r.normal(size=(6, 8, 8)))[..., None]
    a_border = a.copy()
    a_border[:, 0] = 0.0
    metric = it.metrics.Sufficiency(threshold=0.8)
    scores = metric(model=model, x_batch=x - 0.5, y_batch=y, a_batch=a_border)
    inner = np.abs(a_border / np.abs(a_border).max())[:, 1:].reshape(6, -1)
    d = cdist(inner, inner, "seuclidean")
    d = d / d.max()
    pred = np.argmax(np.asarray(keras_model()(x - 0.5)), 1)
    similar = (d <= 0.8) & ~np.eye(6, dtype=bool)
    expected = [(similar[i] & (pred == pred[i])).sum() / max(1, similar[i].sum()) for i in range(6)]
    np.testing.assert_array_equal(scores, expected)
    assert any(s > 0 for s in scores)
