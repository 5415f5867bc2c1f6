"""Localisation and complexity metrics (interprettensor.analysis.metrics.localisation / complexity):
equal to Quantus 0.6.0 on fixed arrays (tests/data/quantus_reference/{localisation,complexity}.json,
made by tests/quantus_reference/make_localisation.py in Quantus' own environment), and against numpy
written from the papers where we differ from Quantus.

These metrics involve no model: everything is float64 arithmetic on the same numbers, so the scores
agree to 1e-12 relative (rank-based ones exactly)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import interprettensor as it
from interprettensor.analysis.metrics.localisation import quadrant_masks
from interprettensor.engine.errors import ExplainError

sys.path.insert(0, str(Path(__file__).parent / "quantus_reference"))
from make_localisation import arrays  # noqa: E402

DATA = Path(__file__).parent / "data" / "quantus_reference"


def _rows(name):
    ref = json.loads((DATA / f"{name}.json").read_text())
    assert ref["meta"]["quantus"] == "0.6.0"
    return [pytest.param(r, id=f"{r['metric']}-{r['a']}-{r['kwargs']}") for r in ref["results"]]


def _call(row, d):
    metric = getattr(it.metrics, row["metric"])(**row["kwargs"])
    kw = dict(row["call"])
    if row["metric"] == "Focus":
        kw["custom_batch"] = d["pos"]
    else:
        kw["s_batch"] = d["s"]
    return np.asarray(metric(model=None, x_batch=d["x"], y_batch=d["y"], a_batch=d[row["a"]], **kw), np.float64)


@pytest.fixture(scope="module")
def d():
    return arrays()


@pytest.mark.parametrize("row", _rows("localisation") + _rows("complexity"))
def test_equals_quantus(row, d):
    ours = _call(row, d)
    ref = np.array([np.nan if v is None else v for v in row["scores"]])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def test_auc_is_the_share_of_ordered_pairs(d):
    """AUC from its definition: P(a_in > a_out) + P(a_in == a_out) / 2 over all (inside, outside)
    pairs; ties matter here (30 % of the attributions are exactly 0)."""
    a = d["a"] / np.abs(d["a"]).max()
    ours = it.metrics.AUC()(model=None, x_batch=d["x"], y_batch=d["y"], a_batch=d["a"], s_batch=d["s"])
    for i in range(len(a)):
        ins, out = a[i][d["s"][i]], a[i][~d["s"][i]]
        diff = ins[:, None] - out[None, :]
        expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
        assert ours[i] == pytest.approx(expected, rel=1e-12)


def test_weighted_scores_from_the_definitions(d):
    """Where Quantus' weighting is broken (booleans; x_batch[2:]) the scores follow the papers."""
    x, y, a, s = d["x"], d["y"], d["a"], d["s"]
    frac = s.reshape(6, -1).mean(1)
    an = a / np.abs(a).max()
    flat = an.reshape(6, -1)
    hit = s.reshape(6, -1)[np.arange(6), flat.argmax(1)]
    pg = it.metrics.PointingGame(weighted=True)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    np.testing.assert_allclose(pg, np.where(hit, 1 - frac, 0.0), rtol=1e-12)
    aa = np.abs(an).reshape(6, -1)
    inside = (aa * s.reshape(6, -1)).sum(1) / (aa.sum(1) + 1e-9)
    al = it.metrics.AttributionLocalisation(weighted=True)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    np.testing.assert_allclose(al, inside * frac, rtol=1e-12)
    # two samples: Quantus would divide by x_batch[2:].size == 0
    al2 = it.metrics.AttributionLocalisation(weighted=True)(model=None, x_batch=x[:2], y_batch=y[:2], a_batch=a[:2],
                                                            s_batch=s[:2])
    assert np.isfinite(al2).all()


def test_empty_masks_score_nan_and_all_empty_raises(d):
    x, y, a, s = d["x"], d["y"], d["a"], d["s"].copy()
    s[1] = False
    for cls in ("PointingGame", "AttributionLocalisation", "RelevanceRankAccuracy", "RelevanceMassAccuracy", "AUC"):
        scores = getattr(it.metrics, cls)()(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
        assert np.isnan(scores[1]) and np.isfinite(np.delete(scores, 1)).all(), cls
    with pytest.raises(ExplainError, match="no true element"):
        it.metrics.PointingGame()(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=np.zeros_like(s))
    with pytest.raises(ExplainError, match="needs s_batch"):
        it.metrics.RelevanceMassAccuracy()(model=None, x_batch=x, y_batch=y, a_batch=a)
    with pytest.raises(ExplainError, match="k .64. must be smaller"):
        it.metrics.TopKIntersection(k=64)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)


def test_channels_first_and_batches_give_the_same_scores(d):
    x, y, a, s = d["x"], d["y"], d["a3"], d["s"]
    metric = it.metrics.RelevanceRankAccuracy(abs=True)
    last = metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, batch_size=4)
    first = metric(model=None, x_batch=x.transpose(0, 3, 1, 2), y_batch=y, a_batch=a.transpose(0, 3, 1, 2),
                   s_batch=s[:, None], channel_first=True)
    np.testing.assert_array_equal(last, first)


def test_focus_on_mosaics_counts_the_target_quadrants():
    """Mosaics of one-class images: an explanation that puts all positive relevance on the target's
    quadrants scores 1, one spread evenly scores the target's share (1/2); custom_batch and the
    equivalent s_batch agree."""
    rng = np.random.default_rng(0)
    imgs = rng.uniform(size=(10, 4, 4, 3)).astype(np.float32)
    labels = np.arange(10) % 3
    mos, target, pos = it.metrics.make_mosaics(imgs, labels, 5, seed=1)
    assert mos.shape == (5, 8, 8, 3) and pos.sum(1).tolist() == [2] * 5
    quads = [mos[:, :4, :4], mos[:, :4, 4:], mos[:, 4:, :4], mos[:, 4:, 4:]]
    for q, flag in zip(quads, pos.T):  # each quadrant is one of the images, of the target class iff flagged
        match = (q[:, None] == imgs[None]).all(axis=(2, 3, 4))
        assert match.sum(1).tolist() == [1] * 5
        np.testing.assert_array_equal(labels[match.argmax(1)] == target, flag.astype(bool))
    mask = quadrant_masks(pos, mos)
    focus = it.metrics.Focus()
    perfect = focus(model=None, x_batch=mos, y_batch=target, a_batch=mask.astype(float) - 0.5, custom_batch=pos)
    np.testing.assert_allclose(perfect, 1.0, atol=1e-8)
    even = focus(model=None, x_batch=mos, y_batch=target, a_batch=np.ones((5, 8, 8)), s_batch=mask)
    np.testing.assert_allclose(even, 0.5, atol=1e-8)
    with pytest.raises(ExplainError, match="exactly one"):
        focus(model=None, x_batch=mos, y_batch=target, a_batch=np.ones((5, 8, 8)))


def test_complexity_extremes():
    """A one-feature explanation: Gini near 1, entropy 0, one feature above eps; a uniform one: Gini
    0, entropy log d."""
    x = np.zeros((2, 4, 4, 1), np.float32)
    a = np.zeros((2, 4, 4))
    a[0, 1, 2] = 1.0
    a[1] = 1.0
    kw = dict(model=None, x_batch=x, y_batch=np.zeros(2), a_batch=a)
    sp = it.metrics.Sparseness()(**kw)
    assert sp[0] == pytest.approx(15 / 16, abs=1e-5) and sp[1] == pytest.approx(0.0, abs=1e-12)
    cx = it.metrics.Complexity()(**kw)
    assert cx[0] == pytest.approx(0.0, abs=1e-10) and cx[1] == pytest.approx(np.log(16), rel=1e-10)
    assert it.metrics.EffectiveComplexity()(**kw) == [1, 16]


def test_explain_func_gives_the_scores_of_its_attributions(d):
    """With explain_func the metric explains the batch itself (normalised per batch, as Quantus):
    the same scores as the attributions passed as a_batch (one batch)."""
    from models import keras_model

    model = keras_model()
    x, y, s = d["x"], d["y"], d["s"]
    a = it.metrics.explain(model, x, y, method="gradient")
    metric = it.metrics.RelevanceRankAccuracy(abs=True)
    given = metric(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    computed = metric(model=model, x_batch=x, y_batch=y, s_batch=s, explain_func=it.metrics.explain,
                      explain_func_kwargs={"method": "gradient"})
    np.testing.assert_array_equal(given, computed)
    assert np.isfinite(given).all()
