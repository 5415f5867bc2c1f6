"""The safety net under every handler: the forward pass that an explanation follows (each layer as its
handler computes it) must reproduce the model's own output. :func:`outputs_agree` compares the two;
:func:`locate_mismatch` runs the layers one by one to name the first whose handler computes something
else than the layer itself."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from keras import ops

from .backend import Tensor
from .errors import ExplainError
from .graph import Graph
from .handlers import PassOptions
from .precision import layer_precision

__all__ = ["close", "reference_rtol", "outputs_agree", "locate_mismatch"]


def close(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    """Equal up to ``rtol`` of each value's magnitude plus ``rtol`` of the largest magnitude."""
    if a.shape != b.shape:
        return False
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return bool(np.all(np.abs(a - b) <= rtol * (np.abs(b) + scale) + 1e-30))


def reference_rtol(graph: Graph) -> float:
    """The tolerance of the comparison: 1e-3 when every layer computes in float32 or float64 (only
    summation order and merged BatchNorms differ), 3e-2 when some layer computes in low precision."""
    low = any(getattr(s.layer, "compute_dtype", "float32") not in ("float32", "float64") for s in graph.steps)
    return 3e-2 if low else 1e-3


def outputs_agree(got: Sequence[np.ndarray], expected: Sequence[np.ndarray], rtol: float) -> bool:
    def host(t: Any) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(t), np.float64)

    return len(got) == len(expected) and all(close(host(a), host(b), rtol) for a, b in zip(got, expected))


def locate_mismatch(graph: Graph, sample: Sequence[Tensor], dtype: Any, rtol: float) -> None:
    """Run the steps eagerly one by one on ``sample``, comparing each handler's forward with the
    layer's own call (and the BatchNorms merged into it); raise an :class:`ExplainError` naming the
    first layer that differs. Returns if every layer matches."""
    keep = PassOptions(keep_activations=True)
    with layer_precision(graph, dtype):
        values = dict(zip(graph.inputs, sample))
        for step in graph.steps:
            ins = [values[k] for k in step.inputs]
            outs, _ = step.handler.forward(step.layer, ins, step, keep)
            ref = step.call(ins)
            for bn in step.fused:
                ref = [bn(ref[0], training=False)]
            for a, b in zip(outs, ref):
                a64, b64 = (ops.convert_to_numpy(t).astype(np.float64) for t in (a, b))
                if a64.shape != b64.shape or not close(a64, b64, rtol):
                    diff = (float(np.max(np.abs(a64 - b64))) if a64.shape == b64.shape
                            else f"shape {a64.shape} instead of {b64.shape}")
                    raise ExplainError(
                        f"layer {step.name!r} ({step.type_name}): its LRP handler ({type(step.handler).__name__}) "
                        f"computes another output than the layer itself (largest difference {diff}), so its "
                        f"explanation would be wrong. Register a handler that computes what {step.type_name} "
                        f"computes (interprettensor.register_handler), or explain the model without it "
                        f"(Explainer(..., verify=False) skips this check)")
            values.update(zip(step.outputs, outs))
