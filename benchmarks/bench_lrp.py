"""LRP cost relative to gradient x input, measured in one process (a script, not a timed test).

Each row: the LRP time, the gradient x input time (same model, same batch, both compiled with
tf.function and warmed up), their ratio, and the best of ``--repeats`` runs. Run::

    python benchmarks/bench_lrp.py            # all rows
    python benchmarks/bench_lrp.py --quick    # MLP and small CNN only
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import interprettensor as it  # noqa: E402


def mlp() -> keras.Model:
    return it.Sequential([it.Linear(1296, input_dim=784, act="relu"), it.Linear(1296, act="relu"),
                          it.Linear(1296, act="relu"), it.Linear(10), it.Softmax()])


def small_cnn() -> keras.Model:
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 5, padding="same", activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Conv2D(64, 5, padding="same", activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                             keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(10)])


def gradient_x_input(model: keras.Model):
    @tf.function(jit_compile=False)
    def run(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.reshape(model(x, training=False), (tf.shape(x)[0], -1))
            sel = tf.reduce_sum(out * tf.one_hot(tf.argmax(out, -1), tf.shape(out)[-1]))
        return tape.gradient(sel, x) * x
    return run


def best_time(fn, x, repeats: int) -> float:
    fn(x)  # warm-up / trace
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(x)
        _ = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
        times.append(time.perf_counter() - t0)
    return min(times)


def lrp_fn(model: keras.Model, rule: str, **params):
    explainer = it.Explainer(model, rule=rule, **params)
    sig = tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None)
    del sig

    def run(x: tf.Tensor):
        fn = explainer._function([x], "target", False)
        return fn((x,), tf.fill((x.shape[0],), -1))[0][0]
    return run


def row(name: str, model: keras.Model, x: np.ndarray, rule: str, repeats: int, **params) -> tuple:
    xt = tf.constant(x)
    t_grad = best_time(gradient_x_input(model), xt, repeats)
    t_lrp = best_time(lrp_fn(model, rule, **params), xt, repeats)
    return name, rule, t_lrp, t_grad, t_lrp / t_grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the MLP and the small CNN")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    m = mlp()
    rows.append(row("MLP 784-1296x3-10, batch 256", m, rng.random((256, 784), "float32"), "epsilon", args.repeats))
    c = small_cnn()
    rows.append(row("CNN conv32-conv64-dense1024, batch 256", c, rng.random((256, 28, 28, 1), "float32"), "epsilon",
                    args.repeats))
    if not args.quick:
        vgg = keras.applications.VGG16(weights=None)
        xv = rng.random((8, 224, 224, 3), "float32") * 255 - 120
        for rule, kw in [("epsilon", {}), ("epsilon_gamma_box", {"low": -130.0, "high": 150.0}), ("epsilon_plus", {}),
                         ("epsilon_alpha2_beta1", {}), ("preset_b", {})]:
            rows.append(row("VGG16 224x224, batch 8", vgg, xv, rule, args.repeats, **kw))
        del vgg
        res = keras.applications.ResNet50(weights=None)
        rows.append(row("ResNet50 224x224, batch 8", res, xv, "epsilon_gamma_box", args.repeats, low=-130.0, high=150.0))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"| workload | rule | LRP (s) | gradient x input (s) | ratio |")
    print(f"| --- | --- | --- | --- | --- |")
    for name, rule, t_lrp, t_grad, ratio in rows:
        print(f"| {name} | {rule} | {t_lrp:.3f} | {t_grad:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
