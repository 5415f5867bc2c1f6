"""``interprettensor concepts``: the reference examples of hidden channels over a data set (CRP)."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``concepts`` subcommand's arguments (built without importing TensorFlow)."""
    from .options import _positive_int, add_image_options, add_rule_params

    c = sub.add_parser(
        "concepts", parents=[common], help="find each hidden channel's reference examples in a data set (CRP)",
        usage="interprettensor concepts MODEL INPUTS ... --layer LAYER [--layer LAYER ...] [options]",
        description="Concept Relevance Propagation (Achtibat et al. 2023): for every channel of the given layers, "
                    "the K samples of the data set for which it is most relevant (and, for comparison, most "
                    "activated), each with the region of the input that drives the channel and its conditional "
                    "heatmap there. INPUTS are image files, folders of them, .npy arrays, or the folder of an "
                    "'explain --shard-size N --store-inputs' run (its inputs and explained classes). Writes "
                    "OUT/concepts.json, OUT/layer-<name>.npz (read them with "
                    "interprettensor.concepts.ConceptRun, or browse them with 'interprettensor view OUT') and "
                    "OUT/stats-00000.npz, ... (every sample's channel relevances): an interrupted run continues "
                    "where it stopped when run again with the same arguments.")
    c.add_argument("model", help="a saved Keras model (.keras, .h5)")
    c.add_argument("inputs", nargs="+", help="image files, folders, .npy arrays, or an explain run's folder")
    c.add_argument("--layer", action="append", required=True, metavar="LAYER",
                   help="a hidden layer whose channels are the concepts (may be repeated)")
    c.add_argument("--rule", default="epsilon_plus",
                   help="rule or preset (default: %(default)s, as CRP uses for CNNs)")
    add_rule_params(c)
    c.add_argument("--target", type=int, default=None,
                   help="class to explain for every sample (default: the label where the data has labels, "
                        "else the predicted class)")
    c.add_argument("--k", type=_positive_int, default=8, help="reference samples per channel (default: %(default)s)")
    c.add_argument("--out", default="concepts", help="output folder (default: %(default)s)")
    c.add_argument("--shard-size", type=_positive_int, default=1024, metavar="N",
                   help="samples per statistics shard, the unit of resuming (default: %(default)s)")
    c.add_argument("--batch-size", type=_positive_int, default=32, help="samples per pass (default: %(default)s)")
    c.add_argument("--crop-size", type=_positive_int, default=64,
                   help="side of the stored crops in pixels (default: %(default)s)")
    c.add_argument("--crop-threshold", type=float, default=0.1,
                   help="the crop is the box where the conditional heatmap reaches this fraction of its "
                        "maximum (default: %(default)s)")
    add_image_options(c)
    c.add_argument("--channels", action="append", default=None, metavar="LAYER:LIST",
                   help="draw crops and heatmaps only for these channels of LAYER, e.g. block4_conv3:0-31,40 "
                        "(may be repeated; every channel is still ranked; default: all channels)")
    c.add_argument("--units", action="store_true",
                   help="accept layers whose output has no channel axis, (N, F) as of Dense or Flatten, taking "
                        "each of the F units as a concept (default: such layers are refused)")
    c.add_argument("--restart", action="store_true", help="delete a run found in OUT and start over")
    c.set_defaults(func=cmd_concepts)


def cmd_concepts(args: argparse.Namespace) -> int:
    """``interprettensor concepts``: :func:`interprettensor.concepts.reference_examples`."""
    from ...analysis.relevance_maximization import reference_examples
    from ...io.inputs import load_model
    from .options import RULE_PARAMS, CLIError, _check_range, _check_target, needs_box, prepare_out_dir

    _check_range("--input-range", args.input_range)
    if not 0.0 <= args.crop_threshold < 1.0:
        raise CLIError(f"--crop-threshold must be in [0, 1), got {args.crop_threshold}")
    _check_target(args.target)
    params = {k: getattr(args, k) for k in RULE_PARAMS if getattr(args, k, None) is not None}
    if needs_box(args.rule) and "low" not in params:
        params["low"], params["high"] = (float(v) for v in args.input_range)
    channels = _parse_channels(args.channels, CLIError) if args.channels else None
    out = prepare_out_dir(args.out)
    model = load_model(args.model)
    data: Any = args.inputs
    if len(args.inputs) == 1:
        data = args.inputs[0]
        if not os.path.exists(data):
            raise CLIError(f"{data}: no such file or folder")
    run = reference_examples(model, data, args.layer, out, rule=args.rule, k=args.k, target=args.target,
                             shard_size=args.shard_size, batch_size=args.batch_size, crop_size=args.crop_size,
                             crop_threshold=args.crop_threshold, input_range=tuple(args.input_range),
                             color_mode=args.color_mode, resize=args.resize, channels=channels,
                             units=args.units, resume=not args.restart,
                             progress=not args.quiet, **params)
    if not args.quiet:
        layers = ", ".join(f"{name} ({c} {run.kinds.get(name, 'channels')})" for name, c in run.layers.items())
        print(f"{run.meta['n_samples']} samples; reference examples of {layers} in {out}")
    return 0


def _parse_channels(specs: list[str], error: type) -> dict[str, list[int]]:
    """``['layer:0-3,7', ...]`` -> ``{'layer': [0, 1, 2, 3, 7]}``."""
    out: dict[str, list[int]] = {}
    for spec in specs:
        layer, sep, items = spec.rpartition(":")
        if not sep or not layer or not items:
            raise error(f"--channels {spec!r}: give LAYER:LIST, e.g. block4_conv3:0-31,40")
        chans = out.setdefault(layer, [])
        for part in items.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                first, last = int(lo), int(hi) if dash else int(lo)
            except ValueError:
                raise error(f"--channels {spec!r}: {part!r} is not a channel or a range a-b of channels") from None
            if last < first:
                raise error(f"--channels {spec!r}: the range {part.strip()!r} is empty; write LOW-HIGH with "
                            f"LOW <= HIGH, e.g. {last}-{first}")
            chans.extend(range(first, last + 1))
    return out

