"""Reading text inputs for ``interprettensor explain-text``: token ids from ``.npy`` arrays and from
``.txt`` files (one sentence per line, space-separated integer ids), texts from ``.txt`` files (one
per line), vocabulary files (one token per line); and what a text model takes (its token-id input,
the vocabulary size of the embedding that reads it, its keras_hub preprocessor). Errors are
:class:`~.inputs.InputError` naming the file and the line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .inputs import InputError, shape_str

__all__ = ["load_text_model", "PAD_ID", "IdSentences", "TextModel", "read_id_sentences", "read_texts", "read_vocab", "text_model",
           "vocabulary_size"]

#: the id that pads sentences (at their end); trailing ids PAD_ID are padding, not tokens
PAD_ID = 0
#: the inputs of a keras_hub backbone besides the token ids, filled from the ids
COMPANION_INPUTS = ("padding_mask", "segment_ids")


class IdSentences:
    """Token-id sentences: ``ids`` ``(N, T)`` int64 padded with :data:`PAD_ID`, ``real`` ``(N, T)``
    bool (False on the trailing padding), ``names`` (``FILE:LINE`` for text files, ``STEM_ROW`` for
    arrays) and ``where`` (``'FILE' line L`` / ``'FILE' row R``, for messages)."""

    def __init__(self, ids: Any, real: Any, names: list[str], where: list[str]):
        self.ids, self.real, self.names, self.where = ids, real, names, where

    def __len__(self) -> int:
        return len(self.names)


class TextModel:
    """How a model takes text: ``preprocessor`` (a keras_hub preprocessor, or None), ``ids_key`` (the
    key or index of the token-id input), ``structure`` (``'single'``, ``'dict'`` or ``'list'``),
    ``names`` (the inputs' names in the model's order), ``length`` (a fixed sequence length, or
    None), ``vocab_size`` (of the embedding that reads the ids, when found) and ``output_shape``
    (the model's output shape, None entries: any size; None when unknown)."""

    def __init__(self, preprocessor: Any, ids_key: Any, structure: str, names: list[str], length: int | None,
                 vocab_size: int | None, output_shape: tuple | None):
        self.preprocessor, self.ids_key, self.structure, self.names = preprocessor, ids_key, structure, names
        self.length, self.vocab_size, self.output_shape = length, vocab_size, output_shape

    def inputs(self, ids: Any, real: Any) -> Any:
        """The model's input for token ids ``(N, T)`` whose real tokens are ``real``: the ids, or a
        dict/list with the ids, ``padding_mask`` (= ``real``) and ``segment_ids`` (zeros)."""
        import numpy as np

        if self.structure == "single":
            return ids
        values = {}
        for name in self.names:
            if name == self.ids_key:
                values[name] = ids
            elif name == "padding_mask":
                values[name] = real.astype(np.int32)
            else:  # segment_ids: one segment
                values[name] = np.zeros_like(ids)
        return values if self.structure == "dict" else [values[n] for n in self.names]

    def ids_relevance(self, R: Any) -> Any:
        """The token ids' relevance out of the explainer's result (a dict, a list or one array)."""
        if self.structure == "dict":
            return R[self.ids_key]
        if self.structure == "list":
            return R[self.names.index(self.ids_key)]
        return R


# ---------------------------------------------------------------------------------------------- files
def _check_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"{what} {path!r} is a folder; give a file")


def _lines(path: str, what: str) -> list[str]:
    _check_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise InputError(f"cannot read the {what} {path!r}: {e.strerror or e}") from None


def read_vocab(path: str) -> list[str]:
    """A vocabulary file: one token per line, line ``i`` (from 0) is the token of id ``i``."""
    vocab = _lines(path, "vocabulary file")
    if not vocab:
        raise InputError(f"vocabulary file {path!r} is empty; it needs one token per line (line i = id i)")
    return vocab


def read_texts(paths: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, text)`` for each non-blank line of the ``.txt`` files (name ``STEM:LINE``)."""
    out = []
    for path in paths:
        if not path.lower().endswith(".txt"):
            _check_file(path, "input")
            raise InputError(f"input {path!r}: this model reads text through its preprocessor; give .txt files "
                             f"with one text per line (or --text)")
        stem = os.path.splitext(os.path.basename(path))[0]
        lines = [(k, line.strip()) for k, line in enumerate(_lines(path, "input"), 1) if line.strip()]
        if not lines:
            raise InputError(f"input {path!r} holds no text (one text per line)")
        out.extend((f"{stem}:{k}", line) for k, line in lines)
    return out


def _id_lines(path: str) -> list[tuple[str, str, list[int]]]:
    stem = os.path.splitext(os.path.basename(path))[0]
    out = []
    for k, line in enumerate(_lines(path, "input"), 1):
        words = line.split()
        if not words:
            continue
        ids = []
        for w in words:
            try:
                v = int(w)
            except ValueError:
                raise InputError(f"{path!r} line {k}: {w!r} is not an integer token id; a .txt input holds one "
                                 f"sentence per line as space-separated integer ids (texts need a keras_hub "
                                 f"model saved with its preprocessor)") from None
            if v < 0:
                raise InputError(f"{path!r} line {k}: negative token id {v}")
            ids.append(v)
        out.append((f"{stem}:{k}", f"{path!r} line {k}", ids))
    if not out:
        raise InputError(f"input {path!r} holds no sentences (one per line, space-separated integer ids)")
    return out


def _id_array(path: str) -> list[tuple[str, str, list[int]]]:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the array {path!r}: {e}") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise InputError(f"array {path!r} has shape {shape_str(arr.shape)}; token ids are (N, sequence) or one "
                         f"sentence (sequence,)")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise InputError(f"array {path!r} holds non-integer numbers; token ids are integers")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"array {path!r} has dtype {arr.dtype}; token ids are integers")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        row = int(np.argwhere(arr < 0)[0][0])
        raise InputError(f"array {path!r} row {row}: negative token id {int(arr[row].min())}")
    stem = os.path.splitext(os.path.basename(path))[0]
    width = len(str(len(arr) - 1))
    return [(stem if len(arr) == 1 else f"{stem}_{i:0{width}d}", f"{path!r} row {i}", list(map(int, row)))
            for i, row in enumerate(arr)]


def read_id_sentences(paths: Sequence[str], length: int | None = None, max_length: int | None = None) -> IdSentences:
    """Token-id sentences from ``.npy`` arrays (int ``(N, T)`` or ``(T,)``) and ``.txt`` files (one
    sentence per line, space-separated integer ids; blank lines are skipped), padded at the end with
    :data:`PAD_ID` to ``length`` (the model's fixed sequence length), else to ``max_length``, else
    to the longest sentence. A sentence longer than that is an error naming its file and line.
    Trailing :data:`PAD_ID` s count as padding (``real`` False), in the files as well as added here."""
    import numpy as np

    rows: list[tuple[str, str, list[int]]] = []
    for path in paths:
        ext = os.path.splitext(path)[1].lower()
        if ext == ".npy":
            _check_file(path, "input")
            rows.extend(_id_array(path))
        elif ext == ".txt":
            rows.extend(_id_lines(path))
        else:
            _check_file(path, "input")
            raise InputError(f"input {path!r}: unsupported file type {ext or '(none)'}; give .npy arrays of "
                             f"token ids or .txt files (one sentence of space-separated ids per line)")
    if not rows:
        raise InputError("no sentences to explain")
    if length is not None:
        target, why = length, f"the model's sequence length {length}"
    elif max_length is not None:
        target, why = max_length, f"--max-length {max_length}"
    else:
        target, why = max(len(r[2]) for r in rows), ""
    ids = np.full((len(rows), target), PAD_ID, np.int64)
    for i, (_, where, seq) in enumerate(rows):
        if len(seq) > target:
            raise InputError(f"{where} has {len(seq)} token ids, more than {why}")
        ids[i, : len(seq)] = seq
    # real tokens: up to the last id that is not PAD_ID
    nonpad = ids != PAD_ID
    last = np.where(nonpad.any(1), target - np.argmax(nonpad[:, ::-1], axis=1), 0)
    real = np.arange(target)[None, :] < last[:, None]
    return IdSentences(ids, real, [r[0] for r in rows], [r[1] for r in rows])


# ---------------------------------------------------------------------------------------------- models
def vocabulary_size(model: Any, ids_input: Any = None) -> int | None:
    """The number of ids the embedding that reads the token ids takes (``input_dim``): a keras_hub
    backbone's token embedding, an ``Embedding`` layer applied to ``ids_input``, or the only
    ``Embedding`` of the model; None when none is found."""
    import keras

    backbone = getattr(model, "backbone", None)
    emb = getattr(backbone, "token_embedding", None) or getattr(model, "token_embedding", None)
    if isinstance(emb, keras.layers.Embedding):
        return int(emb.input_dim)
    flatten = getattr(model, "_flatten_layers", None)
    every = list(flatten(include_self=False)) if flatten is not None else list(getattr(model, "layers", []))
    layers = [layer for layer in every if isinstance(layer, keras.layers.Embedding)]
    if ids_input is not None:
        for layer in layers:
            try:
                if layer.input is ids_input:
                    return int(layer.input_dim)
            except (AttributeError, ValueError):  # shared layers, or layers with no single input
                continue
    return int(layers[0].input_dim) if len(layers) == 1 else None


def _is_integer(t: Any) -> bool:
    return str(getattr(t, "dtype", "")).startswith(("int", "uint"))


def text_model(model: Any) -> TextModel:
    """What ``model`` takes: text through its keras_hub ``preprocessor`` (when it has one), or integer
    token ids: its only input, or the ``token_ids`` (else the first) input of a model whose other
    inputs are ``padding_mask`` / ``segment_ids`` (keras_hub backbones). Raises an
    :class:`InputError` saying why a model takes no token ids."""
    from ..engine.targets import input_structure

    preprocessor = getattr(model, "preprocessor", None)
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    try:
        outputs = list(model.outputs or [])
    except (AttributeError, ValueError):
        outputs = []
    output_shape = tuple(outputs[0].shape) if len(outputs) == 1 else None
    if not inputs:
        raise InputError(f"model {model.name!r} has no defined inputs (a subclassed model?); explain-text needs "
                         f"a functional model with an integer token-id input")
    struct = input_structure(model)
    if struct is not None:
        names, structure = list(struct), "dict"
        by_name = dict(struct)
    else:
        names = [t.name for t in inputs]
        structure = "single" if len(inputs) == 1 else "list"
        by_name = dict(zip(names, inputs))
    ids_key = "token_ids" if "token_ids" in by_name else names[0]
    ids_input = by_name[ids_key]
    if not _is_integer(ids_input):
        described = ", ".join(f"{n} {shape_str(tuple(by_name[n].shape)[1:])} {by_name[n].dtype}" for n in names)
        raise InputError(f"model {model.name!r} takes no integer token ids (its input{'s' if len(names) > 1 else ''}: "
                         f"{described}) and has no keras_hub preprocessor to turn text into ids; explain-text "
                         f"explains text models (use 'interprettensor explain' for images and arrays)")
    others = [n for n in names if n != ids_key]
    unknown = [n for n in others if n not in COMPANION_INPUTS]
    if unknown and preprocessor is None:
        raise InputError(f"model {model.name!r} takes the inputs {names}; explain-text feeds token ids "
                         f"({ids_key!r}) and fills only {', '.join(COMPANION_INPUTS)} from them, not {unknown}")
    shape = tuple(ids_input.shape)
    length = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    if len(shape) != 2:
        raise InputError(f"model {model.name!r}: its token-id input {ids_key!r} has shape {shape_str(shape)}; "
                         f"explain-text needs (batch, sequence)")
    return TextModel(preprocessor, ids_key, structure, names, length, vocabulary_size(model, ids_input),
                     output_shape)


def load_text_model(path: str) -> Any:
    """A saved text model: a ``.keras`` / ``.h5`` file (:func:`~.inputs.load_model`), or a folder: a
    keras_hub preset (``task.save_to_preset(folder)``: its ``task.json`` names the task class, which
    loads it with its preprocessor) or a backbone preset / Hugging Face checkpoint that keras_hub
    converts (loaded as a ``keras_hub.models.CausalLM``). Raises an :class:`InputError` naming the
    path where it cannot be loaded."""
    import json

    from .inputs import load_model

    if not os.path.isdir(path):
        return load_model(path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise InputError(f"model folder {path!r} is not a keras_hub preset or a Hugging Face checkpoint (it has no "
                         f"config.json); give a .keras file or a folder written by save_to_preset()")
    try:
        import keras_hub
    except ImportError:
        raise InputError(f"model folder {path!r}: loading a preset folder needs keras_hub "
                         f"(pip install keras-hub)") from None
    import importlib

    task_file = os.path.join(path, "task.json")
    try:
        if os.path.isfile(task_file):
            with open(task_file, encoding="utf-8") as f:
                spec = json.load(f)
            cls = getattr(importlib.import_module(spec["module"]), spec["class_name"])
        else:
            cls = keras_hub.models.CausalLM
        return cls.from_preset(path)
    except Exception as e:  # noqa: BLE001 - keras_hub raises many kinds for a broken preset
        text = str(e).strip()
        msg = text.splitlines()[0] if text else type(e).__name__
        raise InputError(f"cannot load the keras_hub preset {path!r}: {type(e).__name__}: {msg[:300]}") from None

