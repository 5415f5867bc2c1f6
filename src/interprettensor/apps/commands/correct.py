"""``interprettensor correct MODEL``: correct a saved model's Clever Hans with P-ClArC
(:func:`interprettensor.analysis.correction.pclarc`): the artefact's concept activation vector at a
layer from inputs with and without the artefact, projected out by a layer inserted after it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .options import _positive_int, add_image_options

__all__ = ["add_parser", "cmd_correct"]

CAV_METHODS = ("signal", "mean_difference", "svm", "logistic", "ridge", "lasso")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser(
        "correct", parents=[common], help="remove an artefact's concept from a model (P-ClArC)",
        description="Class artefact compensation (P-ClArC, Anders et al. 2022): compute the artefact's concept "
                    "activation vector at --layer from inputs with the artefact (--artifact) and without it "
                    "(--clean), and save a copy of MODEL with a layer after --layer that moves every sample's "
                    "activation along that direction to the clean samples' mean (no training). Inputs: a .npy "
                    "array (N, ...) or a folder of images (class subfolders allowed).")
    c.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, .h5)")
    c.add_argument("--layer", required=True, help="the name of the layer whose output is corrected")
    c.add_argument("--artifact", required=True, metavar="DIR_OR_NPY", help="inputs that show the artefact")
    c.add_argument("--clean", required=True, metavar="DIR_OR_NPY", help="inputs without it")
    c.add_argument("--method", choices=["pclarc"], default="pclarc", help="the correction (default: pclarc)")
    c.add_argument("--cav", choices=CAV_METHODS, default="signal",
                   help="how the concept activation vector is estimated (default: signal, the pattern)")
    c.add_argument("--pooling", choices=["flatten", "mean", "max"], default="flatten",
                   help="features of a layer with positions: all of them (flatten, default) or each channel "
                        "pooled over the positions (mean, max: a direction over channels)")
    c.add_argument("--batch-size", type=_positive_int, default=64, help="inputs per forward pass (default 64)")
    c.add_argument("--out", required=True, metavar="FILE.keras", help="where to save the corrected model")
    add_image_options(c)
    c.set_defaults(func=cmd_correct)


def _read(path: str, what: str, expected: tuple | None, args: argparse.Namespace) -> Any:
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
    return np.stack(arrays)


def cmd_correct(args: argparse.Namespace) -> int:
    """``interprettensor correct``: :func:`interprettensor.analysis.correction.pclarc`, saved."""
    from ...analysis import correction
    from ...io.inputs import load_model, model_input_shape
    from .options import CLIError, _check_range, _say

    _check_range("--input-range", args.input_range)
    if not args.out.lower().endswith(".keras"):
        raise CLIError(f"--out must name a .keras file; got {args.out!r}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise CLIError(f"--out {args.out!r}: the folder {folder!r} does not exist")
    model = load_model(args.model)
    names = [l.name for l in model.layers]
    if args.layer not in names:
        raise CLIError(f"model {args.model!r} has no layer {args.layer!r}; its layers: {', '.join(names)}")
    expected = model_input_shape(model)
    x_art = _read(args.artifact, "--artifact", expected, args)
    x_clean = _read(args.clean, "--clean", expected, args)
    _say(args, f"{len(x_art)} artefact and {len(x_clean)} clean inputs; CAV ({args.cav}, {args.pooling}) at "
               f"{args.layer!r}")
    try:
        corrected = correction.pclarc(model, layer=args.layer, artifact=x_art, clean=x_clean, method=args.cav,
                                      pooling=args.pooling, batch_size=args.batch_size)
    except correction.CorrectionError as e:
        raise CLIError(str(e)) from None
    corrected.save(args.out)
    proj = corrected.get_layer(f"{args.layer}_pclarc")
    print(f"saved {args.out}: {args.layer!r} -> {proj.name!r} (direction of {proj.direction.size} features, "
          f"clean mean along it {proj.reference:.4g})")
    return 0
