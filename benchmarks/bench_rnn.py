"""LRP on an LSTM classifier relative to gradient x input, in one process (a script, not a timed
test).

The model: 2 stacked LSTM layers of 256 units on sequences of 200 steps with 64 features, a dense
classifier of 10 classes, batch 32, random weights. LRP-epsilon (the recurrence as a ``tf.scan`` over
time, Arras et al.'s rules) against gradient x input, both compiled with ``tf.function`` and warmed up;
best of ``--repeats`` runs taken alternately. Peak memory: each method in a fresh process, beyond the
model and one forward pass. Run::

    python benchmarks/bench_rnn.py
    python benchmarks/bench_rnn.py --steps 50 --units 64     # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import interprettensor as it
from bench_lrp import _peak_rss_mib, paired_best_times  # this folder's shared timing and memory helpers


def build(steps: int, units: int, batch: int = 32, features: int = 64):
    keras.utils.set_random_seed(0)
    inp = keras.Input((steps, features))
    h = keras.layers.LSTM(units, return_sequences=True)(inp)
    h = keras.layers.LSTM(units)(h)
    model = keras.Model(inp, keras.layers.Dense(10)(h))
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, steps, features)).astype("float32"))
    return model, x


def gradient_x_input(model):
    @tf.function(jit_compile=False)
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x, training=False)
            sel = tf.reduce_sum(out * tf.one_hot(tf.argmax(out, -1), tf.shape(out)[-1]))
        return tape.gradient(sel, x) * x

    return run


def lrp_fn(model, rule: str = "epsilon"):
    explainer = it.Explainer(model, rule=rule)

    def run(x):
        fn = explainer._function([x], "target", False)
        return fn((x,), tf.fill((x.shape[0],), -1))[0][0]

    return run






def memory_child(method: str, steps: int, units: int) -> None:
    model, x = build(steps, units)
    fwd = tf.function(lambda t: model(t, training=False))
    np.asarray(fwd(x))
    base = _peak_rss_mib()
    fn = gradient_x_input(model) if method == "gradient" else lrp_fn(model, method)
    for _ in range(2):
        np.asarray(fn(x))
    print(f"{base:.1f} {_peak_rss_mib():.1f}")


def peak_memory(method: str, steps: int, units: int) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--memory-child", method, "--steps", str(steps), "--units", str(units)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    base, peak = float(out[-2]), float(out[-1])
    return peak - base, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.steps, args.units)
        return
    model, x = build(args.steps, args.units)
    name = f"LSTM 2x{args.units}, {args.steps} steps x 64 features, batch 32"
    t_lrp, t_grad = paired_best_times(lrp_fn(model), gradient_x_input(model), x, args.repeats)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print("| workload | rule | LRP (s) | gradient x input (s) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {name} | epsilon | {t_lrp:.3f} | {t_grad:.3f} | {t_lrp / t_grad:.2f} |")
    if not args.no_memory:
        g_extra, g_abs = peak_memory("gradient", args.steps, args.units)
        l_extra, l_abs = peak_memory("epsilon", args.steps, args.units)
        print()
        print("| peak memory (fresh process; MiB beyond the model and one forward pass / absolute) | LRP | "
              "gradient x input | ratio |")
        print("| --- | --- | --- | --- |")
        print(f"| {name}, epsilon | {l_extra:.0f} / {l_abs:.0f} | {g_extra:.0f} / {g_abs:.0f} | "
              f"{l_extra / max(g_extra, 1e-9):.2f} / {l_abs / g_abs:.2f} |")


if __name__ == "__main__":
    main()
