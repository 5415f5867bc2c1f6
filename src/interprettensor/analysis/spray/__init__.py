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

The package, one module per idea: :mod:`.estimator` (:class:`SpRAy`, :func:`preprocess`,
:func:`eigengap`), :mod:`.storage` (``spray.json`` and ``class-<c>.npz``: :func:`load_spray`,
:class:`SpRAyResults`, :class:`ClassResult`), :mod:`.runs` (reading the explanations of a run),
:mod:`.driver` (:func:`spray`) and :mod:`.virelay` (the ViRelAy project export, :func:`export_virelay`;
imported on use, as it needs h5py and PyYAML only when it runs).
"""

from __future__ import annotations

from .driver import spray
from .estimator import CLUSTERINGS, NORMALISATIONS, SMALL, SpRAy, SpRAyError, eigengap, preprocess  # noqa: F401
from .runs import read_features, run_files  # noqa: F401 - names the module had before it was split
from .storage import FORMAT, SPRAY_DIR, SPRAY_JSON, ClassResult, SpRAyResults, load_spray  # noqa: F401

__all__ = ["SpRAy", "SpRAyError", "ClassResult", "SpRAyResults", "preprocess", "eigengap", "spray", "load_spray",
           "SPRAY_DIR", "SPRAY_JSON", "CLUSTERINGS", "NORMALISATIONS"]
