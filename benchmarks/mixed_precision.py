"""Accuracy of low-precision LRP against float32: relative L2 error and Spearman rank correlation.

    python benchmarks/mixed_precision.py [--vgg16] [--n 256]

Model: the original project's pretrained MNIST CNN on scikit-learn digits (``--vgg16``: also
keras.applications.VGG16 with random weights on random 224x224 images, slow on CPU). Per sample:
rel. L2 = ||R - R_float32|| / ||R_float32||, rank correlation = Spearman's rho of the flattened maps;
reported as median and worst case over the samples.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr

import interprettensor as it

DTYPES = ("float16", "bfloat16", "mixed_float16", "mixed_bfloat16")


def compare(model, x, rule, params, dtypes=DTYPES) -> list[tuple]:
    ref = it.Explainer(model, rule, **params)(x)
    target = it.Explainer(model, rule, **params)(x, return_output=True)[1].reshape(len(x), -1).argmax(-1)
    rows = []
    for dt in dtypes:
        t0 = time.time()
        R = np.asarray(it.Explainer(model, rule, dtype=dt, **params)(x, target=target), dtype=np.float64)
        secs = time.time() - t0
        finite = bool(np.isfinite(R).all())
        a, b = R.reshape(len(x), -1), ref.reshape(len(x), -1).astype(np.float64)
        rel = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-30)
        rho = np.array([spearmanr(u, v).statistic for u, v in zip(a, b)])
        rows.append((rule, dt, finite, np.median(rel), rel.max(), np.median(rho), rho.min(), secs))
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--vgg16", action="store_true")
    args = p.parse_args()
    from interprettensor.data import load_digits, to_pretrained_input
    from interprettensor.demo import pretrained_network

    x = to_pretrained_input(load_digits()[0][: args.n])
    net = pretrained_network()
    rows = []
    for rule, params in [("epsilon", {"epsilon": 0.01}), ("alphabeta", {}),
                         ("epsilon_gamma_box", {"low": -1.0, "high": 1.0})]:
        rows += [("mnist_cnn",) + r for r in compare(net, x, rule, params)]
    if args.vgg16:
        import keras

        keras.utils.set_random_seed(0)
        vgg = keras.applications.VGG16(weights=None)
        xv = np.random.default_rng(0).uniform(-120, 150, (4, 224, 224, 3)).astype("float32")
        rows += [("vgg16",) + r for r in compare(vgg, xv, "epsilon_gamma_box", {"low": -123.7, "high": 151.1})]
    print(f"{'model':10s} {'rule':18s} {'dtype':15s} finite  relL2(med)  relL2(max)  rho(med)  rho(min)  sec")
    for m, rule, dt, fin, rmed, rmax, rho, rhomin, secs in rows:
        print(f"{m:10s} {rule:18s} {dt:15s} {str(fin):6s}  {rmed:10.2e}  {rmax:10.2e}  {rho:8.5f}  {rhomin:8.5f}  {secs:5.1f}")


if __name__ == "__main__":
    main()
