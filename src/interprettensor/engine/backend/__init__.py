"""What differs between Keras' backends, behind one interface: vector-Jacobian products, ordering
hints, stopping gradients and scans over time. The rest of the engine computes with these and with
tensor algebra (``keras.ops``); a backend is one module here (:mod:`._tensorflow`; JAX and PyTorch
follow behind the same functions), chosen by Keras' backend (:data:`NAME`).

* :func:`vjp`: ``J^T cotangent`` of ``fn(primals)`` with respect to each primal; a primal the output
  does not depend on gets zeros, and a tensor given twice gets one share per occurrence (the graph
  walk sums the relevance reaching a tensor from each of its uses).
* :func:`pullback`: one forward pass of ``fn`` and a function that maps cotangents to ``J^T``
  cotangent, callable several times.
* :func:`after`: ``fn()`` computed only once ``deps`` exist (a scheduling hint that keeps a
  denominator from being computed, and held, right after the forward pass; values never depend on it).
* :func:`stop_gradient`, :func:`scan` (``fn(acc, elem) -> acc`` over the leading axis of ``elems``,
  every accumulator stacked, as ``tf.scan``).
* :func:`max_pool_winner`: winner-takes-all relevance through a 2-D max pooling (its
  vector-Jacobian product, ties to the first maximum of each window; TensorFlow has a kernel for it).
* :func:`compile` (a function traced once per :func:`spec` signature), :func:`fused` and
  :func:`use_fused` (small element-wise kernels fused where they pay), :data:`RUNTIME_ERRORS` and
  :func:`error_message` (what a compiled call raises on bad data).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import keras

#: a tensor of the backend Keras runs on (``tf.Tensor``, ``jax.Array``, ``torch.Tensor``)
Tensor: TypeAlias = Any

NAME: str = keras.backend.backend()
if NAME == "tensorflow":
    from ._tensorflow import (RUNTIME_ERRORS, after, compile, distinct, error_message, fused, max_pool_winner, pullback,
                              scan, spec, stop_gradient, use_fused, vjp)
else:  # pragma: no cover - the other backends' modules follow
    raise ImportError(f"interprettensor's engine does not run on Keras' {NAME!r} backend yet")

__all__ = ["NAME", "Tensor", "vjp", "pullback", "after", "stop_gradient", "scan", "distinct", "spec", "compile",
           "fused", "use_fused", "RUNTIME_ERRORS", "error_message", "max_pool_winner"]
