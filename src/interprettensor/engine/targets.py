"""What an explanation starts from: the input batch checked against the model, the targets (a class,
one per sample, or the prediction), and the starting relevance at the explained output."""

from __future__ import annotations

from typing import Any, Sequence

import math

import numpy as np
from keras import ops

from . import dtypes as _dtypes
from .backend import Tensor
from .errors import ExplainError

__all__ = ["as_inputs", "as_targets", "as_positions", "check_finite", "check_targets", "start_relevance",
           "input_structure", "pack_inputs", "known_input_shapes"]

ArrayLike = Any


def input_structure(model: Any) -> Any:
    """The nested structure the model's inputs were defined with (a dict of named inputs for keras_hub
    backbones; ``None`` for a single input or a list)."""
    struct = getattr(model, "_inputs_struct", None)
    return struct if isinstance(struct, dict) else None


def pack_inputs(model: Any, xs: Sequence[Any]) -> Any:
    """The flat list ``xs`` in the structure the model takes (a dict, a list or one tensor)."""
    struct = input_structure(model)
    if struct is not None:
        from keras import tree

        return tree.pack_sequence_as(struct, list(xs))
    return xs[0] if len(xs) == 1 else list(xs)


def known_input_shapes(model: Any) -> list[tuple] | None:
    """The per-sample shape of each model input (``None`` entries: any size), where the model tells:
    from a functional model's inputs, else from the shape it was built with (``get_build_config()``:
    a Sequential without ``keras.Input``, ``it.Sequential`` and models saved by ``interprettensor
    train``, once built or loaded). ``None`` when the model does not tell."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        return [tuple(t.shape[1:]) for t in inputs]
    try:
        shape = (model.get_build_config() or {}).get("input_shape") if getattr(model, "built", False) else None
    except Exception:  # noqa: BLE001 - a model whose build config cannot be read tells nothing
        shape = None
    if isinstance(shape, dict) and len(shape) == 1:
        shape = next(iter(shape.values()))
    if isinstance(shape, (list, tuple)) and shape and all(s is None or isinstance(s, int) for s in shape):
        return [tuple(shape)[1:]]
    return None


def _flatten_dict(model: Any, x: dict) -> list:
    struct = input_structure(model)
    if struct is None:
        raise ExplainError(f"the inputs are a dict with keys {sorted(x)}, but model {model.name!r} takes "
                           f"{'a list of inputs' if len(getattr(model, 'inputs', []) or []) > 1 else 'one input'}")
    missing, extra = sorted(set(struct) - set(x)), sorted(set(x) - set(struct))
    if missing or extra:
        raise ExplainError(f"the inputs' keys do not match the model's: missing {missing}, unexpected {extra} "
                           f"(the model takes {sorted(struct)})")
    from keras import tree

    return tree.flatten({k: x[k] for k in struct})


def input_dtypes(model: Any, n_inputs: int, dtype: Any) -> list[str]:
    """The dtype (by name) of each input: ``dtype`` for float inputs, the model's own for integer and
    boolean inputs (token ids, masks)."""
    kts = getattr(model, "inputs", None) or []
    dtype = _dtypes.name(dtype)
    out = []
    for i in range(n_inputs):
        d = _dtypes.name(kts[i].dtype) if i < len(kts) and getattr(kts[i], "dtype", None) else dtype
        out.append(dtype if _dtypes.is_floating(d) else d)
    return out


def as_inputs(model: Any, x: ArrayLike, n_inputs: int, dtype: Any) -> list[Tensor]:
    """Convert ``x`` (array, tensor, a list of them for multi-input models, or a dict of named inputs)
    to tensors (float inputs in ``dtype``, integer inputs in the model's integer dtype) and check
    their shapes against the model's inputs."""
    if isinstance(x, dict):
        xs = _flatten_dict(model, x)
    else:
        xs = list(x) if (n_inputs > 1 and isinstance(x, (list, tuple))) else [x]
    if len(xs) != n_inputs:
        raise ExplainError(f"the model takes {n_inputs} inputs, got {len(xs)}")
    out = []
    expected = [tuple(kt.shape) for kt in model.inputs] if getattr(model, "inputs", None) else [None] * n_inputs
    wanted = input_dtypes(model, n_inputs, dtype)
    for i, (xi, exp, want) in enumerate(zip(xs, expected, wanted)):
        t = ops.convert_to_tensor(np.asarray(xi) if not ops.is_tensor(xi) else xi)
        if not _dtypes.is_floating(want) and _dtypes.is_floating(t.dtype):
            arr = ops.convert_to_numpy(t)
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ExplainError(f"input {i} ({model.inputs[i].name!r}) takes integer values ({want}), got "
                                   f"non-integer numbers")
        if _dtypes.name(t.dtype) != want:
            t = ops.cast(t, want)
        if exp is not None:
            ok = len(t.shape) == len(exp) and all(e is None or e == s for e, s in zip(exp[1:], t.shape[1:]))
            if not ok:
                raise ExplainError(f"input {i} has shape {tuple(t.shape)} but the model's input "
                                   f"{model.inputs[i].name!r} expects {exp} (None = any size)")
        out.append(t)
    return out


def check_finite(xs: Sequence[Tensor], what: str = "input") -> None:
    """Stop with an error naming the samples whose values hold NaN or inf (their relevance would be
    NaN)."""
    for i, t in enumerate(xs):
        if not _dtypes.is_floating(t.dtype) or math.prod(t.shape) == 0:
            continue
        bad = ops.logical_not(ops.all(ops.isfinite(ops.reshape(t, (t.shape[0], -1))), axis=1))
        idx = np.flatnonzero(ops.convert_to_numpy(bad))
        if idx.size:
            which = f"{what} {i} " if len(xs) > 1 else f"the {what} "
            shown = ", ".join(map(str, idx[:10])) + (f", ... ({idx.size} in all)" if idx.size > 10 else "")
            raise ExplainError(f"{which}holds NaN or inf values in sample(s) {shown}; LRP of such samples is "
                               f"undefined: remove or repair them (explain_dataset can skip them: "
                               f"nonfinite='skip')")


def as_positions(position: ArrayLike | None, n: int, length: int | None) -> Tensor | None:
    """``position`` (None, an int, or one int per sample; negative counts from the end) as int32 of
    shape (n,), or None."""
    if position is None:
        return None
    p = np.asarray(position)
    if p.ndim == 0:
        p = np.full((n,), int(p))
    if p.shape != (n,) or not np.issubdtype(p.dtype, np.integer):
        raise ExplainError(f"position must be an int or one int per sample ({n}), got {position!r}")
    if length is not None:
        if ((p >= length) | (p < -length)).any():
            raise ExplainError(f"position out of range: the explained output has {length} positions, got "
                               f"{sorted(set(p.tolist()))}")
        p = np.where(p < 0, p + length, p)
    return ops.convert_to_tensor(np.asarray(p, np.int32))


def as_targets(target: ArrayLike | None, n: int) -> Tensor:
    """``target`` (None, an int, or one int per sample) as int32 of shape (n,); -1 = predicted."""
    if target is None:
        return ops.full((n,), -1, dtype="int32")
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full((n,), int(t))
    if t.shape != (n,):
        raise ExplainError(f"target must be an int or one int per sample ({n}), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ExplainError(f"target must be integer class indices, got {t.dtype}")
    if (t < 0).any():
        raise ExplainError(f"target out of range: negative class index {int(t.min())}")
    return ops.convert_to_tensor(np.asarray(t, np.int32))


def target_depth(shape: Sequence[int], channels: bool, positions: bool = False) -> tuple[int, str]:
    """How many classes a target may pick from an explained output of per-sample ``shape`` under
    :func:`start_relevance`'s modes, and what they are called (``'channels'`` or ``'units'``)."""
    shape = tuple(int(d) for d in shape)
    if positions:
        return math.prod(shape[1:]), "units"
    if channels and len(shape) > 1:
        return shape[-1], "channels"
    return math.prod(shape), "units"


def check_targets(targets: ArrayLike, shape: Sequence[int], channels: bool, where: str,
                  positions: bool = False) -> None:
    """Stop with an error where a target (NumPy, -1: predicted) is beyond the explained output of
    per-sample ``shape`` (see :func:`target_depth`; with ``positions``: the output at one position,
    named ``where`` at the position). The compiled pass does not check: a target beyond the output
    would give zero relevance."""
    t = np.asarray(targets)
    if not t.size:
        return
    depth, what = target_depth(shape, channels, positions)
    if int(t.max()) >= depth:
        where = f"{where} at the position" if positions else where
        raise ExplainError(f"target out of range: {where} has {depth} {what}, valid targets are 0..{depth - 1}")


def at_positions(t: Tensor, positions: Tensor) -> Tensor:
    """``t[n, positions[n]]`` for each sample ``n`` of a sequence ``t`` ``(N, T, ...)``, shaped
    ``(N, 1, ...)``: a gather of rows (``take_along_axis`` would broadcast and transpose all of ``t``, a
    vocabulary-sized copy per position for a language model's logits)."""
    rows = ops.arange(ops.shape(t)[0], dtype="int32") * ops.shape(t)[1] + ops.cast(positions, "int32")
    return ops.expand_dims(ops.take(ops.reshape(t, (-1,) + tuple(t.shape[2:])), rows, axis=0), 1)


def start_relevance(out: Tensor, targets: Tensor | None, R0: Tensor | None, channels: bool,
                    where: str, positions: Tensor | None = None, contrast: Tensor | None = None) -> Tensor:
    """The relevance that starts the backward pass, shaped like the explained output ``out``:

    * ``R0`` if given (a custom relevance);
    * ``channels`` (a hidden layer with spatial axes): every position of channel ``target`` (the most
      active channel where the target is -1), i.e. the output times a channel mask;
    * ``positions`` (a sequence output ``(N, T, ...)``: one position per sample, e.g. the token whose
      next-token logits are explained): the output at that position times the one-hot mask of
      ``target`` (the largest output at that position where -1), zero at every other position;
    * else the output times the one-hot mask of ``target`` (the largest output where -1);
    * with ``contrast`` (classes, one per sample): the relevance of ``target`` minus the relevance of
      ``contrast`` chosen the same way, i.e. ``+z_target`` and ``-z_contrast``: the backward pass is
      linear in its start, so it explains ``z_target - z_contrast``.

    Targets are not checked here (a compiled pass cannot raise on every backend): the caller checks
    them on the host first (:func:`check_targets`); a target beyond the output gives zero relevance.
    """
    if R0 is not None:
        return ops.reshape(ops.cast(R0, out.dtype), ops.shape(out))
    if contrast is not None:
        return (start_relevance(out, targets, None, channels, where, positions)
                - start_relevance(out, contrast, None, channels, where, positions))
    rank = len(out.shape)
    if positions is not None:
        at = ops.squeeze(at_positions(out, positions), axis=1)  # (N, ...)
        R_at = start_relevance(at, targets, None, False, f"{where} at the position")
        onehot = ops.one_hot(positions, ops.shape(out)[1], dtype=out.dtype)  # (N, T)
        onehot = ops.reshape(onehot, ops.shape(onehot) + (1,) * (rank - 2))
        return onehot * ops.expand_dims(R_at, 1)
    if channels and rank > 2:
        depth = int(out.shape[-1])
        axes = tuple(range(1, rank - 1))
        pred = ops.cast(ops.argmax(ops.sum(out, axis=axes), axis=-1), "int32")
        t = ops.where(targets < 0, pred, targets)
        mask = ops.one_hot(t, depth, dtype=out.dtype)
        return out * ops.reshape(mask, (-1,) + (1,) * len(axes) + (depth,))
    depth = math.prod(int(d) for d in out.shape[1:])
    flat = ops.reshape(out, (-1, depth))
    pred = ops.cast(ops.argmax(flat, axis=-1), "int32")
    t = ops.where(targets < 0, pred, targets)
    return ops.reshape(flat * ops.one_hot(t, depth, dtype=flat.dtype), ops.shape(out))
