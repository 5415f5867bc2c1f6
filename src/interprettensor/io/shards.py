"""A run directory of explained samples: shards, manifests, and reading them back.

A run writes ``OUT/shard-00000.npz``, ``OUT/shard-00001.npz``, ... (``shard_size`` samples each, the
last one may be shorter; shard ``k`` holds samples ``k * shard_size`` onwards) and ``OUT/manifest.json``
listing the finished shards with a fingerprint (the *identity*) of the model, rule and input. Every file
is written atomically (temporary file in ``OUT``, fsync, rename) and deterministically (fixed zip
timestamps, no compression), so the same run gives the same bytes however it was split. Several
independent worker processes may write into one run directory: worker ``i`` of ``N`` writes the
shards ``k`` with ``k % N == i`` and its own ``manifest-worker-I-of-N.json``; :func:`finalize_run`
(run by each worker when it finishes, and by ``interprettensor finalize``) verifies that every shard
is there and holds the samples it should, and writes ``manifest.json``. A shard is finished when its
file holds the sample indices it should: that, not a manifest, decides what a resumed run skips.

Each shard holds ``relevance`` (float32, shaped like the inputs), ``indices`` (the samples' positions
in the input), ``targets`` (the explained classes), ``outputs`` (the explained output, e.g. logits,
one row per sample), ``valid`` (False for samples skipped for NaN or inf), for files ``names``,
with ``store_inputs`` (``--store-inputs``) ``inputs`` (float32, the inputs as explained, shaped like
``relevance``; zeros for skipped samples) and, where the data has labels, ``labels`` (int64 class
indices, -1 where unknown): the same arrays as the ``relevances.npz`` of ``interprettensor
explain``. Which of the optional arrays a run stores is part of its identity (``"stored"`` in the
manifest), so all its shards hold the same arrays. :func:`load_relevances` reads either back.
"""

from __future__ import annotations

import errno
import glob
import io
import json
import os
import re
import tempfile
import zipfile
from typing import Any, Callable, Sequence

import numpy as np

from ..engine.errors import ExplainError

__all__ = ["load_relevances", "finalize_run", "StreamError", "KEYS", "MANIFEST", "shard_path", "write_npz",
           "read_manifest", "worker_manifest_path", "verify_shard", "RunState", "shard_error",
           "check_shard_files", "run_shard_files", "REWRITE"]

MANIFEST = "manifest.json"
FORMAT = 1
RERUN = "run again with the same arguments to continue"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npz$")
_WORKER_RE = re.compile(r"^manifest-worker-(\d+)-of-(\d+)\.json$")


class StreamError(ExplainError):
    """A run of :func:`~interprettensor.explain_dataset` that cannot go on, or a run directory that
    does not hold what it should (the finished shards stay valid)."""


def shard_path(out: str, k: int) -> str:
    return os.path.join(out, f"shard-{k:05d}.npz")


def worker_manifest_path(out: str, index: int, count: int) -> str:
    return os.path.join(out, f"manifest-worker-{index:03d}-of-{count:03d}.json")


# ---------------------------------------------------------------------------------------------- files
def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Write ``path`` via a temporary file in the same folder, fsync and rename: a reader sees the old
    file or the complete new one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:  # mkstemp makes 0600; the file gets the mode open() would give it (0644 under umask 022)
            os.fchmod(fd, 0o666 & ~_umask())
        except (OSError, AttributeError):
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def _umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux), else by setting it
    back at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive (readable by ``numpy.load``) with fixed timestamps and no compression: the
    same arrays always give the same bytes (``numpy.savez`` stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(value), allow_pickle=False)
            zf.writestr(info, data.getvalue())
    return buf.getvalue()


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write one shard atomically and deterministically (the tests replace it to simulate a full disk)."""
    data = npz_bytes(arrays)
    atomic_write(path, lambda f: f.write(data))


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True).encode()))


def write_error(e: OSError, what: str, path: str, finished: str) -> StreamError:
    if e.errno == errno.ENOSPC:
        return StreamError(f"no space left on device while writing {what} to {path!r}; {finished}")
    return StreamError(f"cannot write {what} to {path!r}: {e.strerror or e}; {finished}")


def read_manifest(path: str) -> dict | None:
    """A manifest (``manifest.json`` or a worker's), ``None`` if there is none; an error for a file that
    is not one."""
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
        if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("shards"), list):
            raise ValueError("not an interprettensor shard manifest")
        return m
    except (OSError, ValueError) as e:
        raise StreamError(f"cannot read {path!r} ({e}); it is not a manifest written by explain_dataset. "
                          f"Choose another output folder or delete it") from None


def worker_manifests(out: str) -> dict[tuple[int, int], dict]:
    """The worker manifests in ``out``: ``{(index, count): manifest}``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "manifest-worker-*-of-*.json"))):
        m = _WORKER_RE.match(os.path.basename(path))
        if m:
            manifest = read_manifest(path)
            if manifest is not None:
                found[(int(m.group(1)), int(m.group(2)))] = manifest
    return found


def verify_shard(out: str, k: int, shard_size: int, count: int | None = None) -> dict | None:
    """The manifest entry of shard ``k`` if its file holds the samples ``k * shard_size ...`` (exactly
    ``count`` of them if given, else ``shard_size`` or fewer), else ``None`` (missing, truncated or
    foreign: not finished). Reads the indices and the relevance's header only: shards are big."""
    path = shard_path(out, k)
    start = k * shard_size
    try:
        with np.load(path, allow_pickle=False) as z:
            idx = z["indices"]
            valid = z["valid"] if "valid" in z.files else np.ones(idx.shape, bool)
        n = int(idx.shape[0]) if idx.ndim == 1 else -1
        if n < 1 or n > shard_size or (count is not None and n != count) \
                or not np.array_equal(idx, np.arange(start, start + n)):
            return None
        with zipfile.ZipFile(path) as zf, zf.open("relevance.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
        if len(shape) < 1 or shape[0] != n:
            return None
        return {"file": os.path.basename(path), "start": start, "count": n, "nonfinite": int((~valid).sum())}
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not finished
        return None


class RunState:
    """The manifest of one writer (the whole run, or one worker's part): identity, finished shards (by
    index), and, once known, the number of samples in the input. Written after every shard."""

    def __init__(self, path: str, identity: dict, worker: tuple[int, int] | None):
        self.path, self.identity, self.worker = path, identity, worker
        self.shards: dict[int, dict] = {}
        self.n_samples: int | None = None
        self.complete = False

    def as_dict(self) -> dict:
        d = {"format": FORMAT, "identity": self.identity, "complete": self.complete,
             "n_samples": self.n_samples, "shards": [self.shards[k] for k in sorted(self.shards)]}
        if self.worker is not None:
            d["worker"] = {"index": self.worker[0], "count": self.worker[1]}
        return d

    def commit(self) -> None:
        write_json(self.path, self.as_dict())


def finalize_run(out: str, n_samples: int | None = None) -> dict:
    """Verify that the run in ``out`` is complete and write its ``manifest.json``.

    Every worker manifest (and an existing ``manifest.json``) must carry the same identity (model, rule,
    input, shard size, ...); the number of samples comes from ``n_samples``, a manifest that knows it,
    or a worker that read the whole input; every shard ``0 .. K-1`` must be on disk holding exactly its
    samples. Then ``manifest.json`` lists them (the same bytes as a run in one process would write) and
    the worker manifests are removed.

    Returns:
        the final manifest.

    Raises:
        StreamError: naming the shards that are missing or damaged, the workers that have not finished,
            or the manifests that disagree.
    """
    out = os.fspath(out)
    manifests = list(worker_manifests(out).items())
    main = read_manifest(out)
    if main is not None:
        manifests.append((None, main))
    if not manifests:
        raise StreamError(f"{out!r} holds no run of explain_dataset (no {MANIFEST} and no worker manifests)")
    identity = manifests[0][1]["identity"]
    for who, m in manifests[1:]:
        if m["identity"] != identity:
            name = MANIFEST if who is None else os.path.basename(worker_manifest_path(out, *who))
            raise StreamError(f"{name} in {out!r} belongs to another run than the others (identity "
                              f"{m['identity']} vs {identity}); remove the foreign files or use another folder")
    shard_size = int(identity["shard_size"])
    known = [m["n_samples"] for _, m in manifests if m.get("n_samples") is not None]
    if n_samples is None and known:
        n_samples = int(known[0])
    if n_samples is None:
        raise StreamError(f"the number of samples of the run in {out!r} is not known yet: no worker has read the "
                          f"whole input; run the workers to the end first")
    n_shards = -(-int(n_samples) // shard_size)
    entries, missing = [], []
    for k in range(n_shards):
        count = min(shard_size, int(n_samples) - k * shard_size)
        entry = verify_shard(out, k, shard_size, count)
        if entry is None:
            missing.append(k)
        else:
            entries.append(entry)
    if missing:
        counts = sorted({w[1] for w, _ in manifests if w is not None})
        owners = ""
        if len(counts) == 1:
            c = counts[0]
            owners = " (" + "; ".join(f"worker {i}/{c}: {', '.join(str(k) for k in missing if k % c == i)}"
                                      for i in sorted({k % c for k in missing})) + ")"
        raise StreamError(f"the run in {out!r} is not complete: shard(s) {', '.join(map(str, missing[:20]))}"
                          f"{' ...' if len(missing) > 20 else ''} of {n_shards} are missing or damaged{owners}; "
                          f"run the worker(s) that own them again (they continue where they stopped)")
    final = {"format": FORMAT, "identity": identity, "complete": True, "n_samples": int(n_samples),
             "shards": entries}
    write_json(os.path.join(out, MANIFEST), final)
    for who, _ in manifests:
        if who is not None:
            try:
                os.unlink(worker_manifest_path(out, *who))
            except OSError:
                pass
    return final


# ---------------------------------------------------------------------------------------------- reading
#: the arrays of a shard and of ``relevances.npz`` (``names`` only where the inputs were files, ``inputs``
#: only with ``store_inputs``, ``labels`` only where the data had labels)
KEYS = ("relevance", "indices", "targets", "outputs", "valid", "names", "inputs", "labels")
#: the arrays every run holds
BASE_KEYS = KEYS[:5]
RELEVANCES_NPZ = "relevances.npz"
#: what to do about a shard that is missing or damaged (a resumed run verifies every shard on disk)
REWRITE = ("rerun `interprettensor explain ... --resume` (or explain_dataset with the same arguments), which "
           "rewrites missing or damaged shards")


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def shard_error(path: str, e: BaseException | None = None) -> StreamError:
    """The error for a shard of a run that is missing (``e`` None or FileNotFoundError) or cannot be read:
    names the file and says how to get it back; the other files of the run are untouched."""
    run = os.path.dirname(path) or "."
    if e is None or isinstance(e, FileNotFoundError) or not os.path.exists(path):
        what = f"shard {path!r} of the run in {run!r} is missing"
    else:
        what = f"shard {path!r} of the run in {run!r} is damaged ({_why(e)})"
    return StreamError(f"{what}; the other files of the run are kept: {REWRITE}")


def _is_shard(path: str) -> bool:
    return bool(_SHARD_RE.match(os.path.basename(path)))


def check_shard_files(paths: Sequence[str]) -> None:
    """Check that each shard file is there and is a readable archive (its directory only: cheap), before
    a reader starts on them; a :class:`StreamError` naming the first that is not (see :func:`shard_error`)."""
    for path in paths:
        if not os.path.isfile(path):
            raise shard_error(path)
        try:
            with zipfile.ZipFile(path) as zf:
                if "relevance.npy" not in zf.namelist():
                    raise ValueError("it holds no relevance array")
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: name it
            raise shard_error(path, e) from None


def run_shard_files(run: str, check: bool = True) -> list[str]:
    """The shard files of the run in ``run``, in order: those its ``manifest.json`` lists when the run is
    complete, else the ``shard-*.npz`` on disk, which must be ``shard-00000.npz`` onwards without a gap
    (a gap: :func:`shard_error` for the missing file). ``check``: also :func:`check_shard_files`."""
    m = read_manifest(run)
    if m is not None and m.get("complete"):
        files = [os.path.join(run, e["file"]) for e in m["shards"]]
    else:
        found = sorted((int(g.group(1)), f) for f in os.listdir(run) if (g := _SHARD_RE.match(f)))
        files = []
        for pos, (k, f) in enumerate(found):
            if k != pos:
                raise shard_error(shard_path(run, pos))
            files.append(os.path.join(run, f))
    if check:
        check_shard_files(files)
    return files


def load_relevances(path: str, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read explanations written by :func:`explain_dataset` or ``interprettensor explain`` back.

    Args:
        path: a sharded run's folder (``manifest.json`` and ``shard-00000.npz``, ...), a
            ``relevances.npz`` file, or a folder holding one.
        keys: read only these arrays (e.g. ``['targets']``: no relevance is loaded).

    Returns:
        ``{'relevance', 'indices', 'targets', 'outputs', 'valid'[, 'names'][, 'inputs'][, 'labels']}``, one
        row per sample in input order: ``relevance`` float32 shaped like the inputs, ``indices`` int64
        positions in the input, ``targets`` int32 explained classes (-1 for a skipped sample whose class
        was to be predicted), ``outputs`` float32 ``(N, units)`` explained outputs (e.g. logits; 0 for
        skipped samples), ``valid`` bool (False: skipped for NaN/inf, relevance 0), ``names`` str (inputs
        given as files), ``inputs`` float32 the inputs as explained (``store_inputs``), ``labels`` int64
        class labels, -1 where unknown (data with labels).
        A sharded run gives its finished shards, concatenated in order. Shards written before
        ``valid`` existed read as all valid.

    Raises:
        StreamError: no results at ``path``, an unreadable file, or a ``relevances.npz`` of the format
            before version 2.0 (``target``/``output`` keys; read it with ``numpy.load``).
    """
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, MANIFEST)) \
            and os.path.exists(os.path.join(path, RELEVANCES_NPZ)):
        path = os.path.join(path, RELEVANCES_NPZ)
    if os.path.isfile(path):
        return _load_npz(path, keys)
    if not os.path.exists(path) and _is_shard(path):
        raise shard_error(path)
    m = read_manifest(path)
    if m is None:
        raise StreamError(f"{path!r} holds no explanations: neither a sharded run ({MANIFEST}) nor "
                          f"{RELEVANCES_NPZ}")
    files = [os.path.join(path, entry["file"]) for entry in m["shards"]]
    check_shard_files(files)  # before reading gigabytes: a missing or truncated shard is named at once
    parts: dict[str, list] = {}
    for file in files:
        for k, v in _load_npz(file, keys).items():
            parts.setdefault(k, []).append(v)
    if not parts:
        return {k: np.zeros((0,)) for k in (keys or BASE_KEYS)}
    return {k: np.concatenate(v) for k, v in parts.items()}


def _load_npz(path: str, keys: Sequence[str] | None) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "relevance" not in files or ("indices" not in files and {"target", "output"} & files):
                raise StreamError(f"{path!r} is not in the format of interprettensor 2.0 (keys {sorted(files)}; "
                                  f"expected {', '.join(BASE_KEYS)}[, names, ...]): an older relevances.npz, read "
                                  f"it with numpy.load")
            want = list(keys) if keys is not None else [k for k in KEYS if k in files or k == "valid"]
            missing = [k for k in want if k not in files and k != "valid"]
            if missing:
                raise StreamError(f"{path!r} has no {', '.join(missing)} (it holds {', '.join(sorted(files))})")
            out = {k: z[k] for k in want if k in files}
            if "valid" in want and "valid" not in files:  # written before NaN/inf were checked
                n = len(z["indices"]) if "indices" in files else len(z["relevance"])
                out["valid"] = np.ones((n,), bool)
            return out
    except StreamError:
        raise
    except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, OSError, ...: a damaged file, named
        if _is_shard(path):
            raise shard_error(path, e) from None
        raise StreamError(f"cannot read {path!r}: {_why(e)} (a damaged or truncated file? write it again, "
                          f"e.g. with `interprettensor explain`)") from None
