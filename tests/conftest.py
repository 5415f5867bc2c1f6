import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(__file__))  # tests import reference_numpy

import interprettensor.engine.explainer  # noqa: E402,F401 - imports TensorFlow quietly first
import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def float64():
    """Build and run Keras models in float64 (floatx and the dtype policy), restored afterwards."""
    keras.backend.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.backend.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def exhaustive(request) -> bool:
    """Whether to run a test's full cross product (``--run-exhaustive`` or INTERPRETTENSOR_EXHAUSTIVE=1)
    instead of the sample of it that keeps the default run under about 15 minutes on 2 cores: the
    default covers every item of each axis at least once (every model, every preset), the exhaustive
    run every pair."""
    return bool(request.config.getoption("--run-exhaustive")) or os.environ.get("INTERPRETTENSOR_EXHAUSTIVE") == "1"


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state (Keras initialisers, numpy, TensorFlow), so a
    result does not depend on which tests ran before it in the same worker."""
    keras.utils.set_random_seed(1234)
    yield


def pytest_addoption(parser):
    """``--property-models N``: random models per property in tests/test_properties.py (default: a
    small number, also INTERPRETTENSOR_PROPERTY_MODELS); ``--property-seed-start S``: first seed
    (also INTERPRETTENSOR_PROPERTY_SEED_START)."""
    group = parser.getgroup("interprettensor property tests")
    group.addoption("--property-models", type=int, default=None,
                    help="number of random models for tests/test_properties.py (default 30)")
    group.addoption("--property-seed-start", type=int, default=None,
                    help="first seed of the random models in tests/test_properties.py (default 0)")
    group.addoption("--tolerance-report", default=None, metavar="FILE",
                    help="append, for every numpy.testing.assert_allclose call, how much of its tolerance the "
                         "error used (max |actual - desired| / (atol + rtol |desired|)) to FILE as JSON lines: "
                         "assertions near 1 depend on the machine's rounding")
    group.addoption("--run-exhaustive", action="store_true", default=False,
                    help="run the full cross products that the default run samples (every keras.applications "
                         "model under every preset, ...; also INTERPRETTENSOR_EXHAUSTIVE=1)")


def pytest_configure(config):
    _check_xdist_groups(config)
    path = config.getoption("--tolerance-report", default=None)
    if path:
        _record_tolerances(os.path.abspath(path))


def _check_xdist_groups(config) -> None:
    """Under ``--dist loadgroup`` (the Makefile's) pytest-xdist keeps a group's tests on one worker by
    writing ``@group`` into their node ids (``item._nodeid``). pytest 9 derives node ids from another
    attribute, so with pytest-xdist 3.8 every test becomes a group of its own: each worker builds every
    module fixture again and the suite runs far longer, silently. Said here at once instead."""
    if config.getoption("dist", default="no") != "loadgroup" or hasattr(config, "workerinput"):
        return
    import inspect

    from _pytest.nodes import Node

    try:
        reads_nodeid = "_nodeid" in inspect.getsource(Node.nodeid.fget)
    except (OSError, TypeError):  # no source to read: nothing to say
        return
    if not reads_nodeid:
        raise pytest.UsageError(f"--dist loadgroup cannot group tests with pytest {pytest.__version__} and this "
                                f"pytest-xdist (it sets item._nodeid, which this pytest does not read): install "
                                f"what pyproject.toml's [test] extra pins (pytest<9)")


def _record_tolerances(path: str) -> None:
    """Wrap numpy.testing.assert_allclose to log the fraction of the tolerance each call used."""
    import json
    import traceback

    import numpy as np

    original = np.testing.assert_allclose

    def assert_allclose(actual, desired, rtol=1e-7, atol=0, equal_nan=True, err_msg="", verbose=True, **kw):
        try:
            a = np.asarray(actual, dtype=np.float64)
            d = np.broadcast_to(np.asarray(desired, dtype=np.float64), a.shape)
            ok = np.isfinite(a) & np.isfinite(d) & (a != d)
            with np.errstate(divide="ignore", invalid="ignore"):
                used = np.abs(a - d)[ok] / (atol + rtol * np.abs(d)[ok])
            frac = float(np.nanmax(used, initial=0.0)) if used.size else 0.0
            where = traceback.extract_stack(limit=2)[0]
            with open(path, "a") as f:
                f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                                    "line": f"{os.path.basename(where.filename)}:{where.lineno}",
                                    "used": frac, "rtol": rtol, "atol": atol}) + "\n")
        except Exception:  # noqa: BLE001 - the report must never change a test's outcome
            pass
        return original(actual, desired, rtol=rtol, atol=atol, equal_nan=equal_nan, err_msg=err_msg,
                        verbose=verbose, **kw)

    np.testing.assert_allclose = assert_allclose


#: the longest test files, started first: with ``-n 2 --dist loadgroup`` a file runs on one worker, and
#: a long file that starts last keeps the run going after the other worker has finished
LONGEST_FIRST = ("test_readme.py", "test_docs.py", "test_backends.py", "test_backends_core.py", "test_applications.py",
                 "test_cli.py", "test_properties.py")
#: files whose tests are independent of each other (each in its own folder, no module-scoped fixture worth
#: sharing) and long together: under ``--dist loadgroup`` their tests spread over the workers one by one
SPREAD = ("test_docs.py",)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the xdist_group marks added here
def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # a stable sort: the order inside each file is kept
    _group_by_file(items)
    _skip_float64_where_keras_demotes_it(items)


def _group_by_file(items):
    """Under ``pytest-xdist --dist loadgroup`` (the Makefile's), the tests of a file run on one worker,
    sharing its module-scoped fixtures (trained models, saved files), as under ``--dist loadfile``;
    the files of :data:`SPREAD` are not grouped. A test's own ``xdist_group`` mark is kept."""
    for item in items:
        if item.path.name not in SPREAD and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.name))


def _skip_float64_where_keras_demotes_it(items):
    """On a Keras backend that computes float64 in float32 (JAX, PyTorch: tests/test_backends.py runs
    some files there), the float64 cases are skipped, saying why: those tests' tolerances are float64's."""
    from interprettensor.engine import backend

    if backend.FLOAT64:
        return
    skip = pytest.mark.skip(reason=f"Keras' {backend.NAME} backend promotes float64 to float32")
    for item in items:
        if "float64" in item.name or item.get_closest_marker("float64") is not None:
            item.add_marker(skip)
