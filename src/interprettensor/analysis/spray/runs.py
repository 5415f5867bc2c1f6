"""Reading the runs SpRAy analyses: the files of a finished run of
:func:`~interprettensor.explain_dataset` or a ``relevances.npz`` (:func:`run_files`, with a
fingerprint of the run's content), each heatmap reduced to its features as it is read
(:func:`read_features`), and the number of valid samples per explained class (:func:`_class_counts`)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Sequence

import numpy as np

from ...io.shards import MANIFEST, RELEVANCES_NPZ, StreamError, load_relevances, read_manifest, worker_manifests
from .estimator import SpRAy, SpRAyError, _list


def run_files(run: str) -> tuple[list[str], str]:
    """The files of explanations in ``run`` (a finished sharded run's shards in order, or one
    ``relevances.npz``) and a fingerprint of the run's content; an error for a folder that is missing,
    not a run, or not finished."""
    run = os.fspath(run)
    if not os.path.exists(run):
        raise SpRAyError(f"run {run!r} does not exist")
    if os.path.isfile(run):
        st = os.stat(run)
        return [run], f"file:{os.path.basename(run)}:{st.st_size}:{st.st_mtime_ns}"
    manifest = read_manifest(run)
    if manifest is None:
        npz = os.path.join(run, RELEVANCES_NPZ)
        if os.path.isfile(npz):
            return run_files(npz)
        if worker_manifests(run):
            raise SpRAyError(f"the run in {run!r} is not finished: it has worker manifests but no {MANIFEST}; let "
                             f"the workers finish, or run `interprettensor finalize {run}`")
        raise SpRAyError(f"{run!r} holds no explanations: neither a run of explain_dataset ({MANIFEST}) nor "
                         f"{RELEVANCES_NPZ}")
    if not manifest.get("complete"):
        raise SpRAyError(f"the run in {run!r} is not finished ({len(manifest['shards'])} shard(s) so far, "
                         f"complete: false); run explain_dataset again with the same arguments (on the command "
                         f"line: the same `interprettensor explain ...` with --resume) to finish it")
    files = [os.path.join(run, e["file"]) for e in manifest["shards"]]
    from ...io.shards import check_shard_files

    try:  # every shard there and readable before anything is written (spray.json) or read
        check_shard_files(files)
    except SpRAyError:
        raise
    except StreamError as e:
        raise SpRAyError(str(e)) from None
    key = json.dumps({"identity": manifest.get("identity"), "n": manifest.get("n_samples"),
                      "shards": manifest["shards"]}, sort_keys=True)
    return files, "run:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def read_features(files: Sequence[str], est: SpRAy, classes: Sequence[int] | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Stream the explanation files and reduce each valid heatmap to its SpRAy features at once.

    Returns:
        ``{class: (indices (n,) int64, features (n, d) float32)}`` grouped by explained target.
    """
    want = None if classes is None else {int(c) for c in classes}
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for path in files:
        try:
            arrays = load_relevances(path, keys=["relevance", "indices", "targets", "valid"])
        except SpRAyError:
            raise
        except StreamError as e:  # a missing or damaged file, named (with what to do) by load_relevances
            raise SpRAyError(str(e)) from None
        R, idx, tgt = arrays["relevance"], arrays["indices"].astype(np.int64), arrays["targets"].astype(np.int64)
        valid = arrays["valid"].astype(bool) & (tgt >= 0)
        if want is not None:
            valid &= np.isin(tgt, list(want))
        if R.ndim not in (3, 4):
            raise SpRAyError(f"{path!r}: SpRAy analyses image heatmaps (N, H, W, C) or (N, H, W); the relevance "
                             f"there has shape {tuple(R.shape)}")
        rows = np.flatnonzero(valid)
        if rows.size:
            sel = R[rows]
            finite = np.isfinite(sel.reshape(len(rows), -1)).all(axis=1)
            if not finite.all():
                raise SpRAyError(f"{path!r}: the heatmaps of samples {_list(idx[rows[~finite]])} hold NaN or inf "
                                 f"although marked valid; explain them again (nonfinite='skip' marks bad inputs)")
            feats = est.preprocess(sel)
            for c in np.unique(tgt[rows]):
                m = tgt[rows] == c
                parts.setdefault(int(c), []).append((idx[rows[m]], feats[m]))
        if progress is not None:
            progress(len(idx))
    return {c: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for c, v in parts.items()}


def _class_counts(files: Sequence[str]) -> tuple[dict[int, int], int]:
    """``({class: number of valid samples explained for it}, number of samples)``, reading only the
    targets and validity flags."""
    counts: dict[int, int] = {}
    total = 0
    for path in files:
        arrays = load_relevances(path, keys=["targets", "valid"])  # valid: all True in shards from before it
        tgt = arrays["targets"].astype(np.int64)
        valid = arrays["valid"].astype(bool) & (tgt >= 0)
        total += len(tgt)
        for c, k in zip(*np.unique(tgt[valid], return_counts=True)):
            counts[int(c)] = counts.get(int(c), 0) + int(k)
    return counts, total
