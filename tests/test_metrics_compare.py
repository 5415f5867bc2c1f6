"""it.metrics.compare: the table of methods x metrics (mean, standard error, summary), the ranking by
score direction, CSV, plot, the stored and resumed runs, and ``interprettensor evaluate --metrics``.

The explanation methods and two metrics are defined here so that every value is known in numpy:
the "methods" return fixed functions of the inputs, the metrics simple statistics of them."""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "quantus_reference"))

import interprettensor as it  # noqa: E402
from interprettensor.apps import cli  # noqa: E402
from interprettensor.engine.errors import ExplainError  # noqa: E402
from models import inputs, keras_model  # noqa: E402

M = it.metrics


class MeanAbs(M.Metric):
    """Mean |a| per sample (higher is better here)."""

    higher_is_better = True

    def __init__(self, **kw):
        super().__init__(normalise=False, **kw)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch):
        return list(np.abs(a_batch).reshape(len(a_batch), -1).mean(1))


class Curve(M.Metric):
    """A three-point curve per sample, [t, 2 t, 4 t] with t = sum a (lower is better here)."""

    higher_is_better = False

    def __init__(self, **kw):
        super().__init__(normalise=False, **kw)

    def evaluate_batch(self, *, model, x_batch, y_batch, a_batch, s_batch):
        t = a_batch.reshape(len(a_batch), -1).sum(1)
        return [np.array([v, 2 * v, 4 * v]) for v in t]


class AreaCurve(Curve):
    curve_summary = "auc"


CALLS = []


def ones(model, inputs, targets, **kw):
    CALLS.append("ones")
    return np.ones_like(inputs, dtype=np.float64)


def neg_x(model, inputs, targets, scale=1.0, **kw):
    CALLS.append("neg_x")
    return -scale * np.asarray(inputs, np.float64)


@pytest.fixture(scope="module")
def data():
    x, y = inputs(6, seed=1)
    return keras_model(), x, y


METHODS = [("ones", ones), ("neg_x", neg_x, {"scale": 2.0})]


def expected(x):
    """Per-sample values of both metrics for both methods, from numpy."""
    n = len(x)
    a = {"ones": np.ones_like(x, np.float64), "neg_x": -2.0 * x.astype(np.float64)}
    return {(m, "MeanAbs"): np.abs(v).reshape(n, -1).mean(1) for m, v in a.items()} | \
        {(m, "Curve"): 7 / 3 * v.reshape(n, -1).sum(1) for m, v in a.items()}


def test_table_ranking_csv_plot(data, tmp_path):
    model, x, y = data
    res = M.compare(model, x, y, methods=METHODS, metrics=[MeanAbs(), Curve()], batch_size=4)
    exp = expected(x)
    for key, v in exp.items():
        np.testing.assert_allclose(res.values[key], v, rtol=1e-12)
        assert res.mean(*key) == pytest.approx(v.mean(), rel=1e-12)
        assert res.se(*key) == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)), rel=1e-12, abs=1e-15)
    assert res.summary == {"MeanAbs": "score", "Curve": "mean of curve"}
    # MeanAbs (higher better): ones 1.0 vs 2 * mean(x) ~ 1.0: whichever numpy says; Curve (lower better)
    hi = sorted(["ones", "neg_x"], key=lambda m: -exp[(m, "MeanAbs")].mean())
    assert res.ranking() == {"MeanAbs": hi, "Curve": ["neg_x", "ones"]}
    text = res.table()
    assert "MeanAbs (score, higher better)" in text and "Curve (mean of curve, lower better)" in text
    assert f"{exp[('ones', 'Curve')].mean():.4g}" in text
    rows = list(csv.DictReader(open(res.to_csv(str(tmp_path / "t.csv")))))
    assert [(r["method"], r["metric"]) for r in rows] == [("ones", "MeanAbs"), ("neg_x", "MeanAbs"),
                                                          ("ones", "Curve"), ("neg_x", "Curve")]
    assert float(rows[3]["mean"]) == pytest.approx(exp[("neg_x", "Curve")].mean(), rel=1e-7)
    assert rows[2]["higher_is_better"] == "False" and rows[0]["n"] == "6"
    # the area under [t, 2t, 4t] on 0, 1/2, 1 by trapezoids: (1.5 t + 3 t) / 2
    area = M.compare(model, x, y, methods=METHODS[:1], metrics=[AreaCurve()])
    np.testing.assert_allclose(area.values[("ones", "AreaCurve")], 2.25 * x[0].size, rtol=1e-12)
    assert area.summary == {"AreaCurve": "area under curve"}
    fig = res.plot(str(tmp_path / "t.png"))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_stored_runs_resume(data, tmp_path):
    model, x, y = data
    out = str(tmp_path / "run")
    CALLS.clear()
    first = M.compare(model, x, y, methods=METHODS, metrics=[MeanAbs(), Curve()], out=out)
    assert CALLS == ["ones", "neg_x"] and len(first.computed) == 4
    assert sorted(os.listdir(os.path.join(out, "neg_x"))) == ["Curve.json", "Curve.npz", "MeanAbs.json",
                                                               "MeanAbs.npz", "attributions.npz"]
    CALLS.clear()
    again = M.compare(model, x, y, methods=METHODS, metrics=[MeanAbs(), Curve()], out=out)
    assert CALLS == [] and again.computed == [] and len(again.loaded) == 4
    for key in first.values:
        np.testing.assert_array_equal(again.values[key], first.values[key])
    assert again.summary == first.summary
    os.remove(os.path.join(out, "ones", "Curve.json"))     # an interrupted run: resumed where it stopped
    os.remove(os.path.join(out, "ones", "attributions.npz"))
    CALLS.clear()
    third = M.compare(model, x, y, methods=METHODS, metrics=[MeanAbs(), Curve()], out=out)
    assert third.computed == [("ones", "Curve")] and CALLS == ["ones"]
    with pytest.raises(ExplainError, match="other inputs"):
        M.compare(model, x[:5], y[:5], methods=METHODS, metrics=[MeanAbs()], out=out)


def test_with_randomisation_metrics(data):
    model, x, y = data
    res = M.compare(model, x, y, methods=["input_x_gradient"], metrics=["RandomLogit", "MPRT"], seed=3)
    a = M.explain(model, x, y, method="input_x_gradient")
    direct = M.RandomLogit(num_classes=5, seed=3)(model=model, x_batch=x, y_batch=y, a_batch=a,
                                                   explain_func=M.explain,
                                                   explain_func_kwargs={"method": "input_x_gradient"})
    np.testing.assert_allclose(res.values[("input_x_gradient", "RandomLogit")], direct, rtol=0, atol=1e-12)
    raw = res.raw[("input_x_gradient", "MPRT")]
    np.testing.assert_allclose(res.values[("input_x_gradient", "MPRT")],
                               (np.array(raw["dense"]) + np.array(raw["conv"])) / 2, rtol=0, atol=1e-12)
    assert res.summary["MPRT"] == "mean similarity over randomised layers"
    assert res.higher_is_better == {"RandomLogit": False, "MPRT": False}


def test_errors(data):
    model, x, y = data
    with pytest.raises(ExplainError, match="unknown metric 'Nope'; the metrics: .*MPRT.*RandomLogit"):
        M.compare(model, x, y, methods=["gradient"], metrics=["Nope"])
    with pytest.raises(ExplainError, match="given more than once"):
        M.compare(model, x, y, methods=["gradient", "gradient"], metrics=[MeanAbs()])
    with pytest.raises(ExplainError, match="one label per sample"):
        M.compare(model, x, y[:3], methods=["gradient"], metrics=[MeanAbs()])


def test_cli_metrics(data, tmp_path, capsys, monkeypatch):
    model, x, y = data
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["evaluate", "m.keras", "x.npy", "--methods", "gradient", "input_x_gradient", "--steps", "2",
                     "--metrics", "RandomLogit,MPRT", "--out", "ev", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    assert "RandomLogit (score, lower better)" in out and "ranking by MPRT:" in out
    rows = list(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))
    assert {(r["method"], r["metric"]) for r in rows} == {(m, k) for m in ("gradient", "input_x_gradient")
                                                          for k in ("RandomLogit", "MPRT")}
    assert (tmp_path / "ev" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "ev" / "aopc.csv").exists()     # the region perturbation still runs
    code = cli.main(["evaluate", "m.keras", "x.npy", "--metrics", "MPRT,Sparsness", "--out", "ev2", "-q"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    assert "unknown metric Sparsness; the metrics:" in err and "RandomLogit" in err


def test_random_logit_by_name_on_a_model_without_output_tensors():
    """The 2017 Sequential (a subclassed model: no ``outputs``) gets RandomLogit's num_classes from its
    output; before, the default 1000 classes drew targets the 10-class model does not have."""
    x = np.random.default_rng(0).uniform(0, 1, (4, 8)).astype("float32")
    net = it.Sequential([it.Linear(input_dim=8, output_dim=6, act="relu"), it.Linear(3), it.Softmax()])
    net.forward(x)
    res = M.compare(net, x, methods=["gradient"], metrics=["RandomLogit"], seed=1)
    assert np.isfinite(res.values[("gradient", "RandomLogit")]).all()
    other = M.RandomLogit(num_classes=3, seed=1)
    y = np.asarray(net.forward(x)).argmax(-1)
    direct = other(model=net, x_batch=x, y_batch=y, a_batch=M.explain(net, x, y, method="gradient"),
                   explain_func=M.explain, explain_func_kwargs={"method": "gradient"})
    np.testing.assert_allclose(res.values[("gradient", "RandomLogit")], direct, rtol=0, atol=1e-12)
