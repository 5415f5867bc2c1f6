"""Accuracy of low-precision LRP against float32: relative L2 error and Spearman rank correlation.

    python benchmarks/mixed_precision.py [--vgg16] [--n 256]

Model: the original project's pretrained MNIST CNN on scikit-learn digits (``--vgg16``: also
keras.applications.VGG16 with random weights on random 224x224 images, slow on CPU). Per sample:
rel. L2 = ||R - R_float32|| / ||R_float32||, rank correlation = Spearman's rho of the flattened maps;
reported as median and worst case over the samples.

Measured on CPU (2 cores), 256 digits; VGG16: 4 images, epsilon_gamma_box:

    model      rule               dtype            relL2 med / max      rho med / min
    mnist_cnn  epsilon (0.01)     float16          1.1e-03 / 4.7e-03    1.0000 / 0.9992
    mnist_cnn  epsilon (0.01)     bfloat16         9.3e-03 / 3.5e-02    0.9995 / 0.9948
    mnist_cnn  epsilon (0.01)     mixed_float16    5.4e-04 / 4.4e-03    1.0000 / 0.9993
    mnist_cnn  epsilon (0.01)     mixed_bfloat16   4.4e-03 / 3.4e-02    0.9999 / 0.9967
    mnist_cnn  alphabeta          float16          1.1e-03 / 4.7e-03    1.0000 / 0.9984
    mnist_cnn  alphabeta          mixed_float16    1.7e-04 / 2.9e-04    1.0000 / 0.9997
    mnist_cnn  epsilon_gamma_box  float16          6.0e-04 / 1.2e-03    1.0000 / 0.9993
    mnist_cnn  epsilon_gamma_box  bfloat16         4.6e-03 / 1.1e-02    1.0000 / 0.9985
    mnist_cnn  epsilon_gamma_box  mixed_float16    7.3e-05 / 1.5e-04    1.0000 / 0.9993
    mnist_cnn  epsilon_gamma_box  mixed_bfloat16   5.8e-04 / 1.2e-03    1.0000 / 0.9993
    vgg16      epsilon_gamma_box  float16          2.7e-02 / 3.2e-02    0.9992 / 0.9983
    vgg16      epsilon_gamma_box  bfloat16         8.7e-02 / 1.1e-01    0.9890 / 0.9851
    vgg16      epsilon_gamma_box  mixed_float16    2.5e-02 / 3.9e-02    0.9993 / 0.9975
    vgg16      epsilon_gamma_box  mixed_bfloat16   8.7e-02 / 1.1e-01    0.9888 / 0.9847

All finite. (Before the float16 relevance scaling, pure float16 VGG16 had relL2 0.91, rho 0.32.)
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
    from interprettensor.io.digits import load_digits, to_pretrained_input
    from interprettensor.apps.demo import pretrained_network

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
