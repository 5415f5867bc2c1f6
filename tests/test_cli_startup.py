"""A light package: ``import interprettensor`` and the command line's ``--help``/``--version`` do not
import TensorFlow; the engine's names load on first use (PEP 562); another Keras backend is a clear
error on first use, never at ``--help``."""

import logging
import os
import subprocess
import sys
import time

import pytest

import interprettensor as it

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
SCRIPT = os.path.join(os.path.dirname(sys.executable), "interprettensor")


def py(code, env=None, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, cwd=cwd)


def test_cli_and_package_import_no_tensorflow():
    """The real guard (the timing test below can be flaky on a busy machine)."""
    p = py("import sys, interprettensor, interprettensor.apps.cli\n"
           "interprettensor.apps.cli.build_parser()\n"
           "heavy = sorted(m for m in ('tensorflow', 'keras', 'interprettensor.engine.explainer',\n"
           "               'interprettensor.analysis.evaluate') if m in sys.modules)\n"
           "heavy += sorted(m for m in sys.modules if m.startswith('interprettensor.engine.')\n"
           "                and m != 'interprettensor.engine.errors')  # the error root is light\n"
           "print('HEAVY', heavy)")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "HEAVY []" in p.stdout, p.stdout


@pytest.mark.skipif(not os.path.exists(SCRIPT), reason="the console script is not installed next to python")
@pytest.mark.parametrize("arg", ["--help", "--version"])
def test_help_and_version_are_fast(arg, tmp_path):
    best = float("inf")
    for _ in range(2):  # the best of two: a busy machine may delay one start
        t0 = time.perf_counter()
        p = subprocess.run([SCRIPT, arg], capture_output=True, text=True, timeout=60, env=ENV, cwd=tmp_path)
        best = min(best, time.perf_counter() - t0)
        assert p.returncode == 0, p.stderr
    assert best < 1.5, f"interprettensor {arg} took {best:.2f} s"
    if arg == "--version":
        assert p.stdout.strip() == f"interprettensor {it.__version__}"


@pytest.mark.parametrize("backend", ["numpy"])
def test_other_backend_help_works_commands_fail_clearly(backend, tmp_path):
    env = dict(ENV, KERAS_BACKEND=backend)
    for arg in ("--help", "--version"):
        p = subprocess.run([sys.executable, "-m", "interprettensor", arg], capture_output=True, text=True,
                           timeout=60, env=env, cwd=tmp_path)
        assert p.returncode == 0, (arg, p.stderr)
    p = subprocess.run([sys.executable, "-m", "interprettensor", "explain", "--help"], capture_output=True,
                       text=True, timeout=60, env=env, cwd=tmp_path)
    assert p.returncode == 0 and "--rule" in p.stdout, p.stderr
    for cmd in (["train", "--epochs", "1"], ["evaluate", "--demo-model"], ["explain", "m.keras", "x.npy"]):
        p = subprocess.run([sys.executable, "-m", "interprettensor", *cmd], capture_output=True, text=True,
                           timeout=60, env=env, cwd=tmp_path)
        assert p.returncode == 1, (cmd, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
        assert p.stderr.startswith("error: interprettensor runs on Keras' TensorFlow, JAX and PyTorch backends"), \
            p.stderr
        assert f"{backend!r}" in p.stderr and "set KERAS_BACKEND to one of tensorflow, jax, torch" in p.stderr, p.stderr


def test_other_backend_import_works_first_use_fails_clearly():
    p = py("import interprettensor as it\n"
           "print('IMPORTED', it.__version__)\n"
           "for get in (lambda: it.lrp, lambda: __import__('interprettensor.stream'),\n"
           "            lambda: exec('from interprettensor import Sequential')):\n"
           "    try:\n"
           "        get()\n"
           "    except ImportError as e:\n"
           "        print('REFUSED', e)\n",
           env=dict(ENV, KERAS_BACKEND="numpy"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "IMPORTED" in p.stdout
    refused = [line for line in p.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 3, p.stdout
    for line in refused:
        assert "runs on Keras' TensorFlow, JAX and PyTorch backends" in line and "'numpy'" in line
        assert "set KERAS_BACKEND to one of tensorflow, jax, torch" in line


def test_a_backend_whose_framework_is_missing_names_the_extra(monkeypatch):
    import importlib.util

    from interprettensor import _bootstrap

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ImportError, match=r"'torch' backend .*torch is not installed; install interprettensor\[torch\]"):
        _bootstrap._check_installed("torch")
    _bootstrap._check_installed("tensorflow")


def test_lazy_names_and_submodules():
    import importlib

    for name in it.__all__:
        assert getattr(it, name) is not None, name
        assert name in dir(it)
    ns: dict = {}
    exec("from interprettensor import lrp, Sequential, Explainer, ExplainError, Linear, PRESETS, rules, "
         "attribution, evaluate, explain_dataset, load_relevances", ns)
    assert ns["lrp"] is importlib.import_module("interprettensor.engine.explainer").lrp
    assert ns["Sequential"] is importlib.import_module("interprettensor.original.sequential").Sequential
    assert it.handlers.LinearHandler is not None and it.composites.PRESETS is it.PRESETS
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        it.no_such_name  # noqa: B018
    ns = {}
    exec("from interprettensor import *", ns)
    assert set(it.__all__) <= set(ns)


def test_first_use_installs_the_retracing_filter():
    p = py("import logging, interprettensor as it\n"
           "before = len(logging.getLogger('tensorflow').filters)\n"
           "it.lrp\n"
           "print('FILTERS', before, [type(f).__name__ for f in logging.getLogger('tensorflow').filters])")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "FILTERS 0 ['_OwnRetracingFilter']" in p.stdout, p.stdout
    # and in this process (the filter drops only the library's own retracing warnings)
    filt = next(f for f in logging.getLogger("tensorflow").filters if type(f).__name__ == "_OwnRetracingFilter")
    rec = logging.LogRecord("tensorflow", logging.WARNING, "", 0, "5 out of the last 5 calls to "
                            "<function Explainer.compiled> triggered tf.function retracing", None, None)
    assert not filt.filter(rec)
    rec.msg = ("6 out of the last 56 calls to <function _Scorer.__call__.<locals>.run at 0x7f> triggered "
               "tf.function retracing")  # the evaluation's scorer, one per randomised model copy
    assert not filt.filter(rec)
    rec.msg = "triggered tf.function retracing in user_function"
    assert filt.filter(rec)


def test_saved_model_loads_when_keras_is_imported_after_the_package(tmp_path):
    """``import interprettensor`` no longer imports the layers; Keras' import registers them: the 2017 API's
    and P-ClArC's projection layer (it.correction never imported in the new process), which loads with its
    weights (the same outputs) and is explained by its handler."""
    import keras
    import numpy as np

    net = it.Sequential([it.Linear(3, input_dim=4), it.Softmax()])
    net.save(tmp_path / "n.keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"), keras.layers.Dense(2, name="o")])
    v = np.array([1.0, -2.0, 2.0]) / 3.0
    fixed = it.correction.pclarc(model, layer="d", cav=it.correction.CAV(v, "d", clean_mean=0.5 * v))
    fixed.save(tmp_path / "p.keras")
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    ref = np.asarray(fixed(x))
    R = np.asarray(it.lrp(fixed, x, rule="epsilon", target=1))
    load = (f"m = keras.models.load_model({str(tmp_path / 'n.keras')!r})\nprint('LOADED', type(m).__name__)\n"
            f"import numpy as np\nx = np.load({str(tmp_path / 'x.npy')!r})\n"
            f"p = keras.models.load_model({str(tmp_path / 'p.keras')!r})\n"
            "print('PCLARC', type(p.get_layer('d_pclarc')).__name__)\n"
            "print('OUT', np.asarray(p(x)).tolist())\n"
            "print('R', np.asarray(interprettensor.lrp(p, x, rule='epsilon', target=1)).tolist())")
    for first in ("import interprettensor\nimport keras", "import keras\nimport interprettensor"):
        p = py(f"{first}\n{load}")
        assert p.returncode == 0, p.stderr[-2000:]
        assert "LOADED Sequential" in p.stdout and "PCLARC ClassArtifactProjection" in p.stdout, p.stdout
        out = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in p.stdout.splitlines() if " " in line}
        np.testing.assert_array_equal(np.array(eval(out["OUT"]), "float32"), ref)  # same weights, same graph
        np.testing.assert_allclose(np.array(eval(out["R"])), R, rtol=1e-6, atol=1e-7 * np.abs(R).max())


def test_default_method_names_match_evaluate():
    from interprettensor.analysis import evaluate
    from interprettensor.apps import cli

    assert list(cli.DEFAULT_METHOD_NAMES) == [m[0] for m in evaluate.DEFAULT_METHODS]


def test_cli_load_model_registers_layers_itself(tmp_path):
    net = it.Sequential([it.Linear(3, input_dim=4), it.Softmax()])
    net.save(tmp_path / "n.keras")
    p = py("import sys\nfrom interprettensor.apps import cli\n"
           f"m = cli.load_model({str(tmp_path / 'n.keras')!r})\nprint('LOADED', type(m).__name__)")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "LOADED Sequential" in p.stdout


def test_backend_option_refuses_to_switch_a_running_keras(capsys):
    from interprettensor.apps.cli import main

    assert main(["explain", "m.keras", "x.npy", "--backend", "jax"]) == 1
    err = capsys.readouterr().err
    assert "--backend jax: Keras was already imported in this process with its 'tensorflow' backend" in err


def test_digits_command_imports_no_tensorflow(tmp_path):
    """``interprettensor digits`` writes PNG files from NumPy arrays: it starts without TensorFlow or Keras
    (the tutorials run it before every other command)."""
    p = py("import sys\n"
           "from interprettensor.apps.cli import main\n"
           "rc = main(['digits', 'out', '--count', '12'])\n"
           "print('RC', rc, 'HEAVY', sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules))",
           cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "RC 0 HEAVY []" in p.stdout, p.stdout + p.stderr[-2000:]
    assert len(list((tmp_path / "out").rglob("digit-*.png"))) == 12
