"""Finding the runs in the paths the viewer is given (:func:`discover`): folders searched ``MAX_DEPTH``
levels deep for explain runs (with their SpRAy results) and concepts runs, or ``relevances.npz`` files,
each named relative to the path it was found under (:class:`Found`); unreadable runs are left out with a
warning, a path that holds no run is an error naming what was expected."""

from __future__ import annotations

import os
import re
from typing import Callable, Sequence

from .concepts import ConceptsRun
from .explain import ExplainRun, NpzRun, ShardRun
from .files import CONCEPTS, MANIFEST, RELEVANCES, SPRAY_DIR, SPRAY_JSON, RunError, _Members
from .spray import Spray

_SHARD_RE = re.compile(r"^shard-\d{5,}\.npz$")
#: how deep below a given folder runs are looked for (RUN/epsilon, RUN/rules/gamma, ...)
MAX_DEPTH = 3


class Found:
    """What the given paths hold: explain runs (with their SpRAy results) and concepts runs, each
    with a name relative to the path it was found under."""

    def __init__(self) -> None:
        self.explain: list[tuple[str, ExplainRun]] = []
        self.spray: dict[str, Spray] = {}  # explain run name -> its SpRAy results
        self.concepts: list[tuple[str, ConceptsRun]] = []
        self.spray_errors: dict[str, str] = {}  # explain run name -> why its SpRAy results cannot be read
        self.warnings: list[str] = []  # runs left out (unreadable), damaged shards, ...


def _kind_of(folder: str, files: Sequence[str]) -> str | None:
    names = set(files)
    if CONCEPTS in names:
        return "concepts"
    if MANIFEST in names and any(_SHARD_RE.match(f) for f in names):
        return "shards"
    if RELEVANCES in names:
        return "npz"
    return None


def discover(paths: Sequence[str], members: _Members | None = None,
             error: Callable[[str], Exception] = RunError) -> Found:
    """Find the runs in ``paths`` (folders searched ``MAX_DEPTH`` levels deep, or ``relevances.npz``
    files). Raises ``error(message)`` for a path that does not exist or holds no run, naming it and
    what was expected."""
    members = members or _Members()
    found = Found()
    used: set[str] = set()

    def unique(name: str) -> str:
        base, i = name, 2
        while name in used:
            name, i = f"{base} ({i})", i + 1
        used.add(name)
        return name

    for given in paths:
        path = os.path.abspath(os.fspath(given))
        label = os.path.basename(path.rstrip(os.sep)) or path
        if not os.path.exists(path):
            raise error(f"{given!r} does not exist; expected a run folder (manifest.json and shard-*.npz of "
                        f"explain_dataset, relevances.npz of 'interprettensor explain', concepts.json of a concepts "
                        f"run) or a folder holding such runs")
        if os.path.isfile(path):
            if os.path.basename(path) != RELEVANCES and not path.endswith(".npz"):
                raise error(f"{given!r} is a file but not a relevances.npz; expected a run folder or a "
                            f"relevances.npz")
            try:
                found.explain.append((unique(label), NpzRun(path, members)))
            except RunError as e:
                raise error(str(e)) from None
            continue
        before, warned = len(found.explain) + len(found.concepts), len(found.warnings)
        for folder, dirs, files in os.walk(path):
            depth = 0 if folder == path else os.path.relpath(folder, path).count(os.sep) + 1
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != SPRAY_DIR and d != "__pycache__")
            if depth >= MAX_DEPTH:
                dirs[:] = []
            kind = _kind_of(folder, files)
            if kind is None:
                continue
            rel = os.path.relpath(folder, path).replace(os.sep, "/")
            # named relative to the given folder; prefixed by it where two given folders hold the same names
            name = unique(label if rel == "." else (f"{label}/{rel}" if rel in used else rel))
            try:
                if kind == "concepts":
                    found.concepts.append((name, ConceptsRun(folder, members)))
                    dirs[:] = []
                    continue
                run: ExplainRun = ShardRun(folder, members) if kind == "shards" else \
                    NpzRun(os.path.join(folder, RELEVANCES), members)
            except RunError as e:
                if kind == "concepts":
                    raise error(str(e)) from None
                found.warnings.append(f"left out {name}: {e}")
                continue
            found.explain.append((name, run))
            found.warnings.extend(run.damaged.values())
            if os.path.exists(os.path.join(folder, SPRAY_DIR, SPRAY_JSON)):
                try:  # broken SpRAy results: said in the SpRAy tab, the samples are shown
                    found.spray[name] = Spray(os.path.join(folder, SPRAY_DIR), members)
                except RunError as e:
                    found.spray_errors[name] = str(e)
                    found.warnings.append(str(e))
        if len(found.explain) + len(found.concepts) == before:
            if len(found.warnings) > warned:
                raise error(f"{given!r} holds no run the viewer can show: {'; '.join(found.warnings[warned:])}")
            raise error(f"{given!r} holds no run the viewer can show: expected manifest.json and shard-*.npz "
                        f"(explain_dataset), relevances.npz ('interprettensor explain') or concepts.json (a concepts "
                        f"run), in it or up to {MAX_DEPTH} folders below")
    return found
