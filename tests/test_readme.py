"""Every ```bash and ```python block of README.md runs as printed.

Each block runs in a fresh temporary folder. Bash blocks run line by line (``bash -c``), with the
virtual environment's ``bin`` first on ``PATH``, and must exit 0 without a traceback. Python blocks
run in a fresh process as ``python -c`` runs them, after the block's preamble below if it has one, and
before its postscript (checks that it did what the prose says) if it has one. The fresh processes of
python blocks and of plain ``interprettensor ARGS`` lines are forked from a warm interpreter that has
imported TensorFlow, Keras and keras_hub and nothing run (tests/warm_python.py: the same process but for
those imports' 5-9 s; a block or command that picks another Keras backend starts cold).

What is not run as printed, and why:

* SKIPS: blocks that install packages or run ``make`` (which creates a virtual environment and runs
  the whole test suite). NOT_HERE (words that mark a block as needing a download, a cluster or
  several machines) and a 224x224 ``keras.applications`` model (minutes on 2 CPU cores) would skip
  a block too; none of the README's blocks has them (the site's do: tests/test_docs.py).
* PREAMBLES: what the prose around a block defines, keyed by the block's first line: the "Rules and
  presets" block continues the first example, so that example's code runs before it.
* REDUCTIONS: README commands that take minutes at full size run smaller (listed with the exact
  replacement): fewer epochs or digits, and the viewer's server, which runs until stopped, is started
  without a browser, asked for its runs and stopped.
* A bash block whose commands (as run: reduced) all run, in the same order and from a fresh folder,
  in one block of the documentation site (tests/test_docs.py runs it) is not run twice: the README's
  walk-through from the digits to the viewer is the site's (see :func:`covered_by`).

Every entry must match a block of the README (no stale entries), and a block of the README that is
not listed here runs as printed: a new block either runs or needs an entry here. The sections that
the README once held in full (rules, layers, the command line, speed, data sets, ...) are pages of
the site now, and their blocks run in tests/test_docs.py.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest
import warm_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
ENV = warm_python.ENV


def markdown_blocks(text, label=None):
    """The ```bash and ```python blocks of a Markdown text: ``pytest.param(kind, code, first line)`` each,
    with the id ``{label or kind}@L{line}:{first line}`` (also used by tests/test_docs.py)."""
    out = []
    for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M):
        line = text[:m.start()].count("\n") + 1
        code = m.group(2)
        first = next((ln.strip() for ln in code.splitlines() if ln.strip()), "")
        out.append(pytest.param(m.group(1), code, first, id=f"{label or m.group(1)}@L{line}:{first[:40]}"))
    return out


def readme_blocks():
    return markdown_blocks(open(README, encoding="utf-8").read())


def _block(first):
    """The code of the README's block whose first line is exactly ``first``."""
    for p in readme_blocks():
        if p.values[2] == first:
            return p.values[1]
    raise LookupError(f"the README has no block whose first line is {first!r}")


#: block first-line prefix -> why it is not run
SKIPS = {
    "make demo": "make creates the virtual environment and runs the whole test suite (CI runs it: .ci/run)",
    'pip install -e ".[cpu]"': "installs packages (pip install)",
}

#: words that mark a block as not runnable here, with the reason (checked for every block); none of
#: the README's blocks has one
NOT_HERE: dict = {}

#: block first line (or its beginning) -> Python code run before it (the names its prose defines)
PREAMBLES = {
    # "Rules and presets" continues the first example (a CNN trained on the digits: model, x, y)
    "explainer = it.Explainer(model, rule='epsilon_gamma_box'": _block("import keras"),
}

#: Python checks run after a block (that it did what the prose says)
POSTSCRIPTS = {
    # the metrics example: one score per sample, one curve per sample, a table over three methods, a plot
    "# shapes on textured backgrounds": """
import os
import numpy as np
assert len(rma) == len(x) == 100 and all(0.0 <= r <= 1.0 for r in rma), rma
assert len(curves) == len(x) and all(np.ndim(c) == 1 and len(c) > 1 for c in curves)
assert set(cmp.ranking()) == {"RelevanceRankAccuracy", "PointingGame", "Sparseness"}, cmp.ranking()
assert os.path.getsize("metrics.png") > 1000
""",
    # the 2017 API: the network trains (a ReLU before the softmax would stall it near 25 %)
    "import interprettensor as it": """
import numpy as np
acc = float((np.asarray(net.forward(x_test)).argmax(-1) == y_test).mean())
assert acc > 0.85, acc
assert relevance.shape == x_test[:8].shape, relevance.shape
""",
}
#: README command -> what runs instead (commands that take minutes at full size; the viewer's server,
#: which runs until stopped: started without a browser, asked for its runs, stopped)
REDUCTIONS = {
    # 200 of the 1,797 digits: the example's explain, spray and concepts run on them
    "interprettensor digits digits/": "interprettensor digits digits/ --count 200",
    "interprettensor train --dataset digits --arch convolutional --epochs 10 --out model.keras":
        "interprettensor train --dataset digits --arch convolutional --epochs 1 --out model.keras",
    "interprettensor view runs/epsilon concepts":
        "interprettensor view runs/epsilon concepts --no-browser > view.log 2>&1 & pid=$!; "
        "for i in $(seq 150); do grep -q 'serving on' view.log && break; sleep 0.2; done; "
        "python -c \"import re, json, urllib.request; url = re.search(r'http://[0-9.:]+/', open('view.log').read())[0]; "
        "runs = json.load(urllib.request.urlopen(url + 'api/runs'))['runs']; "
        "run = next(r for r in runs if r['name'] == 'epsilon'); assert run['has_inputs'], runs\"; "
        "rc=$?; kill $pid; cat view.log; exit $rc",
    # the same reduction as the site's: the block is then the site's docs/tutorials/evaluation.md block,
    # which runs it (the default methods are the library's, tests/test_evaluate.py)
    "interprettensor evaluate --demo-model --digits 200 --sanity --out output/evaluate":
        "interprettensor evaluate --demo-model --epochs 1 --digits 8 --methods epsilon random --sanity "
        "--out output/evaluate",
}


def _entry(table, first):
    """The value whose key is the block's first line or its beginning."""
    return next((v for k, v in table.items() if first.startswith(k)), None)


def _skip_reason(code, first, skips=None, not_here=None):
    """Why a block is not run (``skips`` by its first line, ``not_here`` by words in it; this file's
    tables unless given), or None."""
    why = _entry(SKIPS if skips is None else skips, first)
    if why:
        return why
    for word, why in (NOT_HERE if not_here is None else not_here).items():
        if word in code:
            return why
    if "keras.applications" in code and "224" in code:
        return "a 224x224 keras.applications model takes minutes on 2 CPU cores"
    return None


def _commands(code):
    """The lines of a bash block without comments (a trailing '# ...' is a comment)."""
    cmds = []
    for line in code.splitlines():
        cmd = re.sub(r"\s+#.*$", "", line).strip()
        if cmd and not cmd.startswith("#"):
            cmds.append(cmd)
    return cmds


def _is_subsequence(short, long):
    rest = iter(long)
    return all(any(c == d for d in rest) for c in short)


def covered_by(kind, code, first, reductions, blocks, bash_setup=None):
    """The id of a block of ``blocks`` (``(id, code, first, reductions, bash_setup)``, in page order)
    that runs every command of this bash block, reduced the same way and in the same order, from a
    fresh folder with no set-up on either side (so running this block too would repeat what that one
    asserts), or None. Of blocks with the same commands the first in ``blocks`` runs."""
    if kind != "bash" or _entry(bash_setup or {}, first):
        return None
    mine = [reductions.get(c, c) for c in _commands(code)]
    position = next((i for i, b in enumerate(blocks) if b[1] is code), None)
    for i, (other_id, other_code, other_first, other_reductions, other_setup) in enumerate(blocks):
        if i == position or _entry(other_setup or {}, other_first):
            continue
        theirs = [other_reductions.get(c, c) for c in _commands(other_code)]
        if theirs == mine and position is not None and i > position:
            continue  # the same commands later in the same pages: this block is the one that runs
        if _is_subsequence(mine, theirs):
            return other_id
    return None


def _docs_blocks():
    """The site's bash blocks as :func:`covered_by` takes them (tests/test_docs.py's tables)."""
    import test_docs

    return test_docs._bash_blocks()


def _run(args, cwd, timeout):
    return _check(subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV))


def _check(p):
    """A block or command ran: exit status 0 and no traceback."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 0, (p.args, p.stdout[-2000:], p.stderr[-3000:])
    return p


def _setup_in_process(code: str, folder) -> None:
    """Run a bash block's set-up script (the files a user brings, not the block itself) in this process,
    in ``folder``: the test's process has TensorFlow, Keras and keras_hub loaded already, where a fresh
    interpreter would spend several seconds importing them again. What it writes is all the block reads."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        exec(compile(code, "<bash block set-up>", "exec"), {"__name__": "__setup__"})
    finally:
        os.chdir(here)


def run_block(kind: str, code: str, first: str, folder, preambles: dict, postscripts: dict, reductions: dict,
              bash_setup: dict | None = None) -> None:
    """Run one block in ``folder``: a python block in a fresh process between its preamble and its
    postscript; a bash block's set-up script first (in this process), then its commands line by line (a reduced command
    in place of one that takes minutes; ``interprettensor ARGS`` in a fresh process forked from the warm
    interpreter, other lines in ``bash -c``). Shared by the README's and the site's tests."""
    if kind == "python":
        script = (_entry(preambles, first) or "") + "\n" + code + "\n" + (_entry(postscripts, first) or "")
        _check(warm_python.run_code(script, folder, ENV, 600))
        return
    setup = _entry(bash_setup or {}, first)
    if setup:
        _setup_in_process(setup, folder)
    cmds = _commands(code)
    if not cmds:
        pytest.fail("an empty bash block")
    for cmd in cmds:
        cmd = reductions.get(cmd, cmd)
        argv = _interprettensor_arguments(cmd)
        if argv is None:
            _run(["bash", "-c", cmd], folder, 600)
        else:
            _check(warm_python.run_cli(argv, folder, ENV, 600))


def _interprettensor_arguments(cmd: str) -> list | None:
    """The arguments of a plain ``interprettensor ...`` command line (no pipe, redirection, variable, glob or
    second command: those run in bash), or None."""
    if not cmd.startswith("interprettensor ") or re.search(r"[|&;<>()$`*?\[\]{}~\\]", cmd):
        return None
    return shlex.split(cmd)[1:]


@pytest.mark.slow
@pytest.mark.parametrize("kind,code,first", readme_blocks())
def test_readme_block(kind, code, first, tmp_path):
    why = _skip_reason(code, first)
    if why:
        pytest.skip(why)
    other = covered_by(kind, code, first, REDUCTIONS, _docs_blocks())
    if other:
        pytest.skip(f"every command runs, reduced the same way, in tests/test_docs.py's {other}")
    run_block(kind, code, first, tmp_path, PREAMBLES, POSTSCRIPTS, REDUCTIONS)


def test_every_listed_entry_matches_a_block():
    """Preambles, postscripts, reductions, skips and words that skip must refer to what the README holds
    (no stale entries)."""
    blocks = [(p.values[1], p.values[2]) for p in readme_blocks()]
    firsts = {first for _, first in blocks}
    for key in list(PREAMBLES) + list(POSTSCRIPTS) + list(SKIPS):
        assert sum(f.startswith(key) for f in firsts) == 1, f"not exactly one README block starts with {key!r}"
    commands = {c for code, _ in blocks for c in _commands(code)}
    for cmd in REDUCTIONS:
        assert cmd in commands, f"the README has no command {cmd!r}"
    for word in NOT_HERE:
        assert any(word in code for code, _ in blocks), f"no README block has {word!r}"
