"""``interprettensor spray RUN_DIR``: Spectral Relevance Analysis (SpRAy, Lapuschkin et al. 2019) of an
explained data set, per class (:func:`interprettensor.analysis.spray.spray`), optionally exported as a
ViRelAy project (:func:`interprettensor.analysis.spray.virelay.export_virelay`). Needs neither TensorFlow nor Keras."""

from __future__ import annotations

import argparse
import re
from typing import Any

from .options import _positive_int

__all__ = ["add_parser", "cmd_spray", "parse_clusters"]


def parse_clusters(values: list[str]) -> list[int]:
    """``['2..8']`` -> 2, 3, ..., 8; ``['2', '4', '6']`` -> 2, 4, 6 (each >= 2)."""
    out: list[int] = []
    for v in values:
        m = re.fullmatch(r"\s*(\d+)\s*(?:\.\.|-)\s*(\d+)\s*", v)
        try:
            ks = list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else [int(v)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"--clusters takes numbers of clusters or a range like 2..8; got "
                                             f"{v!r}") from None
        if not ks or min(ks) < 2:
            raise argparse.ArgumentTypeError(f"--clusters: numbers of clusters must be >= 2 (a range low..high); "
                                             f"got {v!r}")
        out += [k for k in ks if k not in out]
    return out


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "spray", parents=[common], help="spectral relevance analysis (SpRAy) of an explained data set, per class",
        description="Cluster each class's heatmaps over an explained data set (a run of explain_dataset or "
                    "'explain --shard-size', or relevances.npz) to expose the model's strategies (Lapuschkin et "
                    "al. 2019): heatmaps summed over channels, pooled to a grid and normalised; a k-nearest-"
                    "neighbour graph; spectral embedding with its eigenvalues (eigengap); k-means for several k "
                    "and HDBSCAN; t-SNE (and UMAP with umap-learn) for display. Writes RUN_DIR/spray/spray.json "
                    "and class-<c>.npz; classes whose results exist with the same parameters are skipped "
                    "(--force redoes them).")
    s.add_argument("run", metavar="RUN_DIR", help="a finished run folder (manifest.json + shards) or relevances.npz")
    s.add_argument("--classes", type=int, nargs="+", metavar="C",
                   help="the explained classes to analyse (default: all with enough samples)")
    s.add_argument("--clusters", nargs="+", default=["2..8"], metavar="K",
                   help="numbers of clusters for k-means: a range 2..8 (default) or a list 2 3 5")
    s.add_argument("--clusterings", nargs="+", default=["kmeans", "hdbscan"],
                   choices=["kmeans", "agglomerative", "hdbscan", "dbscan"],
                   help="clustering methods (default: kmeans hdbscan)")
    s.add_argument("--neighbors", type=_positive_int, default=10, metavar="K", help="k of the kNN graph (default 10)")
    s.add_argument("--eigenvectors", type=_positive_int, default=None, metavar="M",
                   help="eigenvectors kept (default: 16, at least the largest number of clusters)")
    s.add_argument("--grid", type=_positive_int, nargs=2, default=[32, 32], metavar=("H", "W"),
                   help="heatmaps are average-pooled to H x W (default 32 32)")
    s.add_argument("--normalise", choices=["l2", "max", "l1", "none"], default="l2",
                   help="per-heatmap normalisation after pooling (default l2)")
    s.add_argument("--absolute", action="store_true", help="cluster absolute relevance")
    s.add_argument("--no-tsne", action="store_true", help="skip the t-SNE embedding")
    s.add_argument("--umap", choices=["auto", "yes", "no"], default="auto",
                   help="UMAP embedding: auto (when umap-learn is installed), yes (required), no")
    s.add_argument("--seed", type=int, default=0, help="random state (default 0)")
    s.add_argument("--threads", type=_positive_int, default=None,
                   help="limit the native threads (useful on a machine shared with other jobs)")
    s.add_argument("--force", action="store_true", help="recompute classes whose results exist")
    s.add_argument("--out", default=None, metavar="DIR", help="where to write the results (default RUN_DIR/spray)")
    s.add_argument("--virelay", default=None, metavar="OUT_DIR",
                   help="also export inputs, heatmaps and the results as a ViRelAy project into OUT_DIR")
    s.add_argument("--inputs", default=None, metavar="PATH",
                   help="for --virelay, when the run did not store its inputs: a .npy array (N, H, W[, C]) in "
                        "the run's order or the folder of the explained image files")
    s.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                   help="for --virelay: the classes' names, in class order")
    s.add_argument("--attribution-strategy", choices=["true_label", "predicted_label"], default=None,
                   help="for --virelay: what the explained classes are (default: found from the run)")
    s.set_defaults(func=cmd_spray, light=True)


def cmd_spray(args: argparse.Namespace) -> int:
    """``interprettensor spray``: run SpRAy per class, print a summary per class, export if asked."""
    import os
    import warnings

    import numpy as np

    from ...analysis.spray import SpRAyError, spray
    from .options import CLIError

    try:
        clusters = parse_clusters(args.clusters)
    except argparse.ArgumentTypeError as e:
        raise CLIError(str(e)) from None
    m = args.eigenvectors if args.eigenvectors is not None else max(16, max(clusters))
    quiet = bool(getattr(args, "quiet", False))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = spray(args.run, args.classes, out=args.out, force=args.force, progress=not quiet,
                        n_neighbors=args.neighbors, n_eigenvectors=m, clusterings=args.clusterings,
                        n_clusters=clusters, grid=tuple(args.grid), normalise=args.normalise, absolute=args.absolute,
                        tsne=not args.no_tsne, umap={"auto": "auto", "yes": True, "no": False}[args.umap],
                        random_state=args.seed, n_threads=args.threads)
    except SpRAyError as e:
        raise CLIError(str(e)) from None
    for w in caught:
        if not quiet:
            print(f"warning: {w.message}")
    for c, r in res.classes.items():
        how = "computed" if c in res.computed else "unchanged (same parameters; --force recomputes)"
        k = r.eigengap
        sizes = ""
        name = f"kmeans-{k}"
        if name in r.labels:
            sizes = f"; {name} cluster sizes {np.bincount(r.labels[name]).tolist()}"
        dens = [n for n in r.labels if n in ("hdbscan", "dbscan")]
        for n in dens:
            lab = r.labels[n]
            sizes += f"; {n}: {int(lab.max(initial=-1)) + 1} clusters, {int((lab < 0).sum())} noise"
        if not quiet:
            print(f"class {c}: {r.n} samples, eigengap suggests {k} cluster{'s' if k != 1 else ''}{sizes} [{how}]")
    for c, why in res.skipped.items():
        if not quiet:
            print(f"class {c}: skipped ({why})")
    print(f"SpRAy results: {res.path}")
    if args.virelay:
        from ...analysis.spray.virelay import export_virelay

        inputs: Any = None
        if args.inputs is not None:
            if os.path.isdir(args.inputs):
                inputs = args.inputs
            elif os.path.isfile(args.inputs) and args.inputs.endswith(".npy"):
                try:
                    inputs = np.load(args.inputs, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise CLIError(f"cannot read --inputs {args.inputs!r}: {e}") from None
            else:
                raise CLIError(f"--inputs {args.inputs!r} is neither a .npy file nor a folder of images")
        try:
            project = export_virelay(args.run, args.virelay, inputs=inputs, class_names=args.class_names,
                                     attribution_strategy=args.attribution_strategy, spray_dir=res.path,
                                     progress=not quiet)
        except SpRAyError as e:
            raise CLIError(str(e)) from None
        except ImportError as e:
            raise CLIError(str(e)) from None
        print(f"ViRelAy project: {project}  (virelay {project})")
    return 0
