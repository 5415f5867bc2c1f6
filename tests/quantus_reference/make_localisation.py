"""Quantus 0.6.0's scores of the localisation, complexity and axiomatic metrics on fixed arrays, for
tests/test_metrics_localisation.py and tests/test_metrics_axiomatic.py (which never import Quantus).

Run in Quantus' own environment (torch, quantus 0.6.0):

    /work/quantus-venv/bin/python tests/quantus_reference/make_localisation.py

Writes tests/data/quantus_reference/localisation.json, complexity.json and axiomatic.json. The arrays
come from numpy seeds (:func:`arrays`, which the tests call too): inputs from models.inputs(6, 1),
attributions ``rng.normal`` with exact zeros at 30 % of the positions, masks random rectangles (one
sample's mask a rectangle plus scattered pixels). Quantus gets channels-first copies with one channel
axis; the tests give ours channels-last (or without a channel axis). The model-free metrics are
deterministic in float64; Completeness and NonSensitivity call models.torch_model() (the same weights
as models.keras_model()).
"""

from __future__ import annotations

import json
import pathlib
import sys
import warnings

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from models import inputs  # noqa: E402

OUT = HERE.parent / "data" / "quantus_reference"
COMMAND = "/work/quantus-venv/bin/python tests/quantus_reference/make_localisation.py"


def arrays(n: int = 6) -> dict[str, np.ndarray]:
    """Channels-last inputs ``x`` (n, 8, 8, 3), labels ``y``, attributions ``a`` (n, 8, 8) and ``a3``
    (n, 8, 8, 3), masks ``s`` (n, 8, 8) bool, mosaic positions ``pos`` (n, 4)."""
    x, y = inputs(n, 1)
    rng = np.random.default_rng(7)
    a = rng.normal(size=(n, 8, 8))
    a[rng.random((n, 8, 8)) < 0.3] = 0.0
    a3 = rng.normal(size=(n, 8, 8, 3))
    a3[rng.random((n, 8, 8, 3)) < 0.3] = 0.0
    s = np.zeros((n, 8, 8), bool)
    for i in range(n):
        r0, c0 = rng.integers(0, 5, 2)
        h, w = rng.integers(2, 5, 2)
        s[i, r0:r0 + h, c0:c0 + w] = True
    s[-1] |= rng.random((8, 8)) < 0.15
    pos = np.zeros((n, 4), np.int64)
    for i in range(n):
        pos[i, rng.choice(4, 2, replace=False)] = 1
    return {"x": x, "y": y, "a": a, "a3": a3, "s": s, "pos": pos}


def _cf(a: np.ndarray) -> np.ndarray:
    """Channels-first with a channel axis: (n, 8, 8) -> (n, 1, 8, 8); (n, 8, 8, 3) -> (n, 3, 8, 8)."""
    return np.ascontiguousarray(a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2))


def _list(v) -> list:
    return [None if (isinstance(e, float) and np.isnan(e)) else e for e in np.asarray(v, np.float64).tolist()]


def main() -> None:
    import quantus
    import torch
    from models import torch_model

    warnings.filterwarnings("ignore")
    d = arrays()
    model = torch_model()
    xq, yq = _cf(d["x"]), d["y"]
    common = dict(disable_warnings=True)

    def run(cls, kwargs, a_key="a", call=None):
        metric = getattr(quantus, cls)(**kwargs, **common)
        scores = metric(model=model, x_batch=xq, y_batch=yq, a_batch=_cf(d[a_key]), s_batch=_cf(d["s"]),
                        device="cpu", **(call or {}))
        return {"metric": cls, "kwargs": kwargs, "a": a_key, "call": {k: v for k, v in (call or {}).items()
                                                                      if k != "custom_batch"},
                "scores": _list(scores)}

    loc = [
        run("PointingGame", {}),
        run("PointingGame", {"abs": True}),
        run("AttributionLocalisation", {}),
        run("AttributionLocalisation", {"abs": False, "positive_attributions": True}),
        run("TopKIntersection", {"k": 10}),
        run("TopKIntersection", {"k": 10, "concept_influence": True}),
        run("TopKIntersection", {"k": 20, "abs": True, "normalise": False}),
        run("RelevanceRankAccuracy", {}),
        run("RelevanceRankAccuracy", {"abs": True}),
        run("RelevanceMassAccuracy", {}),
        run("RelevanceMassAccuracy", {"abs": True}),
        run("AUC", {}),
        run("AUC", {"abs": True}),
        run("Focus", {}, call={"custom_batch": [tuple(p) for p in d["pos"]]}),
        run("Focus", {"abs": True}, a_key="a3", call={"custom_batch": [tuple(p) for p in d["pos"]]}),
    ]
    comp = [run(cls, kw, a_key=ak) for cls in ("Sparseness", "Complexity", "EffectiveComplexity")
            for kw, ak in (({}, "a"), ({}, "a3"), ({"normalise": False}, "a3"))]
    comp.append(run("EffectiveComplexity", {"eps": 0.3}, a_key="a3"))
    ax = [
        run("Completeness", {}),
        run("Completeness", {"normalise": False, "perturb_baseline": "white"}),
        run("NonSensitivity", {"eps": 1e-3}),
        run("NonSensitivity", {"eps": 1e-2, "perturb_baseline": "mean"}, a_key="a3"),
        run("NonSensitivity", {"eps": 1e-3}, call={"softmax": False}),
    ]
    # the score differences NonSensitivity thresholds, so the tests can check no difference lies
    # within float32 rounding of eps
    with torch.no_grad():
        logits = model(torch.from_numpy(xq)).numpy()
    meta = {"quantus": quantus.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "command": COMMAND, "arrays": "make_localisation.arrays() (numpy seeds; models.inputs(6, 1))",
            "inputs_to_quantus": "channels-first: x (6, 3, 8, 8); a (6, 1, 8, 8) or (6, 3, 8, 8); s (6, 1, 8, 8)",
            "logits": np.asarray(logits, np.float64).tolist()}
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("localisation", loc), ("complexity", comp), ("axiomatic", ax)):
        (OUT / f"{name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
        print(name, len(rows))


if __name__ == "__main__":
    main()
