"""AttnLRP and CP-LRP on a BERT-base-sized transformer, relative to gradient x input, in one process
(a script, not a timed test).

The model: keras_hub's BertTextClassifier on a BertBackbone of BERT-base's size (12 layers, hidden
768, 12 heads, intermediate 3072; random weights, built from the config: nothing is downloaded),
sequence 128, batch 8, on each Keras backend asked for (``--backends``; each in its own process, as
Keras picks its backend once per process). Gradient x input is taken where LRP's token relevance is
read: at the token embeddings' output (the gradient of the target logit with respect to that output,
no variable differentiated, times the output, summed over the hidden axis): the fastest compiled
gradient we can write for it (on TensorFlow a tape watching that output in ``tf.function``;
``--table-baseline`` also times the gradient taken with respect to the embedding table, which this
benchmark used before and which is about 1.7x slower; on JAX and PyTorch the engine's backend
vector-Jacobian product, compiled as the explainer is). LRP is the explainer's compiled per-batch
function. On TensorFlow each rule is also timed compiled with XLA
(``it.Explainer(..., jit_compile=True)``) against gradient x input compiled with XLA (``--no-xla``
leaves these rows out): XLA fuses the element-wise steps of both passes, and on this CPU its gradient
is the faster of the two, so the XLA rows' baseline is the fastest gradient of the run. Both warmed
up; best of ``--repeats`` runs taken alternately, in wall-clock time and in the process's CPU time
(all threads; the steadier measure on a shared machine, where other processes stretch the wall
clock). Peak memory: each method in a fresh process, beyond the model and one forward pass.

LXT side by side: LXT (PyTorch) cannot share Keras' environment; the benchmark creates its own virtual
environment (``--lxt-venv``, default ``.bench-lxt/``: ``pip install lxt==2.1 transformers==4.52.4
torch``, torch pinned to this environment's version) on first use and runs ``benchmarks/lxt_side.py`` there in a separate process: a
``transformers`` BertForSequenceClassification of the same sizes (random weights, nothing downloaded),
the same batch and sequence length, LXT's AttnLRP (its efficient mode, input x a modified gradient) and
PyTorch's gradient x input at the token embeddings (no weight gradient), timed in turns. Run::

    python benchmarks/bench_transformer.py               # needs the [hub] extra
    python benchmarks/bench_transformer.py --backends tensorflow jax torch   # needs the [jax], [torch] extras
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

import numpy as np

HERE = Path(__file__).resolve().parent
BASE = dict(num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072)
SMALL = dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=256)
BACKENDS = ("tensorflow", "jax", "torch")


def model_sizes(small: bool, layers: int | None = None) -> dict:
    """The backbone's sizes: BERT-base's (``SMALL``'s with ``small``), with ``layers`` layers if given."""
    sizes = dict(SMALL if small else BASE)
    if layers is not None:
        sizes["num_layers"] = layers
    return sizes


def build(sizes: dict, seq: int = 128, batch: int = 8):
    import keras
    import keras_hub
    from keras import ops

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=30522, max_sequence_length=512, **sizes)
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    rng = np.random.default_rng(0)
    x = {"token_ids": ops.convert_to_tensor(rng.integers(1000, 30000, (batch, seq)), "int32"),
         "segment_ids": ops.zeros((batch, seq), "int32"),
         "padding_mask": ops.ones((batch, seq), "int32")}
    return model, x


def gradient_x_input(model, jit: bool = False):
    """Per-token gradient x input at the token embeddings' output, compiled: the fastest gradient we
    can write for it on the running backend. Nothing but that output is differentiated (no variable,
    so no weight gradient: LRP computes none either); the gradient there times the output, summed over
    the hidden axis, is one value per token, where LRP's token relevance is read. TensorFlow: a tape
    watching the output, in ``tf.function`` (with XLA where ``jit``); JAX and PyTorch: the engine's
    backend module's vector-Jacobian product, compiled as the explainer compiles (``jax.jit``; PyTorch
    eager)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        from bench_backends import gradient_x_input as neutral  # the backend-neutral version

        compiled = {}

        def run_neutral(x):  # compiled once, for the benchmark's one batch
            if "fn" not in compiled:
                compiled["fn"] = neutral(model, {k: keras.ops.convert_to_numpy(v) for k, v in x.items()})
            return compiled["fn"]()

        return run_neutral
    import tensorflow as tf

    layer = model.backbone.token_embedding
    call = layer.call

    @tf.function(jit_compile=jit)
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
    IndexedSlices); kept to show the difference (``--table-baseline``; TensorFlow)."""
    import tensorflow as tf

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


def lrp_fn(model, rule: str, jit: bool = False):
    """The explainer's compiled per-batch function for the predicted class (what ``Explainer.__call__``
    runs, without its argument checks; ``jit``: ``jit_compile=True``, XLA on TensorFlow); returns the
    token ids' relevance."""
    from keras import ops

    import interprettensor as it

    explainer = it.Explainer(model, rule=rule, jit_compile=jit)
    names = sorted(model.input.keys())

    def run(x):
        xs = [x[k] for k in names]
        explainer._activate_for(xs)
        fn = explainer._function(xs, "target", False)
        return fn(tuple(xs), ops.full((xs[0].shape[0],), -1, "int32"))[names.index("token_ids")]

    return run


def _numpy(out):
    """The output as NumPy (waits for the computation to finish)."""
    from keras import ops

    return ops.convert_to_numpy(out[0] if isinstance(out, (list, tuple)) else out)


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
            _numpy(out)
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
            # one retry: where PyTorch's index cannot be reached (a machine that sees only PyPI and local
            # wheels), pip's default five retries with back-off per package took over ten minutes
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "15",
                            "--extra-index-url", "https://download.pytorch.org/whl/cpu", "lxt==2.1",
                            "transformers==4.52.4", _torch_pin()], check=True)
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


def backend_child(sizes: dict, seq: int, batch: int, repeats: int, table: bool, xla: bool = True) -> None:
    """One backend's rows (``KERAS_BACKEND`` set by the parent), printed as one JSON line. On
    TensorFlow with ``xla`` also each rule compiled with XLA (``jit_compile=True``) against gradient x
    input compiled with XLA (on this CPU the faster of the two gradients), after checking that XLA's
    gradient and relevance equal the plain ones within float32 rounding."""
    import keras

    model, x = build(sizes, seq, batch)
    grad = gradient_x_input(model)
    out = {"backend": keras.backend.backend(), "keras": keras.__version__, "rows": []}
    if out["backend"] == "tensorflow":
        import tensorflow as tf

        out["version"] = tf.__version__
        ref = _numpy(gradient_x_input_table(model)(x))
        got = _numpy(grad(x))
        if not np.allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max()):
            sys.exit(f"the two gradient x input computations differ by {np.abs(got - ref).max():.3g}")
    else:
        out["version"] = __import__(out["backend"]).__version__
    plain = {}
    for rule in ("attnlrp", "cp_lrp"):
        plain[rule] = lrp_fn(model, rule)
        (t_lrp, c_lrp), (t_grad, c_grad) = paired_times(plain[rule], grad, x, repeats)
        out["rows"].append((rule, t_lrp, t_grad, c_lrp, c_grad))
    if xla and out["backend"] == "tensorflow":
        grad_xla = gradient_x_input(model, jit=True)
        _same("gradient x input with XLA", _numpy(grad_xla(x)), _numpy(grad(x)), layers=sizes["num_layers"])
        for rule in ("attnlrp", "cp_lrp"):
            fn = lrp_fn(model, rule, jit=True)
            _same(f"{rule} with XLA", _numpy(fn(x)), _numpy(plain[rule](x)), layers=sizes["num_layers"])
            (t_lrp, c_lrp), (t_grad, c_grad) = paired_times(fn, grad_xla, x, repeats)
            label = f"{rule}, jit_compile=True (XLA; its gradient with XLA)"
            out["rows"].append((label, t_lrp, t_grad, c_lrp, c_grad))
    if table and out["backend"] == "tensorflow":
        (t_table, _), (t_grad, _) = paired_times(gradient_x_input_table(model), grad, x, repeats)
        out["table"] = (t_table, t_grad)
    print(json.dumps(out), flush=True)


def _same(what: str, got: np.ndarray, want: np.ndarray, layers: int) -> None:
    """Exit naming ``what`` unless ``got`` equals ``want`` within float32 rounding: each of the
    ``layers`` blocks sums at most a few thousand products (hidden 768, intermediate 3072), each
    float32 sum errs by at most 2^-24 of the magnitude summed, and XLA sums in another order."""
    tol = 2.0 ** -23 * 4096 * max(layers, 1) * float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    if not err <= tol:
        sys.exit(f"{what}: differs from the plain computation by {err:.3g} (tolerance {tol:.3g})")


def memory_child(method: str, sizes: dict) -> None:
    """Peak resident memory (MiB) after the model and one forward pass, then after two calls of
    ``method`` (``KERAS_BACKEND`` set by the parent)."""
    from bench_lrp import _peak_rss_mib  # this folder's shared measurement

    model, x = build(sizes)
    _numpy(model(x, training=False))
    base = _peak_rss_mib()
    fn = gradient_x_input(model) if method == "gradient" else lrp_fn(model, method)
    for _ in range(2):
        _numpy(fn(x))
    print(f"{base:.1f} {_peak_rss_mib():.1f}")


def _child(args: list[str], backend: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)


def peak_memory(method: str, sizes: dict, backend: str) -> tuple[float, float]:
    res = _child(["--memory-child", method, "--sizes", json.dumps(sizes)], backend)
    if res.returncode != 0:
        sys.exit(f"{backend} memory run of {method} failed:\n{res.stderr[-2000:]}")
    base, peak = (float(v) for v in res.stdout.split()[-2:])
    return peak - base, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="2 layers, hidden 128 instead of BERT-base")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=["tensorflow"],
                    help="Keras backends to run, each in its own process (default: tensorflow)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every backend's process and LXT's this many times in turn, keeping each time's best")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--table-baseline", action="store_true",
                    help="also time gradient x input through the embedding table's gradient (the old baseline)")
    ap.add_argument("--layers", type=int, default=None, help="number of transformer layers (default: 12, or 2 with --small)")
    ap.add_argument("--no-lxt", action="store_true", help="leave LXT's rows out")
    ap.add_argument("--no-xla", action="store_true",
                    help="leave out TensorFlow's rows compiled with XLA (jit_compile=True)")
    ap.add_argument("--lxt-venv", default=str(HERE.parent / ".bench-lxt"),
                    help="LXT's virtual environment (created on first use)")
    ap.add_argument("--backend-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, json.loads(args.sizes))
        return
    sizes = json.loads(args.sizes) if args.sizes else model_sizes(args.small, args.layers)
    seq, batch = 128, 8
    if args.backend_child:
        backend_child(sizes, seq, batch, args.repeats, args.table_baseline, xla=not args.no_xla)
        return
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs keras_hub: pip install -e '.[hub]'")
    name = (f"BERT {sizes['num_layers']} layers, hidden {sizes['hidden_dim']}" +
            (" (base)" if sizes == BASE else "") + f", seq {seq}, batch {batch}")
    results: dict = {}
    theirs = None
    py = None if args.no_lxt else lxt_python(Path(args.lxt_venv))
    for _ in range(args.rounds):  # rounds interleave the processes, so that load changes hit all alike
        for backend in args.backends:
            res = _child(["--backend-child", "--sizes", json.dumps(sizes), "--repeats", str(args.repeats)] +
                         (["--table-baseline"] if args.table_baseline else []) +
                         (["--no-xla"] if args.no_xla else []), backend)
            if res.returncode != 0:
                sys.exit(f"the {backend} run failed:\n{res.stderr[-3000:]}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            best = results.setdefault(backend, got)
            best["rows"] = [[old[0]] + [min(a, b) for a, b in zip(old[1:], new[1:])]
                            for old, new in zip(best["rows"], got["rows"])]
        if py is not None:
            got = lxt_times(py, sizes, seq, batch, args.repeats)
            if got is not None:
                theirs = got if theirs is None else {k: (min(v, got[k]) if isinstance(v, float) else v)
                                                    for k, v in theirs.items()}
    results = list(results.values())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Keras {results[0]['keras']}, " +
          ", ".join(f"{r['backend']} {r['version']}" for r in results))
    print("| workload | backend | rule | LRP (s) | gradient x input (s) | ratio | CPU time ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for rule, t_lrp, t_grad, c_lrp, c_grad in r["rows"]:
            print(f"| {name} | {r['backend']} | {rule} | {t_lrp:.3f} | {t_grad:.3f} | {t_lrp / t_grad:.2f} | "
                  f"{c_lrp / c_grad:.2f} |")
    if theirs is not None:
        t_lxt, t_tg = theirs["attnlrp"], theirs["gradient_x_input"]
        c_lxt, c_tg = theirs["attnlrp_cpu"], theirs["gradient_x_input_cpu"]
        print(f"| {name}, LXT {theirs['lxt']} (transformers {theirs['transformers']}, "
              f"{theirs['threads']} threads) | torch {theirs['torch']} | attnlrp | {t_lxt:.3f} | {t_tg:.3f} | "
              f"{t_lxt / t_tg:.2f} | {c_lxt / c_tg:.2f} |")
        for r in results:
            for rule, t_lrp, t_grad, c_lrp, c_grad in r["rows"]:
                if not rule.startswith("attnlrp"):
                    continue
                how = rule[len("attnlrp"):].split(" (")[0]
                print(f"interprettensor's AttnLRP on {r['backend']}{how} / LXT's AttnLRP: {t_lrp / t_lxt:.2f} in "
                      f"wall-clock time ({t_lrp:.2f} s / {t_lxt:.2f} s), {c_lrp / c_lxt:.2f} in CPU time "
                      f"({c_lrp:.2f} s / {c_lxt:.2f} s); gradient x input {t_grad:.2f} s / {t_tg:.2f} s")
        print(f"(each backend and LXT timed in its own process, one after the other, {args.rounds} round(s), "
              "best kept; each method in turns with its own gradient x input)")
    for r in results:
        if "table" in r:
            t_table, t_grad = r["table"]
            print(f"gradient x input through the embedding table's gradient ({r['backend']}): {t_table:.3f} s "
                  f"({t_table / t_grad:.2f}x the baseline above)")
    if not args.no_memory:
        print()
        print("| peak memory (fresh process; MiB beyond the model and one forward pass / absolute) | backend | "
              "LRP | gradient x input | ratio |")
        print("| --- | --- | --- | --- | --- |")
        for backend in args.backends:
            g_extra, g_abs = peak_memory("gradient", sizes, backend)
            for rule in ("attnlrp", "cp_lrp"):
                l_extra, l_abs = peak_memory(rule, sizes, backend)
                print(f"| {name}, {rule} | {backend} | {l_extra:.0f} / {l_abs:.0f} | {g_extra:.0f} / {g_abs:.0f} | "
                      f"{l_extra / max(g_extra, 1e-9):.2f} / {l_abs / g_abs:.2f} |")


if __name__ == "__main__":
    main()
