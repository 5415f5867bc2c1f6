"""Streaming the shards a writer owes through the explainer and writing each as it completes
(:func:`_explain_shards`): the batches of the owed sample ranges, a progress bar, NaN or infinite inputs
stopped or skipped, and :class:`_ShardWriter`, which collects the explained rows of each shard and writes
it (``shard-K.npz``, then the manifest) once all its samples are in. Errors name the shards finished
before them (a rerun continues after those)."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np

from ...engine.explainer import Explainer
from .. import shards
from ..shards import RERUN, RunState, StreamError, shard_path
from ..sources import Source, _list
from ..workers import Worker
from .folder import _owned_todo
from .pipeline import _batches, _distributed, _explained, _ReadError


def _explain_shards(explainer: Explainer, source: Source, out: str, state: RunState, done: dict,
                    wk: Worker | None, shard_size: int, batch_size: int, strategy: Any, chief: bool,
                    on_shard: Callable | None, nonfinite: str, progress: bool, store_inputs: bool = False) -> dict:
    """Stream the shards this writer still owes through the explainer and write each as it completes;
    returns the entries of the shards written."""
    if source.n is not None:
        todo = _owned_todo(done, source.n, shard_size, wk)
        ranges = _merge_ranges([(k * shard_size, min((k + 1) * shard_size, source.n)) for k in todo])
        total = sum(hi - lo for lo, hi in ranges)
    else:
        first = max(done) + 1 if done else 0
        ranges, total = [(first * shard_size, None)], None
    batches = _batches(source.chunks(ranges), shard_size, batch_size, source.n, full=strategy is not None)
    if strategy is None:
        results = _explained(explainer, batches, source.sample_shape)
    else:
        results = _distributed(explainer, batches, source.sample_shape, source.x_dtype,
                               min(batch_size, shard_size), strategy)
    writer = _ShardWriter(out, state, source, shard_size, chief, on_shard, done, store_inputs)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="explaining" + ("" if wk is None else f" (worker {wk})"), unit="sample",
               disable=not progress, file=sys.stderr, leave=False)
    try:
        try:
            for idx, rel, tgt, outp, x, ok, lab in results:
                if nonfinite == "error" and not ok.all():
                    bad = np.sort(idx[~ok])
                    files = (f" (files: {_list([source.names[i] for i in bad])})" if source.names is not None
                             else "")
                    raise StreamError(f"sample(s) {_list(bad)}{files} hold NaN or infinite values; fix them, or "
                                      f"pass nonfinite='skip' to explain the others (relevance 0, valid False)")
                writer.add(idx, rel, tgt, outp, x, ok, lab)
                bar.update(len(idx))
        except _ReadError as e:
            raise _read_error(e.error) from None
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stops the reading thread
        writer.flush()
        per_sample = getattr(source, "per_sample", None)
        if per_sample is not None and source.n is None:
            seen = _stream_total(done, writer.written, shard_size)
            if seen != len(per_sample):
                raise StreamError(f"target has {len(per_sample)} class indices, but the data has {seen} samples; "
                                  f"give one per sample")
    except StreamError as e:
        if RERUN in str(e) or "no shard was complete" in str(e):
            raise
        raise StreamError(f"{e}; {writer.finished()}") from None
    finally:
        bar.close()
    return writer.written


class _ShardWriter:
    """Collects the explained rows of each shard and writes the shard when all its samples are in."""

    def __init__(self, out: str, state: RunState, source: Source, shard_size: int, chief: bool,
                 on_shard: Callable | None, done: dict, store_inputs: bool = False):
        self.out, self.state, self.source, self.shard_size = out, state, source, shard_size
        self.store_inputs = store_inputs
        self.chief, self.on_shard, self.done = chief, on_shard, done
        self.pending: dict[int, list] = {}
        self.written: dict[int, dict] = {}

    def expected(self, k: int) -> int | None:
        n = self.source.n
        return None if n is None else min(self.shard_size, n - k * self.shard_size)

    def add(self, idx: np.ndarray, rel: np.ndarray, tgt: np.ndarray, outp: np.ndarray, x: np.ndarray,
            ok: np.ndarray, lab: np.ndarray) -> None:
        for k in np.unique(idx // self.shard_size):
            sel = (idx // self.shard_size) == k
            self.pending.setdefault(int(k), []).append((idx[sel], rel[sel], tgt[sel], outp[sel], x[sel], ok[sel],
                                                        lab[sel]))
            count = sum(len(p[0]) for p in self.pending[int(k)])
            if count == (self.expected(int(k)) or self.shard_size):
                self.write(int(k))

    def flush(self) -> None:
        """The end of the stream: a shard still collecting is the input's last (shorter) one."""
        for k in sorted(self.pending):
            want = self.expected(k)
            got = sum(len(p[0]) for p in self.pending[k])
            if want is not None and got != want:
                raise StreamError(f"internal error: shard {k} got {got} of its {want} samples")
            self.write(k)

    def write(self, k: int) -> None:
        parts = self.pending.pop(k)
        idx, rel, tgt, outp, x, ok, lab = (np.concatenate([p[j] for p in parts]) for j in range(7))
        order = np.argsort(idx, kind="stable")
        idx, rel, tgt, outp, x, ok, lab = (v[order] for v in (idx, rel, tgt, outp, x, ok, lab))
        start = k * self.shard_size
        if not np.array_equal(idx, np.arange(start, start + len(idx))):
            raise StreamError(f"internal error: shard {k} holds samples {idx[:5]}..., not {start}...")
        arrays = {"relevance": rel, "indices": idx.astype(np.int64), "targets": tgt.astype(np.int32),
                  "outputs": outp, "valid": ok.astype(bool)}
        if self.source.names is not None:
            arrays["names"] = np.array([self.source.names[i] for i in idx])
        if self.store_inputs:  # as explained: skipped samples (NaN/inf) were explained as zeros
            arrays["inputs"] = np.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0).astype(np.float32)
        if self.source.has_labels:
            arrays["labels"] = lab.astype(np.int64)
        if self.on_shard is not None and self.chief:
            self.on_shard(k, dict(arrays, x=x))
        path = shard_path(self.out, k)
        if self.chief:
            try:
                shards.write_npz(path, arrays)
            except OSError as e:
                raise shards.write_error(e, f"shard {k}", path, self.finished()) from None
        entry = {"file": os.path.basename(path), "start": start, "count": int(len(idx)),
                 "nonfinite": int((~arrays["valid"]).sum())}
        self.written[k] = entry
        self.state.shards[k] = entry
        if self.chief:
            try:
                self.state.commit()
            except OSError as e:
                del self.state.shards[k]
                raise shards.write_error(e, f"shard {k}", self.state.path, self.finished()) from None

    def finished(self) -> str:
        ks = sorted({**self.done, **self.written})
        if not ks:
            return "no shard was complete yet"
        n = sum(({**self.done, **self.written})[k]["count"] for k in ks)
        which = f"shard {ks[0]} is" if len(ks) == 1 else f"shards {_span(ks)} are"
        return f"{which} complete ({n} samples) in {self.out!r}; {RERUN}"


def _span(ks: list[int]) -> str:
    if ks == list(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}..{ks[-1]}"
    return ", ".join(map(str, ks[:8])) + (" ..." if len(ks) > 8 else "")


def _stream_total(done: dict, computed: dict, shard_size: int) -> int:
    return sum(e["count"] for e in {**done, **computed}.values())


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _read_error(e: BaseException) -> StreamError:
    """An exception raised while reading the input, as a :class:`StreamError` (one already is)."""
    if isinstance(e, StreamError):
        return e
    msg = str(e).strip()
    first = msg.splitlines()[0] if msg else ""
    return StreamError(f"reading the input failed: {type(e).__name__}{': ' + first if first else ''}")
