"""The original ``mnist_linear.py``: a 784-1296-1296-1296-10 network, trained and explained with LRP.

    python examples/mnist_linear.py --relevance=True
    tensorboard --logdir=mnist_linear_logs      # pip install tensorboard

Flags: --max_steps --batch_size --test_every --learning_rate --dropout --data_dir --summaries_dir
--relevance --relevance_method --save_model --reload_model --checkpoint_dir, plus --dataset
(digits, the default, needs no download; mnist and fashion_mnist are downloaded into --data_dir).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("linear"))
