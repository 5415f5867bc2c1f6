"""Canonicalisation of a traced graph: :func:`fuse_batchnorm` merges inference BatchNorms into the
Dense or convolution before them."""

from __future__ import annotations

import keras

from .model import Graph


def fuse_batchnorm(g: Graph) -> None:
    """Canonisation: merge each inference BatchNormalization into the Dense/convolution before it
    (when that layer has no activation and feeds only the BatchNorm). Other BatchNorms stay as
    affine layers explained under the active rule."""
    producer = g.producer()
    consumers = g.consumers()
    removed = set()
    for step in g.steps:
        if not isinstance(step.layer, keras.layers.BatchNormalization) or len(step.inputs) != 1:
            continue
        k = step.inputs[0]
        prev = producer.get(k)
        if prev is None or prev in removed or len(consumers.get(k, [])) != 1 or k in g.outputs:
            continue
        if not prev.handler.can_absorb_batchnorm(prev.layer):
            continue
        axis = step.layer.axis if isinstance(step.layer.axis, int) else step.layer.axis[0]
        try:
            rank = len(step.layer.input.shape)
        except Exception:  # noqa: BLE001 - a BN that was never called symbolically
            rank = None
        if axis != -1 and (rank is None or axis != rank - 1):
            continue
        prev.fused = prev.fused + (step.layer,)
        prev.aliases = prev.aliases + step.names()
        prev.outputs = step.outputs
        for kk in step.outputs:
            producer[kk] = prev
        removed.add(step)
    g.steps = [s for s in g.steps if s not in removed]
