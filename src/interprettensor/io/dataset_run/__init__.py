"""Explain a whole data set, shard by shard, resumably, on one or many workers: :func:`explain_dataset`.

The input (a numpy array, a folder of images / ``.npy`` arrays, a Python iterable, a
``keras.utils.PyDataset`` or a ``tf.data.Dataset``; :mod:`interprettensor.io.sources`) is read on the host as
NumPy and streamed through one compiled :class:`~interprettensor.Explainer` on any Keras backend, read
ahead on a thread, in batches that never cross a shard boundary (each shard is computed the
same way however the run is split), and written into a run directory (:mod:`interprettensor.io.shards`).
A run that is killed and started again with the same arguments skips every finished shard; a run with
another model, rule or input refuses to touch the folder.

Many machines: start ``N`` independent processes with ``worker=(i, N)`` (``--worker i/N``, or
``worker='auto'`` inside a Slurm job array or a Kubernetes indexed job,
:mod:`interprettensor.io.workers`); worker ``i`` explains the shards ``k % N == i``. Each finishing
worker tries :func:`~interprettensor.io.shards.finalize_run`, which succeeds for the last one;
``interprettensor finalize OUT`` checks and completes a run by hand.

Many devices of one machine (``MirroredStrategy``) or a ``MultiWorkerMirroredStrategy`` cluster (Keras'
TensorFlow backend only): each batch is split over the replicas and gathered back in sample order; only the
chief writes files.

The package, one module per idea: :mod:`.explain` (:func:`explain_dataset`, :class:`StreamResult`),
:mod:`.folder` (the run's identity, opening and resuming its folder), :mod:`.writer` (streaming the owed
shards and writing each as it completes) and :mod:`.pipeline` (batches within shards, the compiled step,
distribution strategies).
"""

from __future__ import annotations

from .. import shards
from ..shards import StreamError, load_relevances
# every name the module defined before it was split, private ones included
from .explain import StreamResult, _finish, _make_explainer, _open_source, explain_dataset  # noqa: F401
from .folder import (_LABELS, _check_identity, _commit, _model_fingerprint, _open_run, _owned_todo,  # noqa: F401
                     _run_identity, _start_over)
from .pipeline import _batches, _is_chief, _make_step, _multi_worker, _pad  # noqa: F401
from .writer import _explain_shards, _merge_ranges, _read_error, _ShardWriter, _span, _stream_total  # noqa: F401

__all__ = ["explain_dataset", "load_relevances", "finalize_run", "StreamError", "StreamResult"]

finalize_run = shards.finalize_run
