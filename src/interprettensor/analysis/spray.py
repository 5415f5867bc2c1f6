"""Spectral Relevance Analysis (SpRAy): cluster one class's heatmaps over a whole data set to expose the
strategies a model uses, spurious ones included (Lapuschkin et al. 2019, "Unmasking Clever Hans
predictors and assessing what machines really learn", Nature Communications 10:1096).

Per class (the samples explained for that class):

1. preprocessing (:func:`preprocess`): each heatmap ``(H, W[, C])`` is summed over its channels,
   optionally made absolute, average-pooled to a small grid (``grid``, e.g. 32 x 32; uneven bins when
   the size does not divide) and normalised (``'l2'``: unit length, so that the Euclidean distance
   between two heatmaps measures their difference in shape, not in total relevance);
2. affinity: the symmetric binary k-nearest-neighbour graph of those vectors
   (:func:`sklearn.neighbors.kneighbors_graph`, ``w_ij = 1`` if ``j`` is among the ``k`` nearest
   neighbours of ``i`` or ``i`` among those of ``j``);
3. spectral embedding: the ``m`` eigenvectors of the symmetric normalised graph Laplacian
   ``L = I - D^-1/2 W D^-1/2`` (:func:`scipy.sparse.csgraph.laplacian`) with the smallest eigenvalues
   (:func:`scipy.sparse.linalg.eigsh`; dense :func:`scipy.linalg.eigh` for small classes). The
   eigengap heuristic (von Luxburg 2007, "A tutorial on spectral clustering", 8.3) suggests the number
   of clusters, here on the relative gap (:func:`eigengap`);
4. clusterings: ``kmeans-k`` for each ``k`` in ``n_clusters`` on the first ``k`` eigenvectors with
   rows scaled to unit length (normalised spectral clustering, Ng, Jordan & Weiss 2002;
   :class:`sklearn.cluster.KMeans`), likewise ``agglomerative-k`` (Ward), and the density-based
   ``hdbscan`` or ``dbscan`` on all ``m`` eigenvectors, rows scaled to unit length (label -1: noise);
5. a 2-D embedding for display: t-SNE of the spectral embedding (:class:`sklearn.manifold.TSNE`),
   and UMAP when ``umap-learn`` is installed.

:class:`SpRAy` runs this on an array of heatmaps (scikit-learn style: ``fit`` sets ``eigenvalues_``,
``embedding_``, ``labels_``, ``tsne_``, ...). :func:`spray` runs it per class over a run of
:func:`~interprettensor.explain_dataset` (or the ``relevances.npz`` of ``interprettensor explain``),
reading one shard at a time and reducing each heatmap to its grid at once, and writes ``RUN/spray/``:
``spray.json`` and one ``class-<c>.npz`` per class (see :func:`load_spray`). A rerun skips the
classes whose results exist with the same parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..io.shards import (MANIFEST, RELEVANCES_NPZ, StreamError, load_relevances, read_manifest, worker_manifests,
                         write_json, write_npz)

__all__ = ["SpRAy", "SpRAyError", "ClassResult", "SpRAyResults", "preprocess", "eigengap", "spray", "load_spray",
           "SPRAY_DIR", "SPRAY_JSON", "CLUSTERINGS", "NORMALISATIONS"]

SPRAY_DIR = "spray"
SPRAY_JSON = "spray.json"
FORMAT = 1
#: clustering methods: ``kmeans`` and ``agglomerative`` give one clustering per number of clusters
CLUSTERINGS = ("kmeans", "agglomerative", "hdbscan", "dbscan")
NORMALISATIONS = ("l2", "max", "l1", "none")
#: classes smaller than this run on one thread unless ``n_threads`` says otherwise
SMALL = 1000


class SpRAyError(StreamError):
    """Bad input to SpRAy (too few samples, NaN heatmaps, a bad parameter) or a run directory that
    cannot be analysed; the message says what and where."""


def _sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
        import scipy  # noqa: F401
    except ImportError as e:  # pragma: no cover - both are dependencies; a broken install
        raise ImportError(f"SpRAy needs scikit-learn and scipy ({e}); install them with "
                          f"pip install 'interprettensor[analysis]'") from None
    return sklearn


# ---------------------------------------------------------------------------------------------- preprocessing
def _grid(grid: int | Sequence[int]) -> tuple[int, int]:
    g = (int(grid), int(grid)) if np.isscalar(grid) else tuple(int(v) for v in grid)  # type: ignore[arg-type]
    if len(g) != 2 or min(g) < 1:
        raise SpRAyError(f"grid must be one size or (height, width) >= 1, got {grid!r}")
    return g  # type: ignore[return-value]


def preprocess(heatmaps: np.ndarray, grid: int | Sequence[int] = (32, 32), normalise: str = "l2",
               absolute: bool = False) -> np.ndarray:
    """Reduce heatmaps to SpRAy's feature vectors (step 1 of the module's pipeline).

    Args:
        heatmaps: ``(n, H, W, C)`` (channels last, summed) or ``(n, H, W)``.
        grid: the pooled size ``(h, w)`` (or one number for both), capped at ``(H, W)``. Bin ``i`` of
            ``h`` covers rows ``floor(i H / h)`` to ``floor((i + 1) H / h)`` (exclusive); its value is the
            mean over the bin.
        normalise: ``'l2'`` (unit Euclidean length), ``'max'`` (largest absolute value 1), ``'l1'`` (sum
            of absolute values 1) or ``'none'``; an all-zero heatmap stays zero.
        absolute: take the absolute value after summing the channels (positive and negative evidence
            alike).

    Returns:
        ``(n, h * w)`` float32.
    """
    R = np.asarray(heatmaps)
    if R.ndim == 4:
        R = R.sum(axis=-1, dtype=np.float64)
    elif R.ndim == 3:
        R = R.astype(np.float64)
    else:
        raise SpRAyError(f"SpRAy takes image heatmaps (n, H, W, C) or (n, H, W); got shape {tuple(R.shape)}")
    if normalise not in NORMALISATIONS:
        raise SpRAyError(f"normalise must be one of {', '.join(NORMALISATIONS)}; got {normalise!r}")
    if absolute:
        R = np.abs(R)
    n, H, W = R.shape
    gh, gw = _grid(grid)
    gh, gw = min(gh, H), min(gw, W)
    rows = (np.arange(gh + 1) * H) // gh
    cols = (np.arange(gw + 1) * W) // gw
    pooled = np.add.reduceat(np.add.reduceat(R, rows[:-1], axis=1), cols[:-1], axis=2)
    pooled /= np.outer(np.diff(rows), np.diff(cols))[None]
    flat = pooled.reshape(n, gh * gw)
    if normalise != "none":
        if normalise == "l2":
            scale = np.sqrt((flat ** 2).sum(axis=1))
        elif normalise == "l1":
            scale = np.abs(flat).sum(axis=1)
        else:
            scale = np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(n)
        flat = flat / np.where(scale > 0, scale, 1.0)[:, None]
    return flat.astype(np.float32)


# ---------------------------------------------------------------------------------------------- estimator
class SpRAy:
    """Spectral relevance analysis of one class's heatmaps (Lapuschkin et al. 2019), scikit-learn style.

    Args:
        n_neighbors: ``k`` of the k-nearest-neighbour affinity graph.
        n_eigenvectors: ``m``, the eigenvectors (smallest eigenvalues) kept as the spectral embedding;
            at least the largest of ``n_clusters``.
        clusterings: methods among :data:`CLUSTERINGS`; ``kmeans`` and ``agglomerative`` run once per
            ``k`` in ``n_clusters`` (named ``kmeans-2``, ...).
        n_clusters: the numbers of clusters to try.
        grid, normalise, absolute: the preprocessing (:func:`preprocess`).
        tsne: compute the 2-D t-SNE embedding (``tsne_``).
        umap: ``'auto'`` (when ``umap-learn`` is installed), ``True`` (required) or ``False``.
        random_state: seed of the eigensolver's start vector, k-means, t-SNE and UMAP.
        perplexity: t-SNE's perplexity (capped at ``(n - 1) / 3``).
        min_cluster_size: HDBSCAN's smallest cluster (default ``max(5, n // 20)``: 5 % of the class;
            smaller ones tend to split a strategy by, e.g., the position of the object).
        dbscan_eps: DBSCAN's radius (on the spectral embedding's rows scaled to unit length).
        n_threads: limit the native threads (OpenMP, BLAS) of the numerical steps, e.g. 1 on a machine
            shared with other jobs (OpenMP threads that spin while waiting slow t-SNE and k-means down
            many times over when the cores are oversubscribed). ``None``: one thread for classes of
            fewer than :data:`SMALL` samples (their work is too small to share), else the libraries'
            defaults.

    Attributes after :meth:`fit`:
        features_: ``(n, h * w)`` float32, the preprocessed heatmaps.
        affinity_: the symmetric binary kNN graph (scipy sparse ``(n, n)``).
        eigenvalues_: ``(m,)`` float64 ascending eigenvalues of the normalised Laplacian.
        embedding_: ``(n, m)`` float32 the corresponding eigenvectors (the spectral embedding).
        eigengap_: the number of clusters the eigengap suggests (:func:`eigengap`).
        labels_: ``{name: (n,) int64}`` cluster labels (-1: noise of density-based methods).
        tsne_: ``(n, 2)`` float32 or ``None``; umap_: ``(n, 2)`` float32 or ``None``.
        timings_: seconds per step (``affinity``, ``spectral``, ``clustering``, ``tsne``, ``umap``).
    """

    def __init__(self, n_neighbors: int = 10, n_eigenvectors: int = 16,
                 clusterings: Sequence[str] = ("kmeans", "hdbscan"), n_clusters: Iterable[int] = range(2, 9),
                 grid: int | Sequence[int] = (32, 32), normalise: str = "l2", absolute: bool = False,
                 tsne: bool = True, umap: bool | str = "auto", random_state: int = 0, perplexity: float = 30.0,
                 min_cluster_size: int | None = None, dbscan_eps: float = 0.5, n_threads: int | None = None):
        self.n_neighbors = n_neighbors
        self.n_eigenvectors = n_eigenvectors
        self.clusterings = tuple(clusterings)
        self.n_clusters = tuple(int(k) for k in n_clusters)
        self.grid = grid
        self.normalise = normalise
        self.absolute = absolute
        self.tsne = tsne
        self.umap = umap
        self.random_state = random_state
        self.perplexity = perplexity
        self.min_cluster_size = min_cluster_size
        self.dbscan_eps = dbscan_eps
        self.n_threads = n_threads
        self._check()

    # -- parameters
    def _check(self) -> None:
        if int(self.n_neighbors) < 1:
            raise SpRAyError(f"n_neighbors must be >= 1, got {self.n_neighbors}")
        if int(self.n_eigenvectors) < 2:
            raise SpRAyError(f"n_eigenvectors must be >= 2, got {self.n_eigenvectors}")
        bad = [c for c in self.clusterings if c not in CLUSTERINGS]
        if bad:
            raise SpRAyError(f"unknown clustering(s) {', '.join(map(repr, bad))}; choose from {', '.join(CLUSTERINGS)}")
        if any(k < 2 for k in self.n_clusters):
            raise SpRAyError(f"n_clusters must be >= 2, got {list(self.n_clusters)}")
        if {"kmeans", "agglomerative"} & set(self.clusterings) and not self.n_clusters:
            raise SpRAyError("n_clusters is empty, but kmeans/agglomerative need at least one number of clusters")
        if self.n_clusters and max(self.n_clusters) > int(self.n_eigenvectors):
            raise SpRAyError(f"n_eigenvectors ({self.n_eigenvectors}) must be at least the largest number of "
                             f"clusters ({max(self.n_clusters)}): k-means with k clusters uses k eigenvectors")
        if self.n_threads is not None and int(self.n_threads) < 1:
            raise SpRAyError(f"n_threads must be >= 1 or None, got {self.n_threads}")
        if self.umap not in ("auto", True, False):
            raise SpRAyError(f"umap must be 'auto', True or False, got {self.umap!r}")
        _grid(self.grid)
        if self.normalise not in NORMALISATIONS:
            raise SpRAyError(f"normalise must be one of {', '.join(NORMALISATIONS)}; got {self.normalise!r}")

    def get_params(self) -> dict:
        """The parameters as plain JSON values (stored in ``spray.json``)."""
        return {"preprocessing": {"channels": "sum", "absolute": bool(self.absolute), "grid": list(_grid(self.grid)),
                                  "pooling": "mean", "normalise": self.normalise},
                "n_neighbors": int(self.n_neighbors), "n_eigenvectors": int(self.n_eigenvectors),
                "affinity": "knn-connectivity-symmetric", "laplacian": "symmetric-normalised",
                "clusterings": list(self.clusterings), "n_clusters": list(self.n_clusters),
                "min_cluster_size": self.min_cluster_size, "dbscan_eps": float(self.dbscan_eps),
                "tsne": bool(self.tsne), "perplexity": float(self.perplexity), "umap": self.umap,
                "random_state": int(self.random_state)}

    def clustering_names(self) -> list[str]:
        """The names of the clusterings :meth:`fit` computes, in order (``kmeans-2``, ..., ``hdbscan``)."""
        names = []
        for method in self.clusterings:
            if method in ("kmeans", "agglomerative"):
                names += [f"{method}-{k}" for k in self.n_clusters]
            else:
                names.append(method)
        return names

    def min_samples(self) -> int:
        """The fewest samples :meth:`fit` accepts: the kNN graph needs ``n_neighbors + 1`` and the
        eigensolver ``n_eigenvectors + 1``."""
        return max(int(self.n_neighbors), int(self.n_eigenvectors)) + 1

    # -- fitting
    def preprocess(self, heatmaps: np.ndarray) -> np.ndarray:
        """:func:`preprocess` with this estimator's parameters."""
        return preprocess(heatmaps, self.grid, self.normalise, self.absolute)

    def fit(self, heatmaps: np.ndarray, y: Any = None) -> "SpRAy":
        """Preprocess ``heatmaps`` ``(n, H, W[, C])`` and run :meth:`fit_features`."""
        R = np.asarray(heatmaps)
        if R.ndim in (3, 4) and R.shape[0] and not np.isfinite(R).all():
            bad = np.flatnonzero(~np.isfinite(R.reshape(len(R), -1)).all(axis=1))
            raise SpRAyError(f"heatmaps hold NaN or inf (samples {_list(bad)}); SpRAy needs finite heatmaps")
        return self.fit_features(self.preprocess(R))

    def fit_features(self, features: np.ndarray) -> "SpRAy":
        """Run the affinity graph, spectral embedding, clusterings and display embeddings on
        preprocessed vectors ``(n, d)`` (e.g. from :meth:`preprocess`)."""
        _sklearn()
        self._check()
        X = np.asarray(features, dtype=np.float32)
        if X.ndim != 2:
            raise SpRAyError(f"features must be (n, d); got shape {tuple(X.shape)}")
        n = X.shape[0]
        if n < self.min_samples():
            raise SpRAyError(f"SpRAy needs at least {self.min_samples()} heatmaps (n_neighbors={self.n_neighbors}, "
                             f"n_eigenvectors={self.n_eigenvectors}); got {n}")
        if self.n_clusters and {"kmeans", "agglomerative"} & set(self.clusterings) and max(self.n_clusters) > n:
            raise SpRAyError(f"{max(self.n_clusters)} clusters asked for, but only {n} heatmaps")
        if not np.isfinite(X).all():
            bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
            raise SpRAyError(f"features hold NaN or inf (samples {_list(bad)})")
        threads = self.n_threads if self.n_threads is not None else (1 if n < SMALL else None)
        if threads is None:
            return self._fit(X)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(int(threads)):
            return self._fit(X)

    def _fit(self, X: np.ndarray) -> "SpRAy":
        import time

        self.features_ = X
        self.timings_: dict[str, float] = {}
        t = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal t
            now = time.perf_counter()
            self.timings_[step] = now - t
            t = now

        self.affinity_ = self._affinity(X)
        lap("affinity")
        self.eigenvalues_, self.embedding_ = self._spectral(self.affinity_)
        self.eigengap_ = eigengap(self.eigenvalues_)
        lap("spectral")
        self.labels_ = self._cluster(self.embedding_)
        lap("clustering")
        self.tsne_ = self._tsne(self.embedding_) if self.tsne else None
        lap("tsne")
        self.umap_ = self._umap(self.embedding_)
        lap("umap")
        return self

    def _affinity(self, X: np.ndarray) -> Any:
        from sklearn.neighbors import kneighbors_graph

        A = kneighbors_graph(X, int(self.n_neighbors), mode="connectivity", include_self=False)
        return A.maximum(A.T).tocsr().astype(np.float64)

    def _spectral(self, A: Any) -> tuple[np.ndarray, np.ndarray]:
        import scipy.sparse as sp
        from scipy.sparse.csgraph import laplacian

        n, m = A.shape[0], int(self.n_eigenvectors)
        L = laplacian(A, normed=True)
        if n <= 1500:
            from scipy.linalg import eigh

            values, vectors = eigh(L.toarray(), subset_by_index=[0, m - 1])
        else:
            from scipy.sparse.linalg import eigsh

            # the smallest eigenvalues of L (in [0, 2]) are the largest of 2I - L: Lanczos without the
            # factorisation that shift-invert would need (its fill-in is dense on kNN graphs)
            v0 = np.random.default_rng(self.random_state).uniform(-1.0, 1.0, n)
            mu, vectors = eigsh(2.0 * sp.identity(n, format="csr") - L, k=m, which="LA", v0=v0)
            values = 2.0 - mu
            order = np.argsort(values, kind="stable")
            values, vectors = values[order], vectors[:, order]
        values = np.clip(values, 0.0, None)  # round-off below the Laplacian's lower bound 0
        # a deterministic sign: the largest entry (by magnitude) of each eigenvector is positive
        flip = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
        vectors = vectors * np.where(flip == 0, 1.0, flip)[None]
        return values.astype(np.float64), vectors.astype(np.float32)

    def _cluster(self, E: np.ndarray) -> dict[str, np.ndarray]:
        from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, KMeans

        n = E.shape[0]
        labels: dict[str, np.ndarray] = {}
        for method in self.clusterings:
            if method in ("kmeans", "agglomerative"):
                for k in self.n_clusters:
                    U = E[:, :k].astype(np.float64)
                    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)  # Ng, Jordan & Weiss
                    if method == "kmeans":
                        est = KMeans(n_clusters=k, n_init=10, random_state=self.random_state)
                    else:
                        est = AgglomerativeClustering(n_clusters=k, linkage="ward")
                    labels[f"{method}-{k}"] = est.fit_predict(U).astype(np.int64)
            else:
                Z = E.astype(np.float64)
                Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)  # all m, rows unit length
                if method == "hdbscan":
                    size = self.min_cluster_size or max(5, n // 20)
                    est = HDBSCAN(min_cluster_size=int(min(size, n)), copy=True)
                else:
                    est = DBSCAN(eps=float(self.dbscan_eps))
                labels[method] = est.fit_predict(Z).astype(np.int64)
        return labels

    def _tsne(self, E: np.ndarray) -> np.ndarray:
        from sklearn.manifold import TSNE

        n = E.shape[0]
        perplexity = float(min(self.perplexity, max(1.0, (n - 1) / 3.0)))
        Y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=self.random_state).fit_transform(
            E.astype(np.float64))
        return Y.astype(np.float32)

    def _umap(self, E: np.ndarray) -> np.ndarray | None:
        if self.umap is False:
            return None
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            if self.umap is True:
                raise SpRAyError("umap=True needs the umap-learn package (pip install umap-learn); "
                                 "use umap='auto' to compute UMAP only where it is installed") from None
            return None
        n = E.shape[0]
        reducer = umap.UMAP(n_components=2, n_neighbors=int(min(15, n - 1)), random_state=self.random_state)
        return np.asarray(reducer.fit_transform(E.astype(np.float64)), dtype=np.float32)


def eigengap(eigenvalues: np.ndarray, tol: float = 1e-9) -> int:
    """The number of clusters ``k >= 2`` the eigengap heuristic suggests (von Luxburg 2007, 8.3):
    the ``k`` whose relative gap ``(lambda_{k+1} - lambda_k) / lambda_{k+1}`` is largest.

    Relative, because the spread inside each cluster (e.g. the position of an object) makes the
    higher eigenvalues grow steadily, so their absolute gaps outgrow the gap after the last
    eigenvalue near 0 that separates the strategies. Eigenvalues below ``tol`` count as 0 (``0 / 0``
    as no gap); ``k = 1`` is not considered (its relative gap is always 1) and fewer than three
    eigenvalues give 1."""
    lam = np.where(np.asarray(eigenvalues, np.float64) < tol, 0.0, np.asarray(eigenvalues, np.float64))
    if lam.size < 3:
        return 1
    upper = lam[2:]
    rel = np.divide(upper - lam[1:-1], upper, out=np.zeros_like(upper), where=upper > 0)
    return int(np.argmax(rel)) + 2


def _list(values: Sequence[Any], limit: int = 10) -> str:
    values = list(values)
    return ", ".join(str(v) for v in values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


# ---------------------------------------------------------------------------------------------- results
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


# ---------------------------------------------------------------------------------------------- runs
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
    from ..io.shards import check_shard_files

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


def _bar(on: bool, total: int, desc: str, unit: str) -> Any:
    if not on:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)
