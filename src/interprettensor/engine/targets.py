"""What an explanation starts from: the input batch checked against the model, the targets (a class,
one per sample, or the prediction), and the starting relevance at the explained output."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from .errors import ExplainError

__all__ = ["as_inputs", "as_targets", "as_positions", "check_finite", "start_relevance", "input_structure",
           "pack_inputs", "known_input_shapes"]

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


def input_dtypes(model: Any, n_inputs: int, dtype: tf.DType) -> list[tf.DType]:
    """The dtype of each input: ``dtype`` for float inputs, the model's own for integer and boolean
    inputs (token ids, masks)."""
    kts = getattr(model, "inputs", None) or []
    out = []
    for i in range(n_inputs):
        d = tf.as_dtype(str(kts[i].dtype)) if i < len(kts) and getattr(kts[i], "dtype", None) else dtype
        out.append(dtype if d.is_floating else d)
    return out


def as_inputs(model: Any, x: ArrayLike, n_inputs: int, dtype: tf.DType) -> list[tf.Tensor]:
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
    dtypes = input_dtypes(model, n_inputs, dtype)
    for i, (xi, exp, want) in enumerate(zip(xs, expected, dtypes)):
        t = tf.convert_to_tensor(np.asarray(xi) if not tf.is_tensor(xi) else xi)
        if not want.is_floating and t.dtype.is_floating:
            arr = t.numpy()
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ExplainError(f"input {i} ({model.inputs[i].name!r}) takes integer values ({want.name}), got "
                                   f"non-integer numbers")
        if t.dtype != want:
            t = tf.cast(t, want)
        if exp is not None:
            ok = t.shape.rank == len(exp) and all(e is None or e == s for e, s in zip(exp[1:], t.shape[1:]))
            if not ok:
                raise ExplainError(f"input {i} has shape {tuple(t.shape)} but the model's input "
                                   f"{model.inputs[i].name!r} expects {exp} (None = any size)")
        out.append(t)
    return out


def check_finite(xs: Sequence[tf.Tensor], what: str = "input") -> None:
    """Stop with an error naming the samples whose values hold NaN or inf (their relevance would be
    NaN)."""
    for i, t in enumerate(xs):
        if not t.dtype.is_floating or int(tf.size(t)) == 0:
            continue
        bad = tf.logical_not(tf.reduce_all(tf.math.is_finite(tf.reshape(t, (tf.shape(t)[0], -1))), axis=1))
        idx = np.flatnonzero(bad.numpy())
        if idx.size:
            which = f"{what} {i} " if len(xs) > 1 else f"the {what} "
            shown = ", ".join(map(str, idx[:10])) + (f", ... ({idx.size} in all)" if idx.size > 10 else "")
            raise ExplainError(f"{which}holds NaN or inf values in sample(s) {shown}; LRP of such samples is "
                               f"undefined: remove or repair them (explain_dataset can skip them: "
                               f"nonfinite='skip')")


def as_positions(position: ArrayLike | None, n: int, length: int | None) -> tf.Tensor | None:
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
    return tf.constant(p, tf.int32)


def as_targets(target: ArrayLike | None, n: int) -> tf.Tensor:
    """``target`` (None, an int, or one int per sample) as int32 of shape (n,); -1 = predicted."""
    if target is None:
        return tf.fill((n,), -1)
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full((n,), int(t))
    if t.shape != (n,):
        raise ExplainError(f"target must be an int or one int per sample ({n}), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ExplainError(f"target must be integer class indices, got {t.dtype}")
    if (t < 0).any():
        raise ExplainError(f"target out of range: negative class index {int(t.min())}")
    return tf.constant(t, tf.int32)


def start_relevance(out: tf.Tensor, targets: tf.Tensor | None, R0: tf.Tensor | None, channels: bool,
                    where: str, positions: tf.Tensor | None = None) -> tf.Tensor:
    """The relevance that starts the backward pass, shaped like the explained output ``out``:

    * ``R0`` if given (a custom relevance);
    * ``channels`` (a hidden layer with spatial axes): every position of channel ``target`` (the most
      active channel where the target is -1), i.e. the output times a channel mask;
    * ``positions`` (a sequence output ``(N, T, ...)``: one position per sample, e.g. the token whose
      next-token logits are explained): the output at that position times the one-hot mask of
      ``target`` (the largest output at that position where -1), zero at every other position;
    * else the output times the one-hot mask of ``target`` (the largest output where -1).
    """
    if R0 is not None:
        return tf.reshape(tf.cast(R0, out.dtype), tf.shape(out))
    if positions is not None:
        at = tf.gather(out, positions, axis=1, batch_dims=1)  # (N, ...)
        R_at = start_relevance(at, targets, None, False, f"{where} at the position")
        length = tf.shape(out)[1]
        onehot = tf.one_hot(positions, length, dtype=out.dtype)  # (N, T)
        onehot = tf.reshape(onehot, tf.concat([tf.shape(onehot), tf.ones([out.shape.rank - 2], tf.int32)], 0))
        return onehot * tf.expand_dims(R_at, 1)
    if channels and out.shape.rank > 2:
        depth = int(out.shape[-1])
        axes = list(range(1, out.shape.rank - 1))
        pred = tf.argmax(tf.reduce_sum(out, axis=axes), axis=-1, output_type=tf.int32)
        t = tf.where(targets < 0, pred, targets)
        tf.debugging.assert_less(t, depth, message=f"target out of range: {where} has {depth} channels, "
                                                   f"valid targets are 0..{depth - 1}")
        mask = tf.one_hot(t, depth, dtype=out.dtype)
        return out * tf.reshape(mask, [-1] + [1] * len(axes) + [depth])
    flat = tf.reshape(out, (-1, int(np.prod(out.shape[1:]))))
    depth = int(flat.shape[-1])
    pred = tf.argmax(flat, axis=-1, output_type=tf.int32)
    t = tf.where(targets < 0, pred, targets)
    tf.debugging.assert_less(t, depth, message=f"target out of range: {where} has {depth} units, valid "
                                               f"targets are 0..{depth - 1}")
    return tf.reshape(flat * tf.one_hot(t, depth, dtype=flat.dtype), tf.shape(out))
