"""First-call time: the first explanation of a model against the first call of a compiled gradient x
input, each case in a fresh Python process (a script, not a timed test).

The first call pays once for what later calls reuse: building the explainer (the graph walk and the
rule assignment), tracing the ``tf.function``, TensorFlow's graph optimisation and kernel set-up, XLA
compilation of the fused kernels, and the check of the forward pass against the model (one eager
forward pass on one sample). The steady-state time of a second call is printed too, so the one-off
part is their difference. Run::

    python benchmarks/first_call.py                       # VGG16, ResNet50, DenseNet121, EfficientNetB0
    python benchmarks/first_call.py --models ResNet50 --rules epsilon --repeats 3

Each row is the median of ``--repeats`` fresh processes per case, the processes of the two methods
run alternately so that load changes on a shared machine hit both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

MODELS = ["VGG16", "ResNet50", "DenseNet121", "EfficientNetB0"]
RULES = ["epsilon", "epsilon_gamma_box"]

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, keras, tensorflow as tf
import interprettensor as it
name, method, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
keras.utils.set_random_seed(0)
model = getattr(keras.applications, name)(weights=None)
x = np.random.default_rng(0).random((batch, 224, 224, 3)).astype("float32") * 255.0
xt = tf.constant(x)
if method == "gradient_x_input":
    t0 = time.perf_counter()
    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.reshape(model(x, training=False), (tf.shape(x)[0], -1))
            sel = tf.reduce_sum(out * tf.one_hot(tf.argmax(out, -1), tf.shape(out)[-1]))
        return tape.gradient(sel, x) * x
    np.asarray(run(xt))
    first = time.perf_counter() - t0
    t0 = time.perf_counter(); np.asarray(run(xt)); second = time.perf_counter() - t0
else:
    kw = {"low": 0.0, "high": 255.0} if method in ("epsilon_gamma_box", "bounded_deep_taylor") else {}
    t0 = time.perf_counter()
    explainer = it.Explainer(model, method, **kw)
    explainer(xt)
    first = time.perf_counter() - t0
    t0 = time.perf_counter(); explainer(xt); second = time.perf_counter() - t0
print("RESULT", json.dumps({"first": first, "second": second}))
"""


def run_case(model: str, method: str, batch: int) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, model, method, str(batch)], capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"{model} {method} failed:\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--rules", nargs="+", default=RULES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per case (median)")
    args = parser.parse_args()
    import tensorflow as tf  # noqa: F401 - versions for the header only
    import keras

    print(f"# first call vs gradient x input, batch {args.batch}, 224x224, random weights; {platform.machine()}, "
          f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Keras {keras.__version__}; median of "
          f"{args.repeats} fresh processes; seconds")
    print("| model | rule | LRP first call | gradient x input first call | ratio | LRP second call | "
          "gradient x input second call |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        for rule in args.rules:
            lrp, grad = [], []
            for _ in range(args.repeats):
                grad.append(run_case(model, "gradient_x_input", args.batch))
                lrp.append(run_case(model, rule, args.batch))
            lf, gf = statistics.median(r["first"] for r in lrp), statistics.median(r["first"] for r in grad)
            ls, gs = statistics.median(r["second"] for r in lrp), statistics.median(r["second"] for r in grad)
            print(f"| {model} | {rule} | {lf:.2f} | {gf:.2f} | {lf / gf:.2f} | {ls:.2f} | {gs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
