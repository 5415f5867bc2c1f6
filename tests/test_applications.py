"""keras.applications models (weights=None, no download) under every preset.

Each model is explained (compiled) with the conservation bound checked, then under presets: by default
under a share of them, so that every preset runs on one of the models and every model under several
(a fifth of the cross product: the models' eager passes were 4 of this file's 5 minutes on 2 cores);
``pytest --run-exhaustive`` (or INTERPRETTENSOR_EXHAUSTIVE=1) runs every model under every preset."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import interprettensor as it

APPS = ["VGG16", "ResNet50", "MobileNetV2", "DenseNet121", "EfficientNetB0"]
PRESETS = sorted(it.PRESETS)
#: documented bound: with zero biases (fresh keras.applications models: biases, BatchNorm means and
#: offsets are zero) and epsilon -> 0, the input relevance sums to the explained logit within this
#: relative error in float32.
CONSERVATION_RTOL = 1e-2


def presets_for(name: str, exhaustive: bool) -> list[str]:
    """Every preset (exhaustive), or the model's share: the presets dealt to the models in turn."""
    return PRESETS if exhaustive else PRESETS[APPS.index(name)::len(APPS)]


def test_every_preset_runs_on_some_model():
    assert sorted(p for name in APPS for p in presets_for(name, False)) == PRESETS


@pytest.mark.slow
@pytest.mark.parametrize("name", APPS)
def test_application_explains_under_every_preset(name, exhaustive):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32") * 255.0
    R, logits = it.Explainer(model, rule=it.rules.Epsilon(1e-30))(x, return_output=True)
    assert R.shape == x.shape and np.all(np.isfinite(R))
    np.testing.assert_allclose(R.sum((1, 2, 3)), logits.max(1), rtol=CONSERVATION_RTOL)
    # the compiled path ran above; the presets run eagerly (same code, no graph compilation: 5x faster here)
    tf.config.run_functions_eagerly(True)
    try:
        for preset in presets_for(name, exhaustive):
            box = preset in ("epsilon_gamma_box", "bounded_deep_taylor")
            R = it.lrp(model, x, rule=preset, **({"low": 0.0, "high": 255.0} if box else {}))
            assert R.shape == x.shape, preset
            assert np.all(np.isfinite(R)), preset
            # epsilon (1e-6) on every layer absorbs logits of ~1e-10 entirely
            if preset not in ("toolbox_epsilon", "attnlrp", "cp_lrp"):
                assert np.abs(R).sum() > 0, preset
    finally:
        tf.config.run_functions_eagerly(False)
