"""Export a run's inputs, relevances and SpRAy results as a ViRelAy project (Anders et al., "ViRelAy:
a web application to explore and analyze explanations"; github.com/virelay/virelay, its
``docs/source/contributors-guide/database-specification.rst`` and ``project-file-format.rst``).

:func:`export_virelay` writes into one folder:

* ``<name>.input.h5``, the input database: ``data`` float32 ``(N, C, H, W)`` (channels first, the model
  inputs as explained) and ``label``: uint16 ``(N,)`` when every sample's label is known, else bool
  ``(N, classes)`` (n-hot, all False where the label is unknown);
* ``<name>.attribution.h5``, the attribution database of the valid samples: ``index`` uint32 (their
  sample indices in the input database), ``attribution`` float32 ``(n, C, H, W)``, ``label`` uint16
  (the class explained: the attribution's output neuron) and ``prediction`` float32 ``(n, classes)``
  (the explained outputs, e.g. logits);
* ``<name>.analysis.h5``, the analysis database, one group per analysed class named after its entry
  in the label map (``word_net_id``): ``name`` (string), ``index`` uint32 (sample indices, as in the
  attribution database's ``index``), ``embedding/spectral`` float32 ``(n, m)`` with attribute
  ``eigenvalue`` float32 ``(m,)``, ``embedding/tsne`` (and ``umap``) float32 ``(n, 2)`` with attributes
  ``embedding = 'spectral'`` and ``index`` (the eigenvectors used), and ``cluster/<clustering>``
  ``(n,)`` labels (uint32, int32 where density-based clusterings mark noise with -1) with attributes
  ``embedding``, ``index`` and, for k-means and agglomerative clustering, ``k``. ViRelAy's reader
  (``virelay/model.py``) and its own meta-analysis script read embeddings and clusterings as data sets
  under ``embedding``/``cluster`` with the eigenvalues as an attribute; the database specification's
  older text nests them in groups (``clustering/<name>/root``): this follows what ViRelAy reads;
* ``label-map.json``: ``[{"index": c, "word_net_id": "0000000c", "name": ...}, ...]`` for every output
  class (``word_net_id`` is a placeholder id that names the analysis group, not a WordNet synset);
* ``project.yaml``: the project file binding them (dataset type ``hdf5``, attribution strategy
  ``true_label`` or ``predicted_label``, analysis method ``Spectral``).

Every sample index of the run is the same number in all three databases, so ViRelAy shows each
point of an embedding with its input and heatmap. The run is read one shard at a time.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import numpy as np

from ...io.shards import load_relevances
from .estimator import SpRAyError
from .runs import run_files
from .storage import load_spray

__all__ = ["export_virelay", "PROJECT_FILE", "LABEL_MAP_FILE", "STRATEGIES"]

PROJECT_FILE = "project.yaml"
LABEL_MAP_FILE = "label-map.json"
#: the attribution strategies of ViRelAy's project file format
STRATEGIES = ("true_label", "predicted_label")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("the ViRelAy export needs h5py; install it with pip install 'interprettensor[analysis]'"
                          ) from None
    return h5py


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ImportError("the ViRelAy export needs PyYAML; install it with pip install 'interprettensor[analysis]'"
                          ) from None
    return yaml


def _safe(name: str) -> str:
    """File names after the specification: underscores for spaces, no dashes (they separate keys)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name.strip().replace(" ", "_")).strip("_.") or "run"


def category_name(c: int) -> str:
    """The label map's placeholder id of class ``c`` (ViRelAy names analysis groups after it)."""
    return f"{int(c):08d}"


def export_virelay(run_dir: str, out_dir: str, *, inputs: Any = None, labels: Sequence[int] | None = None,
                   class_names: Sequence[str] | None = None, name: str | None = None, model: str | None = None,
                   attribution_method: str | None = None, attribution_strategy: str | None = None,
                   spray_dir: str | None = None, progress: bool = False) -> str:
    """Write a ViRelAy project of a run's inputs, relevances and SpRAy results (see the module).

    Args:
        run_dir: a finished run of :func:`~interprettensor.explain_dataset` or a ``relevances.npz``.
        out_dir: the project folder (created).
        inputs: the model inputs ``(N, H, W[, C])`` in the run's sample order, or a folder of the image
            files the run explained (matched to the run's ``names``; pixels 0..255 stored as 0..1). The
            default: the ``inputs`` the run stored (``explain_dataset(..., store_inputs=True)``).
        labels: the samples' labels ``(N,)`` (-1: unknown); default: the run's ``labels``, if any.
        class_names: names of the output classes for the label map (default ``class <c>``).
        name: the project's name (default: the run folder's name); files are named after it.
        model, attribution_method: shown by ViRelAy (default: from the run's manifest).
        attribution_strategy: ``'true_label'`` or ``'predicted_label'``; default: ``true_label`` when
            the explained classes are the known labels, ``predicted_label`` when they are the highest
            outputs, else an error asking for it.
        spray_dir: where the SpRAy results are (default ``RUN/spray``; see :func:`~.driver.spray`).
        progress: a tqdm progress bar over the shards.

    Returns:
        the path of ``project.yaml``.

    Raises:
        SpRAyError: no SpRAy results, no inputs, shapes that do not fit, a missing image file.
    """
    h5py, yaml = _h5py(), _yaml()
    files, fingerprint = run_files(run_dir)
    results = load_spray(spray_dir if spray_dir is not None else (
        os.path.dirname(files[0]) if os.path.isfile(run_dir) else run_dir))
    if results.source and results.source != fingerprint:
        raise SpRAyError(f"the SpRAy results in {results.path!r} were computed on another state of the run "
                         f"{run_dir!r} (it changed since); run spray again")
    if not results.classes:
        raise SpRAyError(f"the SpRAy results of {run_dir!r} hold no analysed class; nothing to export")

    # pass 1: the small arrays (indices, targets, outputs, valid, labels) and what each shard holds;
    # the databases' rows are the samples sorted by index (for a finished run: row == sample index)
    meta = [_shard_meta(f) for f in files]
    idx = np.concatenate([m["indices"] for m in meta]).astype(np.int64)
    order = np.argsort(idx, kind="stable")
    if len(np.unique(idx)) != len(idx):
        raise SpRAyError(f"the run in {run_dir!r} holds some sample indices twice; cannot export it")
    N = len(idx)
    sample_shape = meta[0]["shape"]
    if len(sample_shape) not in (2, 3):
        raise SpRAyError(f"ViRelAy shows images: the relevance of {run_dir!r} has shape {tuple(sample_shape)} per "
                         f"sample, not (H, W[, C])")
    for m, f in zip(meta, files):
        if m["shape"] != sample_shape:
            raise SpRAyError(f"{f!r} holds relevance of shape {tuple(m['shape'])} per sample, the first shard "
                             f"{tuple(sample_shape)}")
    H, W = sample_shape[:2]
    C = sample_shape[2] if len(sample_shape) == 3 else 1
    sorted_idx = idx[order]
    targets = np.concatenate([m["targets"] for m in meta]).astype(np.int64)[order]
    valid = np.concatenate([m["valid"] for m in meta]).astype(bool)[order] & (targets >= 0)
    outputs = np.concatenate([m["outputs"] for m in meta]).astype(np.float32)[order].reshape(N, -1)
    lab = _labels(labels, meta, sorted_idx, order, run_dir)
    n_classes = max([outputs.shape[1], int(targets.max(initial=-1)) + 1, int(lab.max(initial=-1)) + 1])
    read_inputs = _input_source(inputs, meta, files, N, (H, W, C), run_dir)
    strategy = attribution_strategy or _strategy(targets[valid], outputs[valid], lab[valid])
    if strategy not in STRATEGIES:
        raise SpRAyError(f"the classes explained in {run_dir!r} are neither the samples' known labels nor the "
                         f"highest outputs; ViRelAy's project format knows the attribution strategies "
                         f"{' and '.join(STRATEGIES)}: say which with attribution_strategy= (spray "
                         f"--attribution-strategy)" if attribution_strategy is None else
                         f"attribution_strategy must be one of {', '.join(STRATEGIES)}; got {attribution_strategy!r}")


    os.makedirs(out_dir, exist_ok=True)
    base = _safe(name or os.path.basename(os.path.abspath(run_dir if os.path.isdir(run_dir) else
                                                          os.path.dirname(os.path.abspath(run_dir)))))
    input_file, attribution_file, analysis_file = (f"{base}.input.h5", f"{base}.attribution.h5",
                                                   f"{base}.analysis.h5")
    names = list(class_names) if class_names is not None else []
    if names and len(names) < n_classes:
        raise SpRAyError(f"class_names has {len(names)} names, but the run has {n_classes} classes")
    n_classes = max(n_classes, len(names))
    label_map = [{"index": c, "word_net_id": category_name(c), "name": names[c] if c < len(names) else f"class {c}"}
                 for c in range(n_classes)]
    with open(os.path.join(out_dir, LABEL_MAP_FILE), "w") as f:
        json.dump(label_map, f, indent=1)

    valid_rows = np.flatnonzero(valid)  # attribution k <-> input row valid_rows[k]
    attr_pos = np.full((N,), -1, np.int64)
    attr_pos[valid_rows] = np.arange(len(valid_rows))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=N, desc="ViRelAy export", unit="sample", leave=False)
    try:
        with h5py.File(os.path.join(out_dir, input_file), "w") as fin, \
                h5py.File(os.path.join(out_dir, attribution_file), "w") as fat:
            data = fin.create_dataset("data", shape=(N, C, H, W), dtype="float32")
            if (lab >= 0).all():
                fin.create_dataset("label", data=lab.astype(np.uint16))
            else:  # n-hot; no label at all where it is unknown
                nhot = np.zeros((N, n_classes), bool)
                known = np.flatnonzero(lab >= 0)
                nhot[known, lab[known]] = True
                fin.create_dataset("label", data=nhot)
            fat.create_dataset("index", data=valid_rows.astype(np.uint32))
            attr = fat.create_dataset("attribution", shape=(len(valid_rows), C, H, W), dtype="float32")
            fat.create_dataset("label", data=targets[valid_rows].astype(np.uint16))
            fat.create_dataset("prediction", data=outputs[valid_rows].astype(np.float32))
            for k, (f, m) in enumerate(zip(files, meta)):
                R = load_relevances(f, keys=["relevance"])["relevance"]
                X = read_inputs(k, f, m)
                rows = np.searchsorted(sorted_idx, np.asarray(m["indices"], np.int64))
                perm = np.argsort(rows, kind="stable")  # h5py writes at increasing rows
                rows, R, X = rows[perm], R[perm], X[perm]
                data[rows.tolist()] = _channels_first(X)
                keep = attr_pos[rows] >= 0
                if keep.any():
                    attr[attr_pos[rows[keep]].tolist()] = _channels_first(R[keep])
                if bar is not None:
                    bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()

    with h5py.File(os.path.join(out_dir, analysis_file), "w") as fan:
        for c, res in results.classes.items():
            g = fan.create_group(category_name(c))
            g.create_dataset("name", data=f"SpRAy of {label_map[c]['name'] if c < len(label_map) else c}")
            rows = np.searchsorted(sorted_idx, res.indices)
            rows = np.where((rows < N) & (sorted_idx[np.minimum(rows, N - 1)] == res.indices), rows, -1)
            if (rows < 0).any():
                raise SpRAyError(f"the SpRAy results of class {c} name samples that are not in the run "
                                 f"({res.indices[rows < 0][:5].tolist()}); run spray again (force=True)")
            g.create_dataset("index", data=rows.astype(np.uint32))
            m = res.spectral.shape[1]
            emb = g.create_group("embedding")
            emb.create_dataset("spectral", data=res.spectral.astype(np.float32))
            emb["spectral"].attrs["eigenvalue"] = res.eigenvalues.astype(np.float32)
            for e in ("tsne", "umap"):
                arr = getattr(res, e)
                if arr is not None:
                    emb.create_dataset(e, data=arr.astype(np.float32))
                    emb[e].attrs["embedding"] = "spectral"
                    emb[e].attrs["index"] = np.arange(m, dtype=np.uint32)
            clu = g.create_group("cluster")
            for cname, labels_ in res.labels.items():
                dtype = np.uint32 if labels_.min(initial=0) >= 0 else np.int32
                clu.create_dataset(cname, data=labels_.astype(dtype))
                clu[cname].attrs["embedding"] = "spectral"
                kmatch = re.fullmatch(r"(kmeans|agglomerative)-(\d+)", cname)
                used = int(kmatch.group(2)) if kmatch else m
                clu[cname].attrs["index"] = np.arange(used, dtype=np.uint32)
                if kmatch:
                    clu[cname].attrs["k"] = used

    project = {"project": {
        "name": name or base, "model": model or meta[0].get("model") or "model", "label_map": LABEL_MAP_FILE,
        "dataset": {"name": name or base, "type": "hdf5", "path": input_file, "input_width": int(W),
                    "input_height": int(H), "up_sampling_method": "none", "down_sampling_method": "none"},
        "attributions": {"attribution_method": attribution_method or meta[0].get("rule") or "LRP",
                         "attribution_strategy": strategy, "sources": [attribution_file]},
        "analyses": [{"analysis_method": "Spectral", "sources": [analysis_file]}]}}
    path = os.path.join(out_dir, PROJECT_FILE)
    with open(path, "w") as f:
        yaml.safe_dump(project, f, sort_keys=False)
    return path


def _channels_first(a: np.ndarray) -> np.ndarray:
    """``(n, H, W, C)`` or ``(n, H, W)`` -> ``(n, C, H, W)`` float32."""
    a = np.asarray(a, np.float32)
    return a[:, None] if a.ndim == 3 else np.moveaxis(a, -1, 1)


def _shard_meta(path: str) -> dict:
    """The small arrays of one file, the relevance's per-sample shape and which arrays it holds."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
    except (OSError, ValueError, EOFError) as e:
        raise SpRAyError(f"cannot read {path!r}: {e}") from None
    want = ["indices", "targets", "outputs", "valid"] + [k for k in ("labels", "names") if k in keys]
    m = load_relevances(path, keys=want)
    import zipfile

    with zipfile.ZipFile(path) as zf, zf.open("relevance.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape = read(f)[0]
    m["shape"] = tuple(int(s) for s in shape[1:])
    m["has_inputs"] = "inputs" in keys
    folder = os.path.dirname(path)
    manifest = os.path.join(folder, "manifest.json")
    if os.path.exists(manifest):
        try:
            with open(manifest) as f:
                ident = json.load(f).get("identity", {})
            m["model"], m["rule"] = ident.get("model"), ident.get("rule")
        except (OSError, ValueError):
            pass
    return m


def _labels(labels: Any, meta: list[dict], sorted_idx: np.ndarray, order: np.ndarray, run_dir: str) -> np.ndarray:
    """The samples' labels in row order (-1: unknown): ``labels`` indexed by sample index, else the run's."""
    if labels is not None:
        lab = np.asarray(labels).astype(np.int64).reshape(-1)
        if lab.size <= int(sorted_idx.max(initial=-1)):
            raise SpRAyError(f"labels has {lab.size} entries, but the run {run_dir!r} has samples up to index "
                             f"{int(sorted_idx.max())}")
        return lab[sorted_idx]
    if meta and all("labels" in m for m in meta):
        return np.concatenate([m["labels"] for m in meta]).astype(np.int64)[order]
    return np.full(sorted_idx.shape, -1, np.int64)


def _input_source(inputs: Any, meta: list[dict], files: list[str], N: int, hwc: tuple[int, int, int],
                  run_dir: str) -> Any:
    """A function ``(k, file, meta) -> (n, H, W[, C])`` giving the inputs of shard ``k``."""
    H, W, C = hwc
    if inputs is None:
        if not all(m["has_inputs"] for m in meta):
            raise SpRAyError(f"the run {run_dir!r} did not store its inputs (explain_dataset(..., store_inputs=True) "
                             f"or `interprettensor explain --store-inputs`); pass inputs= (spray --inputs): an array "
                             f"in the run's order, or the folder of its image files")

        def stored(k: int, f: str, m: dict) -> np.ndarray:
            X = load_relevances(f, keys=["inputs"])["inputs"]
            _check_shape(X, m, f)
            return X
        return stored
    if isinstance(inputs, (str, os.PathLike)):
        folder = os.fspath(inputs)
        if not os.path.isdir(folder):
            raise SpRAyError(f"inputs {folder!r} is not a folder of images")
        if not all("names" in m for m in meta):
            raise SpRAyError(f"the run {run_dir!r} has no file names (it did not explain files): give inputs as "
                             f"an array")
        by_stem: dict[str, str] = {}
        for fn in sorted(os.listdir(folder)):
            by_stem.setdefault(os.path.splitext(fn)[0], os.path.join(folder, fn))
        for sub in sorted(os.listdir(folder)):  # class subfolders: explain names their files SUBFOLDER_STEM
            if not sub.startswith(".") and os.path.isdir(os.path.join(folder, sub)):
                for fn in sorted(os.listdir(os.path.join(folder, sub))):
                    by_stem.setdefault(f"{sub}_{os.path.splitext(fn)[0]}", os.path.join(folder, sub, fn))

        def from_files(k: int, f: str, m: dict) -> np.ndarray:
            return np.stack([_read_image(by_stem, str(n), folder, H, W, C) for n in m["names"]])
        return from_files
    arr = inputs
    if not hasattr(arr, "shape") or len(arr) != N:
        raise SpRAyError(f"inputs must hold the run's {N} samples (shape (N, H, W[, C])); got "
                         f"{getattr(arr, 'shape', type(arr).__name__)}")

    def given(k: int, f: str, m: dict) -> np.ndarray:
        X = np.asarray(arr[np.asarray(m["indices"], np.int64)], np.float32)
        _check_shape(X, m, "inputs")
        return X
    return given


def _check_shape(X: np.ndarray, m: dict, where: str) -> None:
    if tuple(X.shape[1:]) != tuple(m["shape"]):
        raise SpRAyError(f"{where}: inputs of shape {tuple(X.shape[1:])} per sample do not match the relevance's "
                         f"{tuple(m['shape'])}")


def _read_image(by_stem: dict, name: str, folder: str, H: int, W: int, C: int) -> np.ndarray:
    from PIL import Image

    path = by_stem.get(name)
    if path is None:
        raise SpRAyError(f"no image file named {name!r} (any extension) in {folder!r}")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if C == 1 else "RGB")
            if im.size != (W, H):
                im = im.resize((W, H), Image.BILINEAR)
            a = np.asarray(im, np.float32) / 255.0
    except OSError as e:
        raise SpRAyError(f"cannot read the image {path!r}: {e}") from None
    return a[..., None] if C == 1 and a.ndim == 2 else a


def _strategy(targets: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> str | None:
    """``true_label`` when the explained classes are the labels, ``predicted_label`` when they are the
    highest outputs (the two strategies of ViRelAy's project format), else ``None``."""
    if (labels >= 0).all() and np.array_equal(targets, labels):
        return "true_label"
    if outputs.ndim == 2 and outputs.shape[1] and np.array_equal(targets, outputs.argmax(axis=1)):
        return "predicted_label"
    return None
