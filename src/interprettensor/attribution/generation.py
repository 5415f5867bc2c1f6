"""Explaining generated text: a causal language model generates tokens after a prompt, and every
generated token's logit is explained over the prompt and the tokens generated before it.

Generated token ``k`` (at index ``P + k`` of the full sequence, ``P`` the prompt's length) was chosen
from the logits at position ``P + k - 1``; its explanation is LRP of the logit of that token at that
position (:class:`~interprettensor.Explainer` with ``position=`` and ``target=``). All of them come
from one batched pass: the full sequence is repeated along the batch axis, one copy per generated
token, each with its own position and target, so the graph is compiled once for the full length.
The result is a ``(generated, all tokens)`` relevance matrix, zero above the causal diagonal (a
token's logit cannot depend on later tokens).

With ``heads=True`` the same pass also gives each attention layer's relevance per head: the
relevance reaching the input of the attention's output projection ``(N, T, heads, head_dim)``,
summed over ``head_dim`` (Vaswani et al. 2017's ``concat(head_1, ..., head_h) W_O``: the share of the
explained logit that went through each head at each position).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ..engine.errors import ExplainError
from ..engine.explainer import Explainer
from ..engine.handlers.base import WEIGHTED
from ..engine.targets import input_structure

__all__ = ["Generation", "explain_generation", "attention_heads"]


@dataclasses.dataclass
class Generation:
    """A prompt, the tokens generated after it, and the explanation of each generated token.

    Attributes:
        token_ids: ``(P + G,)`` the prompt's ids followed by the generated ones.
        prompt_length: ``P``.
        relevance: ``(G, P + G)``: row ``k`` is the relevance of every token for the logit that chose
            generated token ``k`` (nonzero only in columns ``< P + k``).
        logits: ``(G,)`` the explained logits (under ``contrast``: the explained differences).
        heads: ``{attention layer: (G, P + G, heads)}`` with ``heads=True``, else ``None``.
    """

    token_ids: np.ndarray
    prompt_length: int
    relevance: np.ndarray
    logits: np.ndarray
    heads: dict[str, np.ndarray] | None = None

    @property
    def generated(self) -> np.ndarray:
        """The generated ids ``(G,)``."""
        return self.token_ids[self.prompt_length:]

    def sentences(self, tokens: Sequence[Any] | None = None) -> list[tuple]:
        """One ``(tokens, R, title)`` per generated token for :func:`interprettensor.render_text.save_html`
        / ``save_png``: the tokens before it coloured by their relevance, titled with the token.
        ``tokens``: the strings of :attr:`token_ids` (``render_text.tokens_from_ids(g.token_ids,
        tokenizer)``; ``None``: the ids)."""
        names = [str(int(i)) for i in self.token_ids] if tokens is None else [str(t) for t in tokens]
        if len(names) != len(self.token_ids):
            raise ValueError(f"tokens has {len(names)} entries for {len(self.token_ids)} token ids")
        out = []
        for k in range(len(self.generated)):
            end = self.prompt_length + k
            out.append((names[:end], self.relevance[k, :end], f"-> {names[end]!r}"))
        return out


def _prompt_ids(prompt: Any) -> np.ndarray:
    if isinstance(prompt, dict):
        if "token_ids" not in prompt:
            raise ExplainError(f"the prompt is a dict without 'token_ids' (keys: {sorted(prompt)})")
        ids = np.asarray(prompt["token_ids"])
        mask = prompt.get("padding_mask")
        if mask is not None:
            mask = np.asarray(mask).reshape(-1).astype(bool)
            ids = ids.reshape(-1)
            if mask.shape != ids.shape or (mask.any() and not mask[:mask.sum()].all()):
                raise ExplainError("the prompt's padding_mask must mark a leading run of tokens (the prompt), "
                                   f"got {mask.astype(int).tolist()}")
            ids = ids[mask]
    else:
        ids = np.asarray(prompt)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or not ids.size or not np.issubdtype(ids.dtype, np.integer):
        raise ExplainError(f"the prompt must be one sequence of integer token ids (T,) or (1, T), got shape "
                           f"{ids.shape} and dtype {ids.dtype}")
    return ids.astype("int32")


def _model_inputs(model: Any, ids: np.ndarray) -> Any:
    """The batch ``ids`` (N, T) as the model takes it: a dict with a padding mask of ones for keras_hub
    models, the array itself otherwise."""
    struct = input_structure(model)
    if struct is None:
        return ids
    extra = sorted(set(struct) - {"token_ids", "padding_mask"})
    if "token_ids" not in struct or extra:
        raise ExplainError(f"explain_generation needs a model that takes token ids (and a padding mask); "
                           f"model {model.name!r} takes {sorted(struct)}")
    x = {"token_ids": ids}
    if "padding_mask" in struct:
        x["padding_mask"] = np.ones_like(ids)
    return x


def _logits(model: Any, ids: np.ndarray) -> np.ndarray:
    from keras import ops

    out = model(_model_inputs(model, ids), training=False)
    out = ops.convert_to_numpy(out if not isinstance(out, (list, tuple)) else out[0])
    if out.ndim != 3:
        raise ExplainError(f"explain_generation needs next-token logits (N, T, vocabulary); model {model.name!r} "
                           f"returns shape {out.shape}")
    return out


def _generate(model: Any, prompt: np.ndarray, new_tokens: int, sampler: str,
              stop_token_ids: Sequence[int]) -> np.ndarray:
    if sampler == "greedy":
        ids = prompt
        for _ in range(new_tokens):
            nxt = int(np.argmax(_logits(model, ids[None])[0, -1]))
            ids = np.append(ids, np.int32(nxt))
            if nxt in stop_token_ids:
                break
        return ids
    if sampler != "model":
        raise ExplainError(f"sampler must be 'greedy' or 'model', got {sampler!r}")
    if not hasattr(model, "generate"):
        raise ExplainError(f"sampler='model' needs a keras_hub CausalLM (with generate()); model {model.name!r} "
                           f"has none: use sampler='greedy'")
    if getattr(model, "preprocessor", None) is not None:
        raise ExplainError(f"sampler='model' runs {type(model).__name__}.generate on token ids, which needs the model "
                           f"built with preprocessor=None (its preprocessor expects text); use sampler='greedy'")
    length = len(prompt) + new_tokens
    ids = np.zeros((1, length), "int32")
    ids[0, :len(prompt)] = prompt
    mask = np.zeros((1, length), bool)
    mask[0, :len(prompt)] = True
    out = model.generate({"token_ids": ids, "padding_mask": mask}, max_length=length,
                         stop_token_ids=tuple(stop_token_ids) or None)
    tokens, real = np.asarray(out["token_ids"])[0], np.asarray(out["padding_mask"])[0].astype(bool)
    return tokens[real].astype("int32")


def attention_heads(explainer: Explainer, layerwise: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-head relevance ``{attention layer: (N, T, heads)}`` from a layer-wise explanation
    (``explainer(x, layerwise=True)``): for every layer with weights whose input has a head axis
    ``(N, T, heads, head_dim)`` (an attention's output projection ``concat(heads) W_O``), the relevance
    of that input summed over ``head_dim``. Keyed by the attention layer (the projection's name without
    its last part)."""
    graph = explainer.graph
    producer = {k: s for s in graph.steps for k in s.outputs}
    out = {}
    for step in graph.steps:
        if step.handler.category != WEIGHTED or len(step.inputs) != 1:
            continue
        source = producer.get(step.inputs[0])
        if source is None or source.name not in layerwise:
            continue
        R = layerwise[source.name]
        if R.ndim != 4:
            continue
        name = step.name.rsplit("/", 1)[0] if "/" in step.name else step.name
        out[name] = R.sum(axis=-1)
    return out


def explain_generation(model: Any, prompt: Any, new_tokens: int, *, rule: Any = "attnlrp",
                       sampler: str = "greedy", stop_token_ids: Sequence[int] = (), contrast: Any = None,
                       heads: bool = False, explainer: Explainer | None = None, batch_size: int | None = None,
                       **params: Any) -> Generation:
    """Generate up to ``new_tokens`` tokens after ``prompt`` and explain each generated token's logit.

    Args:
        model: a causal language model: token ids ``(N, T)`` (or keras_hub's dict of ``token_ids`` and
            ``padding_mask``) to next-token logits ``(N, T, vocabulary)``, e.g. a keras_hub
            ``CausalLM`` built with ``preprocessor=None``.
        prompt: one sequence of token ids ``(T,)`` / ``(1, T)``, or a dict with ``token_ids`` (and a
            ``padding_mask`` marking the prompt).
        new_tokens: how many tokens to generate (fewer where a stop token comes first).
        rule: the rule, preset or composite (AttnLRP by default); ``params`` go to the
            :class:`~interprettensor.Explainer`.
        sampler: ``'greedy'`` (the most likely token, one model call per token) or ``'model'``
            (keras_hub's ``CausalLM.generate`` with the sampler the model was compiled with; the model
            built with ``preprocessor=None``).
        stop_token_ids: stop after generating one of these.
        contrast: explain ``logit[generated] - logit[contrast]`` instead (a token id, or one per
            generated token).
        heads: also give each attention layer's relevance per head (:func:`attention_heads`).
        explainer: an :class:`~interprettensor.Explainer` of ``model`` to reuse (its compiled passes).
        batch_size: explain the generated tokens in batches of this size (default: all in one).

    Returns:
        a :class:`Generation`.
    """
    if not isinstance(new_tokens, (int, np.integer)) or new_tokens < 1:
        raise ExplainError(f"new_tokens must be a positive int, got {new_tokens!r}")
    ids = _prompt_ids(prompt)
    full = _generate(model, ids, int(new_tokens), sampler, [int(t) for t in stop_token_ids])
    P, n = len(ids), len(full) - len(ids)
    ex = explainer if explainer is not None else Explainer(model, rule, **params)
    batch = np.repeat(full[None], n, axis=0)
    positions = np.arange(P - 1, P - 1 + n)
    targets = full[P:]
    res = ex(_model_inputs(model, batch), targets, position=positions, contrast=contrast, layerwise=heads,
             return_output=True, batch_size=batch_size)
    R, rest = res[0], res[1:]
    lw = rest[0] if heads else None
    out = rest[-1]
    R = R["token_ids"] if isinstance(R, dict) else R
    rows = np.arange(n)
    logits = out[rows, positions, targets]
    if contrast is not None:
        logits = logits - out[rows, positions, np.broadcast_to(np.asarray(contrast), (n,))]
    head_relevance = attention_heads(ex, lw) if heads else None
    return Generation(full, P, np.asarray(R), np.asarray(logits), head_relevance)
