"""A-ClArC: fine-tuning with the artefact added in feature space (Anders et al. 2022, sec. 3.3)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .cav import CAV, cav as _cav
from .projection import ArtifactAugmentation, CorrectionError, _layer, copy_model, insert_after

__all__ = ["aclarc"]


def aclarc(model: Any, x: Any, y: Any = None, *, layer: str, artifact: Any | None = None, clean: Any | None = None,
           cav: CAV | None = None, method: str = "signal", pooling: str = "flatten", rate: float = 0.5,
           epochs: int = 1, batch_size: int = 32, optimizer: Any = "adam", learning_rate: float | None = 1e-4,
           loss: Any = None, metrics: Sequence[Any] = ("accuracy",), callbacks: Sequence[Any] = (),
           validation_data: Any = None, verbose: Any = "auto", seed: int = 0) -> tuple[Any, Any]:
    """Fine-tune a copy of ``model`` on ``(x, y)`` while an :class:`ArtifactAugmentation` after ``layer``
    moves a random ``rate`` of the training samples along the artefact's CAV to the artefact samples'
    mean along it (A-ClArC): the layers above learn that the direction carries no information about
    the label. The augmentation exists only in the training graph; the returned model has the
    original architecture.

    Args:
        x, y: the training data (arrays, or a ``tf.data.Dataset`` / ``keras.utils.PyDataset`` with
            ``y=None``); ``validation_data``, ``callbacks``, ``epochs``, ``batch_size``, ``verbose`` go to
            ``fit`` (Keras' progress bar and history).
        artifact, clean, cav, method, pooling: the CAV as for :func:`~.pclarc.pclarc` (the CAV must
            know the artefact samples' mean: from :func:`~.cav.cav`, or ``artifact=`` inputs).
        optimizer, learning_rate, loss, metrics: how the copy is compiled (``loss`` defaults to sparse
            categorical cross-entropy, from logits unless the model ends in a softmax).

    Returns:
        ``(fine_tuned_model, history)``.
    """
    import keras

    _layer(model, layer)
    if cav is None:
        if artifact is None or clean is None:
            raise CorrectionError("aclarc needs either cav= or both artifact= and clean= inputs")
        cav = _cav(model, layer=layer, artifact=artifact, clean=clean, method=method, pooling=pooling)
    if not isinstance(cav, CAV) or cav.artifact_mean is None:
        raise CorrectionError("aclarc needs a CAV with the artefact samples' mean (from it.correction.cav)")
    if cav.layer is not None and cav.layer != layer:
        raise CorrectionError(f"the CAV was computed at layer {cav.layer!r}, not {layer!r}")
    tuned = copy_model(model)
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
    history = trainer.fit(x, y, epochs=epochs, batch_size=batch_size if y is not None else None,
                          validation_data=validation_data, callbacks=list(callbacks), verbose=verbose)
    return tuned, history
