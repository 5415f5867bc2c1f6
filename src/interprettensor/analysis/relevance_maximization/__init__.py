"""Reference examples of concepts over a data set ("relevance maximisation", CRP).

Achtibat et al. 2023 (Nature Machine Intelligence 5, sec. "Relevance maximization"): a channel of a
hidden layer is shown by the data set's samples for which it is most *relevant* (its relevance
``R_c`` for the explained output), next to the classic *activation maximisation* (its largest
activation), each with the region of the input that drives the channel and the channel's conditional
heatmap there.

:func:`reference_examples` streams a data set (arrays, files, ``tf.data``, or an
:func:`~interprettensor.explain_dataset` run written with ``store_inputs=True``) in shards: each shard
``stats-00000.npz`` holds every sample's channel relevances and largest activations (one compiled
pass per batch, no input heatmaps), is written atomically and skipped when a run is resumed. The
top ``k`` per channel are then merged shard by shard (memory independent of the data set's size),
and only the winners get their conditional heatmaps (one batched pass per sample over its
channels). The result, ``layer-<name>.npz`` and ``concepts.json`` (format in the module
:class:`ConceptRun`), is read back without recomputation by :class:`ConceptRun`.

The crop: the bounding box of the pixels where the channel's conditional heatmap (summed over colour
channels) reaches ``crop_threshold`` times its largest absolute value, as CRP crops its reference
images; the input and the heatmap are cut to it and resized to ``crop_size`` squared.

The package, one module per idea: :mod:`.driver` (:func:`reference_examples`), :mod:`.inputs` (the
samples: a data set or an explain run's stored inputs), :mod:`.statistics` (the statistics shards and the
top ``k`` merge), :mod:`.references` (conditional heatmaps and crops: :func:`crop_box`) and
:mod:`.storage` (the files, :class:`ConceptRun`).
"""

from __future__ import annotations

# every name the module had before it was split, private ones included
from .driver import _check_resume, _identity, _selected_channels, reference_examples  # noqa: F401
from .inputs import _open, _open_shard, _read, _RunSource, _samples  # noqa: F401
from .references import _explained_target, _references, _resize, _store, _to_uint8, crop_box  # noqa: F401
from .statistics import _finished, _merge, _statistics, _top_k  # noqa: F401
from .storage import _STATS_RE, FORMAT, MODES, ConceptRun, _stats_path, safe_name  # noqa: F401

__all__ = ["reference_examples", "ConceptRun", "safe_name", "MODES"]
