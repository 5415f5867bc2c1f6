"""Importing a heavy module first (``from interprettensor import rules`` before Keras or ``it.lrp``):
the import that triggers the TensorFlow set-up must get the module the set-up imported, not a second
copy (regression: a ``rules.CustomRule`` built that way was refused by ``it.lrp``, whose engine knew
another ``LinearRule`` class)."""

import subprocess
import sys

SCRIPT = """
from interprettensor import rules
my_rule = rules.CustomRule([rules.Group((rules.Term(input=rules.positive, kernel=rules.positive, bias=None),))],
                           epsilon=1e-9, name='my_zplus')
rules.register_rule('my_zplus', lambda: my_rule)
import keras, numpy as np
import interprettensor as it
import interprettensor.engine.linear as linear
assert linear.Rule is rules.Rule, 'two copies of the rule classes'
assert rules is sys.modules['interprettensor.engine.rules']
assert type(rules.__spec__.loader).__name__ == 'SourceFileLoader', rules.__spec__
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
x = np.abs(np.random.default_rng(0).normal(size=(2, 4))).astype('float32')
R = it.lrp(model, x, rule='my_zplus')
assert np.allclose(R, it.lrp(model, x, rule='zplus'), rtol=1e-5, atol=1e-6)
print('OK')
"""


def test_heavy_module_imported_first_exists_once():
    p = subprocess.run([sys.executable, "-c", "import sys\n" + SCRIPT], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]
