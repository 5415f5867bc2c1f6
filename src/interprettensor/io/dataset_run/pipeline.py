"""The compute of :func:`~interprettensor.io.dataset_run.explain_dataset` on ``tf.data`` and
``tf.distribute``: batches that never cross a shard boundary (:func:`_batches`: each shard's last batch is
padded, so a shard is computed in the same batches however the run is split; full global batches under a
strategy, :func:`_pad`) and the compiled step (:func:`_make_step`: one batch -> numpy arrays in sample order,
NaN or infinite samples explained as zeros, split over the replicas and gathered back), with what a
strategy says of the cluster (:func:`_multi_worker`, :func:`_is_chief`)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

from ...engine.explainer import Explainer
from ..shards import StreamError


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
