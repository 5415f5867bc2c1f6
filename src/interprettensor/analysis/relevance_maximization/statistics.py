"""The statistics pass of relevance maximisation and the top ``k``: every sample's channel relevances and
largest activations, one compiled pass per batch, written shard by shard (``stats-K.npz``, atomically;
finished shards are skipped when a run is resumed: :func:`_statistics`, :func:`_finished`), then the top
``k`` samples per channel and mode merged shard by shard, in memory independent of the data set's size
(:func:`_merge`, :func:`_top_k`)."""

from __future__ import annotations

import os

import numpy as np

from ...engine.conditions import ConditionalExplainer
from ...io.shards import StreamError, write_npz
from ...io.sources import Source
from .inputs import _samples
from .storage import MODES, _stats_path


def _top_k(best_v: np.ndarray, best_i: np.ndarray, values: np.ndarray, indices: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.concatenate([best_v, values.T.astype(np.float64)], axis=1)
    i = np.concatenate([best_i, np.broadcast_to(indices[None, :], (values.shape[1], len(indices)))], axis=1)
    order = np.lexsort((i, -v), axis=-1)[:, :k]  # per channel: largest value first, ties to the lower index
    return np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)


def _statistics(cx: ConditionalExplainer, source: Source, out: str, shard_size: int, batch_size: int,
                progress: bool) -> int:
    """Write ``stats-K.npz`` for every shard not finished yet; returns the number of samples."""
    from tqdm.auto import tqdm

    names = [s.name for s in cx.sites]
    bar = tqdm(total=source.n, desc="concepts: channel statistics", unit="sample", disable=not progress)
    n_total = 0
    shard = 0
    while True:
        lo = shard * shard_size
        if source.n is not None and lo >= source.n:
            break
        path = _stats_path(out, shard)
        done = _finished(path, lo, shard_size, source.n)
        if done is not None:
            n_total += done
            bar.update(done)
            shard += 1
            if done < shard_size:
                break
            continue
        arrays: dict[str, list] = {"indices": [], "targets": []}
        for name in names:
            arrays[f"relevance/{name}"], arrays[f"activation/{name}"] = [], []
        for idx, x, t in _samples(source, [(lo, lo + shard_size)], cx.dtype, batch_size):
            rel, act, outp = cx.channel_statistics(x, t, return_output=True)
            explained = np.where(t < 0, np.argmax(outp.reshape(len(t), -1), axis=1), t)
            arrays["indices"].append(idx)
            arrays["targets"].append(explained.astype(np.int64))
            for name in names:
                arrays[f"relevance/{name}"].append(rel[name].astype(np.float32))
                arrays[f"activation/{name}"].append(act[name].astype(np.float32))
            bar.update(len(idx))
        count = sum(len(i) for i in arrays["indices"])
        if count == 0:
            break
        write_npz(path, {k: np.concatenate(v) for k, v in arrays.items()})
        n_total += count
        shard += 1
        if count < shard_size:
            break
    bar.close()
    if n_total == 0:
        raise StreamError("the data set is empty: no reference examples to find")
    return n_total


def _finished(path: str, lo: int, shard_size: int, n: int | None) -> int | None:
    """The number of samples in a finished statistics shard, ``None`` if it is missing or incomplete."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as z:
            idx = z["indices"]
    except Exception:  # noqa: BLE001 - missing, truncated (BadZipFile) or foreign: not finished, recomputed
        return None
    want = shard_size if n is None else min(shard_size, n - lo)
    if len(idx) == 0 or idx[0] != lo or not np.array_equal(idx, np.arange(lo, lo + len(idx))):
        return None
    if n is not None and len(idx) != want:
        return None
    return int(len(idx))


def _merge(cx: ConditionalExplainer, out: str, n: int, shard_size: int, k: int) -> dict:
    """Top ``k`` per channel and mode, merged shard by shard: ``{layer: {mode: (values, indices),
    'mean': mean relevance}}``."""
    top: dict = {}
    for s in cx.sites:
        top[s.name] = {m: (np.zeros((s.channels, 0)), np.zeros((s.channels, 0), np.int64)) for m in MODES}
        top[s.name]["sum"] = np.zeros(s.channels, np.float64)
    for shard in range(0, (n + shard_size - 1) // shard_size):
        with np.load(_stats_path(out, shard)) as z:
            idx = z["indices"]
            for s in cx.sites:
                for m in MODES:
                    v, i = top[s.name][m]
                    top[s.name][m] = _top_k(v, i, z[f"{m}/{s.name}"], idx, k)
                top[s.name]["sum"] += z[f"relevance/{s.name}"].astype(np.float64).sum(0)
    return top
