"""Faithfulness of token relevance for text and other token sequences: :class:`TokenFlipping`.

Tokens are deleted one step at a time, most relevant first (MoRF) or least relevant first (LeRF),
and the explained score is recorded after each step, as Achtibat et al. (2024, "AttnLRP:
Attention-aware layer-wise relevance propagation for transformers", ICML, Sec. 4.1) evaluate
transformers (the input-perturbation curves of Samek et al. 2017, on tokens). A faithful explanation
makes the MoRF curve fall fast (small area) and the LeRF curve stay high (large area).

Works on keras_hub's models (inputs a dict ``{"token_ids", "padding_mask", ...}``: text classifiers and
causal language models) and on plain Keras sequence models (an integer array of token ids, or a dict
of the same keys). All steps of a batch are stacked and passed through the model in calls of
``batch_size`` sequences.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import keras
import numpy as np

from ...engine.errors import ExplainError
from .model import MetricModel, softmax as softmax_fn

__all__ = ["TokenFlipping"]

ORDERS = ("morf", "lerf", "random")


class TokenFlipping:
    """Token deletion curves (Achtibat et al. 2024, Sec. 4.1): delete ``tokens_in_step`` tokens per
    step in the order of their relevance and record the explained score after each step.

    Args:
        order: ``'morf'`` (most relevant first), ``'lerf'`` (least relevant first) or ``'random'``
            (a random order from ``seed``: the baseline the other two are compared with).
        deletion: ``'mask'`` sets the deleted tokens' ``padding_mask`` to 0 (the model no longer
            attends to them; needs a dict input with ``mask_key``), ``'replace'`` replaces their ids by
            ``replacement_token_id`` (e.g. the tokenizer's ``[UNK]``/``[MASK]`` or pad id).
        replacement_token_id: the id deleted tokens become (``deletion='replace'`` only).
        tokens_in_step: tokens deleted per step (the last step may delete fewer).
        softmax: score the softmax probability of the explained class / token (True) or its logit
            (False; a final softmax of a plain Keras model is stripped).
        position: for a model with a sequence output (a causal LM, ``(n, T, vocabulary)``), the
            position whose next-token score is explained: an int (negative from the end) or one per
            sample; default the last valid (unpadded) position of each sample. Only tokens at or
            before it are deleted (later ones cannot change it). None for classifiers.
        rule: the LRP rule / preset that explains the inputs when no ``a_batch`` is given
            (:func:`interprettensor.lrp`, ``'attnlrp'`` by default); ``explain_func`` replaces it.
        token_key, mask_key: the names of the token ids and the padding mask in a dict input.
        batch_size: sequences per model call (all steps of all samples are stacked).
        seed: the random order's generator (``order='random'``).
        return_auc: return the areas under the curves instead of the curves.

    Calling it returns one curve per sample: the score before any deletion and after each step
    (``1 + ceil(k / tokens_in_step)`` values for a sample with ``k`` deletable tokens: its valid
    tokens, up to ``position`` for a sequence output). ``self.auc`` holds each curve's area by the
    trapezoidal rule over the fraction of tokens deleted (``[0, 1]``), i.e. the curve's mean score.
    """

    def __init__(self, order: str = "morf", deletion: str = "mask", replacement_token_id: int | None = None,
                 tokens_in_step: int = 1, softmax: bool = False, position: Any = None, rule: Any = "attnlrp",
                 token_key: str = "token_ids", mask_key: str = "padding_mask", batch_size: int = 256,
                 seed: int | None = 42, return_auc: bool = False, **kwargs: Any):
        if kwargs:
            raise TypeError(f"TokenFlipping got unexpected keyword arguments {sorted(kwargs)}")
        order = str(order).lower()
        if order not in ORDERS:
            raise ExplainError(f"order must be one of {ORDERS}, got {order!r}")
        if deletion not in ("mask", "replace"):
            raise ExplainError(f"deletion must be 'mask' or 'replace', got {deletion!r}")
        if deletion == "replace" and replacement_token_id is None:
            raise ExplainError("deletion='replace' needs replacement_token_id (the id deleted tokens become)")
        if deletion == "mask" and replacement_token_id is not None:
            raise ExplainError("replacement_token_id is used with deletion='replace' only")
        if int(tokens_in_step) < 1:
            raise ExplainError(f"tokens_in_step must be >= 1, got {tokens_in_step}")
        if int(batch_size) < 1:
            raise ExplainError(f"batch_size must be >= 1, got {batch_size}")
        self.order = order
        self.deletion = deletion
        self.replacement_token_id = None if replacement_token_id is None else int(replacement_token_id)
        self.tokens_in_step = int(tokens_in_step)
        self.softmax = bool(softmax)
        self.position = position
        self.rule = rule
        self.token_key = token_key
        self.mask_key = mask_key
        self.batch_size = int(batch_size)
        self.seed = seed
        self.return_auc = bool(return_auc)
        self.curves: list[np.ndarray] = []
        self.auc: list[float] = []
        self.calls = 0  # model calls of the last __call__

    # ------------------------------------------------------------------ inputs and the model

    def _split(self, x: Any) -> tuple[dict[str, np.ndarray], bool]:
        """The input as a dict of arrays and whether the model takes a dict."""
        if isinstance(x, Mapping):
            d = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in x.items()}
            if self.token_key not in d:
                raise ExplainError(f"the input dict has no {self.token_key!r} (token_key); its keys: {sorted(d)}")
            return d, True
        ids = np.asarray(keras.ops.convert_to_numpy(x))
        return {self.token_key: ids}, False

    def _outputs(self, model: keras.Model, inputs: dict[str, np.ndarray], is_dict: bool) -> np.ndarray:
        """The model's scores (before softmax) for stacked inputs, in calls of ``batch_size``."""
        rows = inputs[self.token_key].shape[0]
        outs = []
        if not is_dict:
            cached = self.__dict__.get("_wrapped")
            if cached is None or cached.model is not model:
                cached = self._wrapped = MetricModel(model, batch_size=self.batch_size)
            wrapped = cached
            flat = wrapped.logits(inputs[self.token_key])
            self.calls += -(-rows // self.batch_size)
            shape = tuple(model.outputs[0].shape[1:])
            if len(shape) == 2:  # a sequence output (n, T, vocabulary)
                return flat.reshape(rows, inputs[self.token_key].shape[1], -1)
            return flat
        last = model.layers[-1] if model.layers else None
        if getattr(last, "activation", None) is keras.activations.softmax:
            raise ExplainError(f"the model's last layer {last.name!r} applies a softmax; TokenFlipping scores "
                               f"logits of dict-input models as they come: remove the final softmax (and pass "
                               f"softmax=True for probabilities)")
        for s in range(0, rows, self.batch_size):
            chunk = {k: v[s:s + self.batch_size] for k, v in inputs.items()}
            out = model.predict_on_batch(chunk)
            if isinstance(out, Mapping) or isinstance(out, (list, tuple)):
                raise ExplainError("TokenFlipping needs a model with one output (class or next-token scores)")
            outs.append(np.asarray(keras.ops.convert_to_numpy(out), np.float64))
            self.calls += 1
        return np.concatenate(outs)

    def _scores(self, out: np.ndarray, y: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
        """The explained score of each row: ``out`` ``(rows, classes)`` or ``(rows, T, vocabulary)``."""
        rows = np.arange(out.shape[0])
        if out.ndim == 3:
            if pos is None:
                raise ExplainError("a sequence output needs a position")
            out = out[rows, pos]
        elif out.ndim != 2:
            raise ExplainError(f"the model's output has shape {out.shape}: expected (n, classes) or (n, T, vocab)")
        if self.softmax:
            out = softmax_fn(out)
        s = out[rows, y]
        if not np.isfinite(s).all():
            raise ExplainError("the model gave non-finite scores for inputs with deleted tokens (e.g. every "
                               "token of a sequence masked); use deletion='replace'")
        return s

    # ------------------------------------------------------------------ the call

    def __call__(self, model: keras.Model, x_batch: Any, y_batch: Any = None, a_batch: Any = None,
                 explain_func: Callable | None = None, explain_func_kwargs: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> list:
        """Curves (or areas, ``return_auc``) for the inputs ``x_batch`` (a dict of ``(n, T)`` arrays or
        an ``(n, T)`` array of token ids), ``y_batch`` the explained classes / next tokens (default:
        the model's prediction), ``a_batch`` the relevance per token ``(n, T)`` (or a dict holding
        it under ``token_key``, as :func:`interprettensor.lrp` returns for dict inputs); without it,
        ``explain_func(model=, inputs=, targets=, **explain_func_kwargs)`` or ``it.lrp(model, x,
        rule, target=, position=, **explain_func_kwargs)`` computes it."""
        if kwargs:
            raise TypeError(f"TokenFlipping() got unexpected keyword arguments {sorted(kwargs)}")
        inputs, is_dict = self._split(x_batch)
        ids = inputs[self.token_key]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ExplainError(f"{self.token_key} must be integer token ids (n, T), got {ids.dtype} {ids.shape}")
        n, t = ids.shape
        for k, v in inputs.items():
            if v.shape[:2] != (n, t):
                raise ExplainError(f"input {k!r} has shape {v.shape}; expected ({n}, {t}, ...) like {self.token_key}")
        if self.deletion == "mask" and (not is_dict or self.mask_key not in inputs):
            raise ExplainError(f"deletion='mask' needs a dict input with {self.mask_key!r} (mask_key); this "
                               f"input has none: use deletion='replace' with replacement_token_id")
        valid = inputs[self.mask_key].astype(bool) if self.mask_key in inputs else np.ones((n, t), bool)
        self.calls = 0

        out0 = self._outputs(model, inputs, is_dict)
        pos = None
        if out0.ndim == 3:
            if self.position is None:
                last = t - 1 - np.argmax(valid[:, ::-1], axis=1)
                pos = np.where(valid.any(1), last, t - 1)
            else:
                pos = np.broadcast_to(np.asarray(self.position, np.int64), (n,)) % t
            valid = valid & (np.arange(t)[None] <= pos[:, None])
        elif self.position is not None:
            raise ExplainError(f"position is for models with a sequence output; this one gives {out0.shape}")
        if y_batch is None:
            rows = np.arange(n)
            y = (out0[rows, pos] if pos is not None else out0).argmax(-1)
        else:
            y = np.asarray(y_batch).astype(np.int64).reshape(-1)
            if y.shape != (n,):
                raise ExplainError(f"y_batch must hold one label per sample ({n}), got shape {np.shape(y_batch)}")

        a = self._relevance(model, x_batch, inputs, y, pos, a_batch, explain_func, explain_func_kwargs)
        if a.shape != (n, t):
            raise ExplainError(f"a_batch has shape {a.shape}; expected one relevance per token ({n}, {t})")
        counts = valid.sum(1)
        if (counts == 0).any():
            raise ExplainError(f"samples {np.flatnonzero(counts == 0).tolist()} have no token to delete")

        # rank[i, j]: when token j of sample i is deleted (steps count from 1); not deletable: never
        if self.order == "random":
            key = np.random.default_rng(self.seed).random((n, t))
        else:
            key = -a if self.order == "morf" else a.copy()
        key = np.where(valid, key, np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        rank = np.empty((n, t), np.int64)
        np.put_along_axis(rank, order, np.arange(t)[None].repeat(n, 0), axis=1)
        rank = np.where(valid, rank, np.iinfo(np.int64).max)
        steps = -(-counts // self.tokens_in_step)                                        # per sample
        total = int(steps.max())
        deleted = rank[None] < (np.arange(1, total + 1)[:, None, None] * self.tokens_in_step)  # (S, n, T)

        stacked = {k: np.broadcast_to(v, (total,) + v.shape).copy() for k, v in inputs.items()}
        if self.deletion == "mask":
            stacked[self.mask_key] = np.where(deleted, 0, stacked[self.mask_key]).astype(inputs[self.mask_key].dtype)
        else:
            stacked[self.token_key] = np.where(deleted, self.replacement_token_id,
                                               stacked[self.token_key]).astype(ids.dtype)
        flat = {k: v.reshape((total * n,) + v.shape[2:]) for k, v in stacked.items()}
        out = self._outputs(model, flat if is_dict else {self.token_key: flat[self.token_key]}, is_dict)
        rep = lambda v: None if v is None else np.tile(v, total)  # noqa: E731
        after = self._scores(out, rep(y), rep(pos)).reshape(total, n)
        before = self._scores(out0, y, pos)
        curves = np.concatenate([before[None], after]).T                                # (n, 1 + S)
        self.curves = [curves[i, :steps[i] + 1].copy() for i in range(n)]
        self.auc = [float(np.trapezoid(c, dx=1.0 / (len(c) - 1))) for c in self.curves]
        self.relevance = a
        return list(self.auc) if self.return_auc else list(self.curves)

    def _relevance(self, model: keras.Model, x_batch: Any, inputs: dict[str, np.ndarray], y: np.ndarray,
                   pos: np.ndarray | None, a_batch: Any, explain_func: Callable | None,
                   explain_func_kwargs: Mapping[str, Any] | None) -> np.ndarray:
        if a_batch is None and explain_func is None and self.order == "random":
            return np.zeros(inputs[self.token_key].shape)  # the random order does not read relevance
        if a_batch is not None:
            if explain_func is not None:
                raise ExplainError("give a_batch or explain_func, not both")
            a = a_batch
        elif explain_func is not None:
            a = explain_func(model=model, inputs=x_batch, targets=y, **dict(explain_func_kwargs or {}))
        else:
            from ...engine.explainer import lrp

            x = inputs if isinstance(x_batch, Mapping) else inputs[self.token_key]
            a = lrp(model, x, rule=self.rule, target=y, position=pos, **dict(explain_func_kwargs or {}))
        if isinstance(a, Mapping):
            if self.token_key not in a:
                raise ExplainError(f"the relevance dict has no {self.token_key!r}; its keys: {sorted(a)}")
            a = a[self.token_key]
        a = np.asarray(keras.ops.convert_to_numpy(a), np.float64)
        if not np.isfinite(a).all():
            raise ExplainError("a_batch contains NaN or infinite values")
        return a
