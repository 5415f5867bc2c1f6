"""A-ClArC: fine-tuning with the artefact added in feature space (Anders et al. 2022, sec. 3.3)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .cav import CAV, cav as _cav
from .projection import ArtifactAugmentation, CorrectionError, _layer, copy_model, insert_after

__all__ = ["aclarc", "upstream_layers"]


def upstream_layers(model: Any, layer: str) -> list[str]:
    """The names of the top-level layers that ``layer``'s output depends on, ``layer`` included (the
    layers A-ClArC keeps fixed, so that the CAV still describes the artefact)."""
    import keras

    target = _layer(model, layer)
    sub = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, target.output)
    names = {l.name for l in sub.layers}
    return [l.name for l in model.layers if l.name in names]


def aclarc(model: Any, x: Any, y: Any = None, *, layer: str, artifact: Any | None = None, clean: Any | None = None,
           cav: CAV | None = None, method: str = "signal", pooling: str = "flatten", rate: float = 0.5,
           freeze: bool = True, epochs: int = 10, batch_size: int = 32, optimizer: Any = "adam",
           learning_rate: float | None = 3e-4, loss: Any = None, metrics: Sequence[Any] = ("accuracy",),
           callbacks: Sequence[Any] = (), validation_data: Any = None, verbose: Any = "auto",
           seed: int = 0) -> tuple[Any, Any]:
    """Fine-tune a copy of ``model`` on ``(x, y)`` while an :class:`ArtifactAugmentation` after ``layer``
    moves the training samples' activations along the artefact's CAV ``v`` to the artefact samples' mean
    ``a`` along it, ``h' = h + (a . v - h . v) v`` (Anders et al. 2022, A-ClArC; Reveal-to-Revise's
    ``AClarc`` hook): samples of every class then show the artefact, so it no longer tells the classes
    apart and the layers above ``layer`` learn to ignore it. Fine-tune on data whose labels do not carry
    the shortcut (e.g. the training images without the artefact): where the artefact decided the labels
    (relabelled, backdoored images), those labels keep teaching it. The layers up to ``layer`` are
    frozen (``freeze=True``, as Reveal-to-Revise does): the CAV stays valid for the activations being
    augmented, and the layers below cannot move the shortcut out of ``v``. The augmentation exists only
    in the training graph; the returned model has the original architecture (and trainable flags).

    Args:
        x, y: the training data (arrays, or a ``tf.data.Dataset`` / ``keras.utils.PyDataset`` with
            ``y=None``); ``validation_data``, ``callbacks``, ``epochs``, ``batch_size``, ``verbose`` go to
            ``fit`` (Keras' progress bar and history).
        artifact, clean, cav, method, pooling: the CAV as for :func:`~.pclarc.pclarc` (the CAV must
            know the artefact samples' mean: from :func:`~.cav.cav`, or ``artifact=`` inputs).
        rate: the fraction of each batch augmented (default 0.5: the layers above see the direction both
            at the clean and at the artefact value, and learn to ignore it; 1.0, every sample as in
            Reveal-to-Revise's hook, leaves the clean activations along ``v`` unseen in fine-tuning and
            cost 5 points of clean accuracy in ``benchmarks/bench_correction.py``: 80.7 % against 86.1 %).
        freeze: keep the layers up to and including ``layer`` fixed (default); ``False`` trains all.
        epochs, learning_rate: 10 epochs of Adam at 3e-4 by default (the benchmark's setting).
        optimizer, learning_rate, loss, metrics: how the copy is compiled (``loss`` defaults to sparse
            categorical cross-entropy, from logits unless the model ends in a softmax).

    Returns:
        ``(fine_tuned_model, history)``.
    """
    import keras

    _layer(model, layer)
    if int(epochs) < 1:
        raise CorrectionError(f"aclarc: epochs must be at least 1; got {epochs}")
    if cav is None:
        if artifact is None or clean is None:
            raise CorrectionError("aclarc needs either cav= or both artifact= and clean= inputs")
        cav = _cav(model, layer=layer, artifact=artifact, clean=clean, method=method, pooling=pooling)
    if not isinstance(cav, CAV) or cav.artifact_mean is None:
        raise CorrectionError("aclarc needs a CAV with the artefact samples' mean (from it.correction.cav)")
    if cav.layer is not None and cav.layer != layer:
        raise CorrectionError(f"the CAV was computed at layer {cav.layer!r}, not {layer!r}")
    tuned = copy_model(model)
    fixed = set(upstream_layers(tuned, layer)) if freeze else set()
    if freeze and len(fixed) >= len(tuned.layers):
        raise CorrectionError(f"aclarc: no layer after {layer!r} is left to fine-tune")
    flags = {l.name: l.trainable for l in tuned.layers}
    for l in tuned.layers:
        if l.name in fixed:
            l.trainable = False
    aug = ArtifactAugmentation(np.asarray(cav.vector), cav.artifact_value, rate=rate, seed=seed,
                               name=f"{layer}_aclarc")
    trainer = insert_after(tuned, layer, aug, share=True, name=f"{model.name}_aclarc_training")
    if loss is None:
        act = getattr(model.layers[-1], "activation", None)
        from_logits = getattr(act, "__name__", "") != "softmax"
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    if isinstance(optimizer, str) and learning_rate is not None:
        optimizer = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    trainer.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    keras.utils.set_random_seed(seed)
    try:
        history = trainer.fit(x, y, epochs=int(epochs), batch_size=batch_size if y is not None else None,
                              validation_data=validation_data, callbacks=list(callbacks), verbose=verbose)
    finally:
        for l in tuned.layers:
            l.trainable = flags[l.name]
    return tuned, history
