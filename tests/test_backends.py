"""The engine on Keras' JAX and PyTorch backends against TensorFlow (issue 20).

* Parity: the models of tests/backend_parity.py (a CNN, a residual BatchNorm net with a nested block, a
  two-input net, a transformer from keras.layers, a keras_hub BERT, a masked Bidirectional LSTM/GRU, the
  2017 ``Sequential``), saved once as .keras files, explained by every rule family (epsilon, alpha-beta,
  z+, gamma, w², flat, the box rule, presets, AttnLRP, CP-LRP, layer-wise relevances, hidden-channel
  targets, CRP's conditional heatmaps, a gradient baseline, region perturbation's scores, PixelFlipping's,
  FaithfulnessEstimate's and MPRT's scores (it.metrics; MPRT permutes the weights in place), the 2017
  ``net.fit``'s weights), each backend in its own process (TensorFlow's in the test's). JAX's and
  PyTorch's results equal TensorFlow's within float32 rounding: the backends sum in different orders,
  each rounding of a float32 sum errs by at most 2^-24 of the magnitude summed, and a relevance here is
  at most a few layers of sums of at most a few hundred terms, so ``|got - want| <= 2^-23 * 1000 *
  max|want|`` per result.
* The core rule tests (tests/test_backends_core.py runs them; a file of its own so that the two halves
  run on different workers under ``pytest --dist loadgroup``, one group per file) (tests/test_core_rules.py: every variant of the 2017 API against NumPy from the
  equations, dense, convolution and pooling layers, random networks) and the backend contract
  (tests/test_backend_contract.py) run on each backend (on JAX, which compiles each case, the dense
  layer, the random networks and the layer-wise cases by default, every case with
  INTERPRETTENSOR_BACKEND_TESTS=all): in float32, as Keras promotes float64 to
  float32 on JAX and PyTorch (the float64 cases, marked ``float64`` or named so, are skipped there;
  the explainer refuses dtype='float64' on those backends by name).

The rest of the suite runs on TensorFlow only: it tests what the engine computes, and that is the
same code on every backend (the engine holds no backend-specific code outside
``engine/backend/``), so repeating it per backend would triple the suite's time for what the
parity cases already cover.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "backend_parity.py")
OTHER = ["jax", "torch"]
#: see the module's docstring
TOLERANCE = 2.0 ** -23 * 1000
#: JAX's processes compile each explanation (a few hundred small XLA programs: the passes, the eager
#: ops, each weight's initializer): LLVM's cheaper optimisation halves their time. The programs compute
#: the same operations (fast math stays off), so the results are the same within float32 rounding.
JAX_FLAGS = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}

pytestmark = pytest.mark.slow


def _env(backend, **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               **(JAX_FLAGS if backend == "jax" and "XLA_FLAGS" not in os.environ else {}), **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p)
    return env


def _run(backend, *args, timeout=900, **extra):
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_env(backend, **extra),
                       timeout=timeout, cwd=HERE)
    assert p.returncode == 0, f"{backend}: {' '.join(args)}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The saved models and TensorFlow's results, computed in this (TensorFlow) process."""
    import backend_parity

    folder = str(tmp_path_factory.mktemp("parity"))
    backend_parity.build(folder)
    backend_parity.run(folder, os.path.join(folder, "tensorflow.npz"))
    return folder


@pytest.mark.parametrize("backend", OTHER)
def test_every_rule_family_equals_tensorflow(models, backend):
    out = os.path.join(models, f"{backend}.npz")
    p = _run(backend, SCRIPT, "run", models, out)
    assert f"backend {backend}:" in p.stdout
    want, got = np.load(os.path.join(models, "tensorflow.npz")), np.load(out)
    assert sorted(got.files) == sorted(want.files)
    bad = []
    for key in want.files:
        w, g = want[key], got[key]
        assert g.shape == w.shape, key
        assert np.isfinite(g).all(), key
        scale = np.abs(w).max()
        if np.abs(g - w).max() > TOLERANCE * scale:
            bad.append(f"{key}: max error {np.abs(g - w).max():.3g} of max |R| {scale:.3g}")
    assert not bad, "\n".join(bad)
    # the cases are not vacuous: every model's relevances are nonzero somewhere
    for name in {k.split("/")[0] for k in want.files}:
        assert any(np.abs(want[k]).max() > 0 for k in want.files if k.startswith(name + "/")), name
