"""SpRAy on 10,000 heatmaps of one class (a script, not a timed test).

The heatmaps: 224 x 224 with three planted strategies (relevance on a corner "watermark", on a central
object at a random offset, on a bar along the bottom edge), random strength and Gaussian noise; they
are generated in chunks of 500 (generation is not timed) and each chunk is reduced to the 32 x 32
grid at once, as :func:`interprettensor.analysis.spray.spray` does shard by shard. Timed: the
preprocessing, then :meth:`SpRAy.fit_features` step by step (kNN graph, spectral embedding with
eigenvalues, k-means for k = 2..8 and HDBSCAN) and, apart, the 2-D t-SNE display embedding. Run::

    python benchmarks/bench_spray.py                    # 10,000 heatmaps, 224 x 224
    python benchmarks/bench_spray.py --n 2000 --size 64  # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from interprettensor.analysis.spray import SpRAy


def heatmap_chunks(n: int, size: int, chunk: int, seed: int = 0):
    """Yield ``(heatmaps (c, size, size), strategy (c,))`` chunks with three planted strategies."""
    rng = np.random.default_rng(seed)
    s = size // 8
    for start in range(0, n, chunk):
        c = min(chunk, n - start)
        R = rng.normal(0.0, 0.3, (c, size, size)).astype(np.float32)
        strategy = rng.integers(0, 3, c)
        amp = rng.uniform(2.0, 4.0, c).astype(np.float32)
        for i in range(c):
            if strategy[i] == 0:
                R[i, :s, :s] += amp[i]
            elif strategy[i] == 1:
                r, q = rng.integers(3 * s, 4 * s, 2)
                R[i, r:r + 2 * s, q:q + 2 * s] += amp[i]
            else:
                R[i, -s:, s:-s] += amp[i]
        yield R, strategy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="heatmaps (default 10000)")
    ap.add_argument("--size", type=int, default=224, help="heatmap side (default 224)")
    ap.add_argument("--grid", type=int, default=32, help="pooled grid side (default 32)")
    ap.add_argument("--threads", type=int, default=None, help="limit native threads (default: libraries' own)")
    args = ap.parse_args()
    print(f"SpRAy on {args.n} heatmaps of {args.size}x{args.size} pooled to {args.grid}x{args.grid}; "
          f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, numpy {np.__version__}")
    est = SpRAy(n_neighbors=10, n_eigenvectors=16, clusterings=("kmeans", "hdbscan"), n_clusters=range(2, 9),
                grid=args.grid, tsne=True, umap=False, random_state=0, n_threads=args.threads)
    feats, truth, t_pre = [], [], 0.0
    for R, strategy in heatmap_chunks(args.n, args.size, 500):
        t = time.perf_counter()
        feats.append(est.preprocess(R))
        t_pre += time.perf_counter() - t
        truth.append(strategy)
    X, y = np.concatenate(feats), np.concatenate(truth)
    est.fit_features(X)
    tm = est.timings_
    core = t_pre + tm["affinity"] + tm["spectral"] + tm["clustering"]
    from sklearn.metrics import adjusted_rand_score

    print(f"preprocessing {t_pre:6.1f} s   (streamed in chunks of 500)")
    print(f"kNN graph     {tm['affinity']:6.1f} s   (k = 10, {X.shape[1]} features)")
    print(f"spectral      {tm['spectral']:6.1f} s   (16 eigenvectors; eigengap suggests {est.eigengap_})")
    print(f"clustering    {tm['clustering']:6.1f} s   (k-means k = 2..8, HDBSCAN)")
    print(f"SpRAy total   {core:6.1f} s   (without the display embedding)")
    print(f"t-SNE         {tm['tsne']:6.1f} s   (2-D display embedding, timed apart)")
    print(f"adjusted Rand index vs the planted strategies: kmeans-3 {adjusted_rand_score(y, est.labels_['kmeans-3']):.3f}, "
          f"hdbscan {adjusted_rand_score(y, est.labels_['hdbscan']):.3f}")


if __name__ == "__main__":
    main()
