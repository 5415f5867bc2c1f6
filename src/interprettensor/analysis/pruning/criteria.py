"""Pruning criteria: one raw score per unit (channel or head) of each prunable layer, before the per-layer
normalisation of :func:`normalise`.

* ``'lrp'`` (Yeom et al. 2021, "Pruning by explaining: a novel criterion for deep neural network
  pruning", Pattern Recognition 115, eq. 4-5): the relevance of each unit, ``R_c = sum over reference
  samples and positions of R(x)[..., c]`` at the layer's output, from one LRP backward pass per sample
  explaining its label (:func:`interprettensor.lrp` with ``layerwise=True``). For heads (Hatefi et al.
  2024, "Pruning by explaining revisited"), the relevance of each head's attention output (before the
  output projection).
* ``'magnitude'`` (Li et al. 2017, "Pruning filters for efficient ConvNets"): the L1 norm of the unit's
  weights (a filter: its kernel slice; a head: its query, key, value and output kernel slices).
* ``'taylor'`` (Molchanov et al. 2017, "Pruning convolutional neural networks for resource efficient
  inference", eq. 8): ``|mean over positions of a * dC/da|`` for each sample (``a``: the unit's
  activation, ``C``: the cross-entropy of the label), averaged over the reference samples. For heads,
  ``a`` is the head's attention output where the output projection reads it (``(positions, value dim)``
  per head, after Keras' optional gate), and the product is summed over the head's value dimensions
  before the mean over positions: ``|dC/ds_h| / T`` for a gate ``s_h`` scaling head ``h``'s output.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator

import keras
import numpy as np
from keras import ops

from ...engine import backend
from .structure import PruningError, Unit, graph_of

__all__ = ["CRITERIA", "lrp_scores", "magnitude_scores", "taylor_scores", "normalise"]

CRITERIA = ("lrp", "magnitude", "taylor")


def normalise(scores: np.ndarray) -> np.ndarray:
    """``|s| / ||s||_2`` within one layer (Molchanov et al. 2017, eq. 10; Yeom et al.'s code does the same
    for every criterion), so that one global ranking compares layers of different sizes and scales. A
    layer of zeros stays zeros."""
    s = np.abs(np.asarray(scores, dtype="float64"))
    norm = np.sqrt(np.sum(s * s))
    return s / norm if norm > 0 else s


def magnitude_scores(units: list[Unit], unit: str = "channel") -> dict[str, np.ndarray]:
    """L1 norm of each filter (kernel ``(..., in, out)`` summed over all but ``out``) or head."""
    out = {}
    for u in units:
        if unit == "head":
            total = np.zeros(u.size)
            for var in u.layer.weights:
                if not var.path.endswith("kernel"):
                    continue
                w = np.abs(np.asarray(var, dtype="float64"))
                total += w.sum(axis=tuple(a for a in range(w.ndim) if a != 0)) \
                    if "attention_output" in var.path else w.sum(axis=(0, 2))
            out[u.layer.name] = total
        else:  # a residual group: the L1 norms of its layers' filters for the channel, summed
            total = np.zeros(u.size)
            for layer in u.layers:
                w = np.abs(np.asarray(layer.get_weights()[0], dtype="float64"))
                total += w.reshape(-1, w.shape[-1]).sum(axis=0)
            out[u.layer.name] = total
    return out


def _head_key(layer: Any, keys: Any) -> str:
    """The layerwise key of the heads' attention output (before the output projection) of ``layer``: the
    engine expands Keras' fused attention into ``<layer>/dot_product_attention[_k]`` (numbered by Keras when
    traced more than once)."""
    pattern = re.compile(re.escape(layer.name) + r"/dot_product_attention(_\d+)?")
    found = [k for k in keys if pattern.fullmatch(k)]
    if len(found) != 1:
        raise PruningError(f"the LRP pass returned {len(found)} head outputs for {layer.name!r} ({found}); expected "
                           f"one '{layer.name}/dot_product_attention' among {sorted(keys)[:12]}")
    return found[0]


def lrp_scores(model: keras.Model, units: list[Unit], x: np.ndarray, y: np.ndarray, unit: str = "channel",
               rule: Any = "epsilon_plus", batch_size: int = 64, progress: Callable[[int], None] | None = None,
               **params: Any) -> dict[str, np.ndarray]:
    """Relevance of each unit summed over the reference samples (each explaining its label ``y``)."""
    from ...engine.explainer import Explainer

    explainer = Explainer(model, rule, **params)
    sums = {u.layer.name: np.zeros(u.size) for u in units}
    for lo in range(0, len(x), batch_size):
        xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
        _, lw = explainer(xb, yb, layerwise=True)
        for u in units:
            keys = [_head_key(u.layer, lw)] if unit == "head" else [layer.name for layer in u.layers]
            for key in keys:  # a residual group: the relevances at its layers' outputs, summed
                if key not in lw:
                    raise PruningError(f"the LRP pass returned no relevance for {key!r} (layer {u.layer.name}); "
                                       f"layerwise relevances exist for {sorted(lw)[:12]}")
                r = np.asarray(lw[key], dtype="float64")
                axis = r.ndim - 2 if unit == "head" else r.ndim - 1
                sums[u.layer.name] += r.sum(axis=tuple(a for a in range(r.ndim) if a != axis))
        if progress:
            progress(len(xb))
    return sums


def _from_probabilities(model: keras.Model) -> bool:
    """Whether the model's output is a softmax (then the loss takes probabilities, else logits)."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return isinstance(last, keras.layers.Softmax) or (act is not None and getattr(act, "__name__", "") == "softmax")


def taylor_scores(model: keras.Model, units: list[Unit], x: np.ndarray, y: np.ndarray, unit: str = "channel",
                  batch_size: int = 64, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Molchanov et al.'s first-order Taylor criterion: ``mean_n |mean_positions(a * dC/da)|`` per unit,
    ``C`` the sparse categorical cross-entropy of the labels; the gradient reaches each layer's output
    through a zero added there (the model run operation by operation). A residual group (its channel
    removed from every layer at once): ``mean_n |sum_layers mean_positions(a * dC/da)|``, the first-order
    change of removing it."""
    if unit == "head":
        return _taylor_head_scores(model, units, x, y, batch_size, progress)
    g = graph_of(model)
    names = [layer.name for u in units for layer in u.layers]
    owner = {layer.name: u.layer.name for u in units for layer in u.layers}
    probe = keras.Model(g.inputs, [model.get_layer(n).output for n in names])
    probs = _from_probabilities(model)
    sums = {u.layer.name: np.zeros(u.size) for u in units}
    for lo in range(0, len(x), batch_size):
        xb = ops.convert_to_tensor(np.asarray(x[lo:lo + batch_size], dtype="float32"))
        yb = ops.convert_to_tensor(np.asarray(y[lo:lo + batch_size], dtype="int32"))
        acts = probe(xb, training=False)
        acts = acts if isinstance(acts, (list, tuple)) else [acts]
        zeros = [ops.zeros_like(a) for a in acts]

        def loss(eps: list, xb=xb, yb=yb) -> Any:
            added = dict(zip(names, eps))

            def wrap(op: Any) -> Any:
                if getattr(op, "name", None) in added:
                    return lambda *a, **k: op(*a, **k) + added[op.name]
                return lambda *a, **k: op(*a, **k)

            out = g._run_through_graph(xb, operation_fn=wrap)
            out = out[0] if isinstance(out, (list, tuple)) else out
            # float32 whatever the model's dtype, to match the cotangent (the cast's gradient is exact)
            return ops.cast(ops.sum(keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=not probs)),
                            "float32")

        grads = backend.vjp(loss, zeros, ops.convert_to_tensor(1.0))
        signed: dict = {}
        for n, a, gr in zip(names, acts, grads):
            prod = np.asarray(ops.convert_to_numpy(a), dtype="float64") * np.asarray(ops.convert_to_numpy(gr),
                                                                                      dtype="float64")
            mean = prod.reshape(prod.shape[0], -1, prod.shape[-1]).mean(axis=1)
            signed[owner[n]] = signed.get(owner[n], 0.0) + mean
        for n, mean in signed.items():
            sums[n] += np.abs(mean).sum(axis=0)
        if progress:
            progress(len(xb))
    return {n: s / max(len(x), 1) for n, s in sums.items()}


@contextlib.contextmanager
def _hooked_output_projections(layers: list, state: dict) -> Iterator[None]:
    """While active, each attention layer's output projection (Keras' ``_output_dense``, which reads the
    heads' outputs ``(batch, positions..., heads, value dim)``) records its input in ``state['a'][name]``
    and reads it plus ``state['eps'][name]`` when that is set: the layer's own ``call`` runs unchanged
    otherwise (masks, gate, causal attention). Restored on exit."""
    saved = []
    try:
        for layer in layers:
            dense = getattr(layer, "_output_dense", None)
            if dense is None or not callable(dense):
                raise PruningError(f"criterion 'taylor' for heads needs Keras' MultiHeadAttention output projection "
                                   f"(_output_dense); {layer.name!r} ({type(layer).__name__}) has none")

            def hooked(a: Any, *args: Any, _dense: Any = dense, _name: str = layer.name, **kwargs: Any) -> Any:
                state["a"][_name] = a
                eps = state["eps"].get(_name)
                return _dense(a if eps is None else a + eps, *args, **kwargs)

            saved.append((layer, dense, "_output_dense" in vars(layer)))
            object.__setattr__(layer, "_output_dense", hooked)  # bypass Keras' tracking: a temporary call hook
        yield
    finally:
        for layer, dense, own in reversed(saved):
            if own:
                object.__setattr__(layer, "_output_dense", dense)
            else:
                object.__delattr__(layer, "_output_dense")


def _taylor_head_scores(model: keras.Model, units: list[Unit], x: np.ndarray, y: np.ndarray, batch_size: int,
                        progress: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    """Taylor scores of attention heads: ``mean_n |mean_positions sum_value-dims (a * dC/da)|`` per head, ``a``
    the heads' outputs read by the output projection; the gradient reaches them through a zero added there."""
    names = [u.layer.name for u in units]
    probs = _from_probabilities(model)
    sums = {n: np.zeros(u.size) for n, u in zip(names, units)}
    state: dict = {"a": {}, "eps": {}}
    with _hooked_output_projections([u.layer for u in units], state):
        for lo in range(0, len(x), batch_size):
            xb = ops.convert_to_tensor(np.asarray(x[lo:lo + batch_size], dtype="float32"))
            yb = ops.convert_to_tensor(np.asarray(y[lo:lo + batch_size], dtype="int32"))
            state["a"], state["eps"] = {}, {}
            model(xb, training=False)
            missing = [n for n in names if n not in state["a"]]
            if missing:
                raise PruningError(f"the forward pass did not reach the output projection of {missing}")
            acts = {n: ops.convert_to_numpy(state["a"][n]) for n in names}

            def loss(eps: list, xb=xb, yb=yb) -> Any:
                state["eps"] = dict(zip(names, eps))
                out = model(xb, training=False)
                out = out[0] if isinstance(out, (list, tuple)) else out
                # float32 sum whatever the model's dtype, to match the cotangent (the cast's gradient is exact)
                return ops.cast(ops.sum(keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=not probs)),
                                "float32")

            grads = backend.vjp(loss, [ops.zeros(acts[n].shape, dtype=acts[n].dtype) for n in names],
                                ops.convert_to_tensor(1.0))
            state["eps"] = {}
            for n, u, gr in zip(names, units, grads):
                prod = np.asarray(acts[n], dtype="float64") * np.asarray(ops.convert_to_numpy(gr), dtype="float64")
                if prod.ndim < 4 or prod.shape[-2] != u.size:
                    raise PruningError(f"{n}: the output projection reads shape {prod.shape}, expected (batch, "
                                       f"positions..., {u.size} heads, value dim)")
                per_head = prod.reshape(prod.shape[0], -1, u.size, prod.shape[-1]).sum(axis=-1).mean(axis=1)
                sums[n] += np.abs(per_head).sum(axis=0)
            if progress:
                progress(len(xb))
    return {n: s / max(len(x), 1) for n, s in sums.items()}
