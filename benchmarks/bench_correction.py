"""P-ClArC and A-ClArC on the planted-shortcut digits (a script that prints tables, not a timed test).

The data (:func:`interprettensor.analysis.correction.shortcut_digits`): the digits with a 5 x 5 watermark
in the bottom-right corner on every training image of class 0 and on 20 % of the other classes'
training images, which are then labelled 0 (the watermark decides the label wherever it appears).
Test sets: clean, and poisoned (the watermark on every test image of the other classes, true labels).
A small CNN is trained on it (seeded), then corrected with P-ClArC at several layers, CAV estimators
and poolings; the CAV comes from 300 clean training images of the other classes with and without the
watermark. Per model: the watermark's share of positive relevance (epsilon_plus, the predicted class,
mean over the poisoned test set), clean and poisoned accuracy. The issue's target: poisoned accuracy
>= 90 % of clean accuracy, clean accuracy down by at most 2 points.

A-ClArC (the same CAVs, signal, flattened) fine-tunes the layers after the CAV's layer with the defaults of
:func:`~interprettensor.analysis.correction.aclarc` (half of each batch moved to the artefact along the CAV,
10 epochs of Adam at 3e-4, the layers up to the CAV's frozen) on the training images without the
watermark (their labels are right), and, for comparison, on all training images (the relabelled
watermarked digits included), with every sample moved (``rate=1``), and without the augmentation (the
control: the same fine-tuning, nothing added). Run::

    python benchmarks/bench_correction.py            # all layers and estimators (several minutes on 2 cores)
    python benchmarks/bench_correction.py --quick    # the recommended settings only (about a minute)
"""

from __future__ import annotations

import argparse
import time

import keras

from interprettensor.analysis import correction as C


def train(d: C.ShortcutData, epochs: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 5, activation="relu", name="conv1"),
                              keras.layers.MaxPooling2D(2), keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
                              keras.layers.MaxPooling2D(2, name="pool2"), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu", name="fc"), keras.layers.Dense(10, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(d.x_train, d.y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def finetune_only(model: keras.Model, layer: str, x, y, epochs: int = 10, lr: float = 3e-4) -> keras.Model:
    """The control for A-ClArC: the same fine-tuning (layers up to ``layer`` frozen), no augmentation."""
    tuned = C.projection.copy_model(model)
    fixed = set(C.upstream_layers(tuned, layer))
    for layer_ in tuned.layers:
        layer_.trainable = layer_.name not in fixed
    tuned.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras.utils.set_random_seed(0)
    tuned.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return tuned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="only P-ClArC and A-ClArC at pool2 with the signal CAV")
    args = ap.parse_args()
    t0 = time.perf_counter()
    d = C.shortcut_digits(artifact_class=0, fraction=1.0, backdoor=0.2, seed=args.seed)
    model = train(d, args.epochs, args.seed)
    print(f"trained in {time.perf_counter() - t0:.1f} s; {len(d.x_train)} training images "
          f"({int(d.marked_train.sum())} watermarked), {len(d.x_test)} clean and {len(d.x_poisoned)} poisoned "
          "test images")
    xo = d.x_train[~d.marked_train][:300]
    xw, _ = C.add_watermark(xo)

    def m(net):
        return C.measure(net, d.x_test, d.y_test, d.x_poisoned, d.y_poisoned, d.masks_poisoned, rule="epsilon_plus")

    before = m(model)
    rows = {"before": before}
    settings = [("pool2", "flatten", "signal")] if args.quick else [
        (layer, pooling, method)
        for layer, poolings in [("conv1", ["max", "mean"]), ("conv2", ["max", "mean", "flatten"]),
                                ("pool2", ["max", "flatten"]), ("fc", ["flatten"])]
        for pooling in poolings for method in ["signal", "svm", "logistic", "ridge", "mean_difference"]]
    ok = {}
    for layer, pooling, method in settings:
        t = time.perf_counter()
        corrected = C.pclarc(model, layer=layer, artifact=xw, clean=xo, method=method, pooling=pooling)
        name = f"{layer} {pooling if layer != 'fc' else '-'} {method}"
        rows[name] = r = m(corrected)
        ok[name] = (r.poisoned_accuracy >= 0.9 * r.clean_accuracy
                    and r.clean_accuracy >= before.clean_accuracy - 0.02)
        print(f"  {name}: {time.perf_counter() - t:.1f} s", flush=True)
    print()
    print("P-ClArC (layer, pooling, CAV):")
    lines = C.table(rows).splitlines()
    print("\n".join(line + ("   target met" if ok.get(name) else "") for line, name in
                    zip(lines, ["", ""] + list(rows))))

    clean_x, clean_y = d.x_train[~d.marked_train], d.y_train[~d.marked_train]
    arows, aok = {"before": before}, {}
    asettings = [("pool2", "unmarked", 0.5), ("pool2", "unmarked", 1.0), ("pool2", "all", 0.5),
                 ("pool2", "control", 0.5)]
    if not args.quick:
        asettings[1:1] = [("conv2", "unmarked", 0.5), ("fc", "unmarked", 0.5)]
    for layer, data, rate in asettings:
        t = time.perf_counter()
        x, y = (d.x_train, d.y_train) if data == "all" else (clean_x, clean_y)
        if data == "control":
            tuned = finetune_only(model, layer, x, y)
            name = f"{layer}: fine-tuned, no augmentation"
        else:
            cav = C.cav(model, layer=layer, artifact=xw, clean=xo)
            tuned, _ = C.aclarc(model, x, y, layer=layer, cav=cav, rate=rate, verbose=0)
            name = f"{layer}: A-ClArC, {'all' if data == 'all' else 'unmarked'} images, rate {rate:g}"
        arows[name] = r = m(tuned)
        aok[name] = (r.poisoned_accuracy >= 0.9 * r.clean_accuracy
                     and r.clean_accuracy >= before.clean_accuracy - 0.02)
        print(f"  {name}: {time.perf_counter() - t:.1f} s", flush=True)
    print(f"\nA-ClArC ({len(clean_x)} unmarked / {len(d.x_train)} training images; CAV: signal, flatten):")
    lines = C.table(arows).splitlines()
    print("\n".join(line + ("   target met" if aok.get(name) else "") for line, name in
                    zip(lines, ["", ""] + list(arows))))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
