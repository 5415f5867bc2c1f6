"""Why JAX is slower than TensorFlow on VGG16 on this CPU: the convolutions themselves, without Keras or the
engine (a script, not a timed test).

VGG16's 13 convolutions and 5 max-poolings (224x224, batch 8, random weights, ReLU), written once with
TensorFlow's ops (``tf.function``: TensorFlow's CPU kernels, oneDNN) and once with JAX's (``jax.jit``:
XLA:CPU), in one process, each timed alternately (best of ``REPEATS``, default 4): the forward pass and
gradient x input (the gradient of the summed output with respect to the input, times the input), with
JAX's weights passed as arguments (as Keras and the engine pass them) and compiled in as constants. Run::

    python benchmarks/bench_conv_kernels.py

The engine's LRP on VGG16 costs what the same backend's gradient x input costs (docs/backends.md), so
where JAX's gradient x input is slower than TensorFlow's, so is its LRP.
"""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

#: VGG16's convolutions (output channels) and max-poolings ("M")
CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def weights(rng: np.random.Generator) -> list:
    out, cin = [], 3
    for c in CFG:
        if c != "M":
            out.append((rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, c)).astype("float32"), np.zeros(c, "float32")))
            cin = c
    return out


def tf_net(x, W):
    i = 0
    for c in CFG:
        if c == "M":
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        else:
            x = tf.nn.relu(tf.nn.conv2d(x, W[i][0], 1, "SAME") + W[i][1])
            i += 1
    return tf.reduce_sum(x)


def jax_net(x, W):
    i = 0
    for c in CFG:
        if c == "M":
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        else:
            x = jax.nn.relu(jax.lax.conv_general_dilated(x, W[i][0], (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + W[i][1])
            i += 1
    return jnp.sum(x)


def main() -> None:
    rng = np.random.default_rng(0)
    W = weights(rng)
    x = rng.random((8, 224, 224, 3)).astype("float32")
    tW = [(tf.Variable(k), tf.Variable(b)) for k, b in W]
    jW = [(jnp.asarray(k), jnp.asarray(b)) for k, b in W]
    tx, jx = tf.constant(x), jnp.asarray(x)

    @tf.function
    def tf_forward(x):
        return tf_net(x, tW)

    @tf.function
    def tf_gxi(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf_net(x, tW)
        return tape.gradient(y, x) * x

    jax_forward = jax.jit(jax_net)
    jax_gxi = jax.jit(lambda x, W: jax.grad(jax_net)(x, W) * x)
    jax_forward_const = jax.jit(lambda x: jax_net(x, jW))
    jax_gxi_const = jax.jit(lambda x: jax.grad(jax_net)(x, jW) * x)
    fns = {"TensorFlow forward": lambda: tf_forward(tx).numpy(),
           "TensorFlow gradient x input": lambda: tf_gxi(tx).numpy(),
           "JAX forward (weights as arguments)": lambda: np.asarray(jax_forward(jx, jW)),
           "JAX forward (weights constant)": lambda: np.asarray(jax_forward_const(jx)),
           "JAX gradient x input (weights as arguments)": lambda: np.asarray(jax_gxi(jx, jW)),
           "JAX gradient x input (weights constant)": lambda: np.asarray(jax_gxi_const(jx))}
    for f in fns.values():  # compile and warm up
        f()
    repeats = int(os.environ.get("REPEATS", 4))
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    print(f"# {os.cpu_count()} cores; VGG16's convolutions, 224x224, batch 8; best of {repeats}, timed alternately")
    for k, v in best.items():
        print(f"{k:45s} {v:7.3f} s")
    print(f"JAX / TensorFlow: forward {best['JAX forward (weights as arguments)'] / best['TensorFlow forward']:.2f}, "
          f"gradient x input {best['JAX gradient x input (weights as arguments)'] / best['TensorFlow gradient x input']:.2f}")


if __name__ == "__main__":
    main()
