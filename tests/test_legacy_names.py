"""One public face: the names kept in ``it.__all__`` load without a warning; every other old top-level
name (and old flat module path) still gives the same object as before, with a DeprecationWarning
that names its replacement (src/interprettensor/_legacy.py)."""

import importlib
import re
import sys
import warnings

import pytest

import interprettensor as it
from interprettensor import _legacy

#: the old top-level names that are deprecated -> the object each gave before the face was trimmed
BEFORE = {
    "PRESETS": "interprettensor.engine.composites:PRESETS",
    "ExplainError": "interprettensor.engine.errors:ExplainError",
    "finalize_run": "interprettensor.io.shards:finalize_run",
    "datasets": "interprettensor.io.downloads",
    "summaries": "interprettensor.io.summaries",
    "core": "interprettensor.engine.linear",
    "handlers": "interprettensor.engine.handlers",
    "graph": "interprettensor.engine.graph",
    "composites": "interprettensor.engine.composites",
    "explain": "interprettensor.engine.explainer",
    "layers": "interprettensor.original.modules",
    "sequential": "interprettensor.original.sequential",
    "stream": "interprettensor.io.dataset_run",
    "cli": "interprettensor.apps.cli",
    "demo": "interprettensor.apps.demo",
}


def _object(path: str):
    module, _, attribute = path.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, attribute) if attribute else mod


def _resolve(dotted: str):
    """``interprettensor.io.shards.finalize_run`` -> the object (the longest importable module prefix)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(dotted)


def _own(records) -> list[str]:
    return [str(r.message) for r in records
            if issubclass(r.category, DeprecationWarning) and str(r.message).startswith("interprettensor.")]


def test_the_table_covers_the_deprecated_names():
    assert set(_legacy.DEPRECATED) == set(BEFORE)
    assert not set(BEFORE) & set(it.__all__)
    assert len(it.__all__) == len(set(it.__all__)) <= 36  # 23 names and the 2017 API's 13


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_deprecated_name_warns_names_its_replacement_and_gives_the_same_object(name, monkeypatch):
    monkeypatch.delitem(it.__dict__, name, raising=False)  # set by an earlier ``import interprettensor.NAME``
    replacement = _legacy.DEPRECATED[name][2].split(" ")[0]
    with pytest.warns(DeprecationWarning, match=rf"interprettensor\.{name} is deprecated.*{re.escape(replacement)}"):
        got = getattr(it, name)
    assert got is _object(BEFORE[name])
    assert _resolve(replacement) is got  # the replacement is the same object
    with pytest.warns(DeprecationWarning, match=re.escape(replacement)):
        ns: dict = {}
        exec(f"from interprettensor import {name}", ns)
    assert ns[name] is got


@pytest.mark.parametrize("name", sorted(n for n in BEFORE if _legacy.DEPRECATED[n][1] is None))
def test_old_flat_import_warns(name, monkeypatch):
    monkeypatch.delitem(sys.modules, f"interprettensor.{name}", raising=False)
    monkeypatch.delitem(it.__dict__, name, raising=False)
    with pytest.warns(DeprecationWarning, match=re.escape(_legacy.DEPRECATED[name][2].split(" ")[0])):
        mod = importlib.import_module(f"interprettensor.{name}")
    assert mod is _object(BEFORE[name])


def test_the_face_does_not_warn():
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        for name in it.__all__:
            assert getattr(it, name) is not None
        for name in ("rules", "evaluate", "concepts", "data", "render", "render_text"):
            importlib.import_module(f"interprettensor.{name}")
        for name in ("engine", "original", "io", "analysis", "apps", "pretrained", "__version__"):
            getattr(it, name)
    assert not _own(records), _own(records)


def test_the_warning_points_at_the_callers_line(tmp_path):
    import subprocess

    script = tmp_path / "user.py"
    script.write_text("import warnings\nwarnings.simplefilter('always')\nimport interprettensor as it\n"
                      "it.PRESETS\nimport interprettensor.stream\nfrom interprettensor import datasets\n")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    for line, name in ((4, "PRESETS"), (5, "stream"), (6, "datasets")):
        assert f"user.py:{line}: DeprecationWarning: interprettensor.{name} is deprecated" in p.stderr, p.stderr
