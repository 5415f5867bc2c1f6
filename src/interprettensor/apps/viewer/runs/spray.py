"""SpRAy results of an explain run as the viewer shows them (:class:`Spray`): ``RUN/spray/spray.json`` and
``class-<c>.npz`` (written by :func:`interprettensor.analysis.spray.spray`), read per class: the 2-D
embedding, every clustering, the eigenvalues and the eigengap."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .files import SPRAY_JSON, RunError, _Members, _npz_keys, _read_meta


class Spray:
    """SpRAy results of an explain run (``RUN/spray/spray.json``, ``class-<c>.npz``)."""

    def __init__(self, folder: str, members: _Members):
        self.folder, self.members = folder, members
        path = os.path.join(folder, SPRAY_JSON)
        self.meta = meta = _read_meta(path, "spray", "classes", "SpRAy results")
        self.classes = {str(c): v for c, v in meta["classes"].items()}
        for c, v in self.classes.items():
            if not isinstance(v, dict) or not isinstance(v.get("clusterings", []), list) \
                    or not isinstance(v.get("embeddings", []), list):
                raise RunError(f"{path!r}: the entry of class {c} is not {{\"file\", \"n\", \"clusterings\": [...], "
                               f"\"embeddings\": [...], \"eigengap\"}}")
        skipped = meta.get("skipped")
        self.skipped = {str(c): str(why) for c, why in skipped.items()} if isinstance(skipped, dict) else {}
        self._eigengaps: dict[str, int | None] = {}

    def empty_message(self) -> str:
        """Why no class can be shown (every class was skipped); only meaningful without classes."""
        why = "; ".join(f"class {c}: {w}" for c, w in sorted(self.skipped.items(), key=lambda kv: _num(kv[0])))
        return (f"SpRAy analysed no class of this run ({os.path.join(self.folder, SPRAY_JSON)}): "
                + (f"all skipped: {why}" if why else "its \"classes\" are empty") + ". SpRAy needs enough samples "
                f"per explained class (at least n_neighbors + 1)")

    def eigengap(self, cls: str) -> int | None:
        """The number of clusters the eigengap suggests for ``cls``: as stored by spray (the library's
        relative gap, :func:`interprettensor.analysis.spray.eigengap`), computed the same way from the
        stored eigenvalues for files written without it; ``None`` if neither can be read."""
        v = self.classes[cls].get("eigengap")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
            return int(v)
        if cls not in self._eigengaps:
            from ....analysis.spray import eigengap  # numpy only

            try:
                self._eigengaps[cls] = eigengap(self.array(cls, "eigenvalues"))
            except RunError:
                self._eigengaps[cls] = None
        return self._eigengaps[cls]

    def summary(self) -> dict:
        out = {"params": self.meta.get("params", {}), "skipped": self.skipped,
               "classes": {c: {"n": v.get("n"), "clusterings": list(v.get("clusterings", [])),
                               "embeddings": list(v.get("embeddings", [])), "eigengap": self.eigengap(c)}
                           for c, v in self.classes.items()}}
        if not self.classes:
            out["empty"] = self.empty_message()
        return out

    def _file(self, cls: str) -> str:
        if not self.classes:
            raise RunError(self.empty_message())
        if cls not in self.classes:
            raise RunError(f"the SpRAy results in {self.folder!r} have no class {cls!r} (classes: "
                           f"{', '.join(sorted(self.classes, key=_num))})")
        return os.path.join(self.folder, self.classes[cls].get("file", f"class-{cls}.npz"))

    def array(self, cls: str, key: str) -> np.ndarray:
        return np.asarray(self.members.get(self._file(cls), key))

    def class_data(self, cls: str, embedding: str) -> dict:
        """The class's samples, 2-D coordinates of one embedding, every clustering and the eigenvalues."""
        info = self.classes.get(cls)
        f = self._file(cls)
        keys = _npz_keys(f)
        if embedding not in keys or embedding not in ("tsne", "umap", "spectral"):
            raise RunError(f"the SpRAy results of class {cls} have no embedding {embedding!r} (have "
                           f"{', '.join(k for k in ('spectral', 'tsne', 'umap') if k in keys)})")
        emb = np.asarray(self.members.get(f, embedding), np.float64)
        eig = self.array(cls, "eigenvalues").astype(np.float64) if "eigenvalues" in keys else np.zeros(0)
        columns = [0, 1]
        if embedding == "spectral":
            # the first eigenvector of a connected graph is constant (eigenvalue 0): show the next two
            if emb.shape[1] >= 3 and len(eig) and abs(eig[0]) < 1e-6:
                columns = [1, 2]
            emb = emb[:, columns] if emb.shape[1] >= 2 else np.concatenate([emb, np.zeros_like(emb)], 1)
        clusterings = {}
        for name in info.get("clusterings", []):
            key = f"cluster-{name}"
            if key in keys:
                clusterings[name] = self.array(cls, key).astype(np.int64).tolist()
        return {"class": cls, "embedding": embedding, "columns": columns, "eigengap": self.eigengap(cls),
                "indices": self.array(cls, "indices").astype(np.int64).tolist(),
                "points": np.round(np.nan_to_num(emb[:, :2]), 5).tolist(),
                "clusterings": clusterings, "eigenvalues": [float(v) for v in np.nan_to_num(eig)]}


def _num(s: str) -> Any:
    try:
        return (0, int(s))
    except ValueError:
        return (1, s)
