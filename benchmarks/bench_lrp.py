"""LRP cost relative to gradient x input, measured in one process (a script, not a timed test).

Each row: the LRP time, the gradient x input time (same model, same batch, both compiled with
tf.function and warmed up), their ratio, and the best of ``--repeats`` runs. Run::

    python benchmarks/bench_lrp.py            # all rows
    python benchmarks/bench_lrp.py --quick    # MLP and small CNN only
    python benchmarks/bench_lrp.py --memory-only

Peak memory: each method in a fresh process, beyond the model after one forward pass, and once more
with glibc returning freed blocks of 1 MiB or more to the system at once (``MALLOC_MMAP_THRESHOLD_``,
the "live" columns): with the default allocator, which keeps freed blocks of a few MB in its heap
depending on the order of allocations, the peak of the same code moves by 10-30 % between runs.
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

    def run(x: tf.Tensor):
        fn = explainer._function([x], "target", False)
        return fn((x,), tf.fill((x.shape[0],), -1))[0][0]
    return run


def paired_best_times(fn_a, fn_b, x, repeats: int) -> tuple[float, float]:
    """Best times of two functions run alternately, so that load changes on a shared machine hit
    both alike."""
    for fn in (fn_a, fn_b):  # warm-up / trace
        fn(x)
        fn(x)
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            out = fn(x)
            _ = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
            times.append(time.perf_counter() - t0)
    return min(times_a), min(times_b)


def row(name: str, model: keras.Model, x: np.ndarray, rule: str, repeats: int, **params) -> tuple:
    xt = tf.constant(x)
    t_lrp, t_grad = paired_best_times(lrp_fn(model, rule, **params), gradient_x_input(model), xt, repeats)
    return name, rule, t_lrp, t_grad, t_lrp / t_grad


BOX = {"low": -130.0, "high": 150.0}


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it does not carry over the
    parent's peak across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss_mib() -> float:
    """Reset this process's peak resident memory to its current one (Linux: ``5`` to
    ``/proc/self/clear_refs``) and return the current resident memory (VmRSS); where the reset is not
    available, the peak so far (the model's building included)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_rss_mib()


def memory_child(model_name: str, method: str) -> None:
    """Run in a fresh process: resident memory after building the model and running it once, and the
    peak resident memory from there through two calls of the method."""
    rng = np.random.default_rng(0)
    if model_name in ("vgg16", "resnet50"):
        model = (keras.applications.VGG16 if model_name == "vgg16" else keras.applications.ResNet50)(weights=None)
        x = tf.constant(rng.random((8, 224, 224, 3), "float32") * 255 - 120)
    else:
        model = mlp()
        x = tf.constant(rng.random((256, 784), "float32"))
    fwd = tf.function(lambda t: model(t, training=False))
    np.asarray(fwd(x))
    # the peak from here on: that of the method alone (the building's temporaries, e.g. the random
    # initialisers' copies of VGG16's 400 MB dense kernel, would otherwise hide part of it)
    base = _reset_peak_rss_mib()
    fn = gradient_x_input(model) if method == "gradient" else lrp_fn(model, method, **(BOX if "box" in method else {}))
    np.asarray(fn(x))  # the first call traces and compiles the pass
    first = _peak_rss_mib()
    # a later call alone: its peak beyond what stays resident after the first (the compiled pass, and
    # memory the allocator keeps)
    warm_base = _reset_peak_rss_mib()
    np.asarray(fn(x))
    warm = _peak_rss_mib()
    print(f"{base:.1f} {max(first, warm):.1f} {warm_base:.1f} {warm:.1f}")


#: glibc's malloc returns a freed block of at least this many bytes to the system at once (the default
#: threshold grows with the blocks freed, up to 32 MiB, and the heap keeps the rest): with it, the peak
#: resident set follows the tensors alive at each moment instead of what the allocator kept
LIVE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def peak_memory(model_name: str, method: str, live: bool = False) -> tuple[float, float, float]:
    """(peak RSS beyond the RSS after building the model and one forward pass, that peak RSS, the
    second call's peak beyond the RSS after the first call) in MiB, measured in a fresh process;
    ``live``: with glibc returning freed blocks of 1 MiB or more at once (:data:`LIVE_ENV`)."""
    import subprocess
    import sys

    env = dict(os.environ, **LIVE_ENV) if live else None
    out = subprocess.run([sys.executable, __file__, "--memory-child", model_name, method], capture_output=True,
                         text=True, check=True, env=env).stdout.split()
    base, peak, warm_base, warm = (float(v) for v in out[-4:])
    return peak - base, peak, warm - warm_base


#: the peak-memory rows: model -> rules
MEMORY_ROWS = {"mlp": ("epsilon",), "vgg16": ("epsilon", "epsilon_gamma_box", "preset_b"),
               "resnet50": ("epsilon", "epsilon_gamma_box")}


def memory_rows(quick: bool) -> None:
    """Print the peak-memory table: each method in a fresh process, with glibc's default allocator
    and with freed blocks returned at once (the live column: a later call's peak beyond what the first
    left resident)."""
    print("| peak memory, MiB (fresh process; beyond the model after one forward pass / absolute; a later "
          "call beyond what the first left resident; live: that of a later call with "
          f"MALLOC_MMAP_THRESHOLD_={LIVE_ENV['MALLOC_MMAP_THRESHOLD_']}) | LRP | gradient x input | ratio | "
          "live LRP | live gradient x input | live ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model_name in ["mlp"] if quick else list(MEMORY_ROWS):
        g_extra, g_abs, g_warm = peak_memory(model_name, "gradient")
        g_live = peak_memory(model_name, "gradient", live=True)[2]
        for rule in MEMORY_ROWS[model_name]:
            l_extra, l_abs, l_warm = peak_memory(model_name, rule)
            l_live = peak_memory(model_name, rule, live=True)[2]
            print(f"| {model_name} {rule} | {l_extra:.0f} / {l_abs:.0f}; {l_warm:.0f} | {g_extra:.0f} / {g_abs:.0f}; "
                  f"{g_warm:.0f} | {l_extra / max(g_extra, 1e-9):.2f} / {l_abs / g_abs:.2f}; "
                  f"{l_warm / max(g_warm, 1e-9):.2f} | {l_live:.0f} | {g_live:.0f} | "
                  f"{l_live / max(g_live, 1e-9):.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the MLP and the small CNN")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory rows")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    rng = np.random.default_rng(0)
    rows = []
    if args.memory_only:
        memory_rows(args.quick)
        return
    m = mlp()
    rows.append(row("MLP 784-1296x3-10, batch 256", m, rng.random((256, 784), "float32"), "epsilon", args.repeats))
    c = small_cnn()
    rows.append(row("CNN conv32-conv64-dense1024, batch 256", c, rng.random((256, 28, 28, 1), "float32"), "epsilon",
                    args.repeats))
    if not args.quick:
        vgg = keras.applications.VGG16(weights=None)
        xv = rng.random((8, 224, 224, 3), "float32") * 255 - 120
        for rule, kw in [("epsilon", {}), ("epsilon_gamma_box", BOX), ("epsilon_plus", {}),
                         ("epsilon_alpha2_beta1", {}), ("preset_b", {})]:
            rows.append(row("VGG16 224x224, batch 8", vgg, xv, rule, args.repeats, **kw))
        del vgg
        res = keras.applications.ResNet50(weights=None)
        rows.append(row("ResNet50 224x224, batch 8", res, xv, "epsilon_gamma_box", args.repeats, **BOX))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print("| workload | rule | LRP (s) | gradient x input (s) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, rule, t_lrp, t_grad, ratio in rows:
        print(f"| {name} | {rule} | {t_lrp:.3f} | {t_grad:.3f} | {ratio:.2f} |")
    if not args.no_memory:
        print()
        memory_rows(args.quick)

if __name__ == "__main__":
    main()
