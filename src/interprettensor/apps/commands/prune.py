"""``interprettensor prune MODEL REFERENCE_DATA ...``: remove the least important convolution channels (or
attention heads) of a saved model by an LRP, magnitude or Taylor criterion computed on reference data
(:func:`interprettensor.analysis.pruning.prune`) and save the smaller model."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .options import RULE_PARAMS, CLIError, _say, add_image_options, add_rule_params, fraction

__all__ = ["add_parser", "cmd_prune"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``prune`` subcommand's arguments (built without importing TensorFlow)."""
    from .options import _positive_int

    p = sub.add_parser(
        "prune", parents=[common], help="prune channels or attention heads by an LRP, magnitude or Taylor criterion",
        usage="interprettensor prune MODEL REFERENCE_DATA [...] [options]",
        description="Score every output channel of the Conv / Dense layers (or every MultiHeadAttention head) on "
                    "reference data: LRP relevance summed over the reference set (Yeom et al. 2021), the L1 norm "
                    "of the weights, or the first-order Taylor criterion (Molchanov et al. 2017); normalise per "
                    "layer, rank all units together and remove the lowest --amount of them (the layers are "
                    "rebuilt smaller, not masked). Prints parameters and FLOPs before and after and the channels "
                    "removed per layer, and saves the pruned model (not compiled).")
    p.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, .h5)")
    p.add_argument("data", nargs="*", metavar="REFERENCE_DATA",
                   help=".npy arrays (N, ...), image files or folders (class subfolders give the labels); not "
                        "needed for --criterion magnitude")
    p.add_argument("--amount", type=fraction("[0, 1)"), default=0.3,
                   help="fraction of the prunable units to remove (default: %(default)s)")
    p.add_argument("--criterion", choices=["lrp", "magnitude", "taylor"], default="lrp",
                   help="importance criterion (default: %(default)s)")
    p.add_argument("--unit", choices=["channel", "head"], default="channel",
                   help="channels of Conv / Dense layers, or MultiHeadAttention heads (default: %(default)s)")
    p.add_argument("--rule", default="epsilon_plus",
                   help="LRP rule or preset of --criterion lrp (default: %(default)s: epsilon in dense layers, "
                        "z+ in convolutions)")
    add_rule_params(p)
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="the reference data's class labels (.npy or one integer per line); default: class "
                        "subfolders, else the model's predictions")
    p.add_argument("--layers", nargs="+", default=None, metavar="NAME", help="prune only these layers")
    p.add_argument("--ranking", choices=["global", "layer"], default="global",
                   help="global: all units ranked together after per-layer normalisation (Yeom et al.); layer: "
                        "--amount of each layer (default: %(default)s)")
    p.add_argument("--max-samples", type=_positive_int, default=None, metavar="N",
                   help="use the first N reference samples")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="samples per pass (default: %(default)s)")
    add_image_options(p)
    p.add_argument("--out", default="pruned.keras", help="the pruned model's file (default: %(default)s)")
    p.set_defaults(func=cmd_prune)


def _reference(args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    """The reference samples (N, ...) float32 and their labels (or None: the model's predictions)."""
    import numpy as np

    from ...io.inputs import collect_inputs, folder_labels, load_image, model_input_shape, read_labels, shape_str

    if not args.data:
        if args.criterion != "magnitude":
            raise CLIError(f"--criterion {args.criterion} needs reference data: give .npy arrays, image files or "
                           f"folders after the model")
        return None, None
    expected = model_input_shape(model)
    items = collect_inputs(args.data, expected)
    if args.max_samples is not None:
        items = items[: args.max_samples]
    arrays = []
    for item in items:
        if item.array is not None:
            arrays.append(np.asarray(item.array[item.index], dtype="float32"))
        else:
            arrays.append(load_image(item.path, expected, args.color_mode, args.input_range, args.resize))
    if len({a.shape for a in arrays}) > 1:
        raise CLIError(f"reference inputs have different shapes: {sorted({shape_str(a.shape) for a in arrays})}")
    x = np.stack(arrays)
    if args.labels is not None:
        labels = read_labels(args.labels)
        if args.max_samples is not None:
            labels = labels[: args.max_samples]
        if len(labels) != len(x):
            raise CLIError(f"labels file {args.labels!r} has {len(labels)} labels for {len(x)} reference inputs")
    else:
        labels, names = folder_labels(items)
        if labels is not None and (labels < 0).any():
            raise CLIError("some reference inputs are in class subfolders and some are not: give --labels")
        if names:
            print(f"classes from the subfolder names: {', '.join(f'{i} = {n}' for i, n in enumerate(names))}")
    if labels is not None and (labels < 0).any():
        raise CLIError("the labels contain -1 (unknown): every reference sample needs its class")
    return x, labels


def cmd_prune(args: argparse.Namespace) -> int:
    """``interprettensor prune``."""
    from tqdm.auto import tqdm

    from ...analysis.pruning import PruningError, plan, prune
    from ...io.inputs import load_model

    params = {k: getattr(args, k) for k in RULE_PARAMS if getattr(args, k) is not None}
    if params and args.criterion != "lrp":
        raise CLIError(f"{', '.join('--' + k for k in params)} only apply to --criterion lrp")
    if not args.out.lower().endswith(".keras"):
        raise CLIError(f"--out {args.out!r}: the pruned model is saved as a .keras file")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise CLIError(f"--out {args.out!r}: folder {parent!r} does not exist")
    model = load_model(args.model)
    try:  # what can be pruned, before the reference data is read and scored
        plan(model, args.unit, args.layers)
    except PruningError as e:
        raise CLIError(str(e)) from None
    x, y = _reference(args, model)
    if x is not None and args.criterion != "magnitude":
        _say(args, f"scoring {args.unit}s by {args.criterion} on {len(x)} reference samples"
                   f"{'' if y is not None else ' (labels: the model predictions)'} ...")
    bar = tqdm(total=0 if x is None else len(x), desc=f"{args.criterion} scores", unit="sample",
               disable=args.quiet or x is None or args.criterion == "magnitude", file=sys.stderr, leave=False)
    try:
        new, report = prune(model, x, y, amount=args.amount, criterion=args.criterion, unit=args.unit,
                            rule=args.rule, layers=args.layers, ranking=args.ranking, batch_size=args.batch_size,
                            progress=bar.update, **params)
    except (PruningError, ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    finally:
        bar.close()
    new.save(args.out)
    print(report)
    for name, idx in report.removed.items():
        if idx:
            print(f"  {name}: removed {args.unit}s {', '.join(map(str, idx))}")
    print(f"saved the pruned model to {args.out}")
    return 0
