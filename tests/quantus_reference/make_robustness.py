"""Quantus 0.6.0's robustness metrics on the shared PyTorch model, for tests/test_metrics_robustness.py.

Run in Quantus' environment (writes tests/data/quantus_reference/robustness.json):
    /work/quantus-venv/bin/python tests/quantus_reference/make_robustness.py

Exact comparisons: Quantus draws noise from unseeded np.random, so its ``perturb_func`` is replaced by a
deterministic one adding the fixed arrays of robustness_inputs.deltas (step t adds deltas[t]; the
tests give ours the same arrays); the explanations are either elementwise_explain (numpy, any layout)
or gradient x input of the logits (torch autograd here; it.metrics.explain(method='input_x_gradient')
on the Keras twin). One statistical comparison (AvgSensitivity, Quantus' own uniform noise with
np.random.seed(0)) checks ours with real noise within standard errors.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import quantus  # noqa: E402
import torch  # noqa: E402

from models import inputs, torch_model  # noqa: E402
from robustness_inputs import (consistency_attributions, deltas, elementwise_explain, gated_explain,  # noqa: E402
                               zero_sample)

N, K, SCALE = 4, 5, 0.05


def fixed_perturb(k=K, n=N, scale=SCALE):
    d = deltas(k, n, scale, channels_last=False)
    state = {"t": 0}

    def perturb(arr, indices=None, **kwargs):
        t = state["t"]
        state["t"] += 1
        assert arr.shape == d[t].shape, (arr.shape, d[t].shape)
        return (arr + d[t]).astype(arr.dtype)

    return perturb


def ixg_explain(model, inputs, targets, **kwargs):
    x = torch.tensor(np.asarray(inputs, np.float32), requires_grad=True)
    out = model(x)
    out[torch.arange(len(x)), torch.as_tensor(np.asarray(targets), dtype=torch.long)].sum().backward()
    return (x.grad * x).detach().numpy()


EXPLAIN = {"elementwise": elementwise_explain, "input_x_gradient": ixg_explain, "gated": gated_explain}


def clean(v):
    return [None if not np.isfinite(s) else float(s) for s in np.asarray(v, np.float64).reshape(-1)]


def main():
    model = torch_model()
    x, y = inputs(N)
    xc = x.transpose(0, 3, 1, 2).copy()
    out = {"quantus_version": quantus.__version__, "torch_version": torch.__version__,
           "command": "/work/quantus-venv/bin/python tests/quantus_reference/make_robustness.py",
           "inputs": f"models.inputs({N}) (seed 1)", "steps": K, "delta_scale": SCALE, "cases": []}

    def run(name, cls, init, call, explain, fixed=True, x_=xc, y_=y, a_=None, scale=SCALE, a_zero=None):
        init = dict(init)
        if fixed:
            init["perturb_func"] = fixed_perturb(scale=scale)
        metric = getattr(quantus, cls)(disable_warnings=True, **init)
        scores = metric(model=model, x_batch=x_, y_batch=y_, a_batch=a_, explain_func=EXPLAIN.get(explain),
                        device="cpu", **call)
        init.pop("perturb_func", None)
        out["cases"].append({"name": name, "metric": cls, "init": init, "call": call, "explain": explain,
                             "fixed_perturbation": fixed, "delta_scale": scale if fixed else None,
                             "a_batch_zero_sample": a_zero, "scores": clean(scores)})
        print(name, clean(scores))

    for ex in EXPLAIN:
        run(f"max_sensitivity_{ex}", "MaxSensitivity", {"nr_samples": K}, {}, ex)
        run(f"avg_sensitivity_{ex}", "AvgSensitivity", {"nr_samples": K}, {}, ex)
        run(f"local_lipschitz_{ex}", "LocalLipschitzEstimate", {"nr_samples": K}, {}, ex)
        run(f"ris_{ex}", "RelativeInputStability", {"nr_samples": K, "return_nan_when_prediction_changes": False},
            {}, ex)
        run(f"ros_{ex}", "RelativeOutputStability", {"nr_samples": K, "return_nan_when_prediction_changes": False},
            {}, ex)
        run(f"rrs_{ex}", "RelativeRepresentationStability",
            {"nr_samples": K, "return_nan_when_prediction_changes": False, "layer_names": ["pool"]}, {}, ex)
        run(f"continuity_{ex}", "Continuity", {"nr_steps": 5}, {}, ex, fixed=False)
    # normalised and absolute re-explanations (each step's batch normalised by its own maximum)
    run("max_sensitivity_normalised_abs", "MaxSensitivity", {"nr_samples": K, "normalise": True, "abs": True}, {},
        "input_x_gradient")
    # the relative stabilities' default normalisation and NaN where the class changes (larger perturbations)
    run("ris_normalised_nan", "RelativeInputStability", {"nr_samples": K, "normalise": True}, {}, "elementwise",
        scale=0.25)
    run("ros_nan_softmax", "RelativeOutputStability", {"nr_samples": K}, {"softmax": True}, "input_x_gradient",
        scale=0.25)
    run("max_sensitivity_nan", "MaxSensitivity", {"nr_samples": K, "return_nan_when_prediction_changes": True}, {},
        "input_x_gradient", scale=0.25)
    run("avg_sensitivity_large", "AvgSensitivity", {"nr_samples": K}, {}, "input_x_gradient", scale=0.25)
    run("continuity_nr_steps_4", "Continuity", {"nr_steps": 4}, {}, "input_x_gradient", fixed=False)
    run("continuity_nr_steps_3_elementwise", "Continuity", {"nr_steps": 3}, {}, "elementwise", fixed=False)

    # Consistency: 9 inputs, attributions with colliding sign patterns, pairs within batches of 4 and of 64
    xk, yk = inputs(9, seed=5)
    xkc = xk.transpose(0, 3, 1, 2).copy()
    a = consistency_attributions(9)
    for bs in (64, 4):
        run(f"consistency_batch_{bs}", "Consistency", {}, {"batch_size": bs}, None, fixed=False, x_=xkc, y_=yk, a_=a)

    # zero-norm explanations: the loop above ran every metric with gated_explain (samples 1 and 2, of
    # target 0, explained by zeros before and after every perturbation); here a given a_batch with a
    # zero sample re-explained as non-zero, and Consistency with a zero sample
    a_given = zero_sample(elementwise_explain(inputs=xc, targets=y), 1)
    for cls in ("MaxSensitivity", "AvgSensitivity"):
        run(f"{cls}_zero_given", cls, {"nr_samples": K}, {}, "elementwise", a_=a_given, a_zero=1)
    run("consistency_zero_sample", "Consistency", {}, {}, None, fixed=False, x_=xkc, y_=yk,
        a_=zero_sample(consistency_attributions(9), 4), a_zero=4)

    # real noise: Quantus' own uniform noise, seeded np.random (the stream differs from ours)
    np.random.seed(0)
    run("avg_sensitivity_random", "AvgSensitivity", {"nr_samples": 64}, {}, "input_x_gradient", fixed=False)

    path = HERE.parent / "data" / "quantus_reference" / "robustness.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
