"""iNNvestigate's single-layer reference suite (see tests/data/innvestigate-layer/README.md).

For every analyzer file and every model ``Input(10, 10, 3) -> layer -> Flatten()`` the stored weights
are loaded, the model output is checked against the stored one, and the attribution computed through
this library's public API must match iNNvestigate's at its own tolerance (rtol 1e-2, atol 1e-8;
SmoothGrad, which is random, at rtol 0.25, atol 0.20). The explained neuron is the maximal output per
sample, i.e. ``target=None``.
"""

from __future__ import annotations

import os

import h5py
import keras
import numpy as np
import pytest

import interprettensor as it

DATA = os.path.join(os.path.dirname(__file__), "data", "innvestigate-layer")
MODELS = ["Dense", "Dense_relu", "Conv2D", "Conv2D_relu", "AveragePooling2D", "MaxPooling2D"]
A = it.attribution

#: iNNvestigate analyzer -> this library's call ``f(model, x)`` (public API only)
ANALYZERS = {
    "LRPZ": lambda m, x: it.lrp(m, x, rule="simple"),
    "LRPZIgnoreBias": lambda m, x: it.lrp(m, x, rule="simple", bias=False),
    "LRPEpsilon": lambda m, x: it.lrp(m, x, rule="epsilon", epsilon=1e-7),
    "LRPEpsilonIgnoreBias": lambda m, x: it.lrp(m, x, rule="epsilon_ignore_bias", epsilon=1e-7),
    "LRPWSquare": lambda m, x: it.lrp(m, x, rule="ww"),
    "LRPFlat": lambda m, x: it.lrp(m, x, rule="flat"),
    "LRPAlpha1Beta0": lambda m, x: it.lrp(m, x, rule="alpha1beta0"),
    "LRPAlpha1Beta0IgnoreBias": lambda m, x: it.lrp(m, x, rule="alpha1beta0", bias=False),
    "LRPAlpha2Beta1": lambda m, x: it.lrp(m, x, rule="alpha2beta1"),
    "LRPAlpha2Beta1IgnoreBias": lambda m, x: it.lrp(m, x, rule="alpha2beta1_ignore_bias"),
    "LRPZPlus": lambda m, x: it.lrp(m, x, rule="zplus"),
    "LRPZPlusFast": lambda m, x: it.lrp(m, x, rule="zplus_fast"),
    "LRPSequentialPresetA": lambda m, x: it.lrp(m, x, rule="preset_a"),
    "LRPSequentialPresetB": lambda m, x: it.lrp(m, x, rule="preset_b"),
    "LRPSequentialPresetAFlat": lambda m, x: it.lrp(m, x, rule="preset_a_flat"),
    "LRPSequentialPresetBFlat": lambda m, x: it.lrp(m, x, rule="preset_b_flat"),
    "LRPZ_Flat_input_layer_rule": lambda m, x: it.lrp(m, x, rule=it.Composite(default="simple", first="flat")),
    "LRPZ_boxed_input_layer_rule": lambda m, x: it.Explainer(
        m, it.Composite(default="simple", first=it.rules.ZBox(-10.0, 10.0)))(x),
    "Gradient": lambda m, x: A.gradient(m, x),
    "InputTimesGradient": lambda m, x: A.input_x_gradient(m, x),
    # iNNvestigate's Deconvnet and GuidedBackprop start the backward pass from the output value
    "Deconvnet": lambda m, x: A.deconvnet(m, x, times_output=True),
    "GuidedBackprop": lambda m, x: A.guided_backprop(m, x, times_output=True),
    "IntegratedGradients": lambda m, x: A.integrated_gradients(m, x, steps=64),
    "SmoothGrad": lambda m, x: A.smoothgrad(m, x, n=64, noise_scale=1.0, seed=0),
    "DeepTaylor": lambda m, x: A.deep_taylor(m, x),
    "BoundedDeepTaylor": lambda m, x: A.bounded_deep_taylor(m, x, low=-128, high=128),
}

FILES = sorted(f[: -len(".hdf5")] for f in os.listdir(DATA) if f.endswith(".hdf5"))


def test_every_file_has_a_mapping_and_the_note_is_kept():
    assert set(FILES) == set(ANALYZERS)
    with open(os.path.join(DATA, "README.md")) as f:
        note = f.read()
    assert "albermax/innvestigate" in note and "BSD-2-Clause" in note


def _layer(name: str, dtype: str) -> keras.layers.Layer:
    L = keras.layers
    return {
        "Dense": lambda: L.Dense(5, dtype=dtype),
        "Dense_relu": lambda: L.Dense(5, activation="relu", dtype=dtype),
        "Conv2D": lambda: L.Conv2D(5, (3, 3), dtype=dtype),
        "Conv2D_relu": lambda: L.Conv2D(5, (3, 3), activation="relu", dtype=dtype),
        "AveragePooling2D": lambda: L.AveragePooling2D((2, 2), dtype=dtype),
        "MaxPooling2D": lambda: L.MaxPooling2D((2, 2), dtype=dtype),
    }[name]()


def _model(group: h5py.Group, name: str, dtype: str) -> keras.Model:
    inp = keras.Input((10, 10, 3), dtype=dtype)
    layer = _layer(name, dtype)
    model = keras.Model(inp, keras.layers.Flatten(dtype=dtype)(layer(inp)))
    weights = group.get("weights")
    if weights is not None and len(weights):
        layer.set_weights([weights[str(i)][()].astype(dtype) for i in range(len(weights))])
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("analyzer", FILES)
def test_reference(analyzer: str, dtype: str):
    tol = dict(rtol=0.25, atol=0.20) if analyzer == "SmoothGrad" else dict(rtol=1e-2, atol=1e-8)
    failures = []
    with h5py.File(os.path.join(DATA, analyzer + ".hdf5"), "r") as f:
        x = f["input"][()].astype(dtype)
        for name in MODELS:
            group = f[name]
            model = _model(group, name, dtype)
            np.testing.assert_allclose(np.asarray(model(x)), group["output"][()], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{analyzer}/{name}: model output")
            got = ANALYZERS[analyzer](model, x)
            want = group["attribution"][()]
            assert got.shape == want.shape
            if not np.allclose(got, want, **tol):
                err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
                failures.append(f"{name} (max error {err:.2e} of max |attribution|)")
    assert not failures, f"{analyzer}: " + ", ".join(failures)
