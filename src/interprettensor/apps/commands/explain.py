"""``interprettensor explain``: explain a saved Keras model on image files, folders or ``.npy`` arrays; a
picture per input and ``relevances.npz``, or with ``--shard-size`` a streamed, resumable run of shards
(:func:`interprettensor.explain_dataset`), also split between workers (``--worker I/N``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence

from ...io.inputs import InputError, collect_inputs, load_image, load_model, model_input_shape
from .options import (GATE_RULES, RULE_PARAMS, CLIError, _check_range, _check_target, _positive_int, _say,
                      add_image_options, add_rule_params, needs_box, prepare_out_dir)

__all__ = ["add_parser", "cmd_explain"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``explain`` subcommand's arguments (built without importing TensorFlow)."""
    e = sub.add_parser("explain", parents=[common], help="explain a saved Keras model on images or arrays",
                       description="Explain a saved Keras model (.keras or .h5) with LRP. INPUTS are image "
                                   "files (PNG, JPEG, ...), folders of them, or .npy arrays (one sample or a "
                                   "batch, used as they are). Writes a picture per input: NAME_heatmap.png "
                                   "and NAME_overlay.png for images, NAME_bars.png (relevance per feature) "
                                   "for feature vectors (N, F), NAME_strip.png (channels over time) for "
                                   "sequences (N, T, C); and OUT/relevances.npz (relevance, indices, targets, "
                                   "outputs, valid, names; labels with --labels or from class subfolders; read it with "
                                   "interprettensor.load_relevances). "
                                   "With --shard-size N the inputs are streamed and written as "
                                   "OUT/shard-00000.npz, ... (the same arrays) and OUT/manifest.json; an "
                                   "interrupted run continues with --resume. Inputs with NaN or inf stop the "
                                   "run with an error naming them, unless --skip-nonfinite.")
    e.add_argument("model", help="a saved Keras model (.keras, .h5)")
    e.add_argument("inputs", nargs="+", help="image files, folders, or .npy arrays")
    e.add_argument("--rule", default="epsilon",
                   help="rule (simple, epsilon, flat, ww, alphabeta, gamma, zplus, ...) or preset "
                        "(epsilon_gamma_box, epsilon_plus, preset_a, ...); default: %(default)s")
    add_rule_params(e, {"epsilon": "epsilon of the epsilon rule", "alpha": "alpha of alpha-beta",
                        "beta": "beta of alpha-beta", "gamma": "gamma of the gamma rule",
                        "low": "lowest input value, for box rules (zbox, epsilon_gamma_box, bounded_deep_taylor, "
                               "any name with 'box'); default for images: LOW of --input-range; .npy arrays need it",
                        "high": "highest input value, for box rules; default for images: HIGH of --input-range; "
                                ".npy arrays need it"})
    e.add_argument("--gates", choices=GATE_RULES, default=None,
                   help="rule for the gate x signal products inside LSTM/GRU cells: gate (all to the signal, "
                        "Arras et al. 2017; the default), half, proportional, proportional_abs (Arras et al. 2019)")
    e.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted class)")
    e.add_argument("--out", default="explanations", help="output folder (default: %(default)s)")
    e.add_argument("--batch-size", type=_positive_int, default=64, help="inputs per LRP pass (default: %(default)s)")
    add_image_options(e, range_help="image pixels 0..255 are mapped to LOW..HIGH (default: 0 1); .npy arrays are "
                                    "used as they are")
    e.add_argument("--cmap", default="bwr", help="colour map: bwr, coldnhot or a matplotlib name (default: %(default)s)")
    e.add_argument("--normalize", choices=["maxabs", "percentile"], default="maxabs",
                   help="per-sample heatmap scaling (default: %(default)s)")
    e.add_argument("--percentile", type=float, default=99.5, help="for --normalize percentile (default: %(default)s)")
    e.add_argument("--scale", type=_positive_int, default=None,
                   help="enlarge heatmap PNGs by this factor (default: up to about 224 pixels)")
    e.add_argument("--no-png", action="store_true", help="write only relevances.npz")
    e.add_argument("--store-inputs", action="store_true",
                   help="also store the inputs as explained (array 'inputs', float32) in relevances.npz / the "
                        "shards, e.g. for 'interprettensor view'")
    e.add_argument("--labels", default=None, metavar="FILE",
                   help="the inputs' class labels, stored as 'labels' (e.g. for the viewer's label filter): a .npy "
                        "array (N,) or a text file with one integer per line, one per input in the order the inputs "
                        "are read (folders sorted by file name), -1 for unknown. Without it, a folder of class "
                        "subfolders (digits/0/*.png, digits/1/*.png, ...) gives the labels: integer subfolder "
                        "names are the classes, other names are sorted into classes 0..K-1 (OUT/classes.json)")
    e.add_argument("--shard-size", type=_positive_int, default=None, metavar="N",
                   help="stream the inputs and write OUT/shard-00000.npz, ... (N inputs each) and "
                        "OUT/manifest.json instead of relevances.npz; an interrupted run continues with --resume")
    e.add_argument("--skip-nonfinite", action="store_true",
                   help="explain the inputs without NaN or infinite values and give those relevance 0 and valid "
                        "False in relevances.npz / the shards (default: stop with an error naming them)")
    e.add_argument("--worker", default=None, metavar="I/N",
                   help="with --shard-size: be worker I of N independent processes sharing OUT (explains the "
                        "shards k with k %% N == I), or 'auto' inside a Slurm job array or a Kubernetes indexed job "
                        "(INTERPRETTENSOR_NUM_WORKERS); the last worker to finish writes OUT/manifest.json, "
                        "'interprettensor finalize OUT' checks the run")
    e.add_argument("--resume", action="store_true",
                   help="continue the sharded run in OUT after its last complete shard (same model, rule, inputs)")
    e.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16", "mixed_float16",
                                                     "mixed_bfloat16"],
                   help="compute precision (default: the model's); mixed_*: low-precision forward, float32 relevance")
    e.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """``interprettensor explain``."""
    import numpy as np
    from tqdm.auto import tqdm

    import interprettensor as it
    from ...io import render

    params = {k: getattr(args, k) for k in RULE_PARAMS if getattr(args, k) is not None}
    if args.gates is not None:
        from ...engine.operation_rules import product_rule_names

        if args.gates not in product_rule_names():  # the parser's choices (rule_names), checked against the registry
            raise CLIError(f"--gates {args.gates!r} is not a registered rule for products of activations; valid: "
                           f"{', '.join(product_rule_names())}")
        params["gates"] = args.gates
    _check_range("--input-range", args.input_range)
    if (args.low is None) != (args.high is None):
        raise CLIError(f"give both --low and --high (the input's value range), got only "
                       f"{'--low' if args.low is not None else '--high'}")
    if args.low is not None:
        _check_range("--low/--high", (args.low, args.high))
    box = needs_box(args.rule) and args.low is None
    if box:  # checked by name now; the bounds follow from the inputs below
        it.get_composite(args.rule, **dict(params, low=0.0, high=1.0))
    else:
        it.get_composite(args.rule, **params)  # unknown rules fail here, before any work
    render.get_cmap(args.cmap)
    _check_target(args.target)
    out = prepare_out_dir(args.out)
    model = load_model(args.model)
    expected = model_input_shape(model)
    if box:
        arrays = sorted({item.path for item in collect_inputs(args.inputs, expected) if item.array is not None})
        if arrays:
            raise CLIError(f"--rule {args.rule} needs the range of the input values (the box [low, high] of the "
                           f"z^B rule), and .npy arrays are used as they are: give --low and --high (e.g. "
                           f"--low 0 --high 1 for values in [0, 1]); arrays: {', '.join(arrays[:3])}"
                           f"{' ...' if len(arrays) > 3 else ''}")
        params["low"], params["high"] = (float(v) for v in args.input_range)
        _say(args, f"{args.rule}: --low {params['low']:g} --high {params['high']:g}, the range images are mapped "
                   f"into (--input-range)")
    if args.dtype:
        params["dtype"] = args.dtype
    if args.worker is not None and not args.shard_size:
        raise CLIError("--worker needs --shard-size N (the workers split the run by shards)")
    items = collect_inputs(args.inputs, expected)
    labels, class_names = _input_labels(args, items)
    if args.shard_size or args.resume:
        return _explain_sharded(args, model, params, out, labels, class_names)
    _write_classes(out, class_names)
    explainer = it.Explainer(model, args.rule, **params)
    lo, hi = args.input_range

    results: dict[str, list] = {k: [] for k in ("relevance", "indices", "targets", "outputs", "valid", "names")
                                + (("inputs",) if args.store_inputs else ()) + (("labels",) if labels is not None
                                                                                else ())}
    npz_path = os.path.join(out, "relevances.npz")
    last_save = [0.0]
    pictures = _Pictures(args, out)

    def save_npz(force: bool = False) -> None:
        if not results["names"] or (not force and time.time() - last_save[0] < 2.0):
            return
        tmp = npz_path + ".tmp.npz"
        np.savez(tmp, **{k: np.concatenate(v) for k, v in results.items()})
        os.replace(tmp, npz_path)
        last_save[0] = time.time()

    bar = tqdm(total=len(items), desc="explaining", unit="input", disable=args.quiet, file=sys.stderr, leave=False)

    def flush(pending: list) -> None:
        if not pending:
            return
        xs = np.stack([x for _, _, x in pending]).astype("float32")
        ok = np.isfinite(xs.reshape(len(xs), -1)).all(axis=1)
        if not ok.all() and not args.skip_nonfinite:
            bad = [name for (_, name, _), good in zip(pending, ok) if not good]
            raise CLIError(f"input(s) {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''} hold NaN or "
                           f"infinite values; fix them, or pass --skip-nonfinite to explain the others")
        safe = np.where(ok.reshape((-1,) + (1,) * (xs.ndim - 1)), xs, 0.0).astype("float32")
        target = None if args.target is None else np.full(len(xs), args.target)
        R, logits = explainer(safe, target, return_output=True)
        R = np.asarray(R, "float32")
        flat = np.asarray(logits, "float32").reshape(len(xs), -1)
        tgt = flat.argmax(-1) if args.target is None else np.full(len(xs), args.target)
        R[~ok] = 0.0
        flat[~ok] = 0.0
        tgt = np.where(ok | (args.target is not None), tgt, -1)
        names = [n for _, n, _ in pending]
        pictures.write(names, R, xs, ok)
        results["names"].append(np.array(names))
        results["indices"].append(np.array([i for i, _, _ in pending], np.int64))
        results["relevance"].append(R)
        results["targets"].append(tgt.astype(np.int32))
        results["outputs"].append(flat)
        results["valid"].append(ok)
        if args.store_inputs:
            results["inputs"].append(safe)
        if labels is not None:
            results["labels"].append(labels[[i for i, _, _ in pending]].astype(np.int64))
        save_npz()
        bar.update(len(pending))
        pending.clear()

    pending: list = []
    ok = False
    try:
        for i, item in enumerate(items):
            try:
                if item.array is not None:
                    x = np.asarray(item.array[item.index], dtype="float32")
                else:
                    x = load_image(item.path, expected, args.color_mode, (lo, hi), args.resize)
            except (CLIError, InputError):
                flush(pending)  # what came before the bad input is still written
                raise
            pending.append((i, item.name, x))
            if len(pending) >= args.batch_size:
                flush(pending)
        flush(pending)
        ok = True
    finally:
        bar.close()
        save_npz(force=True)
        n_done = sum(len(v) for v in results["names"])
        if not ok and n_done:
            print(f"wrote the outputs of the first {n_done} input(s) to {out}", file=sys.stderr)
    n_bad = int(sum((~v).sum() for v in results["valid"]))
    print(f"explained {n_done - n_bad} input(s) with {args.rule}{_skipped_note(n_bad)}: "
          f"{pictures.summary()}{npz_path}")
    return 0


def _input_labels(args: argparse.Namespace, items: Sequence[Any]) -> tuple[Any, list[str] | None]:
    """``explain``'s labels, one per input (int64, -1 unknown), or None: from ``--labels FILE``, else from
    class subfolders (their names as classes 0..K-1 are printed, and returned: see :func:`_write_classes`)."""
    from ...io.inputs import folder_labels, read_labels

    if args.labels is not None:
        return read_labels(args.labels, len(items)), None
    labels, names = folder_labels(items)
    if names:
        print(f"classes from the subfolder names: {', '.join(f'{i} = {n}' for i, n in enumerate(names))}")
    return labels, names


def _write_classes(out: str, names: list[str] | None) -> None:
    """``OUT/classes.json``: ``{"classes": {"0": name, ...}}``, the class subfolders' names by class index."""
    if names:
        from ...io.shards import write_json

        write_json(os.path.join(out, "classes.json"), {"classes": {str(i): n for i, n in enumerate(names)}})


def _skipped_note(n: int) -> str:
    return f", skipped {n} with NaN or infinite values (relevance 0, valid False)" if n else ""


class _Pictures:
    """The pictures ``explain`` writes per input: for images ``NAME_heatmap.png`` and
    ``NAME_overlay.png``, for feature vectors ``(N, F)`` a bar chart ``NAME_bars.png``, for sequences
    ``(N, T, C)`` a strip per channel over time ``NAME_strip.png``; none for other shapes or with
    ``--no-png``. Counts what it wrote for the closing message."""

    KINDS = {4: ("heatmap and overlay PNG", "heatmap and overlay PNGs", "NAME_heatmap.png, NAME_overlay.png", 2),
             2: ("bar chart of feature relevance", "bar charts of feature relevance", "NAME_bars.png", 1),
             3: ("relevance strip, one row per channel over time",
                 "relevance strips, one row per channel over time", "NAME_strip.png", 1)}

    def __init__(self, args: argparse.Namespace, out: str):
        self.args, self.out = args, out
        self.count = 0  # inputs with pictures
        self.ndim: int | None = None

    def write(self, names: Sequence[str], R: Any, xs: Any, valid: Any) -> None:
        from ...io import render

        args, out = self.args, self.out
        self.ndim = R.ndim
        if args.no_png or R.ndim not in self.KINDS:
            return
        keep = [i for i in range(len(names)) if valid[i]]
        if not keep:
            return
        if R.ndim == 4:
            scale = args.scale or max(1, 224 // max(R.shape[1], R.shape[2]))
            heat = render.relevance_to_rgb(R[keep], args.cmap, args.normalize, args.percentile)
            over = render.overlay(R[keep], xs[keep], args.cmap, normalization=args.normalize,
                                  percentile=args.percentile, vmin=args.input_range[0], vmax=args.input_range[1])
            for j, i in enumerate(keep):
                render.save_png(os.path.join(out, f"{names[i]}_heatmap.png"), heat[j], scale)
                render.save_png(os.path.join(out, f"{names[i]}_overlay.png"), over[j], scale)
        elif R.ndim == 2:
            for i in keep:
                render.feature_bars(R[i], xs[i], title=names[i], cmap=args.cmap,
                                    path=os.path.join(out, f"{names[i]}_bars.png"))
        else:
            for i in keep:
                render.sequence_strip(R[i], xs[i], title=names[i], cmap=args.cmap, normalization=args.normalize,
                                      percentile=args.percentile, path=os.path.join(out, f"{names[i]}_strip.png"))
        self.count += len(keep)

    def summary(self) -> str:
        """What was written, as the start of a sentence ending in the npz path."""
        if self.args.no_png:
            return "no pictures (--no-png); "
        if self.ndim is not None and self.ndim not in self.KINDS:
            return f"no pictures (none for {self.ndim - 1}-D samples); "
        if self.count == 0:
            return ""
        one, many, files, per = self.KINDS[self.ndim or 4]
        n = self.count * per
        return f"{n} {one if n == 1 else many} ({files}) in {self.out}, and "


def _explain_sharded(args: argparse.Namespace, model: Any, params: dict, out: str, labels: Any = None,
                     class_names: list[str] | None = None) -> int:
    """``interprettensor explain --shard-size N [--resume]``: :func:`interprettensor.explain_dataset`."""
    from ...io.dataset_run import explain_dataset
    from ...io.shards import MANIFEST, RERUN, StreamError, read_manifest, worker_manifests

    manifest = read_manifest(out)
    if manifest is None:
        manifest = next(iter(worker_manifests(out).values()), None)
    if manifest is not None and not args.resume and args.worker is None:
        raise CLIError(f"{out!r} holds a sharded run ({len(manifest['shards'])} shard(s) complete, see "
                       f"{MANIFEST}); pass --resume to continue it, or choose another --out")
    if manifest is None and args.resume and not args.shard_size:
        raise CLIError(f"--resume: {out!r} holds no sharded run to continue; start one with --shard-size N")
    shard_size = args.shard_size or int(manifest["identity"]["shard_size"])
    lo, hi = args.input_range
    pictures = _Pictures(args, out)

    def write_pngs(k: int, arrays: dict) -> None:
        pictures.write([str(n) for n in arrays["names"]], arrays["relevance"], arrays["x"], arrays["valid"])

    try:
        # with labels the predicted class is still explained by default (explain_dataset's default: the label)
        target = args.target if args.target is not None or labels is None else "predicted"
        data = (list(args.inputs), labels) if args.labels is not None else list(args.inputs)
        res = explain_dataset(model, data, args.rule, out, shard_size=shard_size,
                              batch_size=args.batch_size, target=target, progress=not args.quiet,
                              input_range=(lo, hi), color_mode=args.color_mode, resize=args.resize,
                              on_shard=write_pngs, nonfinite="skip" if args.skip_nonfinite else "error",
                              worker=args.worker, store_inputs=args.store_inputs, **params)
    except StreamError as e:
        msg = str(e).replace(RERUN, "run again with --resume to continue")
        msg = msg.replace("pass nonfinite='skip'", "pass --skip-nonfinite")
        raise CLIError(msg.replace(" (or start over: resume=False)", "")) from None
    _write_classes(out, class_names)  # only now: a refused run must not change the folder
    done = f" ({res.skipped} were complete before)" if res.skipped else ""
    pics = pictures.summary()
    who = "" if res.worker is None else f"worker {res.worker}: "
    print(f"{who}explained {res.n_samples - res.nonfinite} input(s) with {args.rule}{_skipped_note(res.nonfinite)}: "
          f"{pics}{res.shards} shard(s) in {out}{done}")
    if res.worker is not None:
        print(f"the run in {out} is complete ({MANIFEST} written)" if res.complete else
              f"the run in {out} is not complete yet: the other workers are still at it; the last one writes "
              f"{MANIFEST} ('interprettensor finalize {out}' checks it)")
    return 0

