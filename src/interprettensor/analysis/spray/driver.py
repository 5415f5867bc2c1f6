"""The SpRAy driver: :func:`spray` runs :class:`~.estimator.SpRAy` per explained class over a run
(:mod:`.runs`) and writes and reuses the results (:mod:`.storage`)."""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from ...io.shards import write_json, write_npz
from .estimator import SpRAy, SpRAyError, _list
from .runs import _class_counts, read_features, run_files
from .storage import (FORMAT, SPRAY_DIR, SPRAY_JSON, SpRAyResults, _class_arrays, _class_entry, _read_json,
                      load_spray)


def spray(run_dir: str, classes: Sequence[int] | None = None, *, out: str | None = None, force: bool = False,
          progress: bool = False, n_neighbors: int = 10, n_eigenvectors: int = 16,
          clusterings: Sequence[str] = ("kmeans", "hdbscan"), n_clusters: Iterable[int] = range(2, 9),
          grid: int | Sequence[int] = (32, 32), normalise: str = "l2", absolute: bool = False, tsne: bool = True,
          umap: bool | str = "auto", random_state: int = 0, **kwargs: Any) -> SpRAyResults:
    """SpRAy per class over a run of :func:`~interprettensor.explain_dataset` (Lapuschkin et al. 2019).

    The samples are grouped by their explained class (``targets``; valid samples only) and each class
    is analysed by :class:`SpRAy` with the parameters given here. The results go to ``RUN/spray/``
    (``out`` to choose another folder): ``spray.json`` ({"format": 1, "kind": "spray", "run", "params",
    "classes": {"<c>": {"file", "n", "clusterings", "embeddings", "eigengap"}}, "skipped"}) and
    ``class-<c>.npz`` per class (``indices``, ``eigenvalues``, ``spectral``, ``tsne``[, ``umap``],
    ``cluster-<name>``), each written atomically once its class is done. A rerun skips the classes
    whose results exist with the same parameters on the same run (``force=True`` redoes them).

    Args:
        run_dir: a finished sharded run, or a ``relevances.npz`` (or a folder holding one).
        classes: the classes to analyse (an error names any with too few samples); ``None``: every
            explained class, skipping (with a warning, listed under "skipped") those with fewer than
            :meth:`SpRAy.min_samples` samples.
        progress: tqdm progress bars (reading, classes) on stderr.
        n_neighbors, ...: :class:`SpRAy`'s parameters (``**kwargs`` its others).

    Returns:
        the :class:`SpRAyResults` (as :func:`load_spray` reads them).

    Raises:
        SpRAyError: a run that is missing or not finished, NaN heatmaps, a class that was not explained
            or has too few samples, no class with enough samples (``spray.json`` then lists the skipped
            classes), bad parameters.
    """
    est = SpRAy(n_neighbors=n_neighbors, n_eigenvectors=n_eigenvectors, clusterings=clusterings,
                n_clusters=n_clusters, grid=grid, normalise=normalise, absolute=absolute, tsne=tsne, umap=umap,
                random_state=random_state, **kwargs)
    files, source = run_files(run_dir)
    folder = os.fspath(out) if out is not None else os.path.join(
        os.path.dirname(files[0]) if os.path.isfile(run_dir) else os.fspath(run_dir), SPRAY_DIR)
    if classes is not None:
        classes = sorted({int(c) for c in classes})
    params = est.get_params()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise SpRAyError(f"cannot create the SpRAy folder {folder!r}: {e.strerror or e}") from None
    json_path = os.path.join(folder, SPRAY_JSON)
    old = _read_json(json_path)
    keep: dict[str, dict] = {}
    if old is not None and old.get("params") == params and old.get("source") == source and not force:
        keep = {c: e for c, e in old["classes"].items() if os.path.isfile(os.path.join(folder, e["file"]))}
    elif old is not None:  # other parameters or another run: the old class files are stale
        for e in old["classes"].values():
            try:
                os.unlink(os.path.join(folder, e["file"]))
            except OSError:
                pass

    counts, n_total = _class_counts(files)
    if classes is not None:
        absent = [c for c in classes if c not in counts]
        if absent:
            raise SpRAyError(f"class(es) {_list(absent)} were not explained in {run_dir!r} (no valid samples with "
                             f"that target; explained: {_list(sorted(counts)) or 'none'})")
        small = [f"{c} ({counts[c]})" for c in classes if counts[c] < est.min_samples()]
        if small:
            raise SpRAyError(f"class(es) {', '.join(small)} have fewer than {est.min_samples()} samples, the fewest "
                             f"SpRAy takes with n_neighbors={est.n_neighbors} and n_eigenvectors={est.n_eigenvectors}; "
                             f"lower them or leave those classes out")
    todo = classes if classes is not None else sorted(counts)
    skipped = {str(c): f"{counts[c]} samples, fewer than {est.min_samples()}" for c in todo
               if counts[c] < est.min_samples()}
    if skipped:
        warnings.warn(f"SpRAy skips class(es) with too few samples: "
                      f"{', '.join(f'{c} ({why})' for c, why in skipped.items())}", stacklevel=2)
    meta = {"format": FORMAT, "kind": "spray",
            "run": os.path.relpath(os.path.abspath(run_dir), os.path.abspath(folder)), "source": source,
            "params": params, "classes": {k: v for k, v in keep.items() if int(k) in todo}, "skipped": skipped}
    work = [c for c in todo if str(c) not in skipped and str(c) not in keep]
    write_json(json_path, meta)
    groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if work:
        bar = _bar(progress, n_total, "reading heatmaps", "sample")
        try:
            groups = read_features(files, est, work, progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
    bar = _bar(progress and bool(work), len(work), "SpRAy", "class")
    try:
        for c in work:
            idx, feats = groups.pop(c)
            est.fit_features(feats)
            arrays = _class_arrays(est, idx)
            write_npz(os.path.join(folder, f"class-{c}.npz"), arrays)
            meta["classes"][str(c)] = _class_entry(c, arrays, list(est.labels_), est.eigengap_)
            meta["classes"] = dict(sorted(meta["classes"].items(), key=lambda kv: int(kv[0])))
            write_json(json_path, meta)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not meta["classes"]:
        why = (f"class(es) {', '.join(f'{c} ({n})' for c, n in skipped.items())}" if skipped
               else "no valid sample with an explained class")
        raise SpRAyError(f"SpRAy analysed no class of {run_dir!r}: {why}; SpRAy takes at least {est.min_samples()} "
                         f"heatmaps per class with n_neighbors={est.n_neighbors} and n_eigenvectors="
                         f"{est.n_eigenvectors}: explain more samples or lower them ({json_path} lists the "
                         f"skipped classes)")
    results = load_spray(folder)
    results.computed = list(work)
    return results


def _bar(on: bool, total: int, desc: str, unit: str) -> Any:
    if not on:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)
