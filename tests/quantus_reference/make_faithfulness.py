"""Quantus 0.6.0's scores for the faithfulness metrics (part A) on the shared model, stored for
tests/test_metrics_faithfulness.py (which never imports quantus).

Run in Quantus' own environment, from the repository root:

    /work/quantus-venv/bin/python tests/quantus_reference/make_faithfulness.py

Inputs: ``inputs(6, seed=1)`` (channels-last; Quantus gets channels-first copies); attributions from
numpy seeds: ``a1`` one value per pixel ``(6, 8, 8)`` (seed 5), ``a3`` one per feature ``(6, 8, 8, 3)``
(seed 6; continuous, so no ties in any ordering). Settings are deterministic (black/white/mean
baselines, noise 0) except where stated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import quantus
from quantus.functions.perturb_func import noisy_linear_imputation
from quantus.helpers import utils

sys.path.insert(0, str(Path(__file__).parent))
from models import CHANNELS, SIZE, inputs, torch_model  # noqa: E402

# numpy 2.4 removed np.trapz, which Quantus 0.6 calls for its areas under the curve: the same rule
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid

OUT = Path(__file__).parents[1] / "data" / "quantus_reference" / "faithfulness.json"


def cf(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if a.ndim == 4 else a


def tolist(r):
    if isinstance(r, dict):
        return {str(k): float(v) for k, v in r.items()}
    return np.asarray(r, dtype=np.float64).tolist()


def main() -> None:
    torch.manual_seed(0)
    x, y = inputs(6, seed=1)
    a1 = np.random.default_rng(5).normal(size=(6, SIZE, SIZE))
    a3 = np.random.default_rng(6).normal(size=(6, SIZE, SIZE, CHANNELS))
    model = torch_model()
    xf = cf(x)
    attributions = {"a1": a1, "a3": cf(a3)}
    common = dict(disable_warnings=True)
    call = dict(model=model, x_batch=xf, y_batch=y, device="cpu")
    runs = []

    def run(metric: str, kwargs: dict, a: str, batch_size: int = 64, **extra):
        m = getattr(quantus, metric)(**kwargs, **common)
        r = m(**call, a_batch=attributions[a], batch_size=batch_size, **extra)
        runs.append({"metric": metric, "kwargs": kwargs, "a": a, "batch_size": batch_size,
                     "call": {k: v for k, v in extra.items()}, "scores": tolist(r)})

    for base in ("black", "white"):
        run("PixelFlipping", {"features_in_step": 16, "perturb_baseline": base}, "a3")
    run("PixelFlipping", {"features_in_step": 1, "perturb_baseline": "black"}, "a3")
    run("PixelFlipping", {"features_in_step": 8, "perturb_baseline": "mean"}, "a3", batch_size=4)
    run("PixelFlipping", {"features_in_step": 16, "perturb_baseline": "black", "return_auc_per_sample": True}, "a3")
    run("PixelFlipping", {"features_in_step": 16, "perturb_baseline": "black"}, "a3", softmax=False)
    for order in ("morf", "lerf"):
        for ps in (2, 3):
            run("RegionPerturbation", {"patch_size": ps, "order": order, "regions_evaluation": 10,
                                       "perturb_baseline": "black"}, "a1")
    run("RegionPerturbation", {"patch_size": 3, "regions_evaluation": 100, "perturb_baseline": "mean"}, "a3")
    for ps in (2, 3):
        run("Selectivity", {"patch_size": ps, "perturb_baseline": "black"}, "a1")
    run("Selectivity", {"patch_size": 4, "perturb_baseline": "white"}, "a3")
    run("Monotonicity", {"features_in_step": 16, "perturb_baseline": "black"}, "a3")
    run("MonotonicityCorrelation", {"features_in_step": 16, "nr_samples": 2, "perturb_baseline": "black"}, "a3")
    run("MonotonicityCorrelation", {"features_in_step": 8, "nr_samples": 1, "perturb_baseline": "white",
                                    "abs": False}, "a3")
    # seeded uniform noise: Quantus draws from np.random; compared in distribution
    np.random.seed(0)
    run("MonotonicityCorrelation", {"features_in_step": 16, "nr_samples": 10, "perturb_baseline": "uniform"}, "a3")
    run("FaithfulnessEstimate", {"features_in_step": 16, "perturb_baseline": "black"}, "a3")
    run("FaithfulnessEstimate", {"features_in_step": 4, "perturb_baseline": "white", "abs": True}, "a3",
        softmax=True)
    # IROF and ROAD fail in Quantus 0.6 for images with C > 1 channels (IROF: a (n, 1, H, W) mask against
    # (n, C, H, W) inputs; ROAD: indices over C*H*W features into a (C, H*W) image); their scores come
    # from grayscale inputs (one channel, repeated to the network's three inside the model)
    class Gray(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch_model()

        def forward(self, g):
            return self.net(g.repeat(1, CHANNELS, 1, 1))

    xg = x.mean(-1, keepdims=True).astype(np.float32)
    gray_call = dict(model=Gray().eval(), x_batch=cf(xg), y_batch=y, device="cpu", channel_first=True)
    with torch.no_grad():  # ROAD scores whether the class stays the predicted one: explain the predictions
        y_pred = Gray().eval()(torch.from_numpy(cf(xg))).argmax(1).numpy()
    irof = []
    # one sample per batch (batch_size=1) gives each sample its own baseline (with a batch, Quantus pools
    # the baseline over the batch: the scores then depend on the batch's other samples)
    for base, bs in (("mean", 1), ("black", 1), ("mean", 6)):
        kw = {"perturb_baseline": base, "return_aggregate": False}
        r = quantus.IROF(**kw, **common)(**gray_call, a_batch=a1, batch_size=bs)
        irof.append({"kwargs": kw, "batch_size": bs, "scores": tolist(r)})
    segments = [utils.get_superpixel_segments(xi.astype("double"), "slic").tolist() for xi in xg]
    road = []
    for pct in ([10, 30, 50, 70, 90], None):
        m = quantus.ROAD(percentages=pct, noise=0.0, **common)
        r = m(**{**gray_call, "y_batch": y_pred}, a_batch=a1)
        road.append({"kwargs": {"percentages": pct, "noise": 0.0}, "scores": tolist(r)})
    # the imputation itself on a 3-channel image: pixels (indices into H*W) replaced in every channel
    rng = np.random.default_rng(7)
    imputation = []
    for i, k in ((0, 10), (1, 40), (2, 63)):
        idx = np.sort(rng.choice(SIZE * SIZE, k, replace=False))
        out = noisy_linear_imputation(arr=xf[i].astype(np.float64), indices=idx, noise=0.0)
        imputation.append({"sample": i, "pixels": idx.tolist(), "imputed": np.moveaxis(out, 0, -1).tolist()})

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "quantus_version": quantus.__version__,
        "command": "/work/quantus-venv/bin/python tests/quantus_reference/make_faithfulness.py",
        "inputs": "models.inputs(6, seed=1); a1 = default_rng(5).normal(size=(6, 8, 8)); a3 = "
                  "default_rng(6).normal(size=(6, 8, 8, 3)) (channels-last; Quantus got channels-first copies)",
        "model": "models.torch_model() (logits; Quantus applies softmax when asked)",
        "runs": runs,
        "irof": irof,
        "irof_segments": segments,
        "road": road,
        "road_labels": y_pred.tolist(),
        "road_inputs": "grayscale x.mean(-1) repeated to 3 channels inside the model",
        "imputation": imputation,
    }, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
