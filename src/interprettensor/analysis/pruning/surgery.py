"""Removing units: the model rebuilt from its configuration with fewer filters / units / heads and
its weights sliced (:func:`remove`), and the sizes that tell what it saved (:func:`count_params`,
:func:`count_flops`)."""

from __future__ import annotations

import copy
from typing import Any

import keras
import numpy as np

from .structure import _CONV, _DEPTHWISE, Plan, PruningError, graph_of

__all__ = ["remove", "count_params", "count_flops"]


def remove(model: keras.Model, plan: Plan, keep: dict[str, np.ndarray], unit: str = "channel") -> keras.Model:
    """A new model without the removed units: ``keep[layer name]`` = sorted indices of the units kept.

    Channels: the layer (and every layer of its residual group) is rebuilt with ``len(keep)`` filters/units
    (kernel and bias sliced on the output axis), BatchNormalization's vectors and depthwise kernels
    downstream sliced, and the consumers' kernels sliced on their input axis (through ``Flatten``: every
    position's copy of the channel).
    Heads: ``num_heads`` reduced, the query / key / value kernels and biases sliced on the head axis and
    the output kernel on its head axis."""
    weights = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers}
    config = copy.deepcopy(model.get_config())
    entries = {e["config"]["name"]: e for e in config["layers"]}

    def set_config(name: str, key: str, value: int) -> None:
        if name not in entries:
            raise PruningError(f"layer {name!r} is not in the model's configuration")
        entries[name]["config"][key] = value

    for u in plan.units:
        name = u.layer.name
        k = np.asarray(keep.get(name, np.arange(u.size)), dtype="int64")
        if len(k) == u.size:
            continue
        w = weights[name]
        if unit == "head":
            set_config(name, "num_heads", int(len(k)))
            weights[name] = _slice_heads(u.layer, w, k)
            continue
        for layer in u.layers:  # the layer and the rest of its residual group: the same output channels
            set_config(layer.name, "filters" if isinstance(layer, _CONV) else "units", int(len(k)))
            lw = weights[layer.name]
            lw[0] = lw[0][..., k]
            if len(lw) > 1:
                lw[1] = lw[1][k]
        for follower, kind, index in u.followers:
            fw = weights[follower.name]
            idx = index(k)
            if kind == "input":
                fw[0] = np.take(fw[0], idx, axis=fw[0].ndim - 2)
            elif kind == "vector":
                weights[follower.name] = [v[idx] for v in fw]
            elif kind == "depthwise":
                m = int(follower.depth_multiplier)
                fw[0] = np.take(fw[0], idx, axis=fw[0].ndim - 2)
                if len(fw) > 1:
                    fw[1] = fw[1][(idx[:, None] * m + np.arange(m)[None, :]).reshape(-1)]
    for e in config["layers"]:  # built shapes are stale: the layers are built again on their new inputs
        e.pop("build_config", None)
        e["config"].pop("build_config", None)
    try:
        new = type(model).from_config(config) if isinstance(model, keras.Sequential) else \
            keras.Model.from_config(config)
    except Exception as e:  # noqa: BLE001 - a layer Keras cannot rebuild
        raise PruningError(f"cannot rebuild the pruned model from its configuration: {e}") from None
    graph_of(new)
    for layer in new.layers:
        if layer.name in weights and weights[layer.name]:
            try:
                layer.set_weights(weights[layer.name])
            except ValueError as e:
                raise PruningError(f"layer {layer.name!r}: the sliced weights do not fit the rebuilt layer: "
                                   f"{e}") from None
    return new


def _slice_heads(layer: Any, w: list, k: np.ndarray) -> list:
    """MultiHeadAttention weights by path: query/key/value kernel ``(d, H, dk)`` and bias ``(H, dk)`` on the
    head axis, output kernel ``(H, dv, d)`` on its first axis, output bias unchanged."""
    out = []
    for var, value in zip(layer.weights, w):
        path = var.path
        if "/attention_output/" in path or path.endswith("attention_output/kernel"):
            out.append(value[k] if path.endswith("kernel") else value)
        elif path.endswith("kernel"):
            out.append(value[:, k])
        else:
            out.append(value[k])
    return out


def count_params(model: keras.Model) -> int:
    """Number of weights (trainable and not) of ``model``."""
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def count_flops(model: keras.Model) -> int:
    """Floating-point operations of one forward pass of one sample, counted from the layers' shapes: each
    multiply-add of a convolution, dense layer, depthwise convolution or attention (projections, scores,
    weighted sum) counts 2; bias additions count 1 per output; activations, pooling and normalisation
    are not counted (they scale with the channels too, but are small beside the multiply-adds)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, _CONV):
            out = layer.output.shape
            k = int(np.prod(layer.kernel_size)) * int(layer.input.shape[-1]) // int(layer.groups)
            n = int(np.prod(out[1:]))
            total += 2 * n * k + (n if layer.use_bias else 0)
        elif isinstance(layer, _DEPTHWISE):
            n = int(np.prod(layer.output.shape[1:]))
            total += 2 * n * int(np.prod(layer.kernel_size)) + (n if layer.use_bias else 0)
        elif isinstance(layer, keras.layers.Dense):
            rows = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
            n = rows * int(layer.units)
            total += 2 * n * int(layer.input.shape[-1]) + (n if layer.use_bias else 0)
        elif isinstance(layer, keras.layers.MultiHeadAttention):
            total += _attention_flops(layer)
    return int(total)


def _attention_flops(layer: Any) -> int:
    h, dk, dv = int(layer._num_heads), int(layer._key_dim), int(layer._value_dim or layer._key_dim)
    arguments = layer._inbound_nodes[0].arguments  # the call in the model: (query, value[, key])
    args, kwargs = list(arguments.args), dict(arguments.kwargs)
    q = args[0].shape if args else kwargs["query"].shape
    v = args[1].shape if len(args) > 1 else kwargs["value"].shape
    key = args[2] if len(args) > 2 else kwargs.get("key")
    kshape = key.shape if key is not None else v
    tq, tk = int(np.prod(q[1:-1])), int(np.prod(kshape[1:-1]))
    o = layer._output_shape
    d_out = (int(o) if isinstance(o, int) else int(o[-1])) if o else int(q[-1])
    proj = 2 * tq * int(q[-1]) * h * dk + 2 * tk * int(kshape[-1]) * h * dk + 2 * tk * int(v[-1]) * h * dv
    attn = 2 * h * tq * tk * dk + 2 * h * tq * tk * dv
    out = 2 * tq * h * dv * d_out
    bias = (tq * h * dk + tk * h * dk + tk * h * dv + tq * d_out) if layer._use_bias else 0
    return proj + attn + out + bias
