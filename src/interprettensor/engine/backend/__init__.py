"""What differs between Keras' backends, behind one interface: vector-Jacobian products, ordering
hints, stopping gradients and scans over time. The rest of the engine computes with these and with
tensor algebra (``keras.ops``); a backend is one module here (:mod:`._tensorflow`, :mod:`._jax`,
:mod:`._torch`, listed in :data:`MODULES`), chosen by Keras' backend (:data:`NAME`), and each defines
every name of :data:`INTERFACE`.

* :func:`vjp`: ``J^T cotangent`` of ``fn(primals)`` with respect to each primal; a primal the output
  does not depend on gets zeros, and a tensor given twice gets one share per occurrence (the graph
  walk sums the relevance reaching a tensor from each of its uses).
* :func:`pullback`: one forward pass of ``fn`` and a function that maps cotangents to ``J^T``
  cotangent, callable several times.
* :func:`after`: ``fn()`` computed only once ``deps`` exist (a scheduling hint that keeps a
  denominator from being computed, and held, right after the forward pass; values never depend on it).
* :func:`recompute`: ``fn(inputs)`` computed again once ``deps`` exist, never merged with an earlier
  computation of the same values (a checkpointed segment's forward records, recomputed in the backward
  pass: :mod:`interprettensor.engine.graph.checkpoint`).
* :func:`stop_gradient`, :func:`scan` (``fn(acc, elem) -> acc`` over the leading axis of ``elems``,
  every accumulator stacked, as ``tf.scan``).
* :func:`compile` (a function traced once per :func:`spec` signature), :func:`fused` and
  :func:`use_fused` (small element-wise kernels fused where they pay: from
  :data:`FUSED_MIN_ELEMENTS` elements per sample), :data:`RUNTIME_ERRORS` and
  :func:`error_message` (what a compiled call raises on bad data), :func:`runtime_error` (one of them,
  raised by a check made on the host instead) and :func:`is_symbolic` (whether a value is a placeholder
  of a computation being traced, unreadable on the host).
* :func:`max_pool_winner`: winner-takes-all relevance through a 2-D max pooling (each window's
  relevance to its first maximum in row-major order).
* :func:`conv`: a convolution as ``keras.ops.conv`` computes it (PyTorch: the same values without
  Keras' two layout copies of the input per call).
* :func:`snapshot`, :func:`assign` and :func:`take_rows`: a variable's value kept as it is now (later
  assignments leave it alone), a variable set to a value of its shape and dtype, and a value's rows
  (first axis) reordered; what the randomisation metrics permute and restore weights with, several
  times faster than ``Variable.assign`` and ``keras.ops.take`` on small variables.
* :data:`FREES_UNREAD`: whether a value of the compiled pass is freed once nothing left to run reads it
  (a graph or XLA program), so that computing a cheap value again in the backward pass, instead of
  reading the forward pass's, saves memory (eager PyTorch holds what the records reference).
* :data:`FLOAT64`: whether float64 computes in float64 (Keras promotes it to float32 on JAX and
  PyTorch; the explainer refuses it there).
"""

from __future__ import annotations

import importlib
from typing import Any, TypeAlias

import keras

#: a tensor of the backend Keras runs on (``tf.Tensor``, ``jax.Array``, ``torch.Tensor``)
Tensor: TypeAlias = Any

#: the interface: what each backend module defines
INTERFACE = ("FLOAT64", "vjp", "pullback", "after", "recompute", "stop_gradient", "scan", "distinct", "spec", "compile", "fused",
             "use_fused", "RUNTIME_ERRORS", "error_message", "is_symbolic", "runtime_error", "max_pool_winner", "conv",
             "FUSED_MIN_ELEMENTS", "FREES_UNREAD", "snapshot", "assign", "take_rows")
#: Keras' backend -> the module that implements the interface on it
MODULES = {"tensorflow": "._tensorflow", "jax": "._jax", "torch": "._torch"}

NAME: str = keras.backend.backend()
if NAME not in MODULES:
    raise ImportError(f"interprettensor runs on Keras' TensorFlow, JAX and PyTorch backends, but Keras is set to "
                      f"{NAME!r}; set KERAS_BACKEND to one of {', '.join(MODULES)}")
_module = importlib.import_module(MODULES[NAME], __name__)
globals().update({name: getattr(_module, name) for name in INTERFACE})

__all__ = ["NAME", "Tensor", *INTERFACE]
