"""Every ```bash and ```python block of README.md runs as printed.

Each block runs in a fresh temporary folder. Bash blocks run line by line (``bash -c``), with the
virtual environment's ``bin`` first on ``PATH``, and must exit 0 without a traceback. Python blocks
run in a fresh interpreter (``python -c``), after the block's preamble below if it has one.

What is not run as printed, and why:

* SKIPS: blocks that need a download, an installation, ``make`` (which creates a virtual environment
  and runs the whole suite), a GPU or a cluster, or a 224x224 ``keras.applications`` model. None of
  the README's blocks is skipped for that last reason: the "Any Keras model" block's VGG16 is built
  for 32x32 inputs by its preamble (``keras.applications.VGG16`` is wrapped to pass
  ``input_shape=(32, 32, 3)``), because VGG16 at 224x224 under several rules takes minutes on 2
  CPU cores; the block itself, its layer names and its 1,000 classes are unchanged.
* PREAMBLES: what the prose around a block defines (a model ``model``, inputs ``x``, a data set),
  keyed by the block's first line; for bash blocks, files the commands read that a user brings
  (``batch.npy``).
* REDUCTIONS: README commands that train for minutes run with fewer epochs or digits (listed
  with the exact replacement).
* A self-contained command that appears in two blocks (the ``evaluate`` command, RUN_ONCE) runs once;
  the others run in every block (each block runs in its own folder: the blocks that read ``digits/``
  make it with ``interprettensor digits digits/`` as the README tells a user to).

A block of the README that is not listed here runs as printed: a new block either runs or needs an
entry here.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
           PATH=BIN + os.pathsep + os.environ.get("PATH", ""), MPLBACKEND="Agg")

#: block first-line prefix -> why it is not run
SKIPS = {
    "make demo": "make creates the virtual environment and runs the whole test suite (CI runs it: .ci/run)",
    'pip install -e ".[cpu]"': "installs packages (pip install)",
}

#: words that mark a block as not runnable here, with the reason (checked for every block)
NOT_HERE = {
    "fashion_mnist --": "downloads Fashion-MNIST",
    "--dataset mnist": "downloads MNIST",
    "tensorboard --logdir": "needs the tensorboard package and a browser",
    "MultiWorkerMirroredStrategy(": "needs several machines",
    "srun ": "needs Slurm",
    "kubectl": "needs Kubernetes",
    "#SBATCH": "a Slurm job script (needs Slurm and the cluster's paths)",
}

_TINY_VGG = """
import functools, keras, numpy as np
import interprettensor as it
keras.applications.VGG16 = functools.partial(keras.applications.VGG16, input_shape=(32, 32, 3))  # see the docstring
x = np.random.default_rng(0).uniform(0.0, 255.0, (3, 32, 32, 3)).astype('float32')
"""

#: block first line (or its beginning) -> Python code run before it (the names its prose defines)
PREAMBLES = {
    # "Any Keras model": x and R0 (a starting relevance at the output); VGG16 at 32x32
    "import keras, interprettensor as it": _TINY_VGG + """
R0 = np.zeros((3, 1000), 'float32'); R0[:, 207] = 1.0
""",
    # the composite example: the model and x of the block before it
    "comp = it.Composite(": _TINY_VGG + "model = keras.applications.VGG16(weights=None)\n",
    # a layer type of your own
    "it.register_handler(MyScale,": """
import keras, interprettensor as it

class MyScale(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=input_shape[-1:], initializer='ones')

    def call(self, x):
        return x * self.w
""",
    # "Whole data sets": a model, a big batch and a tf.data data set of digits
    "explainer = it.Explainer(model, rule='epsilon_plus', batch_size=64)": """
import keras, numpy as np, tensorflow as tf
import interprettensor as it
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                          keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(10)])
x_big = it.data.load_digits()[0][:150]
tf_dataset = tf.data.Dataset.from_tensor_slices(x_big).batch(64)
""",
}

PREAMBLES["it.explain_dataset(model, 'images/'"] = """
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
"""

# "Transformers": token ids and masks, a GPT-2 backbone, a ViT classifier and images (small sizes)
PREAMBLES["import keras_hub, interprettensor as it"] = """
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
"""
# text rendering: ids, a relevance dict and a keras_hub preprocessor
PREAMBLES["tokens = it.render_text.tokens_from_ids("] = """
import numpy as np, keras_hub
import interprettensor as it
vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'movie', 'was', 'great']
preprocessor = keras_hub.models.BertTextClassifierPreprocessor(keras_hub.tokenizers.BertTokenizer(vocabulary=vocab),
                                                               sequence_length=8)
ids = np.array([[2, 5, 6, 7, 8, 3, 0, 0]])
R = {'token_ids': np.linspace(-1, 1, 8)[None]}
"""

#: Python checks run after a block (that it did what the prose says)
POSTSCRIPTS = {
    "import interprettensor as it": """
import numpy as np
acc = float((np.asarray(net.forward(x_test)).argmax(-1) == y_test).mean())
print('README_ACCURACY', acc)
assert relevance.shape == x.shape and R.shape == x.shape
""",
    "explainer = it.Explainer(model, rule='epsilon_plus', batch_size=64)": """
assert R.shape == x_big.shape and result.n_samples == 150
""",
    "it.explain_dataset(model, 'images/'": """
import os
assert os.listdir('runs/val') == ['manifest-worker-000-of-008.json'] or 'shard-00000.npz' in os.listdir('runs/val')
""",
    "it.register_handler(MyScale,": """
m = keras.Sequential([keras.Input((4,)), MyScale(), keras.layers.Dense(2)])
assert np.isfinite(it.lrp(m, np.ones((2, 4), 'float32'), rule='epsilon')).all()
""".replace("np.", "__import__('numpy')."),
}

# CRP: the VGG16 of "Any Keras model" at 32x32, and a small data set
PREAMBLES["# CRP: model is a Keras CNN, x a batch of images"] = _TINY_VGG + \
    "model = keras.applications.VGG16(weights=None)\n"
PREAMBLES["run = it.concepts.reference_examples("] = """
import keras, numpy as np
import interprettensor as it
keras.utils.set_random_seed(0)
x_train = it.data.load_digits()[0][:40]
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation='relu'),
                          keras.layers.Conv2D(6, 5, activation='relu'), keras.layers.Flatten(),
                          keras.layers.Dense(10)])
"""

#: bash setup (Python, run in the folder first) keyed by the block's first line
BASH_SETUP = {
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
    # the command-line block: batch.npy, "a batch" of the user's (the block makes digits/ itself)
    "interprettensor demo --out output/demo": """
import numpy as np
import interprettensor as it
np.save('batch.npy', it.data.load_digits()[0][:20])
""",
}

#: README command -> what runs instead (commands that take minutes at full size; the viewer's server,
#: which runs until stopped: started without a browser, asked for its runs, stopped)
REDUCTIONS = {
    "interprettensor view runs/epsilon":
        "interprettensor view runs/epsilon --no-browser > view.log 2>&1 & pid=$!; "
        "for i in $(seq 150); do grep -q 'serving on' view.log && break; sleep 0.2; done; "
        "python -c \"import re, json, urllib.request; url = re.search(r'http://[0-9.:]+/', open('view.log').read())[0]; "
        "runs = json.load(urllib.request.urlopen(url + 'api/runs'))['runs']; "
        "assert [r['name'] for r in runs] == ['epsilon'] and runs[0]['has_inputs'], runs\"; "
        "rc=$?; kill $pid; cat view.log; exit $rc",
    "interprettensor demo --out output/demo": "interprettensor demo --out output/demo --epochs 1",
    "interprettensor train --dataset digits --arch convolutional --epochs 10 --out model.keras":
        "interprettensor train --dataset digits --arch convolutional --epochs 1 --out model.keras",
    "interprettensor evaluate --demo-model --digits 200 --sanity --out output/evaluate":
        "interprettensor evaluate --demo-model --epochs 1 --digits 8 --sanity --out output/evaluate",
}


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


def _entry(table, first):
    """The value whose key is the block's first line or its beginning."""
    return next((v for k, v in table.items() if first.startswith(k)), None)


def _skip_reason(code, first):
    for prefix, why in SKIPS.items():
        if first.startswith(prefix):
            return why
    for word, why in NOT_HERE.items():
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


_SEEN_COMMANDS: set = set()
#: commands that need nothing from the lines before them and appear in two blocks: run once (each
#: block runs in a fresh folder, so any other command runs in every block it appears in)
RUN_ONCE = {"interprettensor evaluate --demo-model --digits 200 --sanity --out output/evaluate"}


def _run(args, cwd, timeout):
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-3000:])
    return p


@pytest.mark.slow
@pytest.mark.parametrize("kind,code,first", readme_blocks())
def test_readme_block(kind, code, first, tmp_path):
    why = _skip_reason(code, first)
    if why:
        pytest.skip(why)
    if kind == "python":
        script = (_entry(PREAMBLES, first) or "") + "\n" + code + "\n" + (_entry(POSTSCRIPTS, first) or "")
        p = _run([sys.executable, "-c", script], tmp_path, 600)
        if first == "import interprettensor as it":  # the original API example trains (not ~25 % as with a ReLU)
            acc = float(next(ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("README_ACCURACY")))
            assert acc > 0.85, acc
        return
    setup = _entry(BASH_SETUP, first)
    if setup:
        _run([sys.executable, "-c", setup], tmp_path, 300)
    ran = 0
    for cmd in _commands(code):
        if cmd in RUN_ONCE and cmd in _SEEN_COMMANDS:
            continue  # the same self-contained command in an earlier block
        _SEEN_COMMANDS.add(cmd)
        _run(["bash", "-c", REDUCTIONS.get(cmd, cmd)], tmp_path, 600)
        ran += 1
    if not ran and not _commands(code):
        pytest.fail("an empty bash block")


def test_every_listed_entry_matches_a_block():
    """Preambles, reductions and skips must refer to what the README holds (no stale entries)."""
    blocks = [(p.values[1], p.values[2]) for p in readme_blocks()]
    firsts = {first for _, first in blocks}
    for key in list(PREAMBLES) + list(POSTSCRIPTS) + list(BASH_SETUP) + list(SKIPS):
        assert sum(f.startswith(key) for f in firsts) == 1, f"not exactly one README block starts with {key!r}"
    commands = {c for code, _ in blocks for c in _commands(code)}
    for cmd in list(REDUCTIONS) + sorted(RUN_ONCE):
        assert cmd in commands, f"the README has no command {cmd!r}"
