"""The metrics' shared machinery (interprettensor.analysis.metrics.base / model / perturb / explain):
Quantus' argument handling, channel layouts, normalisation and the batched model calls, against
numpy written from their definitions."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.analysis.metrics import perturb
from interprettensor.analysis.metrics.base import Metric
from interprettensor.engine.errors import ExplainError

sys.path.insert(0, str(Path(__file__).parent / "quantus_reference"))
from models import inputs, keras_model  # noqa: E402


class _Echo(Metric):
    """A metric that returns what it was given, to look at the preparation."""

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch):
        self.seen = getattr(self, "seen", []) + [(x_batch, a_batch)]
        return list(a_batch.reshape(len(a_batch), -1).sum(1))


@pytest.fixture(scope="module")
def data():
    x, y = inputs()
    return keras_model(), x, y


def test_logits_and_softmax_equal_the_models(data):
    model, x, y = data
    logits = np.asarray(keras_model(softmax=False)(x), np.float64)
    m = it.metrics.MetricModel(model, batch_size=4)  # 6 inputs: two calls
    tol = 64 * np.finfo(np.float32).eps * np.abs(logits).max()
    np.testing.assert_allclose(m.predict(x, softmax=False), logits, atol=tol)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(m.predict(x, softmax=True), e / e.sum(1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(m.scores(np.stack([x, x]), y, softmax=False),
                               np.stack([logits[np.arange(6), y]] * 2), atol=tol)
    assert m.calls == 6 + 6 + 12


def test_channels_first_data_reach_a_channels_first_model_unchanged(data):
    """channel_first=True: the metric sees channels-last arrays; the model gets its own layout back."""
    _, x, y = data
    inp = keras.Input((3, 8, 8))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    xf = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    a = np.random.default_rng(0).normal(size=(6, 8, 8))
    metric = _Echo(normalise=False)
    metric(model=model, x_batch=xf, y_batch=y % 2, a_batch=a, channel_first=True)
    xs, a_seen = metric.seen[0]
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(a_seen[..., 0], a)
    m = it.metrics.MetricModel(model, channel_first=True)
    np.testing.assert_allclose(m.predict(x), np.asarray(model(xf)), rtol=1e-5, atol=1e-6)


def test_channel_inference_as_quantus():
    assert it.metrics.infer_channel_first(np.zeros((2, 3, 8, 8))) is True
    assert it.metrics.infer_channel_first(np.zeros((2, 8, 8, 3))) is False
    assert it.metrics.infer_channel_first(np.zeros((2, 10))) is False
    with pytest.raises(ExplainError, match="channel_first"):
        it.metrics.infer_channel_first(np.zeros((2, 4, 4, 4)))


def test_normalisation_divides_by_the_batch_maximum_then_abs(data):
    """Quantus 0.6 normalises a given a_batch by its largest magnitude over the whole batch."""
    model, x, y = data
    a = np.random.default_rng(1).normal(size=x.shape)
    metric = _Echo(abs=True, normalise=True)
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=a, batch_size=4)
    expected = np.abs(a / np.abs(a).max()).reshape(6, -1).sum(1)
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert metric(model=model, x_batch=x, y_batch=y, a_batch=a, batch_size=4) == metric.evaluation_scores
    agg = _Echo(abs=True, return_aggregate=True)(model=model, x_batch=x, y_batch=y, a_batch=a)
    np.testing.assert_allclose(agg, [expected.mean()], rtol=1e-12)
    neg = it.metrics.normalise_by_negative(np.array([[-2.0, -1.0, 0.0, 1.0, 4.0]]))
    np.testing.assert_allclose(neg, [[-1.0, -0.5, 0.0, 0.25, 1.0]])


def test_explain_func_by_name_equals_the_engine(data):
    model, x, y = data
    metric = _Echo(normalise=False)
    metric(model=model, x_batch=x, y_batch=y, explain_func=it.metrics.explain,
           explain_func_kwargs={"method": "epsilon"}, batch_size=4)
    got = np.concatenate([a for _, a in metric.seen])
    R = it.lrp(model, x, "epsilon", target=y)
    np.testing.assert_allclose(got, R, rtol=1e-6, atol=1e-7)
    ex = it.Explainer(model, "epsilon")
    metric2 = _Echo(normalise=False)
    metric2(model=model, x_batch=x, y_batch=y, explain_func=ex)
    np.testing.assert_allclose(metric2.seen[0][1], R, rtol=1e-6, atol=1e-7)


def test_baselines_per_sample():
    x = np.arange(2 * 4 * 4 * 1, dtype=np.float64).reshape(2, 4, 4, 1)
    np.testing.assert_array_equal(perturb.baseline("black", x)[1], np.full((4, 4, 1), 16.0))
    np.testing.assert_array_equal(perturb.baseline("white", x)[0], np.full((4, 4, 1), 15.0))
    np.testing.assert_allclose(perturb.baseline("mean", x)[0], np.full((4, 4, 1), 7.5))
    u = perturb.baseline("uniform", x, np.random.default_rng(0), uniform_low=2, uniform_high=3)
    assert u.shape == x.shape and (u >= 2).all() and (u < 3).all()
    np.testing.assert_array_equal(perturb.baseline(0.5, x), np.full(x.shape, 0.5))
    with pytest.raises(ExplainError, match="uniform"):
        perturb.baseline("random", x)


def test_bad_arguments_are_named(data):
    model, x, y = data
    with pytest.raises(TypeError, match="bogus"):
        _Echo(bogus=1)
    with pytest.raises(TypeError, match="bogus"):
        _Echo()(model=model, x_batch=x, y_batch=y, a_batch=x, bogus=2)
    with pytest.raises(ExplainError, match="a_batch has shape"):
        _Echo()(model=model, x_batch=x, y_batch=y, a_batch=x[:, :4])
    with pytest.raises(ExplainError, match="y_batch"):
        _Echo()(model=model, x_batch=x, y_batch=y[:3], a_batch=x)
    with pytest.raises(ExplainError, match="a_batch or explain_func"):
        _Echo()(model=model, x_batch=x, y_batch=y)
    with pytest.raises(ExplainError, match="NaN"):
        _Echo()(model=model, x_batch=x, y_batch=y, a_batch=np.full(x.shape, np.nan))
    with pytest.raises(ExplainError, match="model_predict_kwargs"):
        _Echo()(model=model, x_batch=x, y_batch=y, a_batch=x, model_predict_kwargs={"verbose": 0})


def test_undefined_scores_warn_naming_the_samples():
    """A NaN never leaves a metric silently: all-zero attributions have no shares (Complexity) and no
    mass (RelevanceMassAccuracy); both score NaN, as in Quantus, and a warning names the samples
    across the internal batches (batch_size 2: sample 3 lies in the second batch)."""
    x = np.random.default_rng(0).uniform(size=(4, 4, 4, 1))
    a = np.random.default_rng(1).uniform(0.1, 1.0, size=(4, 4, 4, 1))
    a[3] = 0.0
    s = np.zeros((4, 4, 4, 1), bool)
    s[:, :2] = True
    for metric, kw in ((it.metrics.Complexity(normalise=False), {}),
                       (it.metrics.RelevanceMassAccuracy(normalise=False), {"s_batch": s})):
        with pytest.warns(RuntimeWarning, match=r"samples \[3\] are undefined \(NaN\)"):
            scores = metric(model=None, x_batch=x, y_batch=np.zeros(4, int), a_batch=a, batch_size=2, **kw)
        assert np.isnan(scores[3]) and np.isfinite(scores[:3]).all()


def test_uniform_baseline_is_one_function_everywhere():
    """'uniform' is perturb.baseline's draw wherever a metric replaces features: one value per replaced
    feature in [uniform_low, uniform_high) from the generator given (the metric's seeded one), in the
    index-replacement of the sampling metrics and the translation of Continuity alike."""
    from interprettensor.analysis.metrics.faithfulness_sampling import baseline_replacement_by_indices
    from interprettensor.analysis.metrics.robustness import batched_translation

    arr = np.zeros((2, 10))
    idx = np.array([[0, 3, 7], [1, 2, 9]])
    out = baseline_replacement_by_indices(arr, idx, "uniform", rng=np.random.default_rng(5), uniform_low=2.0,
                                          uniform_high=3.0)
    expected = np.random.default_rng(5).uniform(2.0, 3.0, idx.shape)
    np.testing.assert_array_equal(np.take_along_axis(out, idx, 1), expected)
    assert len(np.unique(expected[0])) == 3  # per feature, not one value per sample
    np.testing.assert_array_equal(np.delete(out[0], idx[0]), 0.0)

    x = np.random.default_rng(0).uniform(size=(2, 4, 5, 3)).astype(np.float32)
    shifted = batched_translation(x, "uniform", perturb_dx=2, rng=np.random.default_rng(7), uniform_low=2.0,
                                  uniform_high=3.0)
    fill = perturb.baseline("uniform", x.reshape(2, -1), np.random.default_rng(7), 2.0, 3.0).reshape(x.shape)
    np.testing.assert_array_equal(shifted[:, :, :2], fill[:, :, :2].astype(np.float32))
    np.testing.assert_array_equal(shifted[:, :, 2:], x[:, :, :3])


def test_a_metric_called_again_traces_nothing(monkeypatch):
    """The metrics' compiled functions (the model's predictions, the gradient and LRP explainers) are
    traced at a metric's first call and reused at the next ones, also across MPRT's randomised stages
    (weights assigned into the same variables) and by a new metric object on the same model. A trace
    runs the Python body of a function given to the engine's ``backend.compile``; counted here on a
    fresh model (nothing of it compiled before)."""
    from interprettensor.engine import backend

    traces = []
    compile_ = backend.compile

    def counting(fn, *args, **kwargs):
        def body(*a, **kw):
            traces.append(getattr(fn, "__qualname__", repr(fn)))
            return fn(*a, **kw)

        return compile_(body, *args, **kwargs)

    monkeypatch.setattr(backend, "compile", counting)
    model = keras_model()
    x, y = inputs()
    a = it.metrics.explain(model, x, y, method="gradient")
    grad = {"explain_func": it.metrics.explain, "explain_func_kwargs": {"method": "gradient"}}
    lrp = {"explain_func": it.metrics.explain, "explain_func_kwargs": {"method": "epsilon"}}

    def run_all():
        it.metrics.PixelFlipping(features_in_step=16)(model=model, x_batch=x, y_batch=y, a_batch=a)
        it.metrics.RegionPerturbation(patch_size=2, regions_evaluation=4)(model=model, x_batch=x, y_batch=y, a_batch=a)
        it.metrics.MaxSensitivity(nr_samples=2)(model=model, x_batch=x, y_batch=y, **grad)
        it.metrics.MPRT(layer_order="bottom_up")(model=model, x_batch=x, y_batch=y, **grad)
        it.metrics.EfficientMPRT()(model=model, x_batch=x, y_batch=y, **lrp)

    run_all()
    first = len(traces)
    assert first >= 3, traces  # the predictions, the gradient and the LRP explainer were counted
    run_all()
    assert traces[first:] == []
