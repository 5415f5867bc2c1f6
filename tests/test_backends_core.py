"""The core rule tests (tests/test_core_rules.py: every variant of the 2017 API against NumPy from the
equations, dense, convolution and pooling layers, random networks) and the backend contract
(tests/test_backend_contract.py) on Keras' JAX and PyTorch backends, each in its own process; see
tests/test_backends.py's docstring for what runs where and why (a file of its own so that it and the
parity cases run on different workers under ``pytest --dist loadgroup``, one group per file)."""

import os

import pytest

from test_backends import HERE, OTHER, _run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", OTHER)
def test_core_rules_and_backend_contract_on(backend, exhaustive):
    # JAX computes float64 only with x64 enabled (the contract's exact claims are float64's); JAX compiles
    # each case, so by default it runs the dense layer and whole random networks of every variant (the
    # convolution and pooling cases too with INTERPRETTENSOR_BACKEND_TESTS=all or --run-exhaustive)
    every = exhaustive or os.environ.get("INTERPRETTENSOR_BACKEND_TESTS") == "all"
    select = [] if backend != "jax" or every else \
        ["-k", "test_linear or test_random_networks or test_lrp_layerwise or test_backend_contract"]
    p = _run(backend, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *select,
             os.path.join(HERE, "test_core_rules.py"), os.path.join(HERE, "test_backend_contract.py"),
             JAX_ENABLE_X64="1")
    assert " passed" in p.stdout and "failed" not in p.stdout, p.stdout[-2000:]
