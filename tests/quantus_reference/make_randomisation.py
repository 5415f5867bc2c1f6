"""Quantus' reference values for the randomisation metrics (tests/test_metrics_randomisation.py).

Run in Quantus' own environment, from the repository root:

    /work/quantus-venv/bin/python tests/quantus_reference/make_randomisation.py

Writes tests/data/quantus_reference/randomisation.json. What is stored is what is deterministic in
Quantus 0.6.0 (its PyTorch wrapper re-initialises layers with torch's own initialisers, so the
randomised models cannot be rebuilt in Keras):

* ``correlation_spearman`` and ``ssim`` (batched) on fixed arrays;
* ``discrete_entropy`` (100 and 10 bins) and ``normalise_by_average_second_moment_estimate``;
* ``RandomLogit`` on :func:`models.torch_model` with an input x gradient ``explain_func`` written here
  with torch autograd (Quantus draws the off-class with ``np.random.seed(seed)``, reproducible);
* ``MPRT``'s ``"original"`` entry (given ``a_batch`` against the original model's explanation);
* ``EfficientMPRT``'s complexities of the original model: ``explanation_scores_by_layer["orig"]`` and
  ``model_scores_by_layer["orig"]`` (entropy of the softmax output).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import quantus  # noqa: E402
import torch  # noqa: E402
from quantus.functions.complexity_func import discrete_entropy  # noqa: E402
from quantus.functions.normalise_func import normalise_by_average_second_moment_estimate  # noqa: E402
from quantus.functions.similarity_func import correlation_spearman, ssim  # noqa: E402

from models import inputs, torch_model  # noqa: E402


def input_x_gradient(model, inputs, targets, **kwargs):
    """x * d logit_target / d x, channels-first, in float64 (torch autograd)."""
    x = torch.tensor(np.asarray(inputs), dtype=torch.float32, requires_grad=True)
    out = model(x)
    sel = out[torch.arange(len(targets)), torch.as_tensor(np.asarray(targets), dtype=torch.long)]
    (g,) = torch.autograd.grad(sel.sum(), x)
    return (x * g).detach().numpy().astype(np.float64)


def main() -> None:
    rng = np.random.default_rng(7)
    A = rng.normal(size=(4, 64))
    B = A + rng.normal(scale=0.7, size=(4, 64))
    B[1] = np.round(B[1], 0)                  # ties
    out: dict = {"quantus_version": quantus.__version__,
                 "command": "/work/quantus-venv/bin/python tests/quantus_reference/make_randomisation.py",
                 "arrays": {"A": A.tolist(), "B": B.tolist()}}
    out["correlation_spearman"] = np.asarray(correlation_spearman(A, B, batched=True)).tolist()
    out["ssim"] = np.asarray(ssim(A, B, batched=True)).tolist()
    out["discrete_entropy_100"] = [float(discrete_entropy(a=a, x=a)) for a in A]
    out["discrete_entropy_10"] = [float(discrete_entropy(a=a, x=a, n_bins=10)) for a in B]
    out["second_moment"] = normalise_by_average_second_moment_estimate(A.copy()).tolist()

    x, y = inputs(6, seed=1)
    xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    model = torch_model()

    rl = quantus.RandomLogit(num_classes=5, seed=42, disable_warnings=True)
    out["random_logit"] = {"settings": {"num_classes": 5, "seed": 42, "explain_func": "input_x_gradient",
                                        "inputs": "models.inputs(6, seed=1)"},
                           "scores": np.asarray(rl(model=model, x_batch=xc, y_batch=y, explain_func=input_x_gradient,
                                                   channel_first=True), np.float64).tolist()}
    np.random.seed(42)
    n = len(y)
    y_off = [[c for c in range(5) if c != y[i]][k] for i, k in enumerate(np.random.randint(0, 4, n))]
    out["random_logit"]["off_classes"] = [int(c) for c in y_off]

    a_given = np.random.default_rng(3).normal(size=(6, 3, 8, 8))   # channels-first, like x
    mprt = quantus.MPRT(disable_warnings=True)
    res = mprt(model=model, x_batch=xc, y_batch=y, a_batch=a_given.copy(), explain_func=input_x_gradient,
               channel_first=True)
    out["mprt_original"] = {"settings": {"a_batch": "np.random.default_rng(3).normal(size=(6, 3, 8, 8)), channels-first",
                                         "defaults": True, "explain_func": "input_x_gradient"},
                            "scores": [float(v) for v in res["original"]]}

    em = quantus.EfficientMPRT(disable_warnings=True)
    em(model=model, x_batch=xc, y_batch=y, explain_func=input_x_gradient, channel_first=True)
    out["efficient_mprt_orig"] = {"settings": {"defaults": True, "explain_func": "input_x_gradient"},
                                  "explanation": [float(v) for v in em.explanation_scores_by_layer["orig"]],
                                  "model": [float(v) for v in em.model_scores_by_layer["orig"]]}
    path = os.path.join(HERE, "..", "data", "quantus_reference", "randomisation.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
