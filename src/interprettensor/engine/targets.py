"""What an explanation starts from: the input batch checked against the model, the targets (a class,
one per sample, or the prediction), and the starting relevance at the explained output."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from .errors import ExplainError

__all__ = ["as_inputs", "as_targets", "check_finite", "start_relevance"]

ArrayLike = Any


def as_inputs(model: Any, x: ArrayLike, n_inputs: int, dtype: tf.DType) -> list[tf.Tensor]:
    """Convert ``x`` (array, tensor, or list of them for multi-input models) to tensors of ``dtype``
    and check their shapes against the model's inputs."""
    xs = list(x) if (n_inputs > 1 and isinstance(x, (list, tuple))) else [x]
    if len(xs) != n_inputs:
        raise ExplainError(f"the model takes {n_inputs} inputs, got {len(xs)}")
    out = []
    expected = [tuple(kt.shape) for kt in model.inputs] if getattr(model, "inputs", None) else [None] * n_inputs
    for i, (xi, exp) in enumerate(zip(xs, expected)):
        t = tf.convert_to_tensor(np.asarray(xi) if not tf.is_tensor(xi) else xi)
        if t.dtype != dtype:
            t = tf.cast(t, dtype)
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
                    where: str) -> tf.Tensor:
    """The relevance that starts the backward pass, shaped like the explained output ``out``:

    * ``R0`` if given (a custom relevance);
    * ``channels`` (a hidden layer with spatial axes): every position of channel ``target`` (the most
      active channel where the target is -1), i.e. the output times a channel mask;
    * else the output times the one-hot mask of ``target`` (the largest output where -1).
    """
    if R0 is not None:
        return tf.reshape(tf.cast(R0, out.dtype), tf.shape(out))
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
