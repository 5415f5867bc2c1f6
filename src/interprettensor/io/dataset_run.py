"""Explain a whole data set, shard by shard, resumably, on one or many workers: :func:`explain_dataset`.

The input (a ``tf.data.Dataset``, a numpy array, or a folder of images / ``.npy`` arrays;
:mod:`.sources`) is streamed through one compiled :class:`~interprettensor.Explainer` with ``tf.data``
prefetching, in batches that never cross a shard boundary (each shard is computed the same way however
the run is split), and written into a run directory (:mod:`.shards`). A run that is killed and started
again with the same arguments skips every finished shard; a run with another model, rule or input
refuses to touch the folder.

Many machines: start ``N`` independent processes with ``worker=(i, N)`` (``--worker i/N``, or
``worker='auto'`` inside a Slurm job array or a Kubernetes indexed job, :mod:`.workers`); worker ``i``
explains the shards ``k % N == i``. Each finishing worker tries :func:`~.shards.finalize_run`, which
succeeds for the last one; ``interprettensor finalize OUT`` checks and completes a run by hand.

Many devices of one machine (``MirroredStrategy``) or a ``MultiWorkerMirroredStrategy`` cluster: each
batch is split over the replicas and gathered back in sample order; only the chief writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from ..engine.explainer import Explainer
from . import shards
from .inputs import InputError, model_input_shape
from .shards import MANIFEST, RERUN, RunState, StreamError, load_relevances, shard_path
from .sources import Source, _list, _shape_str, _TOO_FEW, make_source, parse_target
from .workers import Worker, parse_worker

__all__ = ["explain_dataset", "load_relevances", "finalize_run", "StreamError", "StreamResult"]

finalize_run = shards.finalize_run


@dataclasses.dataclass
class StreamResult:
    """What :func:`explain_dataset` did: ``skipped`` shards were already finished, ``computed`` were
    written by this call; ``nonfinite`` samples (over the shards this call saw) held NaN or infinite
    values and were skipped (``nonfinite='skip'``: relevance 0, ``valid`` False). ``complete``: the
    whole run is finished and ``manifest.json`` lists every shard (a worker's run is complete once the
    last worker finishes)."""

    out: str
    n_samples: int
    shards: int
    skipped: int
    computed: int
    explainer: Explainer
    nonfinite: int = 0
    worker: Worker | None = None
    complete: bool = True


def explain_dataset(model: keras.Model, dataset: Any, rule: Any = "epsilon", out: str = "explanations", *,
                    shard_size: int = 1024, batch_size: int = 64, strategy: tf.distribute.Strategy | None = None,
                    worker: Any = None, target: int | str | None = None, progress: bool = True,
                    resume: bool = True, input_range: Sequence[float] = (0.0, 1.0), color_mode: str = "auto",
                    resize: bool = False, on_shard: Callable[[int, dict], None] | None = None,
                    nonfinite: str = "error", store_inputs: bool = False, **params: Any) -> StreamResult:
    """Explain every sample of ``dataset`` with LRP and write the results to ``out`` shard by shard.

    Args:
        model: a single-input Keras model (see :class:`~interprettensor.Explainer`).
        dataset: a ``tf.data.Dataset`` yielding ``x`` or ``(x, label)`` (samples or batches; a label is a
            class index or a one-hot vector), a numpy array ``x`` or a pair ``(x, labels)``, or a folder /
            a list of image files and ``.npy`` arrays (read like ``interprettensor explain`` does: pixels
            0..255 mapped to ``input_range``, ``color_mode`` and ``resize`` as there). Files have labels
            from a class-per-subfolder layout (``digits/0/*.png``, ``digits/1/*.png``, ...: integer
            subfolder names are the classes, other names are sorted into classes 0..K-1, recorded as
            ``"classes"`` in the manifest's identity) or given as a pair ``(files, labels)`` (one integer
            per input in input order, -1: unknown).
        rule: rule, preset or :class:`~interprettensor.Composite`; ``**params`` are its parameters and the
            other :class:`~interprettensor.Explainer` options (``jit_compile=``, ``dtype=``, ``layer=``, ...).
        out: the run directory: ``shard-00000.npz``, ... and ``manifest.json``.
        shard_size: samples per shard file.
        batch_size: samples per LRP pass (over all replicas under a strategy); bounds the peak memory
            together with ``shard_size``. Batches never cross a shard boundary.
        strategy: a ``tf.distribute.Strategy``: batches are split over its replicas; the result equals
            that of one device.
        worker: ``None`` (this process explains everything), ``(i, N)`` or ``'i/N'`` (worker ``i`` of
            ``N`` independent processes sharing ``out``: it explains the shards ``k % N == i``), or
            ``'auto'`` (from a Slurm job array or a Kubernetes indexed job, see :mod:`.workers`). Needs an
            input of known length.
        target: ``None``: the label if the data has labels, else the predicted class; ``'predicted'``;
            ``'label'``; a class index for all samples; or one class index per sample (a list or an
            integer array of length N, values >= 0; a ``tf.data`` input then needs a known length).
        progress: show a progress bar (tqdm, on stderr).
        resume: continue a run found in ``out`` (same model, rule, input and shard size, else an error);
            ``False``: delete its shards (a worker: its own shards) and start over.
        on_shard: called as ``on_shard(k, arrays)`` before shard ``k`` is written; ``arrays`` holds the
            shard's arrays and the inputs under ``'x'`` (the CLI writes heatmap PNGs with it).
        nonfinite: what to do with samples that hold NaN or infinite values (checked on every batch,
            in the compute dtype): ``'error'`` (default) stops with a :class:`StreamError` naming them
            (indices, and file names for files), keeping the finished shards; ``'skip'`` explains the
            others and gives the skipped ones relevance 0, output 0, target -1 where it was to be
            predicted, and ``valid`` False (counted in :attr:`StreamResult.nonfinite`).
        store_inputs: also write ``inputs`` (float32, the inputs as explained: in the compute dtype,
            zeros for skipped samples) into each shard, for viewers and exports; part of the run's
            identity (a resumed run must pass the same).

    Each shard ``shard-00000.npz``, ... holds ``relevance`` (float32, shaped like the inputs), ``indices``
    (int64, the samples' positions in the input), ``targets`` (int32, the explained classes),
    ``outputs`` (float32 ``(n, units)``, the explained output, e.g. the logits), ``valid`` (bool, False
    for skipped samples), for files ``names``, with ``store_inputs`` ``inputs``, and where the data has
    labels ``labels`` (int64 class indices, -1 where unknown); :func:`load_relevances` concatenates them.

    Returns:
        a :class:`StreamResult` (samples, shards, how many were skipped as finished and how many
        computed, samples skipped for NaN/inf, whether the run is complete).

    Raises:
        StreamError: for a folder of another run, a full disk, an unreadable input file, bad data
            (NaN or inf with ``nonfinite='error'``), a bad ``target``; the shards finished before stay
            intact and a rerun continues after them.

    Example::

        it.explain_dataset(model, ds.batch(256), rule="epsilon_gamma_box", out="runs/val",
                           low=-1.0, high=1.0)
        R = it.load_relevances("runs/val")["relevance"]

        # on 8 machines (or as a Slurm array 0-7, worker="auto"), then `interprettensor finalize runs/val`
        it.explain_dataset(model, files, out="runs/val", worker=(i, 8))
    """
    if shard_size < 1 or batch_size < 1:
        raise StreamError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if nonfinite not in ("error", "skip"):
        raise StreamError(f"nonfinite must be 'error' or 'skip', got {nonfinite!r}")
    wk = parse_worker(worker)
    if wk is not None and strategy is not None and _multi_worker(strategy):
        raise StreamError("worker= splits a data set over independent processes; a MultiWorkerMirroredStrategy "
                          "already shares one run between its workers: use one or the other")
    explainer = _make_explainer(model, rule, strategy, params)
    source = _open_source(model, dataset, target, input_range, color_mode, resize)
    if wk is not None and source.n is None:
        raise StreamError("worker= needs an input of known length (an array, files, or a tf.data.Dataset with a "
                          "known cardinality: dataset.apply(tf.data.experimental.assert_cardinality(n)))")
    identity = _run_identity(model, explainer, rule, params, source, shard_size, target, store_inputs)
    chief = _is_chief(strategy)
    state, done = _open_run(out, identity, wk, resume, chief, source.n)
    if source.n is not None and not _owned_todo(done, source.n, shard_size, wk):
        return _finish(out, state, done, {}, explainer, wk, chief, source.n, shard_size)
    computed = _explain_shards(explainer, source, out, state, done, wk, shard_size, batch_size, strategy, chief,
                               on_shard, nonfinite, progress, store_inputs)
    n_total = source.n if source.n is not None else _stream_total(done, computed, shard_size)
    return _finish(out, state, done, computed, explainer, wk, chief, n_total, shard_size)


# ---------------------------------------------------------------------------------------------- steps
def _make_explainer(model: Any, rule: Any, strategy: Any, params: dict) -> Explainer:
    if strategy is not None:
        with strategy.scope():
            explainer = Explainer(model, rule, **params)
    else:
        explainer = Explainer(model, rule, **params)
    if len(explainer.graph.inputs) != 1:
        raise StreamError(f"explain_dataset supports single-input models; this one has "
                          f"{len(explainer.graph.inputs)} inputs")
    return explainer


def _open_source(model: Any, dataset: Any, target: Any, input_range: Sequence[float], color_mode: str,
                 resize: bool) -> Source:
    """The input, checked against the model (which an unbuilt subclassed model is built for)."""
    try:
        expected = model_input_shape(model)  # functional inputs, build config, first layer; else the data's
    except InputError as e:
        raise StreamError(str(e)) from None
    source = make_source(model, dataset, target, expected, input_range=input_range, color_mode=color_mode,
                         resize=resize)
    if not getattr(model, "built", True):  # an unbuilt subclassed model (it.Sequential): built on the data
        try:
            model.build((None,) + tuple(source.sample_shape))
        except Exception as e:  # noqa: BLE001 - Keras raises many kinds
            raise StreamError(f"cannot build the model for inputs of shape {_shape_str(source.sample_shape)} per "
                              f"sample: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                              ) from None
    return source


def _open_run(out: str, identity: dict, wk: Worker | None, resume: bool, chief: bool,
              n: int | None) -> tuple[RunState, dict]:
    """Create or reopen the run directory: check that it holds this run (or nothing), start over if
    asked, and find the finished shards on disk (those listed and those written just before a kill)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise StreamError(f"cannot create the output folder {out!r}: {e.strerror or e}") from None
    own_manifest = os.path.join(out, MANIFEST) if wk is None else shards.worker_manifest_path(out, wk.index, wk.count)
    if not resume and chief:
        _start_over(out, wk, own_manifest, identity["shard_size"])
    manifests = [m for m in [shards.read_manifest(out)] if m is not None] + list(shards.worker_manifests(out).values())
    for m in manifests:
        _check_identity(out, m.get("identity", {}), identity)
    state = RunState(own_manifest, identity, None if wk is None else (wk.index, wk.count))
    shard_size = int(identity["shard_size"])
    done: dict[int, dict] = {}
    k = 0
    while n is None or k * shard_size < n:
        if wk is None or wk.owns(k):
            count = None if n is None else min(shard_size, n - k * shard_size)
            entry = shards.verify_shard(out, k, shard_size, count)
            if entry is None:
                if n is None:  # a stream of unknown length is written in order
                    break
            else:
                done[k] = entry
                if n is None and entry["count"] < shard_size:
                    break
        k += 1
    state.shards.update(done)
    if chief:
        _commit(state, out)
    return state, done


def _start_over(out: str, wk: Worker | None, own_manifest: str, shard_size: int) -> None:
    """``resume=False``: delete this writer's shards and manifest (a worker only its own)."""
    for f in os.listdir(out):
        m = shards._SHARD_RE.match(f)
        if m and (wk is None or wk.owns(int(m.group(1)))):
            os.unlink(os.path.join(out, f))
    for path in ([os.path.join(out, MANIFEST)] if wk is None else []) + [own_manifest]:
        if os.path.exists(path):
            os.unlink(path)


def _owned_todo(done: dict, n: int, shard_size: int, wk: Worker | None) -> list[int]:
    n_shards = -(-n // shard_size)
    return [k for k in range(n_shards) if (wk is None or wk.owns(k)) and k not in done]


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
    ds = _batches(source.dataset(ranges, explainer.dtype), shard_size, batch_size, source.n, strategy)
    step = _make_step(explainer, source.sample_shape, strategy)
    if strategy is not None:
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = strategy.experimental_distribute_dataset(ds.with_options(opts))
    writer = _ShardWriter(out, state, source, shard_size, chief, on_shard, done, store_inputs)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="explaining" + ("" if wk is None else f" (worker {wk})"), unit="sample",
               disable=not progress, file=sys.stderr, leave=False)
    try:
        try:
            for batch in ds:
                idx, rel, tgt, outp, x, ok, lab = step(batch)
                if nonfinite == "error" and not ok.all():
                    bad = np.sort(idx[~ok])
                    files = (f" (files: {_list([source.names[i] for i in bad])})" if source.names is not None
                             else "")
                    raise StreamError(f"sample(s) {_list(bad)}{files} hold NaN or infinite values; fix them, or "
                                      f"pass nonfinite='skip' to explain the others (relevance 0, valid False)")
                writer.add(idx, rel, tgt, outp, x, ok, lab)
                bar.update(len(idx))
        except tf.errors.OpError as e:
            if source.error:
                raise source.error[0]
            raise _op_error(e, writer.finished()) from None
        if source.error:
            raise source.error[0]
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


def _finish(out: str, state: RunState, done: dict, computed: dict, explainer: Explainer, wk: Worker | None,
            chief: bool, n_total: int, shard_size: int) -> StreamResult:
    """Record this writer as finished and, if every shard of the run is there, write ``manifest.json``."""
    state.complete, state.n_samples = True, int(n_total)
    complete = False
    if chief:
        _commit(state, out)
        try:
            shards.finalize_run(out, n_total)
            complete = True
        except StreamError:
            if wk is None:
                raise
    mine = {**done, **computed}
    n_mine = sum(e["count"] for e in mine.values())
    nonfinite = sum(int(e.get("nonfinite", 0)) for e in mine.values())
    return StreamResult(out, n_mine, len(mine), len(done), len(computed), explainer, nonfinite, wk, complete)


def _commit(state: RunState, out: str) -> None:
    try:
        state.commit()
    except OSError as e:
        raise shards.write_error(e, "the manifest", state.path, "no shard was lost") from None


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


def _batches(ds: tf.data.Dataset, shard_size: int, batch_size: int, n: int | None, strategy: Any) -> tf.data.Dataset:
    """Batches of ``batch_size`` that never cross a shard boundary: each shard's last batch is filled up
    with padding rows (index -1, zeros; dropped after the pass), so a shard is computed in the same
    batches whichever worker, resumed run or device count computes it."""
    S, B = int(shard_size), min(int(batch_size), int(shard_size))

    def expand(i: tf.Tensor, x: tf.Tensor, t: tf.Tensor, lab: tf.Tensor) -> tf.data.Dataset:
        k = i // S
        length = tf.constant(S, tf.int64) if n is None else tf.minimum(tf.constant(S, tf.int64), n - k * S)
        pads = tf.where(i - k * S == length - 1, (-length) % B, tf.constant(0, tf.int64))
        row = tf.data.Dataset.from_tensors((i, x, t, lab))
        pad = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.zeros_like(x), tf.constant(0, tf.int32),
                                            tf.constant(-1, tf.int32)))
        return row.concatenate(pad.repeat(pads))

    if S % B:
        ds = ds.flat_map(expand)
    ds = ds.batch(B)
    if strategy is not None:
        # every step gets a full global batch (padding has index -1 and is dropped): no replica gets
        # an empty batch, and the shapes stay fixed
        if B < strategy.num_replicas_in_sync:
            raise StreamError(f"batch_size ({B}, at most shard_size) must be at least the number of replicas "
                              f"({strategy.num_replicas_in_sync})")
        ds = ds.map(lambda i, x, t, lab: _pad(i, x, t, lab, B))
    return ds.prefetch(tf.data.AUTOTUNE)


def _op_error(e: tf.errors.OpError, finished: str) -> StreamError:
    msg = e.message or str(e)
    if "target out of range" in msg:
        detail = msg[msg.index("target out of range"):].split("]")[0].split("\n")[0]
        return StreamError(f"{detail}; {finished}")
    if _TOO_FEW in msg:
        detail = msg[msg.index(_TOO_FEW):].split("\n")[0]
        return StreamError(f"{detail[:detail.index('per sample') + 10]}; {finished}")
    first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return StreamError(f"reading or explaining the input failed: {first}; {finished}")


def _model_fingerprint(model: Any) -> str:
    h = hashlib.sha256()
    try:
        cfg = json.dumps(model.get_config(), sort_keys=True, default=str)
    except Exception:  # noqa: BLE001 - subclassed models without a config
        cfg = type(model).__qualname__
    h.update(cfg.encode())
    for w in model.weights:
        v = np.asarray(keras.ops.convert_to_numpy(w))
        h.update(f"{v.shape}:{v.dtype}".encode())  # not w.path: it changes when a saved model is loaded
        h.update(np.ascontiguousarray(v).view(np.uint8).reshape(-1).tobytes())
    return h.hexdigest()[:16]


def _run_identity(model: Any, explainer: Explainer, rule: Any, params: dict, source: Source, shard_size: int,
                  target: Any, store_inputs: bool = False) -> dict:
    rules = json.dumps({k: repr(v) for k, v in explainer.rule_map().items()}, sort_keys=True)
    identity = {
        "model": f"{getattr(model, 'name', type(model).__name__)} (fingerprint {_model_fingerprint(model)})",
        "rule": f"{rule!r} {json.dumps(params, sort_keys=True, default=repr)} "
                f"(rules {hashlib.sha256(rules.encode()).hexdigest()[:12]})",
        "input": source.description,
        "sample_shape": list(source.sample_shape),
        "shard_size": int(shard_size),
        "target": parse_target(target).describe(),
        "explained": f"layer={explainer.layer!r} output={explainer.start_key!r}"[:200],
        "dtype": f"{explainer.dtype.name}/{explainer.backward_dtype.name}",
    }
    # the optional arrays: only named when there are any, so that runs written without them still resume
    stored = [name for name, on in (("inputs", store_inputs), ("labels", source.has_labels)) if on]
    if stored:
        identity["stored"] = stored
    class_names = getattr(source, "class_names", None)  # class subfolders by name: class i is class_names[i]
    if class_names:
        identity["classes"] = list(class_names)
    return identity


_LABELS = {"model": "model", "rule": "rule", "input": "input", "sample_shape": "sample shape",
           "shard_size": "shard size", "target": "target", "explained": "explained output", "dtype": "dtype",
           "stored": "stored arrays (store_inputs, labels)", "classes": "classes (subfolder names)"}


def _check_identity(out: str, old: dict, new: dict) -> None:
    diffs = [f"{_LABELS.get(k, k)}: the folder has {old.get(k)!r}, this run {new.get(k)!r}"
             for k in list(new) + [k for k in old if k not in new] if old.get(k) != new.get(k)]
    if diffs:
        raise StreamError(f"the output folder {out!r} holds shards of another run ({'; '.join(diffs)}). Resume it "
                          f"with the same arguments, or choose another output folder (or start over: resume=False)")


def _multi_worker(strategy: Any) -> bool:
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def _is_chief(strategy: Any) -> bool:
    resolver = getattr(getattr(strategy, "extended", None), "_cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0)


def _pad(i: tf.Tensor, x: tf.Tensor, t: tf.Tensor, lab: tf.Tensor, size: int) -> tuple:
    k = size - tf.shape(i)[0]
    return (tf.concat([i, tf.fill([k], tf.constant(-1, tf.int64))], 0),
            tf.concat([x, tf.zeros(tf.concat([[k], tf.shape(x)[1:]], 0), x.dtype)], 0),
            tf.concat([t, tf.zeros([k], tf.int32)], 0),
            tf.concat([lab, tf.fill([k], tf.constant(-1, tf.int32))], 0))


def _make_step(explainer: Explainer, sample_shape: tuple, strategy: Any) -> Callable:
    """One batch -> numpy ``(indices, relevance, targets, outputs, x, valid, labels)`` (float32 arrays, in
    sample order, padding dropped). Samples with NaN or inf are explained as zeros and get relevance 0, outputs
    0, target -1 where it was to be predicted, and ``valid`` False. The first batch checks the forward
    pass against the model (:meth:`~interprettensor.Explainer.check_forward`)."""
    spec = [tf.TensorSpec((None,) + tuple(sample_shape), explainer.dtype)]
    if strategy is not None:
        with strategy.scope():
            fn = explainer.compiled(spec)
    else:
        fn = explainer.compiled(spec)

    def replica(i, x, t, lab):
        n = tf.shape(x)[0]
        ok = tf.reduce_all(tf.math.is_finite(tf.reshape(x, (n, -1))), axis=-1)
        per_sample = lambda v: tf.reshape(ok, tf.concat([[n], tf.ones([tf.rank(v) - 1], tf.int32)], 0))  # noqa: E731
        x_ok = tf.where(per_sample(x), x, tf.zeros_like(x))
        rel, _, out, model_out = fn((x_ok,), t)
        flat = tf.reshape(out, (n, -1))
        resolved = tf.where(t < 0, tf.argmax(flat, axis=-1, output_type=tf.int32), t)
        resolved = tf.where(ok | (t >= 0), resolved, -1)
        rel0 = tf.where(per_sample(rel[0]), rel[0], tf.zeros_like(rel[0]))
        flat = tf.where(per_sample(flat), flat, tf.zeros_like(flat))
        return (i, tf.cast(rel0, tf.float32), resolved, tf.cast(flat, tf.float32), tf.cast(x, tf.float32), ok,
                lab, x_ok, model_out)

    if strategy is None:
        def step(batch):
            res = replica(*batch)
            i = res[0].numpy()
            keep = i >= 0
            if not explainer._verified and keep.any():
                first = int(np.flatnonzero(keep)[0])
                explainer.check_forward([res[7][first:]], [o[first:] for o in res[8]])
            return tuple(v.numpy()[keep] for v in res[:7])

        return step

    def replica7(i, x, t, lab):  # collectives gather numbers, not booleans
        res = replica(i, x, t, lab)[:7]
        return res[:5] + (tf.cast(res[5], tf.int32), res[6])

    @tf.function(autograph=False)
    def dist_step(i, x, t, lab):
        return strategy.run(replica7, args=(i, x, t, lab))

    multi_worker = _multi_worker(strategy)

    def step(batch):
        res = dist_step(*batch)
        if multi_worker:  # every worker's replicas (a collective); sorted by index afterwards
            got = [np.asarray(strategy.gather(v, axis=0)) for v in res]
        else:
            got = [np.concatenate([np.asarray(r) for r in strategy.experimental_local_results(v)]) for v in res]
        got[5] = got[5].astype(bool)
        keep = got[0] >= 0  # drop the padding
        return tuple(v[keep] for v in got)

    return step
