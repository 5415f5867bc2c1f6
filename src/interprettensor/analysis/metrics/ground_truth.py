"""A ground-truth benchmark for the localisation metrics: images whose class is decided by one object
with a known mask (:func:`shapes_dataset`), a small CNN trained on them in seconds
(:func:`train_shapes_cnn`) and a table of how well explanation methods point at the object
(:func:`localisation_benchmark`).

Each image shows one of four shapes (square, disc, triangle, cross; the class) at a random position
and size in a random colour on a textured random background (smooth colour gradients plus noise
and random strokes), so that only the object tells the class apart. The mask is the object's
pixels. Everything is generated from ``seed`` with numpy, without files.

Example::

    x, y, s = it.metrics.shapes_dataset(512, seed=0)
    model = it.metrics.train_shapes_cnn(x, y, epochs=4, seed=0)
    table = it.metrics.localisation_benchmark(model, x[:64], y[:64], s[:64],
                                              methods=("epsilon_gamma_box", "gradient", "random"))
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import numpy as np

from ...engine.errors import ExplainError

__all__ = ["SHAPES", "shapes_dataset", "shapes_cnn", "train_shapes_cnn", "localisation_benchmark", "format_table"]

#: the classes of :func:`shapes_dataset`, in label order
SHAPES = ("square", "disc", "triangle", "cross")


def _shape_masks(size: int, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The masks ``(n, size, size)`` of shape ``y`` centred at ``(cx, cy)`` with half-width ``r``."""
    g = np.arange(size, dtype=np.float64) + 0.5
    dx = g[None, None, :] - cx[:, None, None]
    dy = g[None, :, None] - cy[:, None, None]
    r = r[:, None, None]
    square = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    disc = dx ** 2 + dy ** 2 <= r ** 2
    # an upright triangle: apex at the top, base at the bottom
    triangle = (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    arm = r / 3
    cross = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    shapes = np.stack([square, disc, triangle, cross])  # (4, n, size, size)
    return shapes[y, np.arange(len(y))]


def shapes_dataset(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images of :data:`SHAPES` (classes balanced, order shuffled): channels-last float32 in
    ``[0, 1]`` ``(n, size, size, 3)``, labels ``(n,)`` int64 and the objects' masks ``(n, size, size)``
    bool.

    The shape's half-width ``r`` is drawn from ``[0.16, 0.3] * size`` (the square's side is ``1.7 r``,
    the cross's arms ``2r / 3`` wide); the object lies fully inside the image. Its colour is the
    background's base colour plus 0.35 to 0.5 per channel (clipped to 1), with a little noise; the
    background (the base colour, gradients of up to 0.2 across the image per axis, noise, two thin
    random lines each way) carries no class information.
    """
    if int(n) < 1 or int(size) < 12:
        raise ExplainError(f"shapes_dataset needs n >= 1 and size >= 12, got n={n}, size={size}")
    n, size = int(n), int(size)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(SHAPES)).astype(np.int64)
    r = rng.uniform(0.16, 0.3, n) * size
    cx = rng.uniform(r + 1, size - r - 1)
    cy = rng.uniform(r + 1, size - r - 1)
    masks = _shape_masks(size, cx, cy, r, y)
    # background: a smooth colour gradient + pixel noise + thin strokes
    g = np.linspace(0, 1, size)
    base = rng.uniform(0.1, 0.5, (n, 1, 1, 3))
    slope_x = rng.uniform(-0.2, 0.2, (n, 1, 1, 3))
    slope_y = rng.uniform(-0.2, 0.2, (n, 1, 1, 3))
    bg = base + slope_x * g[None, None, :, None] + slope_y * g[None, :, None, None]
    bg = bg + rng.normal(0, 0.06, (n, size, size, 3))
    rows = rng.integers(0, size, (n, 2))
    cols = rng.integers(0, size, (n, 2))
    stroke = np.zeros((n, size, size), bool)
    idx = np.arange(n)[:, None]
    stroke[idx, rows, :] = True
    stroke[idx, :, cols] = True
    bg = np.where(stroke[..., None], bg + rng.uniform(-0.15, 0.15, (n, 1, 1, 3)), bg)
    # object: brighter than the background by 0.35..0.5 in every channel, with its own tint
    colour = np.clip(base + rng.uniform(0.35, 0.5, (n, 1, 1, 3)), 0, 1)
    x = np.where(masks[..., None], colour + rng.normal(0, 0.03, (n, size, size, 3)), bg)
    return np.clip(x, 0, 1).astype(np.float32), y, masks


def shapes_cnn(size: int = 32, classes: int = len(SHAPES), seed: int = 0) -> keras.Model:
    """The small CNN of :func:`train_shapes_cnn` (untrained): three 3 x 3 convolutions (8, 16, 32
    channels, ReLU) with 2 x 2 max pooling after the first two, global max pooling and a dense layer
    to ``classes`` logits."""
    keras.utils.set_random_seed(int(seed))
    inp = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(h)
    h = keras.layers.GlobalMaxPooling2D(name="gmp")(h)
    out = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inp, out, name="shapes_cnn")


def train_shapes_cnn(x: np.ndarray, y: np.ndarray, epochs: int = 3, seed: int = 0, batch_size: int = 32,
                     learning_rate: float = 3e-3, verbose: int = 0) -> keras.Model:
    """:func:`shapes_cnn` trained on ``x``, ``y`` (from :func:`shapes_dataset`) with Adam and the
    cross-entropy of the logits; seeded (Keras' global seed is set from ``seed``)."""
    x, y = np.asarray(x, np.float32), np.asarray(y).astype(np.int64)
    if x.ndim != 4 or x.shape[-1] != 3 or len(y) != len(x):
        raise ExplainError(f"train_shapes_cnn takes images (n, size, size, 3) and n labels; got {x.shape}, "
                           f"{y.shape}")
    model = shapes_cnn(x.shape[1], max(len(SHAPES), int(y.max()) + 1), seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=int(epochs), batch_size=int(batch_size), shuffle=True, verbose=verbose)
    return model


def _random_attributions(model: Any = None, inputs: Any = None, targets: Any = None, seed: int = 0,
                         **kw: Any) -> np.ndarray:
    """Uniform noise shaped like ``inputs``: the floor of the benchmark."""
    kw.pop("device", None)
    if kw:
        raise TypeError(f"random attributions take no arguments {sorted(kw)}")
    return np.random.default_rng(seed).uniform(0, 1, np.shape(inputs))


def localisation_benchmark(model: keras.Model, x: np.ndarray, y: np.ndarray, masks: np.ndarray,
                           methods: Sequence[str] = ("epsilon_gamma_box", "preset_a", "gradient",
                                                     "input_x_gradient", "random"),
                           metrics: Mapping[str, Any] | None = None, seed: int = 0,
                           relevance: str = "abs", per_sample: bool = False) -> dict[str, dict[str, Any]]:
    """Mean localisation scores ``{method: {metric: mean over the samples}}`` of each method's
    attributions against ``masks``: :func:`~.comparison.compare` with per-pixel relevance. Each
    pixel's relevance is the sum over its colour channels, then its magnitude (``relevance='abs'``,
    the default), its positive part (``'positive'``) or kept signed (``'signed'``; the mass metrics
    then divide by a sum that may be near zero). ``methods`` are names for :func:`~.explain.explain`
    or ``'random'`` (uniform noise drawn from ``seed``); ``metrics`` maps names to metric objects
    (default RelevanceMassAccuracy, RelevanceRankAccuracy, PointingGame, AttributionLocalisation with
    Quantus' defaults). Samples a metric scores NaN are left out of its mean; ``per_sample=True``
    returns the scores (arrays) instead of the means."""
    from .comparison import compare
    from .localisation import AttributionLocalisation, PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy

    if metrics is None:
        metrics = {"RelevanceMassAccuracy": RelevanceMassAccuracy(), "RelevanceRankAccuracy": RelevanceRankAccuracy(),
                   "PointingGame": PointingGame(), "AttributionLocalisation": AttributionLocalisation()}
    if relevance not in ("positive", "abs", "signed"):
        raise ExplainError(f"relevance must be 'positive', 'abs' or 'signed', got {relevance!r}")
    x = np.asarray(x, np.float32)
    specs = [(method, _pixel_relevance, {"method": method, "relevance": relevance, "seed": int(seed)})
             for method in methods]
    # one batch: each method is explained once, and 'random' draws the whole batch from seed
    res = compare(model, x, y, methods=specs, metrics=list(metrics.values()), s=masks, seed=seed,
                  batch_size=max(1, len(x)))
    table: dict[str, dict[str, Any]] = {}
    for method in methods:
        row = {key: res.values[(method, name)] for key, name in zip(metrics, res.metrics)}
        table[method] = row if per_sample else {k: res.mean(method, name) for k, name in zip(metrics, res.metrics)}
    return table


def _pixel_relevance(model: Any = None, inputs: Any = None, targets: Any = None, method: str = "gradient",
                     relevance: str = "abs", seed: int = 0, **kw: Any) -> np.ndarray:
    """``explain_func`` of :func:`localisation_benchmark`: the method's attributions (or uniform
    noise for ``'random'``) summed over the channels, as ``relevance`` says, ``(n, *spatial)``."""
    from .explain import explain

    a = _random_attributions(inputs=inputs, seed=seed, **kw) if method == "random" else \
        explain(model, inputs, targets, method=method, **kw)
    a = np.asarray(a, np.float64).sum(-1)  # one relevance per pixel
    if relevance == "positive":
        return np.maximum(a, 0.0)
    return np.abs(a) if relevance == "abs" else a


def format_table(table: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of :func:`localisation_benchmark`'s result (means; with ``per_sample`` scores,
    mean +- standard error)."""
    def cell(v: Any) -> str:
        v = np.asarray(v, np.float64)
        if v.ndim == 0:
            return f"{float(v):.3f}"
        v = v[np.isfinite(v)]
        return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}"

    names = list(next(iter(table.values())))
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for method, row in table.items():
        lines.append(f"| {method} | " + " | ".join(cell(row[k]) for k in names) + " |")
    return "\n".join(lines)
