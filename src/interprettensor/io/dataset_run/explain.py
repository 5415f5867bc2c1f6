"""The entry point, :func:`explain_dataset`: check the arguments, build the explainer (under a
distribution strategy if given) and open the input (:mod:`interprettensor.io.sources`, checked against the
model), open or resume the run folder, explain the shards this writer still owes and record it as finished
(:func:`_finish`: ``manifest.json`` once every shard of the run is there); the outcome is a
:class:`StreamResult`."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import keras

from ...engine.explainer import Explainer
from .. import shards
from ..inputs import InputError, model_input_shape
from ..shards import RunState, StreamError
from ..sources import Source, _shape_str, make_source
from ..workers import Worker, parse_worker
from .folder import _commit, _open_run, _owned_todo, _run_identity
from .pipeline import _is_chief, _multi_worker
from .writer import _explain_shards, _stream_total


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
                    shard_size: int = 1024, batch_size: int = 64, strategy: Any = None,
                    worker: Any = None, target: int | str | None = None, progress: bool = True,
                    resume: bool = True, input_range: Sequence[float] = (0.0, 1.0), color_mode: str = "auto",
                    resize: bool = False, on_shard: Callable[[int, dict], None] | None = None,
                    nonfinite: str = "error", store_inputs: bool = False, **params: Any) -> StreamResult:
    """Explain every sample of ``dataset`` with LRP and write the results to ``out`` shard by shard.

    Runs on each of Keras' backends (TensorFlow, JAX, PyTorch): the input is read on the host as NumPy
    arrays and the output files are the same. Only ``strategy=`` needs the TensorFlow backend.

    Args:
        model: a single-input Keras model (see :class:`~interprettensor.Explainer`).
        dataset: a numpy array ``x`` or a pair ``(x, labels)``; a Python iterable or generator (read once,
            in order; its length is unknown) or a ``keras.utils.PyDataset`` (batches read by index; every
            batch but the last of one size) yielding ``x`` or ``(x, label)`` as NumPy arrays or tensors; a
            ``tf.data.Dataset`` yielding the same (read as NumPy on any backend); samples or batches, a label
            being a class index or a one-hot vector; or a folder / a list of image files and ``.npy`` arrays (read like ``interprettensor explain`` does: pixels
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
        strategy: a ``tf.distribute.Strategy`` (Keras' TensorFlow backend only): batches are split over
            its replicas; the result equals that of one device.
        worker: ``None`` (this process explains everything), ``(i, N)`` or ``'i/N'`` (worker ``i`` of
            ``N`` independent processes sharing ``out``: it explains the shards ``k % N == i``), or
            ``'auto'`` (from a Slurm job array or a Kubernetes indexed job, see
            :mod:`interprettensor.io.workers`). Needs an input of known length (not a generator).
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
    if strategy is not None and keras.backend.backend() != "tensorflow":
        raise StreamError(f"strategy= needs Keras' TensorFlow backend (Keras runs on {keras.backend.backend()!r}): "
                          f"a tf.distribute strategy splits TensorFlow computations; drop it to explain on one "
                          f"device, or split the run over processes with worker=(i, N)")
    wk = parse_worker(worker)
    if wk is not None and strategy is not None and _multi_worker(strategy):
        raise StreamError("worker= splits a data set over independent processes; a MultiWorkerMirroredStrategy "
                          "already shares one run between its workers: use one or the other")
    explainer = _make_explainer(model, rule, strategy, params)
    source = _open_source(model, dataset, target, input_range, color_mode, resize)
    if wk is not None and source.n is None:
        raise StreamError("worker= needs an input of known length (an array, files, a PyDataset, or a "
                          "tf.data.Dataset with a known cardinality: "
                          "dataset.apply(tf.data.experimental.assert_cardinality(n))); a generator has none")
    identity = _run_identity(model, explainer, rule, params, source, shard_size, target, store_inputs)
    chief = _is_chief(strategy)
    state, done = _open_run(out, identity, wk, resume, chief, source.n)
    if source.n is not None and not _owned_todo(done, source.n, shard_size, wk):
        return _finish(out, state, done, {}, explainer, wk, chief, source.n, shard_size)
    computed = _explain_shards(explainer, source, out, state, done, wk, shard_size, batch_size, strategy, chief,
                               on_shard, nonfinite, progress, store_inputs)
    n_total = source.n if source.n is not None else _stream_total(done, computed, shard_size)
    return _finish(out, state, done, computed, explainer, wk, chief, n_total, shard_size)


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
