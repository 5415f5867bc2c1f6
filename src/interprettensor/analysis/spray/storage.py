"""SpRAy's storage format: ``RUN/spray/spray.json`` (parameters, per class its file, samples,
clusterings, embeddings and eigengap; the skipped classes) and one ``class-<c>.npz`` per class
(``indices``, ``eigenvalues``, ``spectral``, ``tsne``[, ``umap``], ``cluster-<name>``), read back by
:func:`load_spray` into :class:`SpRAyResults` of :class:`ClassResult`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .estimator import SpRAy, SpRAyError, eigengap

SPRAY_DIR = "spray"
SPRAY_JSON = "spray.json"
FORMAT = 1


@dataclass
class ClassResult:
    """SpRAy's results for one class, as stored in ``class-<c>.npz`` (see :func:`load_spray`)."""

    indices: np.ndarray
    eigenvalues: np.ndarray
    spectral: np.ndarray
    tsne: np.ndarray | None
    umap: np.ndarray | None
    labels: dict[str, np.ndarray]
    eigengap: int

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class SpRAyResults:
    """A run's SpRAy results: the folder, the parameters, the classes analysed, those skipped (with the
    reason) and, as returned by :func:`spray`, those computed by that call (the others were kept)."""

    path: str
    params: dict
    classes: dict[int, ClassResult] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    computed: list[int] = field(default_factory=list)
    #: fingerprint of the run the results were computed on (see :func:`run_files`)
    source: str = ""


def _class_arrays(est: SpRAy, indices: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {"indices": np.asarray(indices, np.int64), "eigenvalues": est.eigenvalues_.astype(np.float64),
              "spectral": est.embedding_.astype(np.float32)}
    if est.tsne_ is not None:
        arrays["tsne"] = est.tsne_.astype(np.float32)
    if est.umap_ is not None:
        arrays["umap"] = est.umap_.astype(np.float32)
    for name, lab in est.labels_.items():
        arrays[f"cluster-{name}"] = lab.astype(np.int64)
    return arrays


def _class_entry(c: int, arrays: dict[str, np.ndarray], clusterings: list[str], eigengap: int) -> dict:
    return {"file": f"class-{c}.npz", "n": int(arrays["indices"].shape[0]), "clusterings": clusterings,
            "embeddings": ["spectral"] + [e for e in ("tsne", "umap") if e in arrays], "eigengap": int(eigengap)}


def load_spray(run_dir: str) -> SpRAyResults:
    """Read SpRAy results written by :func:`spray` (``RUN/spray/spray.json`` and ``class-<c>.npz``).

    Args:
        run_dir: the run's folder (holding ``spray/``), the ``spray`` folder itself, or ``spray.json``.

    Returns:
        a :class:`SpRAyResults`; each class's :class:`ClassResult` holds ``indices`` (int64 positions
        in the run), ``eigenvalues`` (float64 ascending), ``spectral`` ``(n, m)`` float32, ``tsne`` and
        ``umap`` ``(n, 2)`` float32 (or ``None``), ``labels`` ``{clustering name: (n,) int64}`` and the
        eigengap's suggested number of clusters.
    """
    path = os.fspath(run_dir)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, SPRAY_JSON)):
        path = os.path.join(path, SPRAY_DIR)
    if os.path.isdir(path):
        path = os.path.join(path, SPRAY_JSON)
    meta = _read_json(path)
    if meta is None:
        raise SpRAyError(f"no SpRAy results at {run_dir!r} (no {os.path.join(SPRAY_DIR, SPRAY_JSON)}); "
                         f"run it.spray(run) or `interprettensor spray RUN` first")
    folder = os.path.dirname(path)
    out = SpRAyResults(path=folder, params=meta["params"], source=str(meta.get("source", "")),
                       skipped={int(c): str(why) for c, why in meta.get("skipped", {}).items()})
    for c, entry in sorted(meta["classes"].items(), key=lambda kv: int(kv[0])):
        file = os.path.join(folder, entry["file"])
        try:
            with np.load(file, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise SpRAyError(f"cannot read SpRAy results of class {c} from {file!r}: {e}") from None
        missing = [k for k in ["indices", "eigenvalues", "spectral"] + [f"cluster-{n}" for n in entry["clusterings"]]
                   + list(entry["embeddings"][1:]) if k not in arrays]
        if missing:
            raise SpRAyError(f"{file!r} lacks {', '.join(missing)}: not written by this version of spray; "
                             f"run spray again with force=True")
        eig = entry.get("eigengap")
        if eig is None:
            eig = eigengap(arrays["eigenvalues"])
        out.classes[int(c)] = ClassResult(
            indices=arrays["indices"], eigenvalues=arrays["eigenvalues"], spectral=arrays["spectral"],
            tsne=arrays.get("tsne"), umap=arrays.get("umap"),
            labels={n: arrays[f"cluster-{n}"] for n in entry["clusterings"]}, eigengap=int(eig))
    return out


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get("kind") != "spray" or meta.get("format") != FORMAT \
                or not isinstance(meta.get("classes"), dict):
            raise ValueError("not a spray.json of interprettensor")
        return meta
    except (OSError, ValueError) as e:
        raise SpRAyError(f"cannot read {path!r} ({e}); delete it or the spray folder to start over") from None
