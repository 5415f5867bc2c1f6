"""The run folder of :func:`~interprettensor.io.dataset_run.explain_dataset` and what it holds: the run's
identity (:func:`_run_identity`: the model's fingerprint, the rule, the input, the shard size, ...), checked
against every manifest found there (:func:`_check_identity`: another run's folder is refused); opening it
(:func:`_open_run`: start over if asked, find the finished shards, those listed and those written just
before a kill), the shards this writer still owes (:func:`_owned_todo`) and committing its manifest
(:func:`_commit`)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import keras
import numpy as np

from ...engine.explainer import Explainer
from .. import shards
from ..shards import MANIFEST, RunState, StreamError
from ..sources import Source, parse_target
from ..workers import Worker


def _open_run(out: str, identity: dict, wk: Worker | None, resume: bool, chief: bool,
              n: int | None) -> tuple[RunState, dict]:
    """Create or reopen the run directory: check that it holds this run (or nothing), start over if
    asked, and find the finished shards on disk (those listed and those written just before a kill)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise StreamError(f"cannot create the output folder {out!r}: {e.strerror or e}") from None
    own_manifest = os.path.join(out, MANIFEST) if wk is None else shards.worker_manifest_path(out, wk.index, wk.count)
    if chief:
        _remove_stale_temporaries(out, wk, own_manifest)
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


def _remove_stale_temporaries(out: str, wk: Worker | None, own_manifest: str) -> None:
    """Remove the temporary files that a killed writer of this run's own files left behind (an atomic
    write interrupted between creating its temporary file and renaming it): ``.NAME.<random>.tmp`` of
    this writer's manifest and of the shards it owns. Only this writer writes those files, so none of
    them is being written now; other workers' files are left alone."""
    manifest_prefix = "." + os.path.basename(own_manifest) + "."
    for f in os.listdir(out):
        if not (f.startswith(".") and f.endswith(".tmp")):
            continue
        name = f[1:].rsplit(".", 2)[0]  # ".shard-00007.npz.ab12cd.tmp" -> "shard-00007.npz"
        m = shards._SHARD_RE.match(name)
        if f.startswith(manifest_prefix) or (m and (wk is None or wk.owns(int(m.group(1))))):
            try:
                os.unlink(os.path.join(out, f))
            except OSError:
                pass


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


def _commit(state: RunState, out: str) -> None:
    try:
        state.commit()
    except OSError as e:
        raise shards.write_error(e, "the manifest", state.path, "no shard was lost") from None


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
        "dtype": f"{explainer.dtype}/{explainer.backward_dtype}",
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
