"""Pruning by explanation without fine-tuning (issue 24's target; Yeom et al. 2021): a CNN trained on the
digits (``it.data.load_digits``) and a VGG-like net trained on a generated 10-class image set (5 shapes x 2
colours), each pruned by 30 % and 50 % of its convolution channels (global ranking of per-layer normalised
scores) by the LRP, magnitude and Taylor criteria; prints test accuracy, parameters and FLOPs per setting.

    PYTHONPATH=src python benchmarks/bench_pruning.py [--seeds 3] [--reference 20] [--epochs 6] [--steps 1]

The reference set: ``--reference`` training samples per class (Yeom et al. use few reference samples).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def ten_class_images(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, size, size, 3) in [0, 1]: class ``y`` = shape ``y % 5`` (square, disc, triangle, cross,
    ring) in colour ``y // 5`` (reddish or greenish object: the other channels share a random grey level), of
    random size and place on a noisy background with a random colour gradient."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 10)
    g = np.arange(size) + 0.5
    yy, xx = np.meshgrid(g, g, indexing="ij")
    r = rng.uniform(0.18, 0.32, n)[:, None, None] * size
    cx = rng.uniform(r[:, 0, 0] + 1, size - r[:, 0, 0] - 1)[:, None, None]
    cy = rng.uniform(r[:, 0, 0] + 1, size - r[:, 0, 0] - 1)[:, None, None]
    dx, dy = xx[None] - cx, yy[None] - cy
    shape = (y % 5)[:, None, None]
    square = (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    disc = dx ** 2 + dy ** 2 <= r ** 2
    triangle = (dy <= 0.8 * r) & (dy >= -r + 2 * np.abs(dx))
    cross = ((np.abs(dx) <= r / 3) & (np.abs(dy) <= r)) | ((np.abs(dy) <= r / 3) & (np.abs(dx) <= r))
    ring = disc & (dx ** 2 + dy ** 2 >= (0.55 * r) ** 2)
    mask = np.select([shape == 0, shape == 1, shape == 2, shape == 3], [square, disc, triangle, cross], ring)
    base = rng.uniform(0.1, 0.45, (n, 1, 1, 1))
    bg = base + rng.uniform(-0.15, 0.15, (n, 1, 1, 3)) * (g / size)[None, None, :, None] \
        + rng.normal(0, 0.05, (n, size, size, 3))
    grey = np.clip(base + rng.uniform(0.15, 0.3, (n, 1, 1, 1)), 0, 1)
    colour = np.repeat(grey, 3, axis=3)
    hue = (y // 5)  # 0: red channel raised, 1: green channel raised
    colour[np.arange(n), 0, 0, hue] = np.clip(grey[:, 0, 0, 0] + rng.uniform(0.25, 0.45, n), 0, 1)
    x = np.where(mask[..., None], colour + rng.normal(0, 0.03, (n, size, size, 3)), bg)
    return np.clip(x, 0, 1).astype("float32"), y.astype("int64")


def digits_cnn(keras):
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, activation="relu", name="conv3")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(h))


def vgg_like(keras, size: int = 32):
    inp = keras.Input((size, size, 3))
    h = inp
    for block, (width, n) in enumerate([(16, 2), (32, 2), (64, 2)], 1):
        for i in range(n):
            h = keras.layers.Conv2D(width, 3, padding="same", name=f"conv{block}_{i + 1}")(h)
            h = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{block}_{i + 1}")(h)
            h = keras.layers.ReLU()(h)
        h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(h))


def accuracy(model, x, y) -> float:
    return float((np.asarray(model.predict(x, batch_size=256, verbose=0)).argmax(-1) == y).mean())


def reference(x, y, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
    return x[idx], y[idx]


def prune_in_steps(pruning, model, x_ref, y_ref, amount, criterion, layers, steps, rule="epsilon_plus"):
    """``amount`` of the channels removed in ``steps`` equal steps, the scores recomputed on the pruned model
    before each (Yeom et al. prune iteratively); returns the last model and (params, FLOPs) after."""
    current, removed, total = model, 0, None
    for s in range(steps):
        plan = pruning.plan(current, "channel", layers)
        left = sum(u.size for u in plan.units)
        total = left if total is None else total
        n = int(np.floor(amount * total + 0.5) * (s + 1) / steps + 1e-9) - removed
        current, rep = pruning.prune(current, x_ref, y_ref, amount=n / left, criterion=criterion, layers=layers,
                                     **({"rule": rule} if criterion == "lrp" else {}))
        removed += rep.n_removed
    return current, rep


def run(name, build, data, args, keras, it, pruning):
    x_tr, y_tr, x_te, y_te = data
    rows = []
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        model = build(keras)
        model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        t = time.time()
        hist = model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=64, verbose=0)
        base = accuracy(model, x_te, y_te)
        print(f"{name} seed {seed}: trained in {time.time() - t:.0f} s, training accuracy "
              f"{hist.history['accuracy'][-1]:.4f}, test accuracy {base:.4f}", flush=True)
        convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        x_ref, y_ref = reference(x_tr, y_tr, args.reference, seed)
        for amount in (0.3, 0.5):
            for criterion in ("lrp", "magnitude", "taylor"):
                pruned, rep = prune_in_steps(pruning, model, x_ref, y_ref, amount, criterion, convs, args.steps,
                                             args.rule)
                rows.append((seed, amount, criterion, base, accuracy(pruned, x_te, y_te), pruning.count_params(model),
                             rep.params_after, pruning.count_flops(model), rep.flops_after))
    print(f"\n{name}: test accuracy after pruning convolution channels (no fine-tuning, {args.steps} step(s)), "
          f"mean over {args.seeds} seed(s) [min, max]")
    print(f"{'amount':>6} | {'criterion':<9} | {'accuracy':>20} | {'params':>17} | {'FLOPs':>23}")
    print("-" * 90)
    print(f"{'0':>6} | {'unpruned':<9} | {np.mean([r[3] for r in rows]):>20.4f} | {rows[0][5]:>17,} | "
          f"{rows[0][7]:>23,}")
    for amount in (0.3, 0.5):
        for criterion in ("lrp", "magnitude", "taylor"):
            sel = [r for r in rows if r[1] == amount and r[2] == criterion]
            acc = [r[4] for r in sel]
            print(f"{amount:>6} | {criterion:<9} | {np.mean(acc):.4f} [{min(acc):.3f}, {max(acc):.3f}] | "
                  f"{int(np.mean([r[6] for r in sel])):>17,} | {int(np.mean([r[8] for r in sel])):>23,}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    p.add_argument("--reference", type=int, default=20, help="reference samples per class (default 20)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    p.add_argument("--images", type=int, default=3000, help="generated images (80 %% training; default 3000)")
    p.add_argument("--steps", type=int, default=1,
                   help="prune in this many steps, rescoring the pruned model before each (default 1: one shot)")
    p.add_argument("--rule", default="epsilon_plus", help="LRP rule or preset of the lrp criterion")
    p.add_argument("--only", choices=["digits", "vgg"], default=None)
    args = p.parse_args()
    import keras

    import interprettensor as it
    from interprettensor.analysis import pruning
    from interprettensor.io.digits import train_test_split

    if args.only in (None, "digits"):
        x, y = it.data.load_digits()
        run("digits CNN", digits_cnn, train_test_split(x, y, test_fraction=0.2, seed=0), args, keras, it, pruning)
    if args.only in (None, "vgg"):
        x, y = ten_class_images(args.images, seed=0)
        n = int(0.8 * len(x))
        run("VGG-like, 10 generated classes", vgg_like, (x[:n], y[:n], x[n:], y[n:]), args, keras, it, pruning)


if __name__ == "__main__":
    main()
