"""Quantus 0.6.0's scores for FaithfulnessCorrelation, SensitivityN, Infidelity and Sufficiency on the
shared tiny model (tests/quantus_reference/models.py), stored for tests/test_metrics_faithfulness_sampling.py.

Run in Quantus' environment (writes tests/data/quantus_reference/faithfulness_sampling.json):

    /work/quantus-venv/bin/python tests/quantus_reference/make_faithfulness_sampling.py

Inputs: ``inputs(6, seed=1)`` (channels-first copies to Quantus), attributions
``default_rng(3).normal(size=(6, 1, 8, 8))`` (one value per pixel; the tests move the axis last).
FaithfulnessCorrelation draws its subsets from the global ``np.random``: it is run once per
``np.random.seed(s)``, s = 0..19, and every run is stored (the tests compare means within standard
errors). SensitivityN's raw per-step arrays (before Quantus' correlation) are kept too, by a subclass
that stores them in ``custom_postprocess``.
"""

import json
import pathlib
import sys

import numpy as np
import quantus
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from models import inputs, torch_model  # noqa: E402

torch.set_num_threads(1)
x, y = inputs(6, seed=1)
xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
a = np.random.default_rng(3).normal(size=(6, 1, 8, 8))
model = torch_model()
out = {"quantus_version": quantus.__version__, "command": "/work/quantus-venv/bin/python "
       "tests/quantus_reference/make_faithfulness_sampling.py", "inputs": "inputs(6, seed=1)",
       "a_batch": "np.random.default_rng(3).normal(size=(6, 1, 8, 8)) (channels-first; tests move axis 1 last)"}


def call(metric, a=a, x=xc, **kw):
    return metric(model=model, x_batch=x, y_batch=y, a_batch=a, channel_first=True, device="cpu", **kw)


# FaithfulnessCorrelation: 20 seeds of np.random
fc = dict(nr_runs=50, subset_size=16, perturb_baseline="black", return_aggregate=False, disable_warnings=True)
runs = []
for s in range(20):
    np.random.seed(s)
    runs.append([float(v) for v in call(quantus.FaithfulnessCorrelation(**fc), softmax=False)])
out["FaithfulnessCorrelation"] = {"settings": fc, "softmax": False, "np_random_seeds": list(range(20)),
                                  "scores": runs}


class Keep(quantus.SensitivityN):
    def custom_postprocess(self, x_batch, **kwargs):
        self.raw = {k: np.asarray(v).tolist() for k, v in self.evaluation_scores[0].items()}
        return super().custom_postprocess(x_batch=x_batch, **kwargs)


a_full = np.random.default_rng(4).normal(size=(6, 3, 8, 8))  # one value per feature: no ties in the order
out["SensitivityN_a_batch"] = "np.random.default_rng(4).normal(size=(6, 3, 8, 8)) (channels-first)"
sn = dict(features_in_step=1, n_max_percentage=0.8, perturb_baseline="black", return_aggregate=False,
          disable_warnings=True)
m = Keep(**sn)
scores = call(m, a=a_full, softmax=True)
out["SensitivityN"] = {"settings": sn, "softmax": True, "scores": np.asarray(scores, float).tolist(),
                       "pred_deltas": m.raw["pred_deltas"], "att_sums": m.raw["att_sums"]}

out["Infidelity"] = []
for inf in (dict(perturb_patch_sizes=[4, 2], n_perturb_samples=2, perturb_baseline="black"),
            dict(perturb_patch_sizes=[4], n_perturb_samples=1, perturb_baseline="mean"),
            dict(perturb_patch_sizes=[2], n_perturb_samples=1, perturb_baseline=0.25, normalise=True, abs=True)):
    kw = dict(inf, disable_warnings=True)
    out["Infidelity"].append({"settings": inf, "softmax": False,
                              "scores": [float(v) for v in call(quantus.Infidelity(**kw), softmax=False)]})

r = np.random.default_rng(5)  # two groups of similar explanations, so that some lie within the threshold
a_suf = r.normal(size=(2, 1, 8, 8))[[0, 0, 1, 0, 1, 1]] + 0.3 * r.normal(size=(6, 1, 8, 8))
out["Sufficiency_a_batch"] = ("r = np.random.default_rng(5); r.normal(size=(2, 1, 8, 8))[[0, 0, 1, 0, 1, 1]] "
                              "+ 0.3 * r.normal(size=(6, 1, 8, 8)) (channels-first)")
x_suf = xc - 0.5  # centred: the model predicts several classes [2, 3, 2, 2, 2, 0]
out["Sufficiency_x_batch"] = "inputs(6, seed=1)[0] - 0.5"
out["predicted"] = model(torch.from_numpy(x_suf)).argmax(1).tolist()
out["Sufficiency"] = []
for suf in (dict(), dict(threshold=0.8), dict(threshold=0.7, abs=False), dict(threshold=0.8, batch_size=4)):
    kw = {k: v for k, v in suf.items() if k != "batch_size"}
    kw = dict(kw, disable_warnings=True)
    if "batch_size" in suf:
        out["Sufficiency"].append({"settings": suf, "softmax": True, "scores": [
            float(v) for v in call(quantus.Sufficiency(**kw), a=a_suf, x=x_suf, softmax=True, batch_size=4)]})
        continue
    out["Sufficiency"].append({"settings": suf, "softmax": True,
                               "scores": [float(v) for v in call(quantus.Sufficiency(**kw), a=a_suf, x=x_suf, softmax=True)]})

path = pathlib.Path(__file__).parents[1] / "data" / "quantus_reference" / "faithfulness_sampling.json"
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(out, indent=1))
print(json.dumps({k: (v if k != "FaithfulnessCorrelation" else v["scores"][:2]) for k, v in out.items()
                  if k not in ("SensitivityN",)}, indent=0)[:3000])
print("SensitivityN", out["SensitivityN"]["scores"])
