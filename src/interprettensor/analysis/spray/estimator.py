"""SpRAy's estimator: preprocessing heatmaps to feature vectors (:func:`preprocess`), the kNN
affinity graph, the spectral embedding and its eigengap (:func:`eigengap`), the clusterings and the
2-D display embeddings (:class:`SpRAy`, scikit-learn style). Numpy only at import; scikit-learn and
scipy are imported when fitting. See :mod:`interprettensor.analysis.spray` for the method."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ...io.shards import StreamError

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
