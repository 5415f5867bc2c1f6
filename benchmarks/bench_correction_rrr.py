"""Right for the Right Reasons on a planted shortcut: the before/after table (a script, not a test).

Data: the embedded digits 3 (class 0) and 8 (class 1), 28 x 28, split 80/20; a 4 x 4 watermark in the
top-left corner on 90 % of the training 8s and on no 3 (:func:`~interprettensor.correction.plant_watermark`):
"watermark present => 8, absent => 3" is right on 95 % of the training images. A small MLP is trained
on it (5 epochs), then fine-tuned from the same weights in each row: without a penalty (``lam = 0``, the
control: as many epochs as the others), with RRR's input-gradient penalty (Ross et al. 2017) and with
its LRP form under each start (:data:`~interprettensor.analysis.correction.rrr.STARTS`).

Columns: clean test accuracy; accuracy on the poisoned test set (the watermark on every 3, none on the
8s); the watermark's share of the true class's positive relevance on watermarked test 8s (mean per
image; LRP-epsilon and epsilon-gamma-box heatmaps); the fine-tuning's wall time. Target (issue 24):
the share falls by at least half and clean accuracy stays. Run::

    python benchmarks/bench_correction_rrr.py               # 20 fine-tuning epochs
    python benchmarks/bench_correction_rrr.py --epochs 5    # a quick check
"""

from __future__ import annotations

import argparse
import platform
import time

import keras

import interprettensor as it

C = it.correction


def data(size: int, mark: int, seed: int = 0):
    x, y = it.data.load_digits(size=size, digit_size=size - 8)
    sel = (y == 3) | (y == 8)
    x, y = x[sel], (y[sel] == 8).astype("int64")
    xtr, ytr, xte, yte = it.data.train_test_split(x, y, seed=seed)
    xw, _, mw, _ = C.plant_watermark(xtr, ytr, 1, fraction=0.9, size=mark, seed=seed)
    xp, _, _, _ = C.plant_watermark(xte, yte, 1, size=mark, poison=True)
    xm, _, mm, mk = C.plant_watermark(xte, yte, 1, fraction=1.0, size=mark)
    return (xw, ytr, mw), (xte, yte), xp, (xm[mk], mm[mk], yte[mk])


def mlp(size: int) -> keras.Model:
    """A multilayer perceptron, as Ross et al. use on their decoy MNIST (a CNN with pooling learns these
    digits well enough to ignore a 4 x 4 watermark: share 0.04, poisoned accuracy = clean accuracy)."""
    return keras.Sequential([keras.Input((size, size, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])


def measure(model, test, poisoned, marked) -> dict:
    (xte, yte), (xm, mm, ym) = test, marked
    acc = lambda x, y: float((model.predict(x, verbose=0).argmax(1) == y).mean())  # noqa: E731
    return {"clean": acc(xte, yte), "poisoned": acc(poisoned, yte),
            "share_eps": float(C.relevance_share(model, xm, mm, target=ym, rule="epsilon").mean()),
            "share_egb": float(C.relevance_share(model, xm, mm, target=ym, rule="epsilon_gamma_box",
                                                 low=0.0, high=1.0).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--mark", type=int, default=4, help="watermark side in pixels")
    p.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs per row")
    p.add_argument("--base-epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args()
    train, test, poisoned, marked = data(args.size, args.mark)
    keras.utils.set_random_seed(0)
    base = mlp(args.size)
    base.compile(keras.optimizers.Adam(args.lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    base.fit(train[0], train[1], epochs=args.base_epochs, batch_size=32, verbose=0)
    weights = base.get_weights()
    rows = [("trained on the shortcut", {}, measure(base, test, poisoned, marked), 0.0)]
    configs = [("fine-tuned, lam = 0 (control)", dict(method="lrp", lam=0.0)),
               ("RRR gradient (Ross), lam = 10", dict(method="gradient", lam=10.0)),
               ("RRR LRP-eps log_probs, lam = 10", dict(method="lrp", lam=10.0, start="log_probs")),
               ("RRR LRP-eps label, lam = 100", dict(method="lrp", lam=100.0, start="label")),
               ("RRR LRP-eps classes, lam = 100", dict(method="lrp", lam=100.0, start="classes"))]
    print(f"{platform.node()}: {len(train[0])} training images ({int(train[2].any(axis=(1, 2)).sum())} marked), "
          f"{len(test[0])} test, {args.size} x {args.size}, fine-tuning {args.epochs} epochs", flush=True)
    for name, kw in configs:
        keras.utils.set_random_seed(1)
        model = mlp(args.size)
        model.set_weights(weights)
        t = time.perf_counter()
        C.rrr_fit(model, *train, epochs=args.epochs, learning_rate=args.lr, verbose=0, **kw)
        rows.append((name, kw, measure(model, test, poisoned, marked), time.perf_counter() - t))
        print(f"  {name}: done in {rows[-1][3]:.0f} s", flush=True)
    ref = rows[0][2]
    print("\n| model | clean acc | poisoned acc | share (eps) | share (eps-gamma-box) | fine-tuning s |")
    print("|---|---|---|---|---|---|")
    for name, _, m, secs in rows:
        print(f"| {name} | {m['clean']:.3f} | {m['poisoned']:.3f} | {m['share_eps']:.3f} "
              f"({m['share_eps'] / ref['share_eps']:.2f}x) | {m['share_egb']:.3f} "
              f"({m['share_egb'] / ref['share_egb']:.2f}x) | {secs:.0f} |")


if __name__ == "__main__":
    main()
