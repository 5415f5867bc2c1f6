"""Quantus' metrics in interprettensor: each metric's time next to its floor (the model calls and
explanations it needs, timed alone in the same run) and next to Quantus 0.6.0 on a PyTorch model with
the same weights (a script, not a timed test)::

    python benchmarks/bench_metrics.py                 # VGG16 224 x 224 and a small CNN, batch 8
    python benchmarks/bench_metrics.py --quick         # the small CNN only (a minute or two)
    python benchmarks/bench_metrics.py --no-quantus    # without Quantus' column
    python benchmarks/bench_metrics.py --ground-truth  # the localisation ranking on shapes with known masks
    python benchmarks/bench_metrics.py --models vgg16 --size 32 --batch 2 --repeats 1   # a smoke test of
                                                       # the VGG16 path (same layers, 32 x 32 inputs)

Quantus cannot share Keras 3's environment (its TensorFlow extra pins ``keras<3``); the benchmark
creates its own virtual environment (``--quantus-venv``, default ``.bench-quantus/``: ``pip install
quantus==0.6.0 torch``; CPU wheels) on first use and runs Quantus there in a separate process
(``benchmarks/quantus_side.py``) on the same weights (the Keras model's weights written to an
``.npz``; PyTorch rebuilds the network, flattening in channels-last order), the same inputs and the same
attributions. Models are built with random weights (nothing downloads).

The metrics and settings (the issue's): PixelFlipping with ``features_in_step`` = pixels / 32 (black
baseline), which is 96 steps on three colour channels: Quantus, like interprettensor, counts every
value of the attribution as a feature (one per channel), and it requires ``features_in_step`` to divide
the number of pixels, so 32 steps of whole pixels cannot be asked of it; the issue's Quantus figure
(154 s, about 90 forward passes of 1.7 s) is this setting; RegionPerturbation with 20 regions of 16 x 16 (8 x 8 on the small CNN and below 64 x 64
inputs), MaxSensitivity with 10 samples (gradient explanations), MPRT bottom-up over all layers
(gradient explanations); also EfficientMPRT (defaults: the original and the fully randomised model)
and SmoothMPRT (bottom-up, 10 noisy copies; small CNN only by default: on VGG16 it explains 17 x 10
batches; Quantus 0.6.0's SmoothMPRT explains with ``quantus.explain``, which needs captum, so it has no
Quantus column). ``--metrics`` picks some of them (``pixel_flipping,region_perturbation,
max_sensitivity,mprt,efficient_mprt,smooth_mprt``). The floor replays the model calls and explanation calls the metric makes (their batch
sizes recorded in a first run) on the compiled functions: what the metric cannot do without; the
ratio shows its own overhead (ordering, perturbing, similarity measures, assigning the randomised
weights). Metric and floor are timed in turns (``--repeats`` each, best kept); the calls are recorded
during the first timed run of the metric (after one call of each compiled function on one input, which
traces it: the functions take any batch size), so a row costs ``2 x repeats`` runs of the metric's model
calls, not more. CPU time (user + system of the process, every thread) is printed next to the wall
clock: on a shared machine it is the steadier measure.

``--side ours`` / ``--side quantus`` run one side only (the rows are printed as JSON lines too), so the
two sides of a long VGG16 run can go in separate processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent


def build(name: str, size: int = 224, batch: int = 8):
    """The model (random weights, seeded), ``batch`` inputs in [0, 1] and the region size.
    ``size`` is VGG16's input side (224 as the issue's; smaller for a smoke test: VGG16 takes any
    side from 32); the small CNN takes 32."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if name == "vgg16":
        if size < 32:
            raise SystemExit(f"--size {size}: VGG16's five poolings need inputs of at least 32 x 32")
        model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3), classes=1000,
                                         classifier_activation=None)
        patch = 16 if size >= 64 else 8
    elif name == "small_cnn":
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
        size, patch = 32, 8
    else:
        raise SystemExit(f"unknown model {name!r}: the models are {', '.join(MODELS)}")
    x = np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype("float32")
    return model, x, patch


MODELS = ("small_cnn", "vgg16")
#: the rows, in order: the issue's four, then the other randomisation tests
METRICS = ("pixel_flipping", "region_perturbation", "max_sensitivity", "mprt", "efficient_mprt", "smooth_mprt")
LABELS = {"pixel_flipping": "PixelFlipping (96 steps)", "region_perturbation": "RegionPerturbation (20 regions)",
          "max_sensitivity": "MaxSensitivity (10 samples)", "mprt": "MPRT (bottom-up)",
          "efficient_mprt": "EfficientMPRT", "smooth_mprt": "SmoothMPRT (bottom-up, 10 samples)"}


def default_metrics(model: str) -> list[str]:
    """Every metric on the small CNN; on VGG16 all but SmoothMPRT (10 noisy copies at each of 17 stages)."""
    return [m for m in METRICS if not (model == "vgg16" and m == "smooth_mprt")]


def export(model, path: Path) -> list[dict]:
    """The network as a list of operations with their weights in ``path`` (.npz), for PyTorch."""
    import keras
    import numpy as np

    spec, arrays = [], {}
    for i, layer in enumerate(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Conv2D):
            w, b = layer.get_weights()
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
            spec.append({"op": "conv", "w": f"w{i}", "b": f"b{i}", "padding": layer.padding,
                         "act": layer.activation.__name__})
        elif isinstance(layer, keras.layers.MaxPooling2D):
            spec.append({"op": "maxpool", "size": int(layer.pool_size[0])})
        elif isinstance(layer, keras.layers.Flatten):
            spec.append({"op": "flatten"})
        elif isinstance(layer, keras.layers.Dense):
            w, b = layer.get_weights()
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
            spec.append({"op": "dense", "w": f"w{i}", "b": f"b{i}", "act": layer.activation.__name__})
        else:
            raise SystemExit(f"cannot export layer {layer.name} ({type(layer).__name__}) to PyTorch")
    np.savez(path, **arrays)
    return spec


def cpu_seconds() -> float:
    """User + system CPU time of this process (every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float]:
    """``fn()``'s wall-clock and CPU seconds."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def ours(model, x, y, a, patch: int, repeats: int, which: list[str], sampled_floor: bool = False) -> dict:
    """interprettensor's time per metric and its floor, in this process: the floor replays the metric's
    own model calls and explanation calls (their batch sizes recorded in a first run) on compiled
    functions. The metric and its floor are timed in turns, ``repeats`` times each, and the best of
    each is kept, so that a load that comes and goes on a shared machine hits both alike."""
    import numpy as np

    import interprettensor as it

    size = x.shape[1]
    mm = it.metrics.MetricModel(model, batch_size=64)

    def replay(calls: dict):
        xs = {b: np.resize(x, (b,) + x.shape[1:]) for b in set(calls["predict"]) | set(calls["explain"])}
        ys = {b: np.resize(y, b) for b in xs}

        def run():
            for b in calls["predict"]:
                mm.predict(xs[b])
            for b in calls["explain"]:
                it.metrics.explain(model, xs[b], ys[b], method="gradient")

        def sampled():  # one call of each kind and batch size, times the number of such calls
            wall = cpu = 0.0
            for kind, fn in (("predict", lambda b: mm.predict(xs[b])),
                             ("explain", lambda b: it.metrics.explain(model, xs[b], ys[b], method="gradient"))):
                for b in sorted(set(calls[kind])):
                    w, c = timed(lambda: fn(b))
                    wall, cpu = wall + w * calls[kind].count(b), cpu + c * calls[kind].count(b)
            return wall, cpu

        return sampled if sampled_floor else run

    # every compiled function the metrics and floors use, traced once on one input (they take any
    # batch size): no timed run pays a trace
    mm.predict(x[:1])
    it.metrics.explain(model, x[:1], y[:1], method="gradient")
    gradient = {"explain_func": it.metrics.explain, "explain_func_kwargs": {"method": "gradient"}}
    metrics = {
        "pixel_flipping": lambda: (it.metrics.PixelFlipping(features_in_step=size * size // 32,
                                                            perturb_baseline="black"), {"a_batch": a}),
        "region_perturbation": lambda: (it.metrics.RegionPerturbation(patch_size=patch, regions_evaluation=20),
                                        {"a_batch": a}),
        "max_sensitivity": lambda: (it.metrics.MaxSensitivity(nr_samples=10), gradient),
        "mprt": lambda: (it.metrics.MPRT(layer_order="bottom_up"), gradient),
        "efficient_mprt": lambda: (it.metrics.EfficientMPRT(), gradient),
        "smooth_mprt": lambda: (it.metrics.SmoothMPRT(layer_order="bottom_up", nr_samples=10), gradient),
    }
    rows = {}
    for key in which:
        metric, kw = metrics[key]()
        label = LABELS[key]
        calls: dict = {}
        t, floor = [], []
        for rep in range(repeats):
            if rep == 0:  # the calls recorded as they are made
                t.append(timed(lambda: calls.update(_record_calls(metric, model, x, y, kw))))
                floor_run = replay(calls)
            else:
                t.append(timed(lambda: metric(model=model, x_batch=x, y_batch=y, batch_size=64, **kw)))
            floor.append(floor_run() if sampled_floor else timed(floor_run))
        rows[label] = {"seconds": min(w for w, _ in t), "floor": min(w for w, _ in floor),
                       "cpu": min(c for _, c in t), "floor_cpu": min(c for _, c in floor),
                       "predict_calls": len(calls["predict"]), "explain_calls": len(calls["explain"]),
                       "score": float(np.nanmean(_flat(metric.evaluation_scores)))}
        print(json.dumps({"ours": label, **rows[label]}), flush=True)
    return rows


def _sec(seconds: float) -> str:
    """Seconds to two decimals, or to three significant digits below a second (the small CNN's
    rows take milliseconds)."""
    return f"{seconds:.2f}" if seconds >= 1 else f"{seconds:.3g}"


def _flat(scores) -> list[float]:
    """Every number of a metric's result (a list of scores or curves, or MPRT's dict of layers)."""
    import numpy as np

    out = []
    for s in (scores.values() if isinstance(scores, dict) else scores):
        out.extend(np.ravel(np.asarray(s, np.float64)).tolist())
    return out


def _record_calls(metric, model, x, y, kw) -> dict:
    """The batch sizes of the model calls and explanation calls one call of the metric makes."""
    import interprettensor as it
    from interprettensor.analysis.metrics import model as model_module

    calls: dict = {"predict": [], "explain": []}
    original = model_module.MetricModel.logits

    def logits(self, xs):
        calls["predict"].extend(min(self.batch_size, len(xs) - s) for s in range(0, len(xs), self.batch_size))
        return original(self, xs)

    def explain(*args, **kwargs):
        inputs = kwargs.get("inputs", args[1] if len(args) > 1 else None)
        calls["explain"].append(len(inputs))
        return it.metrics.explain(*args, **kwargs)

    kw = dict(kw)
    if "explain_func" in kw:
        kw["explain_func"] = explain
    model_module.MetricModel.logits = logits
    try:
        metric(model=model, x_batch=x, y_batch=y, batch_size=64, **kw)
    finally:
        model_module.MetricModel.logits = original
    return calls


def quantus_python(venv: Path) -> Path | None:
    py = venv / "bin" / "python"
    if py.exists():
        return py
    print(f"setting up Quantus in {venv} (once) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "quantus==0.6.0", "torch"], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"Quantus could not be installed ({e}); its column is left out")
        return None
    return py


def theirs(py: Path, spec: list[dict], weights: Path, x, y, a, patch: int, repeats: int,
           which: list[str]) -> dict | None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, x=x, y=y, a=a)
        cmd = [str(py), str(HERE / "quantus_side.py"), json.dumps(spec), str(weights), str(data), str(patch),
               str(repeats), json.dumps([LABELS[k] for k in which])]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"Quantus' run failed:\n{res.stderr[-2000:]}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def ground_truth(n_test: int = 64) -> None:
    """The localisation ranking: a CNN trained on 1600 generated shape images (the shape decides the
    class), explained on ``n_test`` held-out ones; mean and standard error per method and metric."""
    import interprettensor as it

    x, y, _ = it.metrics.shapes_dataset(1600, size=32, seed=0)
    model = it.metrics.train_shapes_cnn(x, y, epochs=3, seed=0)
    xt, yt, st = it.metrics.shapes_dataset(256, size=32, seed=1)
    acc = float((model.predict(xt, verbose=0).argmax(-1) == yt).mean())
    table = it.metrics.localisation_benchmark(model, xt[:n_test], yt[:n_test], st[:n_test], per_sample=True)
    print(f"shapes CNN: held-out accuracy {acc:.3f}; {n_test} held-out images; relevance summed over colour "
          f"channels, absolute; mean +- standard error")
    print(it.metrics.ground_truth.format_table(table))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small CNN only (as --models small_cnn)")
    ap.add_argument("--models", default=None,
                    help=f"comma-separated models among {','.join(MODELS)} (default: both; --quick: small_cnn)")
    ap.add_argument("--metrics", default=None,
                    help=f"comma-separated metrics among {','.join(METRICS)} (default: all; SmoothMPRT not on "
                         f"VGG16)")
    ap.add_argument("--size", type=int, default=224,
                    help="VGG16's input side (default 224; e.g. 32 for a smoke test of the VGG16 path)")
    ap.add_argument("--batch", type=int, default=8, help="inputs per metric call (default 8)")
    ap.add_argument("--no-quantus", action="store_true", help="leave Quantus' column out")
    ap.add_argument("--quantus-venv", default=str(HERE.parent / ".bench-quantus"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sampled-floor", action="store_true",
                    help="time one model call of each kind and batch size the metric makes and multiply by the "
                         "number of such calls, instead of replaying them all (for VGG16 on a slow machine: "
                         "an estimate, as noisy as one call)")
    ap.add_argument("--side", choices=("both", "ours", "quantus"), default="both",
                    help="run interprettensor's side, Quantus' side or both (default)")
    ap.add_argument("--ground-truth", action="store_true",
                    help="only the ground-truth benchmark: a CNN trained on shapes with known masks, the "
                         "localisation metrics of LRP presets, gradient, input x gradient and random")
    args = ap.parse_args()
    if args.ground_truth:
        ground_truth()
        return

    import keras
    import numpy as np

    import interprettensor as it

    models = ["small_cnn"] if args.quick else (args.models.split(",") if args.models else list(MODELS))
    bad = [m for m in models if m not in MODELS] + [m for m in (args.metrics or "").split(",")
                                                     if m and m not in METRICS]
    if bad:
        raise SystemExit(f"unknown {bad}: the models are {', '.join(MODELS)}; the metrics {', '.join(METRICS)}")
    if args.side == "quantus" and args.no_quantus:
        raise SystemExit("--side quantus and --no-quantus leave nothing to run")
    py = None if args.no_quantus or args.side == "ours" else quantus_python(Path(args.quantus_venv))
    if args.side == "quantus" and py is None:
        raise SystemExit("Quantus could not be set up")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Keras {keras.__version__} "
          f"({keras.backend.backend()})")
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    print("| model | metric | interprettensor (s) | its floor (s) | ratio to floor | Quantus 0.6.0 (s) | "
          "Quantus / interprettensor | CPU s: interprettensor / floor / Quantus |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in models:
        which = args.metrics.split(",") if args.metrics else default_metrics(name)
        model, x, patch = build(name, args.size, args.batch)
        y = np.asarray(model(x)).argmax(-1)
        a = it.metrics.explain(model, x, y, method="gradient")
        rows = ours(model, x, y, a, patch, args.repeats, which, args.sampled_floor) if args.side != "quantus" else {}
        other = None
        if py is not None:
            with tempfile.TemporaryDirectory() as tmp:
                weights = Path(tmp) / "weights.npz"
                spec = export(model, weights)
                other = theirs(py, spec, weights, x, y, a, patch, args.repeats, which)
            for metric, q in (other or {}).items():
                print(json.dumps({"quantus": metric, **q}), flush=True)
        side = x.shape[1]
        label = f"{'VGG16' if name == 'vgg16' else 'small CNN'} {side}x{side}, batch {len(x)}"
        for metric in (LABELS[k] for k in which):
            r = rows.get(metric)
            q = other.get(metric) if other else None
            ours_s = (f"{_sec(r['seconds'])} | {_sec(r['floor'])} | {r['seconds'] / r['floor']:.2f}" if r
                      else "- | - | -")
            qs = _sec(q['seconds']) if q else "-"
            ratio = f"{q['seconds'] / r['seconds']:.1f}x" if q and r else "-"
            cpus = " / ".join([f"{r['cpu']:.3g}", f"{r['floor_cpu']:.3g}"] if r else ["-", "-"])
            cpus += f" / {q['cpu']:.3g}" if q and "cpu" in q else " / -"
            print(f"| {label} | {metric} | {ours_s} | {qs} | {ratio} | {cpus} |", flush=True)
        if other and rows:
            agree = {m: (round(rows[m]["score"], 4), round(other[m]["score"], 4)) for m in rows if m in other}
            print(f"mean scores (interprettensor, Quantus) on {label}: {agree}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
