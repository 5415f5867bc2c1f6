"""The runs the viewer shows, found on disk and read lazily (numpy only: no TensorFlow).

What a folder may hold (see ``io/shards.py``, and the documentation's command-line page
and data-set tutorial):

* an ``explain_dataset`` run: ``manifest.json`` and ``shard-00000.npz``, ... (:class:`ShardRun`);
* an ``interprettensor explain`` run: ``relevances.npz`` (:class:`NpzRun`);
* SpRAy results of a run: ``RUN/spray/spray.json`` and ``RUN/spray/class-<c>.npz`` (:class:`Spray`);
* a concepts (CRP) run: ``concepts.json`` and ``layer-<name>.npz`` (:class:`ConceptsRun`).

Nothing is loaded as a whole: the per-sample metadata (targets, labels, valid, names) is read from
each shard once (a few small arrays), and a sample's relevance or input is read from a memory map of
its shard's member (shards are uncompressed ``.npz`` archives), so a run of any size opens at once.

The package, one module per idea: :mod:`.files` (reading ``.npz`` members and JSON files lazily,
:class:`RunError`), :mod:`.explain` (:class:`ExplainRun`, :class:`ShardRun`, :class:`NpzRun`),
:mod:`.spray` (:class:`Spray`), :mod:`.concepts` (:class:`ConceptsRun`) and :mod:`.discovery`
(:func:`discover`, :class:`Found`).
"""

from __future__ import annotations

# every name the module had before it was split, private ones included
from .concepts import ConceptsRun, safe_layer_name  # noqa: F401
from .discovery import _SHARD_RE, MAX_DEPTH, Found, _kind_of, discover  # noqa: F401
from .explain import HASH_LIMIT, ExplainRun, NpzRun, ShardRun, _hash_arrays, _rule_name  # noqa: F401
from .files import (CONCEPTS, MANIFEST, RELEVANCES, SPRAY_DIR, SPRAY_JSON, RunError, _Members,  # noqa: F401
                    _npz_keys, _open_member, _read_json, _read_meta)
from .spray import Spray, _num  # noqa: F401

__all__ = ["RunError", "ShardRun", "NpzRun", "Spray", "ConceptsRun", "discover", "safe_layer_name"]
