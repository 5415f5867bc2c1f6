"""The original API as a user calls it: modules, forward, fit, weights, save/load, errors."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor import data, pretrained


def small_cnn(**kw):
    return it.Sequential([
        it.Convolution(4, input_depth=1, input_dim=8, kernel_size=3, stride_size=1, act="relu", **kw),
        it.MaxPool(), it.Flatten(), it.Linear(10), it.Softmax()])


def test_readme_example_runs_and_lrp_is_shaped_like_input():
    net = it.Sequential([it.Linear(input_dim=784, output_dim=64, act="relu"), it.Linear(64, act="relu"),
                         it.Linear(64, act="relu"), it.Linear(10, act="relu"), it.Softmax()])
    rng = np.random.default_rng(0)
    x = rng.random((32, 784)).astype("float32")
    y = np.eye(10)[rng.integers(0, 10, 32)]
    output = net.forward(x)
    assert output.shape == (32, 10)
    np.testing.assert_allclose(np.sum(output, 1), 1.0, rtol=1e-5)
    hist = net.fit(x, y, loss="softmax_crossentropy", optimizer="adam", opt_params=[1e-3], epochs=3, batch_size=8)
    assert len(hist.history["loss"]) == 3 and len(hist.history["accuracy"]) == 3
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    output = net.forward(x)
    relevance = net.lrp(output, "simple", 1.0)
    assert relevance.shape == x.shape
    R = output
    layerwise = []
    for layer in net.modules[::-1]:
        R = net.lrp_layerwise(layer, R, "simple")
        layerwise.append(R)
    assert [tuple(r.shape) for r in layerwise] == [(32, 10), (32, 64), (32, 64), (32, 64), (32, 784)]
    np.testing.assert_allclose(R, relevance, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss,optimizer", [("softmax_crossentropy", "rmsprop"), ("sigmoid_crossentropy", "grad_descent"),
                                            ("MSE", "adagrad"), ("softmax_crossentropy", "adadelta")])
def test_losses_and_optimizers_train(loss, optimizer):
    rng = np.random.default_rng(1)
    x = rng.random((64, 64)).astype("float32")
    labels = (x[:, :32].sum(1) > x[:, 32:].sum(1)).astype(int)
    y = np.eye(2)[labels]
    last = it.Sigmoid() if loss == "sigmoid_crossentropy" else it.Softmax()
    net = it.Sequential([it.Linear(16, input_dim=64, act="relu"), it.Linear(2), last])
    lr = 1.0 if optimizer == "adadelta" else 0.05
    hist = net.fit(x, y, loss=loss, optimizer=optimizer, opt_params=[lr], epochs=4, batch_size=16)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert net.optimizer.learning_rate.numpy() == pytest.approx(lr)


def test_unknown_loss_or_optimizer_is_named():
    net = it.Sequential([it.Linear(2, input_dim=3)])
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*softmax_crossentropy"):
        net.fit(np.ones((2, 3)), np.eye(2), loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'.*adam"):
        net.fit(np.ones((2, 3)), np.eye(2), optimizer="lbfgs")


def test_dropout_and_batch_norm_act_in_training_only():
    net = it.Sequential([it.Linear(50, input_dim=20, act="relu", keep_prob=0.5, batch_norm=True), it.Linear(3)])
    x = np.random.default_rng(2).random((8, 20)).astype("float32")
    a, b = net(x, training=False), net(x, training=False)
    np.testing.assert_array_equal(a, b)
    c = net(x, training=True)  # dropout and batch statistics (this also moves BN's moving averages)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(net.forward(x), net(x, training=False), rtol=1e-5, atol=1e-6)


def test_batch_norm_is_merged_for_lrp_and_outputs_match():
    rng = np.random.default_rng(3)
    net = it.Sequential([it.Linear(6, input_dim=5, batch_norm=True, act="relu", dtype="float64"),
                         it.Linear(2, dtype="float64")], dtype="float64")
    bn = net.modules[0].bn
    bn.moving_mean.assign(rng.normal(size=6))
    bn.moving_variance.assign(rng.random(6) + 0.5)
    bn.gamma.assign(rng.normal(size=6))
    bn.beta.assign(rng.normal(size=6))
    x = rng.normal(size=(4, 5))
    out = net.forward(x)
    np.testing.assert_allclose(out, net(x, training=False), rtol=1e-9, atol=1e-12)
    # z-rule through the merged layer = z-rule on an equivalent plain Linear with merged weights
    s = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    plain = it.Sequential([it.Linear(6, input_dim=5, act="relu", dtype="float64"), it.Linear(2, dtype="float64")],
                          dtype="float64")
    W, b = net.modules[0].kernel.numpy(), net.modules[0].bias.numpy()
    plain.set_weights([W * s, (b - bn.moving_mean.numpy()) * s + bn.beta.numpy()] + net.modules[1].get_weights())
    np.testing.assert_allclose(plain.forward(x), out, rtol=1e-9, atol=1e-12)
    for var in ["simple", "epsilon", "alphabeta"]:
        np.testing.assert_allclose(net.lrp(out, var), plain.lrp(out, var), rtol=1e-8, atol=1e-12)


def test_weights_order_and_set_weights():
    net = small_cnn()
    shapes = [w.shape for w in net.get_weights()]
    assert shapes == [(3, 3, 1, 4), (4,), (64, 10), (10,)]
    new = [np.full(s, i, "float32") for i, s in enumerate(shapes)]
    net.set_weights(new)
    for got, want in zip(net.get_weights(), new):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="expected 4 arrays"):
        net.set_weights(new[:3])
    with pytest.raises(ValueError, match="has shape \\(64, 10\\)"):
        net.set_weights(new[:2] + [np.zeros((10, 64)), new[3]])


def test_save_and_load_keras_format(tmp_path):
    net = small_cnn(batch_norm=True, keep_prob=0.9)
    net.set_lrp_parameters("epsilon", 0.5)
    x = np.random.default_rng(4).random((3, 64)).astype("float32")
    out = net.forward(x)
    path = tmp_path / "net.keras"
    net.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, it.Sequential)
    assert [type(m) for m in loaded.modules] == [type(m) for m in net.modules]
    assert loaded.modules[0].lrp_var == "epsilon" and loaded.modules[0].lrp_param == 0.5
    np.testing.assert_allclose(loaded.forward(x), out, rtol=1e-6)
    np.testing.assert_allclose(loaded.lrp(out), net.lrp(out), rtol=1e-5, atol=1e-7)


def test_act_accepts_callable():
    net = it.Sequential([it.Linear(4, input_dim=3, act=lambda z: z * 2.0)])
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(net.forward(x), 2.0 * (x @ net.modules[0].kernel.numpy()), rtol=1e-6)


def test_linear_flattens_nd_input_and_convolution_reshapes_flat_input():
    rng = np.random.default_rng(5)
    x = rng.random((2, 4, 4, 2)).astype("float32")
    lin = it.Sequential([it.Linear(3, input_dim=32)])
    np.testing.assert_allclose(lin.forward(x), x.reshape(2, 32) @ lin.modules[0].kernel.numpy(), rtol=1e-4, atol=1e-6)
    assert lin.lrp(lin.forward(x)).shape == x.shape
    conv = it.Sequential([it.Convolution(3, input_depth=2, input_dim=4, kernel_size=3, stride_size=1)])
    np.testing.assert_allclose(conv.forward(x.reshape(2, -1)), conv.forward(x), rtol=1e-6)
    assert conv.lrp(conv.forward(x.reshape(2, -1))).shape == (2, 32)


def test_pretrained_cnn_classifies_the_digits():
    net = pretrained.mnist_cnn()
    x, y = data.load_digits()
    out = np.asarray(net.forward(data.to_pretrained_input(x)))
    assert out.shape == (len(x), 1, 1, 10)
    acc = (out.reshape(len(x), 10).argmax(1) == y).mean()
    assert acc >= 0.8
    explained = it.lrp(net, data.to_pretrained_input(x[:5]), rule="epsilon", epsilon=0.01)
    assert explained.shape == (5, 32, 32, 1) and np.all(np.isfinite(explained))


# ---------------------------------------------------------------------- errors
def test_errors_name_what_is_wrong():
    net = small_cnn()
    with pytest.raises(it.ExplainError, match="forward pass first"):
        net.lrp(np.ones((1, 10)))
    x = np.ones((2, 64), "float32")
    out = net.forward(x)
    with pytest.raises(it.ExplainError, match=r"relevance of shape \(2, 3\).*network output of shape \(2, 10\)"):
        net.lrp(np.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown LRP variant 'eps'.*simple, epsilon, flat, ww, alphabeta"):
        net.lrp(out, "eps")
    with pytest.raises(ValueError, match="unknown LRP variant"):
        net.modules[0].set_lrp_parameters("nonsense")
    with pytest.raises(it.ExplainError, match=r"\(2, 65\).*first layer 'convolution.*\(N, 64\) or \(N, 8, 8, 1\)"):
        net.forward(np.ones((2, 65)))
    mlp = it.Sequential([it.Linear(3, input_dim=5, name="dense_in")])
    with pytest.raises(it.ExplainError, match=r"\(4, 6\).*'dense_in' \(Linear\).*\(N, 5\)"):
        mlp.forward(np.ones((4, 6)))
    with pytest.raises(it.ExplainError, match="relevance of shape"):
        net.lrp_layerwise(net.modules[-1], np.ones((2, 3)))


def test_keras_layer_without_handler_is_named():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
                              keras.layers.UnitNormalization(name="ln")])
    with pytest.raises(it.ExplainError, match="'ln' of type UnitNormalization.*register_handler"):
        it.lrp(model, np.ones((2, 4)))


def test_a_keras_backend_without_an_engine_is_refused():
    """``import interprettensor`` is light; the first use of the engine refuses Keras' NumPy backend
    (no gradients), naming the backends it runs on (JAX and PyTorch: tests/test_backends.py)."""
    env = dict(os.environ, KERAS_BACKEND="numpy")
    proc = subprocess.run([sys.executable, "-c", "import interprettensor as it; it.lrp"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "runs on Keras' TensorFlow, JAX and PyTorch backends" in proc.stderr and "'numpy'" in proc.stderr


def test_repeated_lrp_calls_do_not_retrace():
    net = small_cnn()
    x = np.random.default_rng(6).random((4, 64)).astype("float32")
    out = net.forward(x)
    first = net.lrp(out, "epsilon", 0.01)
    fn = net._lrp_fns[("lrp", net._rules("epsilon", 0.01))]
    traces = fn.experimental_get_tracing_count()
    for _ in range(3):
        np.testing.assert_allclose(net.lrp(out, "epsilon", 0.01), first)
    net.forward(x * 0.5)
    net.lrp(out, "epsilon", 0.01)
    assert fn.experimental_get_tracing_count() == traces == 1


def test_modules_named_in_the_readme_are_attributes_of_the_package():
    import subprocess
    import sys

    code = ("import interprettensor as it; "
            "[getattr(it, n) for n in ('pretrained', 'data', 'datasets', 'render', 'summaries', 'attribution', "
            "'evaluate', 'rules', 'handlers', 'explain_dataset', 'load_relevances')]; "
            "it.pretrained.mnist_cnn; it.data.load_digits; it.handlers.LinearHandler")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
