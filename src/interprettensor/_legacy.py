"""Legacy names: the package's old top-level names, kept for one release with a
:class:`DeprecationWarning` that names the replacement, and the modules' old flat import paths.

Deprecated top-level names (``it.NAME`` and ``from interprettensor import NAME`` still give the same
object as before, with a warning; ``import interprettensor.NAME`` for the flat module names too):

================  ===========================================  ==========================================
old name          the object (unchanged)                       use instead
================  ===========================================  ==========================================
``PRESETS``       ``engine.composites.PRESETS``                ``interprettensor.engine.composites.PRESETS``
``ExplainError``  ``engine.errors.ExplainError``               ``interprettensor.engine.errors.ExplainError``
                                                               (``it.InterpretTensorError`` catches every
                                                               error of the library)
``finalize_run``  ``io.shards.finalize_run``                   ``interprettensor.io.shards.finalize_run``
``datasets``      module ``io.downloads``                      ``interprettensor.io.downloads``
``summaries``     module ``io.summaries``                      ``interprettensor.io.summaries``
``core``          module ``engine.linear``                     ``interprettensor.engine.linear``
``handlers``      module ``engine.handlers``                   ``interprettensor.engine.handlers``
``graph``         module ``engine.graph``                      ``interprettensor.engine.graph``
``composites``    module ``engine.composites``                 ``interprettensor.engine.composites``
                                                               (``it.Composite``, ``it.get_composite``)
``explain``       module ``engine.explainer``                  ``interprettensor.engine.explainer``
                                                               (``it.lrp``, ``it.Explainer``)
``layers``        module ``original.modules``                  ``interprettensor.original.modules``
                                                               (``it.Linear``, ``it.Convolution``, ...)
``sequential``    module ``original.sequential``               ``interprettensor.original.sequential``
                                                               (``it.Sequential``)
``stream``        module ``io.dataset_run``                    ``interprettensor.io.dataset_run``
                                                               (``it.explain_dataset``)
``cli``           module ``apps.cli``                          ``interprettensor.apps.cli``
``demo``          module ``apps.demo``                         ``interprettensor.apps.demo``
================  ===========================================  ==========================================

Old flat module names that stay public names of the package (no warning): ``rules``
(``engine.rules``), ``evaluate`` (``analysis.evaluate``), ``concepts`` (``analysis.concepts``),
``data`` (``io.digits``), ``render`` (``io.render``) and ``render_text`` (``io.render_text``).

The subpackages (``engine``, ``original``, ``attribution``, ``analysis``, ``io``, ``apps``,
``pretrained``) are the package's layout, not names of its face: ``it.pretrained`` and the others work
as before, without a warning.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

PACKAGE = __name__.rpartition(".")[0]

#: the modules' old flat names (``import interprettensor.stream``, ``it.rules``) -> where they live
MOVED = {
    "rules": "engine.rules", "core": "engine.linear", "handlers": "engine.handlers", "graph": "engine.graph",
    "composites": "engine.composites", "explain": "engine.explainer",
    "layers": "original.modules", "sequential": "original.sequential",
    "evaluate": "analysis.evaluate", "concepts": "analysis.concepts",
    "stream": "io.dataset_run", "data": "io.digits", "datasets": "io.downloads", "render": "io.render",
    "render_text": "io.render_text", "summaries": "io.summaries",
    "cli": "apps.cli", "demo": "apps.demo",
}

#: deprecated top-level names -> (module, attribute; ``None`` for the module itself, the replacement)
DEPRECATED: dict[str, tuple[str, str | None, str]] = {
    "PRESETS": ("engine.composites", "PRESETS", "interprettensor.engine.composites.PRESETS"),
    "ExplainError": ("engine.errors", "ExplainError", "interprettensor.engine.errors.ExplainError (catch "
                                                      "interprettensor.InterpretTensorError for every library error)"),
    "finalize_run": ("io.shards", "finalize_run", "interprettensor.io.shards.finalize_run"),
    "datasets": ("io.downloads", None, "interprettensor.io.downloads"),
    "summaries": ("io.summaries", None, "interprettensor.io.summaries"),
    "core": ("engine.linear", None, "interprettensor.engine.linear"),
    "handlers": ("engine.handlers", None, "interprettensor.engine.handlers"),
    "graph": ("engine.graph", None, "interprettensor.engine.graph"),
    "composites": ("engine.composites", None, "interprettensor.engine.composites (or interprettensor.Composite, "
                                              "interprettensor.get_composite)"),
    "explain": ("engine.explainer", None, "interprettensor.engine.explainer (or interprettensor.lrp, "
                                          "interprettensor.Explainer)"),
    "layers": ("original.modules", None, "interprettensor.original.modules (or interprettensor.Linear, ...)"),
    "sequential": ("original.sequential", None, "interprettensor.original.sequential (or "
                                                "interprettensor.Sequential)"),
    "stream": ("io.dataset_run", None, "interprettensor.io.dataset_run (or interprettensor.explain_dataset)"),
    "cli": ("apps.cli", None, "interprettensor.apps.cli"),
    "demo": ("apps.demo", None, "interprettensor.apps.demo"),
}
assert all(DEPRECATED[n][0] == MOVED[n] for n in DEPRECATED if DEPRECATED[n][1] is None)

_HERE = (os.path.dirname(os.path.abspath(__file__)) + os.sep + "__init__.py", os.path.abspath(__file__))


def _caller_level() -> int:
    """The stack level (for :func:`warnings.warn` called by its caller) of the first frame outside
    this module, the package's ``__init__`` and the import system: the user's line that named the old
    name. ``warnings`` itself skips importlib's bootstrap frames, so they are not counted."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        internal = "importlib" in name and "_bootstrap" in name  # as warnings tells them
        if not internal and os.path.abspath(name) not in _HERE and "importlib" + os.sep not in name:
            return level
        frame = frame.f_back
        level += 0 if internal else 1
    return 1


def warn(name: str) -> None:
    """The DeprecationWarning for the old top-level name ``name``, naming its replacement."""
    replacement = DEPRECATED[name][2]
    warnings.warn(f"interprettensor.{name} is deprecated and goes in the next release; use {replacement}",
                  DeprecationWarning, stacklevel=_caller_level())


def deprecated(name: str) -> Any:
    """The object an old top-level name gives (the same as before), with its DeprecationWarning."""
    warn(name)
    module, attribute, _ = DEPRECATED[name]
    mod = importlib.import_module(f"{PACKAGE}.{module}")
    return mod if attribute is None else getattr(mod, attribute)


class _Alias:
    """Loader of a module's old flat name (``interprettensor.rules``): the module it moved to."""

    def __init__(self, name: str):
        self.name = name

    def create_module(self, spec: Any) -> Any:
        if self.name in DEPRECATED:
            warn(self.name)
        return importlib.import_module(f"{PACKAGE}.{MOVED[self.name]}")

    def exec_module(self, module: Any) -> None:
        pass


class _MovedModules:
    """A meta path finder for the old flat module names: ``import interprettensor.stream`` gives
    ``interprettensor.io.dataset_run`` (the same module object)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        parts = fullname.split(".")
        if len(parts) == 2 and parts[0] == PACKAGE and parts[1] in MOVED:
            import importlib.util

            return importlib.util.spec_from_loader(fullname, _Alias(parts[1]))
        return None


def install() -> None:
    """Let the old flat module names import (once)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
