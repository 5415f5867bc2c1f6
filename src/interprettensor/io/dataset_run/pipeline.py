"""The compute of :func:`~interprettensor.io.dataset_run.explain_dataset`: batches that never cross a shard
boundary (:func:`_batches`: each shard's last batch is padded, so a shard is computed in the same batches
however the run is split; full batches under a strategy), read ahead on a thread (:func:`_prefetch`), and
the compiled step (:func:`_make_step`: one NumPy batch -> NumPy arrays in sample order, NaN or infinite
samples explained as zeros) on any Keras backend; under a ``tf.distribute`` strategy (TensorFlow only,
:func:`_distributed`) each batch is split over the replicas and gathered back, with what a strategy says of
the cluster (:func:`_multi_worker`, :func:`_is_chief`).

Everything but the strategy path works on NumPy arrays on the host and on tensors of Keras' backend through
``keras.ops``; TensorFlow is imported only for a strategy."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import numpy as np

from ...engine import backend
from ...engine.errors import ExplainError
from ...engine.explainer import Explainer
from ...engine.targets import input_dtypes
from ..shards import StreamError
from ..sources import Chunk

#: one explained batch: ``(indices, relevance, targets, outputs, x, valid, labels)`` in sample order
Result = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _batches(chunks: Iterator[Chunk], shard_size: int, batch_size: int, n: int | None,
             full: bool = False) -> Iterator[Chunk]:
    """Batches of ``batch_size`` that never cross a shard boundary: sample ``i`` is in batch
    ``(i % S) // B`` of shard ``i // S``. Where ``B`` does not divide ``S``, each shard's last batch is filled up
    with padding rows (index -1, zeros; dropped after the pass), so a shard is computed in the same batches
    whichever worker, resumed run or device count computes it; ``full`` pads every batch to ``B`` (a
    strategy: fixed shapes, no replica without samples)."""
    S, B = int(shard_size), min(int(batch_size), int(shard_size))
    pad_last = bool(S % B)
    pending: list[Chunk] = []
    key = None

    def last_of_shard(i: int) -> bool:
        k = i // S
        return i - k * S == (S if n is None else min(S, n - k * S)) - 1

    def emit() -> Chunk:
        i, x, t, lab = (pending[0] if len(pending) == 1 else
                        tuple(np.concatenate([p[j] for p in pending]) for j in range(4)))
        if full or (pad_last and last_of_shard(int(i[-1]))):
            i, x, t, lab = _pad(i, x, t, lab, B)
        pending.clear()
        return i, x, t, lab

    for idx, x, t, lab in chunks:
        if not len(idx):
            continue
        keys = (idx // S) * (S // B + 1) + (idx % S) // B  # (shard, batch within it), increasing
        cuts = np.flatnonzero(np.diff(keys)) + 1
        for a, z in zip(np.r_[0, cuts], np.r_[cuts, len(idx)]):
            if pending and keys[a] != key:
                yield emit()
            key = keys[a]
            pending.append((idx[a:z], x[a:z], t[a:z], lab[a:z]))
            last = int(idx[z - 1])
            if (last % S) % B == B - 1 or last_of_shard(last):  # the batch is complete: no need to wait
                yield emit()
    if pending:
        yield emit()


def _pad(i: np.ndarray, x: np.ndarray, t: np.ndarray, lab: np.ndarray, size: int) -> Chunk:
    """Fill a batch up to ``size`` rows: index -1, zeros, target 0, label -1."""
    k = size - len(i)
    if k <= 0:
        return i, x, t, lab
    return (np.concatenate([i, np.full((k,), -1, np.int64)]),
            np.concatenate([x, np.zeros((k,) + x.shape[1:], x.dtype)]),
            np.concatenate([t, np.zeros((k,), np.int32)]),
            np.concatenate([lab, np.full((k,), -1, np.int32)]))


class _ReadError(StreamError):
    """An exception raised while reading the input (not while explaining it), carried to the reader
    (which reports the original, :attr:`error`)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` read ahead on a thread (the input is read and batched while the previous batch is
    explained, as ``tf.data``'s prefetching does); an exception raised while reading comes out, in its
    place, as a :class:`_ReadError`. Stopping early (an error, Ctrl-C) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(v: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(v, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for v in items:
                if not put(v):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the reader
            put(_ReadError(e))
            return
        put(done)

    thread = threading.Thread(target=run, name="interprettensor-read", daemon=True)
    thread.start()
    try:
        while True:
            v = q.get()
            if v is done:
                return
            if isinstance(v, _ReadError):
                raise v
            yield v
    finally:
        stop.set()
        thread.join(timeout=5)


def _multi_worker(strategy: Any) -> bool:
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def _is_chief(strategy: Any) -> bool:
    resolver = getattr(getattr(strategy, "extended", None), "_cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0)


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _input_dtype(explainer: Explainer) -> str:
    """The dtype the model's input is explained in: the compute dtype for float inputs."""
    return input_dtypes(explainer.model, 1, explainer.dtype)[0]


def _to_backend(x: np.ndarray, dtype: str) -> Any:
    from keras import ops

    if dtype == "bfloat16":  # not every backend takes NumPy's bfloat16 (ml_dtypes): exact through float32
        return ops.cast(ops.convert_to_tensor(x.astype(np.float32)), dtype)
    return ops.convert_to_tensor(x)


def _make_step(explainer: Explainer, sample_shape: tuple) -> Callable[[Chunk], Result]:
    """One NumPy batch -> NumPy ``(indices, relevance, targets, outputs, x, valid, labels)`` (float32 arrays,
    in sample order, padding dropped), on any Keras backend. The batch is cast to the compute dtype on the
    host (the same inputs on every backend). Samples with NaN or inf (in the compute dtype) are explained as
    zeros and get relevance 0, outputs 0, target -1 where it was to be predicted, and ``valid`` False. A
    target beyond the explained output raises one of the backend's runtime errors (the compiled function
    checks the targets on the host, :meth:`~interprettensor.Explainer.compiled`). The first batch checks the
    forward pass against the model (:meth:`~interprettensor.Explainer.check_forward`)."""
    from keras import ops

    dtype = _input_dtype(explainer)
    np_dtype = _numpy_dtype(dtype)
    fn = explainer.compiled([backend.spec((None,) + tuple(sample_shape), dtype)])

    def step(batch: Chunk) -> Result:
        i, x, t, lab = batch
        n = len(i)
        x = np.asarray(x).astype(np_dtype, copy=False)
        ok = np.isfinite(x.reshape(n, -1)).all(-1) if x.dtype.kind == "f" or dtype == "bfloat16" else np.ones(n, bool)
        per_sample = ok.reshape((n,) + (1,) * (x.ndim - 1))
        x_ok = x if ok.all() else np.where(per_sample, x, np.zeros((), x.dtype))
        xt = _to_backend(x_ok, dtype)
        rel, _, out, model_out = fn((xt,), ops.convert_to_tensor(np.asarray(t, np.int32)))
        flat = np.asarray(ops.convert_to_numpy(ops.cast(out, "float32"))).reshape(n, -1)
        resolved = np.where(t < 0, flat.argmax(-1).astype(np.int32), t).astype(np.int32)
        resolved = np.where(ok | (t >= 0), resolved, -1).astype(np.int32)
        rel0 = np.asarray(ops.convert_to_numpy(ops.cast(rel[0], "float32")))
        rel0 = np.where(ok.reshape((n,) + (1,) * (rel0.ndim - 1)), rel0, np.float32(0))
        flat = np.where(ok[:, None], flat, np.float32(0))
        keep = i >= 0
        if not explainer._verified and keep.any():
            first = int(np.flatnonzero(keep)[0])
            explainer.check_forward([xt[first:]], [o[first:] for o in model_out])
        xf = x.astype(np.float32)
        return tuple(v[keep] for v in (i, rel0, resolved, flat, xf, ok, lab))  # type: ignore[return-value]

    return step


def _explained(explainer: Explainer, batches: Iterator[Chunk], sample_shape: tuple) -> Iterator[Result]:
    """The explained batches, the input read ahead on a thread; an error of the compiled pass (a target
    beyond the output) comes out as a :class:`StreamError`."""
    step = _make_step(explainer, sample_shape)
    for batch in _prefetch(batches):
        try:
            yield step(batch)
        except backend.RUNTIME_ERRORS as e:
            raise _runtime_error(backend.error_message(e)) from None


def _runtime_error(msg: str) -> StreamError:
    if "target out of range" in msg:
        return StreamError(msg[msg.index("target out of range"):].split("]")[0].split("\n")[0])
    first = msg.strip().splitlines()[0] if msg.strip() else "an error"
    return StreamError(f"explaining the input failed: {first}")


def _distributed(explainer: Explainer, batches: Iterator[Chunk], sample_shape: tuple, x_dtype: Any,
                 batch_size: int, strategy: Any) -> Iterator[Result]:
    """The explained batches under a ``tf.distribute`` strategy (TensorFlow only): full batches split over
    the replicas (``experimental_distribute_dataset``; a multi-worker cluster shares them out), explained and
    gathered back. Targets are checked on the host, on every worker alike, before the batch is handed out
    (the compiled step cannot raise inside ``strategy.run``); a reading error ends the stream and is raised
    after the batches before it."""
    import tensorflow as tf

    B = int(batch_size)
    if B < strategy.num_replicas_in_sync:
        raise StreamError(f"batch_size ({B}, at most shard_size) must be at least the number of replicas "
                          f"({strategy.num_replicas_in_sync})")
    dtype = _input_dtype(explainer)
    spec = [tf.TensorSpec((None,) + tuple(sample_shape), dtype)]
    with strategy.scope():
        fn = explainer.compiled(spec)
    errors: list[BaseException] = []
    zero = np.zeros((1,) + tuple(sample_shape), np.float32 if dtype == "bfloat16" else _numpy_dtype(dtype))
    probe = [_to_backend(zero, dtype)]
    explainer.explained_shape(probe)  # known from now on: the checks below need no forward pass

    def checked() -> Iterator[Chunk]:
        try:
            for i, x, t, lab in batches:
                try:
                    explainer._check_targets(t[i >= 0], probe)
                except ExplainError as e:
                    raise StreamError(str(e)) from None
                yield i, x, t, lab
        except Exception as e:  # noqa: BLE001 - raised by the reader after the batches before it
            errors.append(e)

    signature = (tf.TensorSpec((B,), tf.int64), tf.TensorSpec((B,) + tuple(sample_shape), tf.as_dtype(x_dtype)),
                 tf.TensorSpec((B,), tf.int32), tf.TensorSpec((B,), tf.int32))
    ds = tf.data.Dataset.from_generator(checked, output_signature=signature)
    ds = ds.map(lambda i, x, t, lab: (i, tf.cast(x, dtype), t, lab)).prefetch(tf.data.AUTOTUNE)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist = strategy.experimental_distribute_dataset(ds.with_options(opts))

    def replica(i, x, t, lab):
        n = tf.shape(x)[0]
        ok = tf.reduce_all(tf.math.is_finite(tf.reshape(x, (n, -1))), axis=-1)
        per_sample = lambda v: tf.reshape(ok, tf.concat([[n], tf.ones([tf.rank(v) - 1], tf.int32)], 0))  # noqa: E731
        x_ok = tf.where(per_sample(x), x, tf.zeros_like(x))
        rel, _, out, _ = fn((x_ok,), t)
        flat = tf.reshape(out, (n, -1))
        resolved = tf.where(t < 0, tf.argmax(flat, axis=-1, output_type=tf.int32), t)
        resolved = tf.where(ok | (t >= 0), resolved, -1)
        rel0 = tf.where(per_sample(rel[0]), rel[0], tf.zeros_like(rel[0]))
        flat = tf.where(per_sample(flat), flat, tf.zeros_like(flat))
        # collectives gather numbers, not booleans
        return (i, tf.cast(rel0, tf.float32), resolved, tf.cast(flat, tf.float32), tf.cast(x, tf.float32),
                tf.cast(ok, tf.int32), lab)

    @tf.function(autograph=False)
    def dist_step(i, x, t, lab):
        return strategy.run(replica, args=(i, x, t, lab))

    multi_worker = _multi_worker(strategy)
    try:
        for batch in dist:
            res = dist_step(*batch)
            if multi_worker:  # every worker's replicas (a collective); sorted by index afterwards
                got = [np.asarray(strategy.gather(v, axis=0)) for v in res]
            else:
                got = [np.concatenate([np.asarray(r) for r in strategy.experimental_local_results(v)]) for v in res]
            got[5] = got[5].astype(bool)
            keep = got[0] >= 0  # drop the padding
            yield tuple(v[keep] for v in got)  # type: ignore[misc]
    except tf.errors.OpError as e:
        if errors:
            raise _ReadError(errors[0]) from None
        raise _runtime_error(e.message or str(e)) from None
    if errors:
        raise _ReadError(errors[0])
