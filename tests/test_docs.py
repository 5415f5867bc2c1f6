"""The documentation site: every ```bash and ```python block of docs/ runs, and ``mkdocs build --strict``
passes.

The blocks run as tests/test_readme.py runs the README's (its helpers are imported from there): each
block in a fresh temporary folder, python blocks in a fresh interpreter after the block's preamble if
it has one, bash blocks line by line with the virtual environment's ``bin`` first on ``PATH``. The
pages' blocks are written to run as printed on small models and few digits; what is not run as
printed, and why:

* SKIPS: blocks that install packages or run ``make`` (which creates a virtual environment and runs
  the whole test suite).
* BASH_SETUP: files a user brings that a bash block reads (``model.keras``, ``batch.npy``), made by a
  Python script in the block's folder first.
* REDUCTIONS: commands that take minutes at full size run smaller (fewer digits, one epoch), and the
  viewer's server, which runs until stopped, is started without a browser, asked for its runs and
  stopped.

A block that is not listed here runs as printed: a new block either runs or needs an entry here.
"""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from test_readme import ENV, _commands, _entry, _run, markdown_blocks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: block first-line prefix -> why it is not run
SKIPS = {
    "make demo": "make creates the virtual environment and runs the whole test suite (CI runs it: .ci/run)",
    'pip install -e ".[cpu]"': "installs packages (pip install)",
}

#: Python code run in the block's folder first, keyed by the block's first line
BASH_SETUP = {
    # "Whole data sets": the model and the batch the commands explain
    "interprettensor explain model.keras batch.npy": """
import keras, numpy as np
import interprettensor as it
keras.utils.set_random_seed(0)
keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                  keras.layers.Flatten(), keras.layers.Dense(10)]).save('model.keras')
np.save('batch.npy', it.data.load_digits()[0][:100])
""",
}

#: docs command -> what runs instead
REDUCTIONS = {
    # 200 of the 1,797 digits: the walk-through's explain, spray and concepts run on them
    "interprettensor digits digits/": "interprettensor digits digits/ --count 200",
    "interprettensor train --dataset digits --arch convolutional --epochs 10 --out model.keras":
        "interprettensor train --dataset digits --arch convolutional --epochs 1 --out model.keras",
    "interprettensor evaluate --demo-model --digits 200 --sanity --out output/evaluate":
        "interprettensor evaluate --demo-model --epochs 1 --digits 8 --methods epsilon random --sanity "
        "--out output/evaluate",
    "interprettensor view runs/epsilon concepts":
        "interprettensor view runs/epsilon concepts --no-browser > view.log 2>&1 & pid=$!; "
        "for i in $(seq 150); do grep -q 'serving on' view.log && break; sleep 0.2; done; "
        "python -c \"import re, json, urllib.request; url = re.search(r'http://[0-9.:]+/', open('view.log').read())[0]; "
        "runs = json.load(urllib.request.urlopen(url + 'api/runs'))['runs']; "
        "assert 'epsilon' in [r['name'] for r in runs], runs\"; "
        "rc=$?; kill $pid; cat view.log; exit $rc",
}


def doc_pages():
    return sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))


def doc_blocks():
    return [block for page in doc_pages()
            for block in markdown_blocks(open(page, encoding="utf-8").read(), os.path.relpath(page, DOCS))]


@pytest.mark.slow
@pytest.mark.parametrize("kind,code,first", doc_blocks())
def test_docs_block(kind, code, first, tmp_path):
    why = _entry(SKIPS, first)
    if why:
        pytest.skip(why)
    if kind == "python":
        _run([sys.executable, "-c", code], tmp_path, 600)
        return
    setup = _entry(BASH_SETUP, first)
    if setup:
        _run([sys.executable, "-c", setup], tmp_path, 300)
    cmds = _commands(code)
    if not cmds:
        pytest.fail("an empty bash block")
    for cmd in cmds:
        _run(["bash", "-c", REDUCTIONS.get(cmd, cmd)], tmp_path, 600)


def test_every_listed_entry_matches_a_block():
    """Setups, reductions and skips must refer to what the pages hold (no stale entries)."""
    blocks = [(p.values[1], p.values[2]) for p in doc_blocks()]
    firsts = {first for _, first in blocks}
    for key in list(BASH_SETUP) + list(SKIPS):
        assert sum(f.startswith(key) for f in firsts) == 1, f"not exactly one docs block starts with {key!r}"
    commands = {c for code, _ in blocks for c in _commands(code)}
    for cmd in REDUCTIONS:
        assert cmd in commands, f"the docs have no command {cmd!r}"


def test_every_page_is_in_the_nav():
    """mkdocs only warns (not in --strict) about pages missing from the nav: each page must be in it."""
    nav = open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8").read()
    for page in doc_pages():
        assert os.path.relpath(page, DOCS) in nav, f"{page} is not in mkdocs.yml's nav"


_MISSING = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
            if importlib.util.find_spec(m.split(".")[0]) is None
            or (m == "mkdocstrings_handlers.python" and importlib.util.find_spec(m) is None)]


@pytest.mark.slow
@pytest.mark.skipif(bool(_MISSING), reason=f"the docs extra is not installed (missing: {', '.join(_MISSING)}); "
                                           "`make test` installs it")
def test_mkdocs_build_strict(tmp_path):
    """The site builds without a warning: links, references and docstrings (`make docs`)."""
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(ENV, NO_MKDOCS_2_WARNING="1"))
    assert p.returncode == 0, p.stderr[-5000:]
    assert "WARNING" not in p.stderr, p.stderr[-5000:]
    assert os.path.exists(tmp_path / "site" / "reference" / "explainer" / "index.html")
