"""One exception root: every error class the library defines derives from
``interprettensor.InterpretTensorError`` and keeps the builtin base that fits; the root lives in the
engine's lowest module, which imports nothing heavy."""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import interprettensor as it

#: the builtin base each known error keeps beside the root (None: the root alone)
BUILTIN_BASE = {
    "interprettensor.engine.errors.ExplainError": ValueError,
    "interprettensor.engine.expand.ShapeDependent": ValueError,
    "interprettensor.io.shards.StreamError": ValueError,
    "interprettensor.analysis.spray.estimator.SpRAyError": ValueError,
    "interprettensor.io.inputs.InputError": ValueError,
    "interprettensor.io.downloads.DatasetError": OSError,
    "interprettensor.apps.viewer.runs.files.RunError": ValueError,
    "interprettensor.apps.viewer.server.ApiError": None,
    "interprettensor.apps.explain_text.TextCommandError": None,
    "interprettensor.apps.commands.options.CLIError": None,
}


def _library_exceptions() -> dict[str, type]:
    """Every Exception subclass defined in one of the package's modules (all of them imported)."""
    found = {}
    for info in pkgutil.walk_packages(it.__path__, prefix="interprettensor."):
        if info.name == "interprettensor.__main__":  # runs the command line
            continue
        mod = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_the_root_is_public_and_plain():
    from interprettensor.engine.errors import InterpretTensorError

    assert it.InterpretTensorError is InterpretTensorError
    assert InterpretTensorError.__bases__ == (Exception,)
    assert "InterpretTensorError" in it.__all__


def test_every_library_error_derives_from_the_root_and_its_builtin_base():
    found = _library_exceptions()
    assert set(BUILTIN_BASE) <= set(found), sorted(set(BUILTIN_BASE) - set(found))
    rootless = sorted(name for name, cls in found.items()
                      if cls is not it.InterpretTensorError and not issubclass(cls, it.InterpretTensorError))
    assert not rootless, f"errors that do not derive from interprettensor.InterpretTensorError: {rootless}"
    for name, base in BUILTIN_BASE.items():
        if base is not None:
            assert issubclass(found[name], base), f"{name} lost its builtin base {base.__name__}"


@pytest.mark.parametrize("name", sorted(n for n, b in BUILTIN_BASE.items() if b is not None))
def test_library_errors_are_still_caught_as_builtins(name):
    module, cls_name = name.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), cls_name)
    with pytest.raises(BUILTIN_BASE[name]):
        raise cls("x")
    with pytest.raises(it.InterpretTensorError):
        raise cls("x")


def test_the_root_imports_nothing_heavy():
    p = subprocess.run([sys.executable, "-c",
                        "import sys\nfrom interprettensor.engine.errors import InterpretTensorError\n"
                        "from interprettensor.io.inputs import InputError\n"
                        "print('HEAVY', sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))\n"
                        "print('ENGINE', sorted(m for m in sys.modules if m.startswith('interprettensor.engine')))"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "HEAVY []" in p.stdout, p.stdout
    assert "ENGINE ['interprettensor.engine', 'interprettensor.engine.errors']" in p.stdout, p.stdout


def test_float64_is_refused_by_name_where_keras_computes_it_in_float32(monkeypatch):
    """Keras promotes float64 to float32 on JAX and PyTorch: the explainer says so instead of
    silently explaining in float32 (simulated here by the backend's flag)."""
    import keras

    import interprettensor as it
    from interprettensor.engine import backend

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    monkeypatch.setattr(backend, "FLOAT64", False)
    with pytest.raises(it.ExplainError, match=r"dtype= float64 needs Keras' TensorFlow backend.*promotes float64"):
        it.Explainer(model, dtype="float64")
    it.Explainer(model, dtype="float32")
