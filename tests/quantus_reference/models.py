"""The small models the metric tests share with the Quantus reference scripts: the same weights as a
Keras model (channels-last, :func:`keras_model`) and a PyTorch model (channels-first, built by the
scripts in this folder inside Quantus' own virtual environment, :func:`torch_model`).

The weights come from numpy (:func:`weights`), so both frameworks get them bit for bit without a file.
The network: 3 x 3 convolution (``same``, 4 channels) -> ReLU -> 2 x 2 average pooling -> flatten in
channels-last order -> dense to ``CLASSES`` logits (-> softmax in the Keras model; Quantus' ``softmax``
argument decides for the PyTorch one, and the metrics strip a final softmax when asked for logits).
"""

from __future__ import annotations

import numpy as np

SIZE, CHANNELS, CLASSES, FILTERS = 8, 3, 5, 4


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": rng.normal(0, 0.5, (3, 3, CHANNELS, FILTERS)).astype(np.float32),   # (kh, kw, cin, cout)
        "conv_b": rng.normal(0, 0.1, (FILTERS,)).astype(np.float32),
        "dense_w": rng.normal(0, 0.5, ((SIZE // 2) ** 2 * FILTERS, CLASSES)).astype(np.float32),
        "dense_b": rng.normal(0, 0.1, (CLASSES,)).astype(np.float32),
    }


def inputs(n: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Channels-last images in [0, 1] ``(n, SIZE, SIZE, CHANNELS)`` and labels ``(n,)``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, SIZE, SIZE, CHANNELS)).astype(np.float32)
    y = rng.integers(0, CLASSES, n)
    return x, y


def keras_model(w: dict[str, np.ndarray] | None = None, softmax: bool = True):
    import keras

    w = weights() if w is None else w
    inp = keras.Input((SIZE, SIZE, CHANNELS))
    h = keras.layers.Conv2D(FILTERS, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.AveragePooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    out = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None, name="dense")(h)
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([w["conv_w"], w["conv_b"]])
    model.get_layer("dense").set_weights([w["dense_w"], w["dense_b"]])
    return model


def torch_model(w: dict[str, np.ndarray] | None = None):
    """The same network in PyTorch, taking channels-first ``(n, CHANNELS, SIZE, SIZE)`` inputs and
    returning logits (run only in Quantus' environment by the reference scripts)."""
    import torch

    w = weights() if w is None else w

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(CHANNELS, FILTERS, 3, padding=1)
            self.relu = torch.nn.ReLU()
            self.pool = torch.nn.AvgPool2d(2)
            self.dense = torch.nn.Linear((SIZE // 2) ** 2 * FILTERS, CLASSES)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(w["conv_w"].transpose(3, 2, 0, 1).copy()))
                self.conv.bias.copy_(torch.from_numpy(w["conv_b"]))
                self.dense.weight.copy_(torch.from_numpy(w["dense_w"].T.copy()))
                self.dense.bias.copy_(torch.from_numpy(w["dense_b"]))

        def forward(self, x):
            h = self.pool(self.relu(self.conv(x)))
            return self.dense(h.permute(0, 2, 3, 1).reshape(h.shape[0], -1))  # flatten channels-last

    return Net().eval()
