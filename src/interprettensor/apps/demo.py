"""The main job: train (or load) the original convolutional network, explain test digits with the five
original LRP variants and a recommended composite, and write a PNG grid and TensorBoard logs.

Also the shared pieces of the command line and the examples: the original examples' two networks
(:func:`build_network`), training with a progress bar and TensorBoard scalars
(:func:`train_network`), and the method table (:data:`METHODS`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import keras
import numpy as np

__all__ = ["METHODS", "ARCHS", "build_network", "pretrained_network", "train_network", "ProgressBar",
           "accuracy", "run_demo", "DemoResult"]

#: The five original variants (with the parameters of the original examples) and the recommended
#: composite, as ``(label, rule, parameters)``.
METHODS: list[tuple[str, str, dict[str, float]]] = [
    # the five original variants on the layers with weights; flat and w^2 also spread relevance
    # uniformly through the pooling layers as the LRP Toolbox did (toolbox_*: every layer), otherwise
    # the z-rule at average pooling would drop the relevance they assign to inactive units. (The
    # Toolbox's alpha-beta at average pooling of positive inputs would return alpha * R.)
    ("simple", "simple", {}),
    ("epsilon", "epsilon", {"epsilon": 0.01}),
    ("flat", "toolbox_flat", {}),
    ("ww", "toolbox_ww", {}),
    ("alphabeta", "alphabeta", {"alpha": 2.0, "beta": 1.0}),
    ("epsilon_gamma_box", "epsilon_gamma_box", {"low": 0.0, "high": 1.0}),
]

ARCHS = ("linear", "convolutional")


def _input_layers(pad: int) -> list[keras.layers.Layer]:
    """Inputs are 28x28 grey images in [0, 1]; the original networks saw [-1, 1] (and the
    convolutional one a 32x32 frame): the model does that itself, so saved models take plain images."""
    layers: list[keras.layers.Layer] = []
    if pad:
        layers.append(keras.layers.ZeroPadding2D(pad, name="pad_to_32"))
    layers.append(keras.layers.Rescaling(2.0, -1.0, name="to_minus1_1"))
    return layers


def build_network(arch: str = "convolutional", keep_prob: float = 1.0, n_classes: int = 10):
    """One of the original examples' networks, for (N, 28, 28, 1) inputs in [0, 1].

    ``'linear'``: ``mnist_linear.py``'s 784-1296-1296-1296-10 ReLU network with a softmax (the
    logits are linear: the original's ReLU on them often stops training at chance level);
    ``'convolutional'``: ``mnist_convolutional.py``'s network (conv 5x5x10, avg pool, conv 5x5x25,
    avg pool, conv 4x4x100, avg pool, conv 1x1x10) with a softmax. ``keep_prob`` < 1 adds dropout to
    the hidden layers (the original ``--dropout`` flag).
    """
    import interprettensor as it

    if arch == "linear":
        mods = _input_layers(0) + [
            it.Linear(1296, input_dim=784, act="relu", keep_prob=keep_prob),
            it.Linear(1296, act="relu", keep_prob=keep_prob),
            it.Linear(1296, act="relu", keep_prob=keep_prob),
            it.Linear(n_classes),  # the original had act='relu' here, which stalls training
            it.Softmax(),
        ]
    elif arch == "convolutional":
        mods = _input_layers(2) + [
            it.Convolution(10, input_depth=1, kernel_size=5, stride_size=1, act="relu", pad="VALID"),
            it.AvgPool(2, pad="SAME"),
            it.Convolution(25, kernel_size=5, stride_size=1, act="relu", pad="VALID", keep_prob=keep_prob),
            it.AvgPool(2, pad="SAME"),
            it.Convolution(100, kernel_size=4, stride_size=1, act="relu", pad="VALID", keep_prob=keep_prob),
            it.AvgPool(2, pad="SAME"),
            it.Convolution(n_classes, kernel_size=1, stride_size=1, pad="VALID"),
            keras.layers.Flatten(name="logits"),
            it.Softmax(),
        ]
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    net = it.Sequential(mods, name=f"mnist_{arch}")
    net.build((None, 28, 28, 1))
    return net


def pretrained_network():
    """The original project's pretrained MNIST CNN, wrapped to take (N, 28, 28, 1) images in [0, 1]."""
    import interprettensor as it
    from ..pretrained import mnist_cnn

    base = mnist_cnn()
    net = it.Sequential(_input_layers(2) + list(base.modules) + [keras.layers.Flatten(name="logits"), it.Softmax()],
                        name="mnist_cnn_pretrained")
    net.build((None, 28, 28, 1))
    return net


class ProgressBar(keras.callbacks.Callback):
    """A tqdm progress bar over all training batches of all epochs, with loss and accuracy."""

    def __init__(self, total_steps: int, quiet: bool = False, desc: str = "training"):
        super().__init__()
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, desc=desc, unit="batch", disable=quiet, file=sys.stderr,
                        dynamic_ncols=True, leave=False)
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        logs = logs or {}
        self.bar.update(1)
        post = {"epoch": self.epoch + 1}
        for k in ("loss", "accuracy"):
            if k in logs:
                post[k] = f"{float(logs[k]):.3f}"
        self.bar.set_postfix(post, refresh=False)

    def on_train_end(self, logs: Any = None) -> None:
        self.bar.close()


def train_network(net: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, learning_rate: float,
                  x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, logdir: str | None = None,
                  quiet: bool = False) -> dict[str, list[float]]:
    """Train with the original API (softmax cross-entropy, Adam), a progress bar, and TensorBoard
    scalars (``loss``, ``accuracy`` per epoch in ``logdir/train`` and ``logdir/test``)."""
    from ..io.summaries import EpochSummaries, SummaryWriter

    steps = int(np.ceil(len(x) / batch_size)) * epochs
    callbacks: list[keras.callbacks.Callback] = [ProgressBar(steps, quiet)]
    writers = []
    if logdir:
        writers = [SummaryWriter(os.path.join(logdir, "train")), SummaryWriter(os.path.join(logdir, "test"))]
        callbacks.append(EpochSummaries(writers[0], writers[1]))
    val = (x_val, keras.utils.to_categorical(y_val, 10)) if x_val is not None else None
    try:
        hist = net.fit(x, y, loss="softmax_crossentropy", optimizer="adam", opt_params=[learning_rate],
                       epochs=epochs, batch_size=batch_size, callbacks=callbacks, validation_data=val,
                       shuffle=True)
    finally:
        for w in writers:
            w.close()
    return hist.history


def accuracy(net: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Fraction of ``x`` classified as ``y``."""
    pred = np.asarray(net.predict(x, batch_size=batch_size, verbose=0)).reshape(len(x), -1).argmax(-1)
    return float((pred == np.asarray(y)).mean())


def pick_examples(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` test samples, cycling through the classes (0, 1, ..., 9, 0, ...)."""
    y = np.asarray(y)
    by_class = [list(np.flatnonzero(y == c)) for c in range(int(y.max()) + 1)]
    out: list[int] = []
    while len(out) < min(n, len(y)):
        for lst in by_class:
            if lst and len(out) < n:
                out.append(lst.pop(0))
    return np.array(out, dtype=int)


@dataclass
class DemoResult:
    """What :func:`run_demo` measured and wrote."""

    accuracy: float
    rows: list[tuple[str, float, float]] = field(default_factory=list)  # (method, sum R, output)
    png: str = ""
    logdir: str = ""
    seconds: float = 0.0
    aopc: Any = None  # it.evaluate.Comparison: region perturbation of the demo's methods (or None)


def format_table(rows: Sequence[tuple[str, float, float]]) -> str:
    """The relevance-conservation table: method, mean sum of R, mean explained output, ratio."""
    lines = [f"{'method':<20} {'sum(R)':>10} {'output':>10} {'sum/out':>8}"]
    for name, s, o in rows:
        ratio = s / o if abs(o) > 1e-12 else float("nan")
        lines.append(f"{name:<20} {s:>10.4f} {o:>10.4f} {ratio:>8.3f}")
    return "\n".join(lines)


def run_demo(out: str = "output/demo", epochs: int = 10, n: int = 8, pretrained: bool = False,
             batch_size: int = 32, learning_rate: float = 3e-3, cmap: str = "bwr", quiet: bool = False,
             seed: int = 0, echo: Any = print, aopc_samples: int = 64) -> DemoResult:
    """Run the demo: see the module docstring. Writes ``out/demo_heatmaps.png`` and ``out/logs``.

    The printed table compares, per method, the mean total relevance of the explained digits with
    the mean explained output (the logit of the predicted class): conservative rules give a ratio
    close to 1 (relevance that flows into the zero padding of the 32x32 frame is not counted).

    ``aopc_samples`` test digits also go through region perturbation (:func:`interprettensor.evaluate.compare`,
    MoRF, uniform noise, 4x4 regions) with the same methods, the gradient, deconvnet and a random
    baseline; the AOPC table is ``DemoResult.aopc`` and ``out/aopc_curves.png`` (0 skips it).
    """
    import interprettensor as it
    from ..io import render
    from ..io.digits import load_digits, train_test_split
    from ..io.summaries import SummaryWriter

    t0 = time.time()
    keras.utils.set_random_seed(seed)
    logdir = os.path.join(out, "logs")
    png = os.path.join(out, "demo_heatmaps.png")
    os.makedirs(logdir, exist_ok=True)

    x, y = load_digits()
    x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction=0.2, seed=seed)
    if pretrained:
        net = pretrained_network()
        echo("loaded the original project's pretrained MNIST CNN")
    else:
        net = build_network("convolutional")
        echo(f"training the original convolutional network on {len(x_train)} digits, {epochs} epochs ...")
        train_network(net, x_train, y_train, epochs, batch_size, learning_rate, x_test, y_test, logdir, quiet)
    acc = accuracy(net, x_test, y_test)

    idx = pick_examples(y_test, n)
    xs, ys = x_test[idx], y_test[idx]
    rows, maps = [], []
    test_writer = SummaryWriter(os.path.join(logdir, "test"))
    step = 0 if pretrained else epochs
    try:
        test_writer.scalar("accuracy", acc, step)
        from tqdm.auto import tqdm

        for label, rule, params in tqdm(METHODS, desc="explaining", disable=quiet, file=sys.stderr, leave=False):
            explainer = it.Explainer(net, rule, **params)
            R, per_layer, logits = explainer(xs, layerwise=True, return_output=True)
            explained = logits.reshape(len(xs), -1).max(-1)
            rows.append((label, float(R.reshape(len(xs), -1).sum(-1).mean()), float(explained.mean())))
            maps.append(R)
            test_writer.relevance_histograms(per_layer, step, prefix=f"relevance/{label}")
            test_writer.heatmaps(f"heatmaps/{label}", R, xs, step, cmap=cmap)
        test_writer.images("inputs", render.enlarge(render.input_to_rgb(xs, 0.0, 1.0), 3), step)
    finally:
        test_writer.close()

    pred = np.asarray(net.predict(xs, verbose=0)).reshape(len(xs), -1).argmax(-1)
    inputs = render.input_to_rgb(xs, 0.0, 1.0)
    rgbs = [render.relevance_to_rgb(R, cmap) for R in maps]
    images = [[inputs[i]] + [rgb[i] for rgb in rgbs] for i in range(len(xs))]
    row_titles = [f"label {int(ys[i])}\npred {int(pred[i])}" for i in range(len(xs))]
    col_titles = ["input"] + [m[0].replace("epsilon_gamma_box", "eps-gamma-box\n(composite)") for m in METHODS]
    render.save_grid(png, images, row_titles, col_titles,
                     title=f"LRP on the original {'pretrained ' if pretrained else ''}CNN, test accuracy {acc:.3f}")
    aopc = None
    if aopc_samples > 0:
        echo(f"region perturbation (AOPC) on {min(aopc_samples, len(x_test))} test digits ...")
        methods = [(label, rule, dict(params)) for label, rule, params in METHODS]
        methods += [("gradient", "gradient", {}), ("deconvnet", "deconvnet", {}), ("random", "random", {})]
        aopc = it.evaluate.compare(net, x_test[:aopc_samples], methods, patch=4, perturbation="uniform",
                                   value_range=(0.0, 1.0), seed=seed)
        aopc.plot(os.path.join(out, "aopc_curves.png"),
                  title=f"Region perturbation on {min(aopc_samples, len(x_test))} test digits (uniform noise)")
    return DemoResult(acc, rows, png, logdir, time.time() - t0, aopc)
