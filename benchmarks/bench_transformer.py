"""AttnLRP and CP-LRP on a BERT-base-sized transformer, relative to gradient x input, in one process
(a script, not a timed test).

The model: keras_hub's BertTextClassifier on a BertBackbone of BERT-base's size (12 layers, hidden
768, 12 heads, intermediate 3072; random weights, built from the config: nothing is downloaded),
sequence 128, batch 8. Gradient x input is taken where LRP's token relevance is read: at the token
embeddings' output (the gradient of the target logit with respect to that output, watched on the tape
with no variable watched, times the output, summed over the hidden axis): the fastest compiled
gradient we can write for it (``--table-baseline`` also times the gradient taken with respect to the
embedding table, which this benchmark used before and which is about 1.7x slower). Both compiled with
``tf.function`` and warmed up; best of ``--repeats`` runs taken alternately, in wall-clock time and in
the process's CPU time (all threads; the steadier measure on a shared machine, where other processes
stretch the wall clock). Peak memory: each method in a fresh process, beyond the model and one forward
pass.

LXT side by side: LXT (PyTorch) cannot share Keras' environment; the benchmark creates its own virtual
environment (``--lxt-venv``, default ``.bench-lxt/``: ``pip install lxt==2.1 transformers==4.52.4
torch``, torch pinned to this environment's version) on first use and runs ``benchmarks/lxt_side.py`` there in a separate process: a
``transformers`` BertForSequenceClassification of the same sizes (random weights, nothing downloaded),
the same batch and sequence length, LXT's AttnLRP (its efficient mode, input x a modified gradient) and
PyTorch's gradient x input at the token embeddings (no weight gradient), timed in turns. Run::

    python benchmarks/bench_transformer.py               # needs the [hub] extra
    python benchmarks/bench_transformer.py --small       # 2 layers, hidden 128 (a quick check)
    python benchmarks/bench_transformer.py --layers 4 --no-memory --no-lxt   # BERT-base's widths, 4 layers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import interprettensor as it  # noqa: E402
from bench_lrp import _peak_rss_mib  # noqa: E402 - this folder's shared measurement

HERE = Path(__file__).resolve().parent
BASE = dict(num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072)
SMALL = dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=256)


def model_sizes(small: bool, layers: int | None = None) -> dict:
    """The backbone's sizes: BERT-base's (``SMALL``'s with ``small``), with ``layers`` layers if given."""
    sizes = dict(SMALL if small else BASE)
    if layers is not None:
        sizes["num_layers"] = layers
    return sizes


def build(sizes: dict, seq: int = 128, batch: int = 8):
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=30522, max_sequence_length=512, **sizes)
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    rng = np.random.default_rng(0)
    x = {"token_ids": tf.constant(rng.integers(1000, 30000, (batch, seq)), tf.int32),
         "segment_ids": tf.zeros((batch, seq), tf.int32),
         "padding_mask": tf.ones((batch, seq), tf.int32)}
    return model, x


def gradient_x_input(model):
    """Per-token gradient x input at the token embeddings' output, compiled: the fastest gradient we
    can write for it. The tape watches the embedding layer's output only (no variable is watched, so
    no weight gradient is computed: LRP computes none either); the gradient there times the output,
    summed over the hidden axis, is one value per token, where LRP's token relevance is read."""
    layer = model.backbone.token_embedding
    call = layer.call

    @tf.function(jit_compile=False)
    def run(x):
        seen = []
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            def watched(*args, **kwargs):
                out = call(*args, **kwargs)
                tape.watch(out)
                seen.append(out)
                return out

            layer.call = watched
            try:
                out = model(x, training=False)
            finally:
                layer.call = call
            sel = tf.reduce_sum(out * tf.one_hot(tf.argmax(out, -1), tf.shape(out)[-1]))
        if len(seen) != 1:
            raise RuntimeError(f"the token embedding was called {len(seen)} times; expected once")
        emb = seen[0]
        return tf.reduce_sum(tape.gradient(sel, emb) * emb, -1)

    return run


def gradient_x_input_table(model):
    """The same quantity through the gradient with respect to the embedding *table* (what this
    benchmark measured before: every trainable variable watched, the table's gradient as
    IndexedSlices); kept to show the difference (``--table-baseline``)."""
    table = model.backbone.token_embedding.embeddings.value

    @tf.function(jit_compile=False)
    def run(x):
        with tf.GradientTape() as tape:
            out = model(x, training=False)
            sel = tf.reduce_sum(out * tf.one_hot(tf.argmax(out, -1), tf.shape(out)[-1]))
        grad = tape.gradient(sel, table)
        per_token = tf.reduce_sum(grad.values * tf.gather(table, grad.indices), -1)
        return tf.reshape(per_token, tf.shape(x["token_ids"]))

    return run


def lrp_fn(model, rule: str):
    explainer = it.Explainer(model, rule=rule)
    names = sorted(model.input.keys()) if isinstance(model.input, dict) else None

    def run(x):
        xs = tuple(x[k] for k in names)
        fn = explainer._function(list(xs), "target", False)
        return fn(xs, tf.fill((xs[0].shape[0],), -1))[0]

    return run






def paired_times(fn_a, fn_b, x, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Best wall-clock and best process CPU times (seconds, all threads) of two functions run
    alternately (two warm-up calls each): ``((wall_a, cpu_a), (wall_b, cpu_b))``. On a shared machine
    the CPU time is the steadier measure (other processes stretch the wall clock, not this process's
    CPU time); on a quiet one the wall clock is the figure to report."""
    for fn in (fn_a, fn_b):
        fn(x)
        fn(x)
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, got in zip((fn_a, fn_b), times):
            w0, c0 = time.perf_counter(), time.process_time()
            out = fn(x)
            np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
            got.append((time.perf_counter() - w0, time.process_time() - c0))
    best = tuple((min(t[0] for t in got), min(t[1] for t in got)) for got in times)
    return best[0], best[1]


def _torch_pin() -> str:
    """``torch==V`` for the torch installed here (the version the engine's PyTorch backend runs), else ``torch``."""
    from importlib import metadata

    try:
        return f"torch=={metadata.version('torch')}"
    except metadata.PackageNotFoundError:
        return "torch"


def lxt_python(venv: Path) -> Path | None:
    """The Python of LXT's virtual environment, set up on first use (``pip install lxt==2.1
    transformers==4.52.4 torch==V``: LXT 2.1's BERT patch is written against that ``transformers``; V is
    the torch of this environment where it has one, from PyTorch's CPU index, as a newer torch may not
    work with LXT 2.1); ``None`` (and a note) where it cannot be installed."""
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"setting up LXT in {venv} (once) ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--extra-index-url",
                            "https://download.pytorch.org/whl/cpu", "lxt==2.1", "transformers==4.52.4", _torch_pin()],
                           check=True)
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"LXT could not be installed ({e}); its rows are left out")
            return None
    # LXT pulls in torchvision (for its ViT patch), whose wheel may not match a CPU-only torch; a
    # torchvision that cannot load breaks transformers' imports, so it is removed (lxt_side.py runs without)
    if subprocess.run([str(py), "-c", "import torchvision"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "torchvision"], capture_output=True)
    return py


def lxt_times(py: Path, sizes: dict, seq: int, batch: int, repeats: int) -> dict | None:
    """LXT's AttnLRP and PyTorch's gradient x input on a ``transformers`` BERT of the same sizes (random
    weights), timed in LXT's environment by ``lxt_side.py``: ``{method: seconds, versions...}``."""
    cmd = [str(py), str(HERE / "lxt_side.py"), str(sizes["num_layers"]), str(sizes["hidden_dim"]),
           str(sizes["num_heads"]), str(sizes["intermediate_dim"]), str(seq), str(batch), str(repeats)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"LXT's run failed:\n{res.stderr[-2000:]}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory_child(method: str, sizes: dict) -> None:
    model, x = build(sizes)
    fwd = tf.function(lambda t: model(t, training=False))
    np.asarray(fwd(x))
    base = _peak_rss_mib()
    fn = gradient_x_input(model) if method == "gradient" else lrp_fn(model, method)
    for _ in range(2):
        out = fn(x)
        np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    print(f"{base:.1f} {_peak_rss_mib():.1f}")


def peak_memory(method: str, sizes: dict) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--memory-child", method, "--sizes", json.dumps(sizes)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    base, peak = float(out[-2]), float(out[-1])
    return peak - base, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="2 layers, hidden 128 instead of BERT-base")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--table-baseline", action="store_true",
                    help="also time gradient x input through the embedding table's gradient (the old baseline)")
    ap.add_argument("--layers", type=int, default=None, help="number of transformer layers (default: 12, or 2 with --small)")
    ap.add_argument("--no-lxt", action="store_true", help="leave LXT's rows out")
    ap.add_argument("--lxt-venv", default=str(HERE.parent / ".bench-lxt"),
                    help="LXT's virtual environment (created on first use)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, json.loads(args.sizes))
        return
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs keras_hub: pip install -e '.[hub]'")
    sizes = model_sizes(args.small, args.layers)
    seq, batch = 128, 8
    model, x = build(sizes, seq, batch)
    name = (f"BERT {sizes['num_layers']} layers, hidden {sizes['hidden_dim']}" +
            (" (base)" if sizes == BASE else "") + f", seq {seq}, batch {batch}")
    grad = gradient_x_input(model)
    ref = np.asarray(gradient_x_input_table(model)(x))
    got = np.asarray(grad(x))
    if not np.allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max()):
        sys.exit(f"the two gradient x input computations differ by {np.abs(got - ref).max():.3g}")
    rows = []
    for rule in ("attnlrp", "cp_lrp"):
        (t_lrp, c_lrp), (t_grad, c_grad) = paired_times(lrp_fn(model, rule), grad, x, args.repeats)
        rows.append((rule, t_lrp, t_grad, c_lrp, c_grad))
    theirs = None
    if not args.no_lxt:
        py = lxt_python(Path(args.lxt_venv))
        theirs = None if py is None else lxt_times(py, sizes, seq, batch, args.repeats)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print("| workload | rule | LRP (s) | gradient x input (s) | ratio | CPU time ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rule, t_lrp, t_grad, c_lrp, c_grad in rows:
        print(f"| {name} | {rule} | {t_lrp:.3f} | {t_grad:.3f} | {t_lrp / t_grad:.2f} | {c_lrp / c_grad:.2f} |")
    if theirs is not None:
        t_lxt, t_tg = theirs["attnlrp"], theirs["gradient_x_input"]
        c_lxt, c_tg = theirs["attnlrp_cpu"], theirs["gradient_x_input_cpu"]
        print(f"| {name}, LXT {theirs['lxt']} (PyTorch {theirs['torch']}, transformers {theirs['transformers']}, "
              f"{theirs['threads']} threads) | attnlrp | {t_lxt:.3f} | {t_tg:.3f} | {t_lxt / t_tg:.2f} | "
              f"{c_lxt / c_tg:.2f} |")
        print(f"interprettensor's AttnLRP / LXT's AttnLRP: {rows[0][1] / t_lxt:.2f} in wall-clock time, "
              f"{rows[0][3] / c_lxt:.2f} in CPU time ({rows[0][3]:.2f} s / {c_lxt:.2f} s; gradient x input "
              f"{rows[0][4]:.2f} s / {c_tg:.2f} s; LXT timed in its own process after interprettensor's, its two "
              f"methods in turns)")
    if args.table_baseline:
        (t_table, _), (t_grad, _) = paired_times(gradient_x_input_table(model), grad, x, args.repeats)
        print(f"gradient x input through the embedding table's gradient: {t_table:.3f} s "
              f"({t_table / t_grad:.2f}x the baseline above)")
    if not args.no_memory:
        g_extra, g_abs = peak_memory("gradient", sizes)
        print()
        print("| peak memory (fresh process; MiB beyond the model and one forward pass / absolute) | LRP | "
              "gradient x input | ratio |")
        print("| --- | --- | --- | --- |")
        for rule in ("attnlrp", "cp_lrp"):
            l_extra, l_abs = peak_memory(rule, sizes)
            print(f"| {name}, {rule} | {l_extra:.0f} / {l_abs:.0f} | {g_extra:.0f} / {g_abs:.0f} | "
                  f"{l_extra / max(g_extra, 1e-9):.2f} / {l_abs / g_abs:.2f} |")


if __name__ == "__main__":
    main()
