"""``interprettensor correct MODEL``: correct a saved model's Clever Hans with class artefact compensation
(Anders et al. 2022): the artefact's concept activation vector at a layer from inputs with and without the
artefact, then P-ClArC (:func:`interprettensor.analysis.correction.pclarc`: projected out by a layer
inserted after it, no training) or A-ClArC (:func:`interprettensor.analysis.correction.aclarc`: the layers
above fine-tuned on training data with the artefact added along it)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .options import _positive_float, _positive_int, add_image_options, fraction

__all__ = ["add_parser", "cmd_correct"]

CAV_METHODS = ("signal", "mean_difference", "svm", "logistic", "ridge", "lasso")
#: options that only A-ClArC reads (argparse default None: given or not)
ACLARC_ONLY = ("train", "labels", "epochs", "learning_rate", "rate", "no_freeze", "history")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser(
        "correct", parents=[common], help="remove an artefact's concept from a model (P-ClArC, A-ClArC)",
        description="Class artefact compensation (Anders et al. 2022): compute the artefact's concept activation "
                    "vector at --layer from inputs with the artefact (--artifact) and without it (--clean), then "
                    "either (--method pclarc, default) save a copy of MODEL with a layer after --layer that moves "
                    "every sample's activation along that direction to the clean samples' mean (no training), or "
                    "(--method aclarc) fine-tune the layers after --layer on training data (--train, with --labels "
                    "or class subfolders) whose activations are moved along it to the artefact samples' mean, so "
                    "that the artefact no longer tells the classes apart. Inputs: a .npy array (N, ...) or a "
                    "folder of images (class subfolders allowed).")
    c.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, .h5)")
    c.add_argument("--layer", required=True, help="the name of the layer whose output is corrected")
    c.add_argument("--artifact", required=True, metavar="DIR_OR_NPY", help="inputs that show the artefact")
    c.add_argument("--clean", required=True, metavar="DIR_OR_NPY", help="inputs without it")
    c.add_argument("--method", choices=["pclarc", "aclarc"], default="pclarc",
                   help="pclarc: a projection layer, no training (default); aclarc: fine-tuning with the artefact "
                        "added in feature space")
    c.add_argument("--cav", choices=CAV_METHODS, default="signal",
                   help="how the concept activation vector is estimated (default: signal, the pattern)")
    c.add_argument("--pooling", choices=["flatten", "mean", "max"], default="flatten",
                   help="features of a layer with positions: all of them (flatten, default) or each channel "
                        "pooled over the positions (mean, max: a direction over channels)")
    a = c.add_argument_group("A-ClArC (--method aclarc)")
    a.add_argument("--train", default=None, metavar="DIR_OR_NPY",
                   help="the fine-tuning data (e.g. the training images without the artefact)")
    a.add_argument("--labels", default=None, metavar="FILE",
                   help="--train's class labels (.npy or one integer per line); default: class subfolders")
    a.add_argument("--epochs", type=_positive_int, default=None, help="fine-tuning epochs (default 10)")
    a.add_argument("--learning-rate", type=_positive_float, default=None, help="Adam's learning rate (default 3e-4)")
    a.add_argument("--rate", type=fraction("(0, 1]"), default=None,
                   help="fraction of each batch moved to the artefact (default 0.5: the layers above see the "
                        "direction both ways and learn to ignore it)")
    a.add_argument("--no-freeze", action="store_true", default=None,
                   help="also train the layers up to --layer (default: they stay fixed, so the CAV stays valid)")
    a.add_argument("--history", default=None, metavar="FILE.json", help="save Keras' training history as JSON")
    c.add_argument("--batch-size", type=_positive_int, default=None,
                   help="inputs per forward pass (default 64) and, for aclarc, per training step (default 32)")
    c.add_argument("--out", required=True, metavar="FILE.keras", help="where to save the corrected model")
    add_image_options(c)
    c.set_defaults(func=cmd_correct)


def _read(path: str, what: str, expected: tuple | None, args: argparse.Namespace,
          with_items: bool = False) -> Any:
    import numpy as np
    from tqdm.auto import tqdm

    from ...io.inputs import InputError, collect_inputs, load_image
    from .options import CLIError

    if not os.path.exists(path):
        raise CLIError(f"{what} {path!r}: no such file or folder")
    try:
        items = collect_inputs([path], expected)
        arrays = []
        for item in tqdm(items, desc=f"reading {what}", unit="input", disable=args.quiet, file=sys.stderr,
                         leave=False):
            if item.array is not None:
                arrays.append(np.asarray(item.array[item.index], "float32"))
            else:
                arrays.append(np.asarray(load_image(item.path, expected, args.color_mode, args.input_range,
                                                    args.resize), "float32"))
    except InputError as e:
        raise CLIError(f"{what}: {e}") from None
    if not arrays:
        raise CLIError(f"{what} {path!r} holds no inputs")
    if len({a.shape for a in arrays}) > 1:
        raise CLIError(f"{what} {path!r}: the inputs have different shapes {sorted({a.shape for a in arrays})}")
    x = np.stack(arrays)
    return (x, items) if with_items else x


def _labels(args: argparse.Namespace, items: list, n: int, n_classes: int | None) -> Any:
    """``--train``'s labels: ``--labels`` or the class subfolders; every one a class of the model."""
    from ...io.inputs import InputError, folder_labels, read_labels
    from .options import CLIError

    if args.labels is not None:
        try:
            y = read_labels(args.labels)
        except InputError as e:
            raise CLIError(str(e)) from None
        if len(y) != n:
            raise CLIError(f"--labels {args.labels!r} has {len(y)} labels for {n} --train inputs")
    else:
        y, names = folder_labels(items)
        if y is None:
            raise CLIError("--method aclarc needs the labels of --train: give --labels FILE or class subfolders")
        if names:
            print(f"classes from the subfolder names: {', '.join(f'{i} = {k}' for i, k in enumerate(names))}")
    if (y < 0).any():
        raise CLIError("some --train inputs have no label (-1, or not in a class subfolder)")
    if n_classes is not None and y.max() >= n_classes:
        raise CLIError(f"--train labels go up to {int(y.max())}, but the model has {n_classes} outputs")
    return y


def cmd_correct(args: argparse.Namespace) -> int:
    """``interprettensor correct``: :func:`~interprettensor.analysis.correction.pclarc` or
    :func:`~interprettensor.analysis.correction.aclarc`, saved."""
    from ...analysis import correction
    from ...io.inputs import load_model, model_input_shape
    from .options import CLIError, _check_range, _say

    _check_range("--input-range", args.input_range)
    if not args.out.lower().endswith(".keras"):
        raise CLIError(f"--out must name a .keras file; got {args.out!r}")
    outs = [("--out", args.out)] + ([("--history", args.history)] if args.history else [])
    for flag, path in outs:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CLIError(f"{flag} {path!r}: the folder {folder!r} does not exist")
    aclarc = args.method == "aclarc"
    given = [k for k in ACLARC_ONLY if getattr(args, k) is not None]
    if not aclarc and given:
        raise CLIError(f"{', '.join('--' + k.replace('_', '-') for k in given)} only apply to --method aclarc")
    if aclarc and args.train is None:
        raise CLIError("--method aclarc needs --train: the data to fine-tune on")
    model = load_model(args.model)
    names = [l.name for l in model.layers]
    if args.layer not in names:
        raise CLIError(f"model {args.model!r} has no layer {args.layer!r}; its layers: {', '.join(names)}")
    expected = model_input_shape(model)
    x_art = _read(args.artifact, "--artifact", expected, args)
    x_clean = _read(args.clean, "--clean", expected, args)
    if aclarc:
        x_train, items = _read(args.train, "--train", expected, args, with_items=True)
        n_classes = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
        y_train = _labels(args, items, len(x_train), n_classes)
    _say(args, f"{len(x_art)} artefact and {len(x_clean)} clean inputs; CAV ({args.cav}, {args.pooling}) at "
               f"{args.layer!r}")
    try:
        if not aclarc:
            corrected = correction.pclarc(model, layer=args.layer, artifact=x_art, clean=x_clean, method=args.cav,
                                          pooling=args.pooling, batch_size=args.batch_size or 64)
        else:
            cav = correction.cav(model, layer=args.layer, artifact=x_art, clean=x_clean, method=args.cav,
                                 pooling=args.pooling, batch_size=args.batch_size or 64)
            kw = {k: getattr(args, k) for k in ("epochs", "learning_rate", "rate") if getattr(args, k) is not None}
            _say(args, f"A-ClArC: fine-tuning the layers after {args.layer!r} on {len(x_train)} --train inputs")
            corrected, history = correction.aclarc(model, x_train, y_train, layer=args.layer, cav=cav,
                                                   freeze=not args.no_freeze, batch_size=args.batch_size or 32,
                                                   verbose=0 if args.quiet else 1, **kw)
    except correction.CorrectionError as e:
        raise CLIError(str(e)) from None
    corrected.save(args.out)
    if not aclarc:
        proj = corrected.get_layer(f"{args.layer}_pclarc")
        print(f"saved {args.out}: {args.layer!r} -> {proj.name!r} (direction of {proj.direction.size} features, "
              f"clean mean along it {proj.reference:.4g})")
        return 0
    keys = sorted(history.history, key=lambda k: (k != "loss", k))  # the loss first
    hist = {k: [float(v) for v in history.history[k]] for k in keys}
    for epoch in range(len(next(iter(hist.values()), []))):
        print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {vals[epoch]:.4f}" for k, vals in hist.items()))
    if args.history:
        with open(args.history, "w") as f:
            json.dump(hist, f, indent=1)
        print(f"saved the training history to {args.history}")
    print(f"saved {args.out}: fine-tuned by A-ClArC after {args.layer!r} (CAV of {cav.vector.size} features, "
          f"artefact mean along it {cav.artifact_value:.4g})")
    return 0
