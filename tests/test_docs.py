"""The documentation site: every ```bash and ```python block of docs/ runs, and ``mkdocs build --strict``
passes.

The blocks run as tests/test_readme.py runs the README's (its helpers are imported from there): each
block in a fresh temporary folder, python blocks in a fresh process after the block's preamble if
it has one (and before its postscript, checks that it did what the prose says), bash blocks line by
line with the virtual environment's ``bin`` first on ``PATH`` (python blocks and plain
``interprettensor ARGS`` lines forked from a warm interpreter: tests/warm_python.py). Most of the pages' blocks are written to
run as printed on small models and few digits; the blocks moved from the README with its sections (the
command line, keras_hub's models, many workers, several devices, ...) are printed as a user would write
them. What is not run as printed, and why:

* SKIPS: blocks that install packages or run ``make`` (which creates a virtual environment and runs
  the whole test suite).
* NOT_HERE: words that mark a block as not runnable here (a Slurm job script, a cluster of several
  machines), with the reason.
* PREAMBLES: what the prose around a python block defines (a model ``model``, token ids ``ids``, a
  keras_hub GPT-2 backbone and ViT classifier at small sizes, a folder of images), keyed by the block's
  first line. POSTSCRIPTS: checks run after a block.
* BASH_SETUP: files a user brings that a bash block reads (``model.keras``, ``batch.npy``, text
  models, a run to analyse), made by a Python script in the block's folder first (in the test's
  process, which has TensorFlow and keras_hub loaded already).
* REDUCTIONS: commands that take minutes at full size run smaller (fewer digits, one epoch), and the
  viewer's server, which runs until stopped, is started without a browser, asked for its runs and
  stopped.
* A bash block whose commands (as run: reduced) all run, in the same order and from a fresh folder,
  in a longer block of the pages is not run twice (``test_readme.covered_by``): the tutorial's first
  steps with the digits are part of its walk-through from the digits to the viewer. TESTED_ELSEWHERE:
  the same for a block that is covered but for a command whose claim another test (named) makes.

Every entry must match a block of the pages (no stale entries), and a block that is not listed here
runs as printed: a new block either runs or needs an entry here.
"""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from test_readme import ENV, _commands, _skip_reason, covered_by, markdown_blocks, run_block

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: block first-line prefix -> why it is not run
SKIPS = {
    "make demo": "make creates the virtual environment and runs the whole test suite (CI runs it: .ci/run)",
    'pip install -e ".[cpu]"': "installs packages (pip install)",
}

#: words that mark a block as not runnable here, with the reason (checked for every block)
NOT_HERE = {
    "MultiWorkerMirroredStrategy(": "needs several machines",
    "#SBATCH": "a Slurm job script (needs Slurm and the cluster's paths)",
}

#: block first line (or its beginning) -> Python code run before it (the names its prose defines)
PREAMBLES = {
    # "Correcting a Clever Hans", A-ClArC: the walk-through's names (d, model with a layer 'pool', cav),
    # with a smaller model and CAV so that the block's fine-tuning stays short
    "tuned, history = it.correction.aclarc(": """
import keras, numpy as np
import interprettensor as it
d = it.correction.shortcut_digits(artifact_class=0, fraction=0.7, backdoor=0.2)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                          keras.layers.MaxPooling2D(2, name='pool'), keras.layers.Flatten(), keras.layers.Dense(10)])
clean = d.x_train[d.y_train != 0][:50]
cav = it.correction.cav(model, layer='pool', artifact=it.correction.add_watermark(clean)[0], clean=clean)
""",
    # "Many workers": a model, a folder of images and the worker's index i
    "it.explain_dataset(model, 'images/'": """
import os, numpy as np, keras
from PIL import Image
import interprettensor as it
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
digits = it.data.load_digits()[0]
os.makedirs('images', exist_ok=True)
for k in range(6):
    Image.fromarray((digits[k, ..., 0] * 255).round().astype('uint8')).save(f'images/d{k}.png')
i = 0
""",
    # "keras_hub's models": token ids and masks, a GPT-2 backbone, a ViT classifier and images (small sizes)
    "import keras_hub, interprettensor as it": """
import numpy as np, keras, keras_hub
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
ids = rng.integers(1000, 30000, (2, 16)).astype('int32')
segments = np.zeros((2, 16), 'int32')
mask = np.ones((2, 16), 'int32')
gpt2_backbone = keras_hub.models.GPT2Backbone(vocabulary_size=30522, num_layers=2, num_heads=2, hidden_dim=32,
                                              intermediate_dim=64, max_sequence_length=32)
token = 1234
vit_classifier = keras_hub.models.ViTImageClassifier(
    backbone=keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
                                          hidden_dim=32, mlp_dim=64), num_classes=3, preprocessor=None)
images = rng.random((2, 32, 32, 3)).astype('float32')
""",
    # text rendering: ids, a relevance dict and a keras_hub preprocessor
    "tokens = it.render_text.tokens_from_ids(": """
import numpy as np, keras_hub
import interprettensor as it
vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'movie', 'was', 'great']
preprocessor = keras_hub.models.BertTextClassifierPreprocessor(keras_hub.tokenizers.BertTokenizer(vocabulary=vocab),
                                                               sequence_length=8)
ids = np.array([[2, 5, 6, 7, 8, 3, 0, 0]])
R = {'token_ids': np.linspace(-1, 1, 8)[None]}
""",
}

#: Python checks run after a block (that it did what the prose says)
POSTSCRIPTS = {
    # A-ClArC fine-tuned a copy for two epochs and kept the architecture; the layers up to 'pool' are frozen
    "tuned, history = it.correction.aclarc(": """
assert len(history.history['loss']) == 2
assert [l.name for l in tuned.layers] == [l.name for l in model.layers]
assert np.array_equal(tuned.layers[0].get_weights()[0], model.layers[0].get_weights()[0])
assert not np.array_equal(tuned.layers[-1].get_weights()[0], model.layers[-1].get_weights()[0])
""",
    # the original API example trains (not ~25 % as with a ReLU before the softmax)
    "import interprettensor as it": """
import numpy as np
acc = float((np.asarray(net.forward(x_test)).argmax(-1) == y_test).mean())
assert acc > 0.85, acc
assert relevance.shape == x.shape and R.shape == x.shape
""",
    # worker 0 of 8 explains shard 0 (the only shard of 6 images) or records that it has none
    "it.explain_dataset(model, 'images/'": """
import os
assert os.listdir('runs/val') == ['manifest-worker-000-of-008.json'] or 'shard-00000.npz' in os.listdir('runs/val')
""",
}

#: Python code run in the block's folder first, keyed by the block's first line
#: a digits CNN and a batch of 100 digits, as model.keras and batch.npy
_MODEL_AND_BATCH = """
import keras, numpy as np
import interprettensor as it
keras.utils.set_random_seed(0)
keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                  keras.layers.Flatten(), keras.layers.Dense(10)]).save('model.keras')
np.save('batch.npy', it.data.load_digits()[0][:100])
"""

BASH_SETUP = {
    # "Correcting a Clever Hans": a model with a layer 'pool', images with and without the watermark
    "interprettensor correct model.keras": """
import keras, numpy as np
import interprettensor as it
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                          keras.layers.MaxPooling2D(2, name='pool'), keras.layers.Flatten(), keras.layers.Dense(10)])
model.save('model.keras')
x, y = it.data.load_digits()
clean = x[:40]
np.save('clean.npy', clean)
np.save('marked.npy', it.correction.add_watermark(clean)[0])
np.save('train.npy', x[40:104])
np.save('labels.npy', y[40:104])
""",
    # "Whole data sets": the model and the batch the commands explain
    "interprettensor explain model.keras batch.npy": _MODEL_AND_BATCH,
    # "Backends": the same, explained on JAX
    "interprettensor --backend jax explain model.keras batch.npy": _MODEL_AND_BATCH,
    # "Pruning by explanation": the same model pruned with the batch as reference data
    "interprettensor prune model.keras batch.npy": _MODEL_AND_BATCH,
    # "Command line": batch.npy, "a batch" of the user's (the block makes digits/ and model.keras itself)
    "interprettensor demo --out output/demo": """
import numpy as np
import interprettensor as it
np.save('batch.npy', it.data.load_digits()[0][:20])
""",
    # explain-text: a transformer on token ids with its inputs and vocabulary, and a keras_hub BERT
    # classifier saved with its preprocessor, with a file of texts
    "interprettensor explain-text classifier.keras": """
import keras, keras_hub, numpy as np
L = keras.layers
ids = keras.Input((8,), dtype="int32")
h = L.Embedding(20, 8)(ids)
h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 4)(h, h))
keras.Model(ids, L.Dense(3)(L.GlobalAveragePooling1D()(h))).save("classifier.keras")
open("ids.txt", "w").write("1 2 3 4\\n5 6 7\\n")
np.save("ids.npy", np.array([[1, 2, 3, 0, 0, 0, 0, 0]]))
open("vocab.txt", "w").write("".join(f"w{i}\\n" for i in range(20)))
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "bad", "a", "film"]
pre = keras_hub.models.BertTextClassifierPreprocessor(keras_hub.tokenizers.BertTokenizer(vocabulary=vocab),
                                                      sequence_length=16)
bb = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=1, num_heads=2, hidden_dim=16,
                                   intermediate_dim=32, max_sequence_length=16)
keras_hub.models.BertTextClassifier(bb, num_classes=2, preprocessor=pre).save("bert.keras")
open("reviews.txt", "w").write("a bad film\\nthe movie was great\\n")
""",
    # explain-text --generate: a tiny GPT-2 saved as a keras_hub preset folder with a byte-pair tokenizer
    "interprettensor explain-text gpt2_preset --text": """
import keras_hub
words = ["the", "cat", "sat", "on", "a", "mat"]
vocab, spaced, plain = {"<|endoftext|>": 0}, [], []
for ch in sorted(set("".join(words))) + ["\u0120"]:
    vocab.setdefault(ch, len(vocab))
for w in words:
    for s, rest, merges in (("\u0120", w, spaced), (w[0], w[1:], plain)):
        for ch in rest:
            if f"{s} {ch}" not in merges:
                merges.append(f"{s} {ch}")
            s += ch
            vocab.setdefault(s, len(vocab))
tok = keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=spaced + plain)
pre = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tok, sequence_length=12)
bb = keras_hub.models.GPT2Backbone(vocabulary_size=len(vocab), num_layers=1, num_heads=2, hidden_dim=16,
                                   intermediate_dim=32, max_sequence_length=16)
keras_hub.models.GPT2CausalLM(backbone=bb, preprocessor=pre).save_to_preset("gpt2_preset")
""",
    # SpRAy's command: a run of explain_dataset with stored inputs (400 digits, an untrained CNN)
    "interprettensor spray runs/digits": """
import keras
import interprettensor as it
x, y = it.data.load_digits()
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
it.explain_dataset(model, (x[:400], y[:400]), rule='epsilon', out='runs/digits', store_inputs=True, progress=False)
""",
}

#: docs command -> what runs instead
REDUCTIONS = {
    # one epoch; the region perturbation (AOPC) on 8 test digits instead of 64
    "interprettensor demo --out output/demo": "interprettensor demo --out output/demo --epochs 1 --aopc 8",
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
        "run = next(r for r in runs if r['name'] == 'epsilon'); assert run['has_inputs'], runs\"; "
        "rc=$?; kill $pid; cat view.log; exit $rc",
    "interprettensor view runs/epsilon":
        "interprettensor view runs/epsilon --no-browser > view.log 2>&1 & pid=$!; "
        "for i in $(seq 150); do grep -q 'serving on' view.log && break; sleep 0.2; done; "
        "python -c \"import re, json, urllib.request; url = re.search(r'http://[0-9.:]+/', open('view.log').read())[0]; "
        "runs = json.load(urllib.request.urlopen(url + 'api/runs'))['runs']; "
        "assert [r['name'] for r in runs] == ['epsilon'] and runs[0]['has_inputs'], runs\"; "
        "rc=$?; kill $pid; cat view.log; exit $rc",
}


#: command -> the test that makes its claim (named in the skip): a bash block whose other commands all run,
#: reduced the same way and in the same order, in a longer block is not run twice for that one command
TESTED_ELSEWHERE = {
    # the viewer's section repeats the walk-through's digits -> train -> explain (the next block runs them)
    # and views the run alone: the viewer serving an explain run from the command line is
    "interprettensor view runs/epsilon":
        "tests/test_viewer.py::test_view_needs_no_tensorflow_and_serves_from_the_command_line",
}


def doc_pages():
    return sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))


def doc_blocks():
    return [block for page in doc_pages()
            for block in markdown_blocks(open(page, encoding="utf-8").read(), os.path.relpath(page, DOCS))]


#: the pages' blocks, read once (``covered_by`` finds a block among them by identity)
BLOCKS = doc_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("kind,code,first", BLOCKS)
def test_docs_block(kind, code, first, tmp_path):
    why = _skip_reason(code, first, SKIPS, NOT_HERE)
    if why:
        pytest.skip(why)
    other = covered_by(kind, code, first, REDUCTIONS, _bash_blocks(), BASH_SETUP)
    if other:
        pytest.skip(f"every command runs, reduced the same way, in {other}")
    elsewhere = _covered_but_for_tested_elsewhere(kind, code, first)
    if elsewhere:
        pytest.skip(elsewhere)
    run_block(kind, code, first, tmp_path, PREAMBLES, POSTSCRIPTS, REDUCTIONS, BASH_SETUP)


def _bash_blocks():
    """The pages' bash blocks as ``covered_by`` takes them."""
    return [(p.id, p.values[1], p.values[2], REDUCTIONS, BASH_SETUP) for p in BLOCKS if p.values[0] == "bash"]


def _covered_but_for_tested_elsewhere(kind, code, first):
    """Why a bash block is not run when its commands but those of TESTED_ELSEWHERE run in another block
    (``covered_by`` on the rest), or None."""
    cmds = _commands(code) if kind == "bash" else []
    rest = [c for c in cmds if c not in TESTED_ELSEWHERE]
    if not rest or rest == cmds:
        return None
    others = [b for b in _bash_blocks() if b[1] is not code]
    other = covered_by(kind, "\n".join(rest), first, REDUCTIONS, others, BASH_SETUP)
    if other is None:
        return None
    tests = "; ".join(f"{c!r}: {TESTED_ELSEWHERE[c]}" for c in cmds if c in TESTED_ELSEWHERE)
    return f"every other command runs, reduced the same way, in {other} ({tests})"


def test_every_listed_entry_matches_a_block():
    """Preambles, postscripts, setups, reductions, skips and words that skip must refer to what the pages
    hold (no stale entries)."""
    blocks = [(p.values[1], p.values[2]) for p in doc_blocks()]
    firsts = [first for _, first in blocks]
    for key in list(PREAMBLES) + list(POSTSCRIPTS) + list(BASH_SETUP) + list(SKIPS):
        assert sum(f.startswith(key) for f in firsts) == 1, f"not exactly one docs block starts with {key!r}"
    commands = {c for code, _ in blocks for c in _commands(code)}
    for cmd in list(REDUCTIONS) + list(TESTED_ELSEWHERE):
        assert cmd in commands, f"the docs have no command {cmd!r}"
    for word in NOT_HERE:
        assert any(word in code for code, _ in blocks), f"no docs block has {word!r}"


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
