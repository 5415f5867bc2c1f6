"""``interprettensor evaluate``: region perturbation (pixel flipping, AOPC) of several explanation methods
on a saved model or the digits CNN, and with ``--sanity`` the model-randomisation check
(:mod:`interprettensor.analysis.evaluate`); ``--metrics`` adds Quantus' metrics
(:func:`interprettensor.analysis.metrics.compare`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence

from ...io.inputs import collect_inputs, load_image, load_model, model_input_shape, shape_str
from .options import (CLIError, _check_range, _check_target, _first_line, _positive_float, _positive_int, _say,
                      add_image_options, needs_box, prepare_out_dir)

__all__ = ["add_parser", "cmd_evaluate", "DEFAULT_METHOD_NAMES"]

#: the labels of :data:`interprettensor.evaluate.DEFAULT_METHODS`, for ``evaluate --help`` without
#: importing TensorFlow (a test keeps the two lists equal)
DEFAULT_METHOD_NAMES = ("epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon", "gradient",
                        "input_x_gradient", "smoothgrad", "integrated_gradients", "deconvnet", "random")



def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's arguments (built without importing TensorFlow)."""
    v = sub.add_parser(
        "evaluate", parents=[common], help="measure explanation quality: region perturbation (AOPC)",
        usage="interprettensor evaluate (MODEL | --demo-model) [INPUTS ...] [options]",
        description="Region perturbation (Samek et al. 2017): explain the inputs with several methods, "
                    "perturb the most relevant patch x patch regions first (MoRF) and record the model's "
                    "pre-softmax score of the explained class; the area over the perturbation curve (AOPC) "
                    "is larger for better explanations. Writes OUT/curves.png and OUT/aopc.csv and prints the "
                    "AOPC table; --sanity adds the model-randomisation check (Adebayo et al. 2018).")
    v.add_argument("paths", nargs="*", metavar="MODEL INPUTS",
                   help="a saved Keras model (.keras, .h5) followed by image files, folders or .npy arrays "
                        "(with --demo-model: only inputs)")
    v.add_argument("--demo-model", action="store_true",
                   help="train the demo's digits CNN for --epochs and evaluate it (saved as OUT/digits_cnn.keras)")
    v.add_argument("--epochs", type=_positive_int, default=10,
                   help="training epochs of --demo-model (default: %(default)s)")
    v.add_argument("--digits", type=_positive_int, default=None, metavar="N",
                   help="evaluate on the first N test digits (28x28x1 in [0, 1]; default with --demo-model "
                        "and no inputs: 64)")
    v.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="LRP rules or presets, gradient, input_x_gradient, smoothgrad, integrated_gradients, "
                        "guided_backprop, deconvnet, deep_taylor, random; parameters as NAME:key=value,... "
                        f"(default: {' '.join(DEFAULT_METHOD_NAMES)})")
    v.add_argument("--patch", type=_positive_int, default=None,
                   help="region size in pixels (positions for 1-D inputs); default: from the input size, about "
                        "49 regions or more: min(H, W) // 7 for images (4 on 28x28), length // 49 for "
                        "sequences and feature vectors, at least 1")
    v.add_argument("--steps", type=_positive_int, default=None, help="regions to perturb (default: all)")
    v.add_argument("--perturbation", default="uniform",
                   help="uniform (noise in --value-range), mean (image mean), blur, or a number (default: %(default)s)")
    v.add_argument("--blur-sigma", type=_positive_float, default=None,
                   help="for --perturbation blur (default: patch/2)")
    v.add_argument("--order", choices=["morf", "lerf"], default="morf",
                   help="most (morf) or least (lerf) relevant regions first (default: %(default)s)")
    v.add_argument("--value-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="input value range: uniform noise and the bounds of box rules (default: 0 1 for digits, "
                        "--input-range for images; for .npy arrays the data's min and max for the noise, and "
                        "box rules such as epsilon_gamma_box need it given)")
    v.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted class)")
    add_image_options(v, color_help="as for 'explain'")
    v.add_argument("--sanity", action="store_true",
                   help="also run the cascading model-randomisation sanity check on up to 16 inputs; writes "
                        "OUT/randomisation.png and OUT/randomisation.csv")
    v.add_argument("--metrics", nargs="+", default=None, metavar="NAME[,NAME]",
                   help="also score the methods by Quantus' metrics (it.metrics class names, e.g. "
                        "MPRT,RandomLogit,EfficientMPRT) with their default settings: prints the mean and "
                        "standard error per method and metric and the ranking, writes OUT/metrics.csv and "
                        "OUT/metrics.png; results are kept in OUT/metrics/ and a rerun skips them")
    v.add_argument("--batch-size", type=_positive_int, default=256,
                   help="perturbed inputs per forward pass (default: %(default)s)")
    v.add_argument("--seed", type=int, default=0, help="random seed of noise and training (default: %(default)s)")
    v.add_argument("--out", default="evaluation", help="output folder (default: %(default)s)")
    v.set_defaults(func=cmd_evaluate)


def _number(s: str) -> Any:
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def _parse_methods(specs: Sequence[str] | None) -> list[tuple[str, str, dict]] | None:
    """``NAME`` or ``NAME:key=value,...`` -> (label, method, params); unknown names fail here."""
    import interprettensor as it
    from ...analysis.evaluate import DEFAULT_METHODS
    from ...attribution import METHODS

    if specs is None:
        return None
    defaults = {a: (b, c) for a, b, c in DEFAULT_METHODS}
    out = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        params: dict[str, Any] = {}
        for kv in filter(None, rest.split(",")):
            k, eq, val = kv.partition("=")
            if not eq or not k:
                raise CLIError(f"--methods {spec!r}: parameters are key=value pairs separated by commas")
            params[k.strip()] = _number(val.strip())
        if not rest and name in defaults:
            name, params = defaults[name][0], dict(defaults[name][1])
        key = name.lower().replace("-", "_")
        aliases = getattr(it.attribution, "_ALIASES", {})
        if key != "random" and key not in METHODS and key not in aliases:
            check = {k: v for k, v in params.items() if k != "absolute"}
            if needs_box(name):  # the bounds come from --value-range later; only the name is checked here
                check.setdefault("low", 0.0)
                check.setdefault("high", 1.0)
            try:
                it.get_composite(name, **check)
            except (ValueError, TypeError) as e:
                raise CLIError(f"--methods {spec!r}: {e}") from None
        out.append((spec, name, params))
    return out


def _evaluation_inputs(args: argparse.Namespace, model: Any, paths: Sequence[str]) -> tuple[Any, Any]:
    """The inputs (N, ...) and the default value range."""
    import numpy as np

    expected = model_input_shape(model)
    if args.digits is not None or (args.demo_model and not paths):
        if paths:
            raise CLIError("give input files or --digits N, not both")
        from ...io.digits import load_digits, train_test_split

        x, y = load_digits()
        x_test = train_test_split(x, y, test_fraction=0.2, seed=args.seed)[2]
        if expected is not None and tuple(expected[1:]) != tuple(x_test.shape[1:]):
            raise CLIError(f"--digits gives 28x28x1 images, but the model expects {shape_str(expected[1:])}")
        return x_test[: args.digits or 64], (0.0, 1.0)
    if not paths:
        raise CLIError("no inputs: give image files, folders or .npy arrays after the model, or --digits N")
    items = collect_inputs(paths, expected)
    arrays, any_image = [], False
    for item in items:
        if item.array is not None:
            arrays.append(np.asarray(item.array[item.index], dtype="float32"))
        else:
            any_image = True
            arrays.append(load_image(item.path, expected, args.color_mode, args.input_range, args.resize))
    if len({a.shape for a in arrays}) > 1:
        raise CLIError(f"inputs have different shapes: {sorted({shape_str(a.shape) for a in arrays})}")
    return np.stack(arrays), (tuple(args.input_range) if any_image else None)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``interprettensor evaluate``."""
    from ...analysis import evaluate as ev

    if args.perturbation not in ("uniform", "mean", "blur"):
        try:
            perturbation: Any = float(args.perturbation)
        except ValueError:
            raise CLIError(f"--perturbation must be uniform, mean, blur or a number, "
                           f"got {args.perturbation!r}") from None
    else:
        perturbation = args.perturbation
    _check_target(args.target)
    _check_range("--input-range", args.input_range)
    if args.value_range is not None:
        _check_range("--value-range", args.value_range)
    methods = _parse_methods(args.methods)
    metric_list = _parse_metrics(args.metrics)
    out = prepare_out_dir(args.out)
    paths = list(args.paths)
    if args.demo_model:
        import keras

        from ...io.digits import load_digits, train_test_split
        from ..demo import accuracy, build_network, train_network

        x, y = load_digits()
        x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction=0.2, seed=args.seed)
        keras.utils.set_random_seed(args.seed)
        model = build_network("convolutional")
        _say(args, f"training the digits CNN on {len(x_train)} digits, {args.epochs} epochs ...")
        train_network(model, x_train, y_train, args.epochs, 32, 3e-3, quiet=args.quiet)
        model.save(os.path.join(out, "digits_cnn.keras"))
        print(f"digits CNN: test accuracy {accuracy(model, x_test, y_test):.4f} "
              f"(saved as {os.path.join(out, 'digits_cnn.keras')})")
    else:
        if not paths:
            raise CLIError("give a saved Keras model (.keras, .h5) and inputs, or --demo-model")
        model = load_model(paths.pop(0))
    xs, default_range = _evaluation_inputs(args, model, paths)
    value_range = tuple(args.value_range) if args.value_range is not None else default_range
    target = None if args.target is None else args.target
    spatial = ev.spatial_shape(xs.shape)
    patch, _, n_regions = ev.check_regions(spatial, args.patch, args.steps)
    if value_range is None:
        specs = methods or [(a, b, dict(c)) for a, b, c in ev.DEFAULT_METHODS]
        boxed = [label for label, name, prm in specs if needs_box(name) and not {"low", "high"} <= set(prm)]
        if boxed:
            raise CLIError(f"{', '.join(boxed)} need{'s' if len(boxed) == 1 else ''} the range of the input "
                           f"values (the box [low, high] of the z^B rule), and .npy arrays are used as they are: "
                           f"give --value-range LOW HIGH (e.g. --value-range 0 1), or leave "
                           f"{'it' if len(boxed) == 1 else 'them'} out with --methods")
    how = "--patch" if args.patch is not None else (
        f"default for {'x'.join(map(str, spatial))} inputs: " + (
            "min side // 7" if len(spatial) == 2 else "length // 49" if len(spatial) == 1 else "min side // 4"))
    print(f"{ev.region_label(patch, len(spatial))} ({n_regions} per input; {how})")
    t0 = time.time()
    cmp = ev.compare(model, xs, methods, target, patch=patch, steps=args.steps, perturbation=perturbation,
                     order=args.order, value_range=value_range, blur_sigma=args.blur_sigma, seed=args.seed,
                     batch_size=args.batch_size, progress=lambda m: _say(args, f"  {m} ..."))
    print(cmp.table())
    csv_path = cmp.to_csv(os.path.join(out, "aopc.csv"))
    png_path = os.path.join(out, "curves.png")
    first = next(iter(cmp.results.values()))
    cmp.plot(png_path, title=f"Region perturbation, {len(xs)} inputs ({first.perturbation})")
    print(f"curves: {png_path}\ntable: {csv_path}")
    if args.sanity:
        _sanity(args, ev, model, xs, cmp, methods, target, value_range, out)
    if metric_list:
        _metrics(args, ev, model, xs, methods, metric_list, target, value_range, out)
    _say(args, f"done in {time.time() - t0:.1f} s")
    return 0


def _sanity(args: argparse.Namespace, ev: Any, model: Any, xs: Any, cmp: Any, methods: list | None, target: Any,
            value_range: Any, out: str) -> None:
    """``evaluate --sanity``: model randomisation per method. Each finished method is written to
    OUT/randomisation.csv and .png at once; a method that fails is reported and the others go on;
    any failure ends in a CLIError naming the failed methods (exit status 1)."""
    import csv

    specs = methods or [(a, b, dict(c)) for a, b, c in ev.DEFAULT_METHODS]
    runs: dict[str, Any] = {}
    failed: list[str] = []
    rpath, ppath = os.path.join(out, "randomisation.csv"), os.path.join(out, "randomisation.png")
    n = min(16, len(xs))
    for label in cmp.results:
        if cmp.methods.get(label) == "random":
            continue
        spec = next(m for m in specs if m[0] == label)
        _say(args, f"  randomising the model for {label} ...")
        try:
            r = ev.model_randomisation(model, xs[:n], spec[1], target, seed=args.seed,
                                       value_range=value_range or (float(xs.min()), float(xs.max())),
                                       method_params=dict(spec[2]))
        except Exception as e:  # noqa: BLE001 - one method's failure must not lose the others' results
            if getattr(args, "debug", False):
                import traceback

                traceback.print_exc()
            failed.append(label)
            print(f"error: sanity check of {label!r} failed: {type(e).__name__}: {_first_line(e)}",
                  file=sys.stderr, flush=True)
            continue
        runs[label] = r
        print(r.table().replace(f"({spec[1]})", f"({label})"))
        with open(rpath + ".tmp", "w", newline="") as f:  # written after every method
            wr = csv.writer(f)
            wr.writerow(["method", "stage", "randomised_layer", "spearman", "spearman_abs", "ssim"])
            for lab, res in runs.items():
                for i, stage in enumerate(res.stages):
                    wr.writerow([lab, i, stage] + [f"{res.mean(m)[i]:.6g}"
                                                   for m in ("spearman", "spearman_abs", "ssim")])
        os.replace(rpath + ".tmp", rpath)
        ev.plot_randomisation(runs, ppath)
    if runs:
        print(f"sanity check ({n} inputs): {ppath}, {rpath}")
    if failed:
        done = f"; the results of {', '.join(runs)} are in {rpath}" if runs else ""
        raise CLIError(f"the sanity check failed for {', '.join(failed)} (see above){done}")



def _parse_metrics(specs: Sequence[str] | None) -> list[str] | None:
    """``--metrics A,B C`` -> ['A', 'B', 'C']; unknown names fail here, naming the metrics."""
    if specs is None:
        return None
    from ...analysis.metrics import metric_names

    names = [n.strip() for spec in specs for n in spec.split(",") if n.strip()]
    valid = metric_names()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise CLIError(f"--metrics: unknown metric{'s' if len(bad) > 1 else ''} {', '.join(bad) or '(none given)'}; "
                       f"the metrics: {', '.join(valid)}")
    return names


def _metrics(args: argparse.Namespace, ev: Any, model: Any, xs: Any, methods: list | None, names: list[str],
             target: Any, value_range: Any, out: str) -> None:
    """``evaluate --metrics``: it.metrics.compare over the methods (the random baseline has no
    explanation function and is left out); box rules get --value-range (or the data's range)."""
    import numpy as np

    from ...analysis.metrics import compare

    specs = methods or [(a, b, dict(c)) for a, b, c in ev.DEFAULT_METHODS]
    low, high = value_range if value_range is not None else (float(xs.min()), float(xs.max()))
    chosen = []
    for label, name, params in specs:
        if name == "random":
            continue
        params = dict(params)
        if needs_box(name):
            params.setdefault("low", low)
            params.setdefault("high", high)
        chosen.append((label, name, params))
    if not chosen:
        raise CLIError("--metrics needs explanation methods other than random")
    y = None if target is None else np.full((len(xs),), int(target))
    res = compare(model, xs, y, methods=chosen, metrics=names, seed=args.seed, batch_size=args.batch_size,
                  out=os.path.join(out, "metrics"), progress=lambda m: _say(args, f"  {m} ..."))
    print(f"Quantus metrics ({len(xs)} inputs; mean ± standard error):")
    print(res.table())
    for metric, order in res.ranking().items():
        print(f"ranking by {metric}: {' > '.join(order)}")
    csv_path = res.to_csv(os.path.join(out, "metrics.csv"))
    png_path = os.path.join(out, "metrics.png")
    res.plot(png_path)
    kept = f" ({len(res.loaded)} results read back from {os.path.join(out, 'metrics')})" if res.loaded else ""
    print(f"metrics: {png_path}, {csv_path}{kept}")
