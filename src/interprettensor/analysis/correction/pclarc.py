"""P-ClArC: projective class artefact compensation, no training (Anders et al. 2022, eq. 8)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .cav import CAV, activations, cav as _cav
from .projection import ClassArtifactProjection, CorrectionError, _layer, insert_after

__all__ = ["pclarc"]


def pclarc(model: Any, *, layer: str, artifact: Any | None = None, clean: Any | None = None,
           cav: CAV | Any | None = None, method: str = "signal", pooling: str = "flatten", name: str | None = None,
           batch_size: int = 64) -> Any:
    """``model`` corrected by P-ClArC: a :class:`ClassArtifactProjection` after ``layer`` moves every
    sample's activation along the artefact's CAV ``v`` to the clean samples' mean ``z`` along it,
    ``h' = h - (h . v - z . v) v`` (per position over channels for a channel CAV).

    Args:
        model: a Sequential or Functional Keras model (not modified; the result has its own copy of
            the weights).
        layer: the name of the top-level layer whose output is projected.
        artifact, clean: inputs with and without the artefact; the CAV is computed from them
            (:func:`~.cav.cav` with ``method`` and ``pooling``) unless ``cav`` is given.
        cav: a :class:`~.cav.CAV` (its ``clean_mean`` gives ``z``), or a unit vector (then ``clean`` gives
            ``z``, the mean activation over clean samples and positions).

    Returns:
        the corrected model, saveable with ``model.save`` and loadable with
        ``keras.models.load_model`` once :mod:`interprettensor.correction` is imported (the layer is
        registered as ``interprettensor>ClassArtifactProjection``), explainable with ``it.lrp``.
    """
    _layer(model, layer)
    if cav is None:
        if artifact is None or clean is None:
            raise CorrectionError("pclarc needs either cav= or both artifact= and clean= inputs")
        cav = _cav(model, layer=layer, artifact=artifact, clean=clean, method=method, pooling=pooling,
                   batch_size=batch_size)
    if isinstance(cav, CAV):
        if cav.layer is not None and cav.layer != layer:
            raise CorrectionError(f"the CAV was computed at layer {cav.layer!r}, not {layer!r}")
        v = np.asarray(cav.vector, "float64")
        if cav.clean_mean is not None:
            ref = cav.clean_value
        elif clean is not None:
            ref = _reference(model, layer, clean, v, batch_size)
        else:
            raise CorrectionError("the CAV has no clean mean; pass clean= inputs")
    else:
        v = np.asarray(cav, "float64")
        if clean is None:
            raise CorrectionError("with a plain vector as cav=, pass clean= inputs for the reference mean")
        ref = _reference(model, layer, clean, v / np.linalg.norm(v), batch_size)
    out_shape = tuple(_layer(model, layer).output.shape[1:])
    if v.ndim == 0 or tuple(v.shape) != out_shape[len(out_shape) - v.ndim:]:
        raise CorrectionError(f"the CAV has shape {v.shape}, which does not match the end of layer {layer!r}'s "
                              f"output shape {out_shape}")
    proj = ClassArtifactProjection(v, ref, name=f"{layer}_pclarc")
    return insert_after(model, layer, proj, name=name or f"{model.name}_pclarc")


def _reference(model: Any, layer: str, clean: Any, v: np.ndarray, batch_size: int) -> float:
    h = activations(model, layer, clean, batch_size)
    h = h.reshape(-1, v.size) if v.ndim == 1 else h.reshape(len(h), -1)
    return float(h.mean(0) @ v.reshape(-1))
