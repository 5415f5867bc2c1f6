"""The backend-parity cases: the same saved models explained with every rule family on each Keras
backend (run by tests/test_backends.py, one process per backend).

    python tests/backend_parity.py build DIR      # (TensorFlow) the models as .keras files, inputs.npz
    python tests/backend_parity.py run DIR OUT    # (KERAS_BACKEND=...) every case -> OUT (.npz)

Each result is saved under ``MODEL/CASE/NAME``; tests/test_backends.py compares the JAX and PyTorch
files with TensorFlow's."""

from __future__ import annotations

import os
import sys

import numpy as np

#: model -> cases: (case name, how to explain, keyword arguments)
CASES: dict[str, list[tuple[str, str, dict]]] = {
    "cnn": [("epsilon", "lrp", {"rule": "epsilon", "epsilon": 0.1}),
            ("alpha2beta1", "lrp", {"rule": "alpha2beta1"}),
            ("gamma", "lrp", {"rule": "gamma", "gamma": 0.25}),
            ("epsilon_gamma_box", "lrp", {"rule": "epsilon_gamma_box", "low": -1.0, "high": 1.0}),
            ("preset_b_flat", "lrp", {"rule": "preset_b_flat"}),
            ("epsilon_target3", "lrp", {"rule": "epsilon", "target": 3}),
            ("layerwise", "layerwise", {"rule": "epsilon_plus"}),
            ("hidden_channel", "lrp", {"rule": "epsilon", "layer": "conv2", "target": 1}),
            ("concepts", "conditional", {"layer": "conv2", "channels": [0, 2, [1, 3]]}),
            ("input_x_gradient", "baseline", {"method": "input_x_gradient"}),
            ("region_perturbation", "evaluate", {"patch": 3, "steps": 5, "perturbation": "mean"}),
            ("pixel_flipping", "metric", {"metric": "PixelFlipping", "features_in_step": 16}),
            ("faithfulness_estimate", "metric", {"metric": "FaithfulnessEstimate", "features_in_step": 16,
                                                 "perturb_baseline": "mean"}),
            ("mprt", "metric", {"metric": "MPRT", "layer_order": "bottom_up",
                                "explain_func": "epsilon"})],
    "resnet": [("epsilon_plus", "lrp", {"rule": "epsilon_plus"}),
               ("zplus", "lrp", {"rule": "zplus"}),
               ("gamma", "lrp", {"rule": "gamma", "gamma": 0.5}),
               ("ww", "lrp", {"rule": "ww"})],
    "multi_input": [("epsilon", "lrp", {"rule": "epsilon", "epsilon": 0.01}),
                    ("alpha1beta0", "lrp", {"rule": "alpha1beta0"})],
    "transformer": [("attnlrp", "lrp", {"rule": "attnlrp"}),
                    ("cp_lrp", "lrp", {"rule": "cp_lrp"}),
                    ("epsilon", "lrp", {"rule": "epsilon"})],
    "bert": [("attnlrp", "lrp", {"rule": "attnlrp"}),
             ("cp_lrp", "lrp", {"rule": "cp_lrp"})],
    "lstm": [("epsilon", "lrp", {"rule": "epsilon", "epsilon": 0.001}),
             ("layerwise", "layerwise", {"rule": "epsilon"})],
    "original": [("simple", "original", {"variant": "simple"}),
                 ("epsilon", "original", {"variant": "epsilon", "param": 0.01}),
                 ("alphabeta", "original", {"variant": "alphabeta", "param": 2.0}),
                 ("ww", "original", {"variant": "ww"}),
                 ("flat", "original", {"variant": "flat"}),
                 ("fit", "fit", {})],
}


def build(folder: str) -> None:
    import keras
    from keras import layers as L

    import interprettensor as it

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    os.makedirs(folder, exist_ok=True)
    inputs = {}

    x = keras.Input((12, 12, 3))
    h = L.Conv2D(6, 3, activation="relu", name="conv1")(x)
    h = L.MaxPooling2D(2)(h)
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(h)
    h = L.Flatten()(h)
    out = L.Dense(5, name="logits")(L.Dense(16, activation="relu")(h))
    keras.Model(x, out).save(os.path.join(folder, "cnn.keras"))
    inputs["cnn"] = rng.uniform(-1, 1, (3, 12, 12, 3))

    block = keras.Sequential([L.Conv2D(8, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
                              L.Conv2D(8, 3, padding="same")], name="block")
    x = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    bn = L.BatchNormalization()
    h = L.ReLU()(L.Add()([h, block(h)]))
    h = bn(h)
    out = L.Dense(4)(L.GlobalAveragePooling2D()(h))
    model = keras.Model(x, out)
    for layer in (bn, block.layers[1]):  # moving statistics away from the initial (0, 1)
        layer.moving_mean.assign(rng.normal(size=8) * 0.1)
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, 8))
    model.save(os.path.join(folder, "resnet.keras"))
    inputs["resnet"] = rng.uniform(0, 1, (2, 10, 10, 3))

    a, b = keras.Input((6,)), keras.Input((4,))
    h = L.Concatenate()([L.Dense(8, activation="relu")(a), L.Dense(8, activation="relu")(b)])
    keras.Model([a, b], L.Dense(3)(h)).save(os.path.join(folder, "multi_input.keras"))
    inputs["multi_input/0"] = rng.normal(size=(4, 6))
    inputs["multi_input/1"] = rng.normal(size=(4, 4))

    tokens = keras.Input((8,), dtype="int32")
    e = L.Embedding(20, 16)(tokens)
    att = L.MultiHeadAttention(num_heads=2, key_dim=8)(e, e)
    h = L.LayerNormalization()(L.Add()([e, att]))
    h = L.Dense(16, activation="gelu")(h)
    out = L.Dense(3)(L.GlobalAveragePooling1D()(h))
    keras.Model(tokens, out).save(os.path.join(folder, "transformer.keras"))
    inputs["transformer"] = rng.integers(1, 20, (3, 8))

    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=8)
    bert = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)
    bert.save(os.path.join(folder, "bert.keras"))
    inputs["bert/token_ids"] = rng.integers(1, 30, (2, 8))
    inputs["bert/segment_ids"] = np.zeros((2, 8), np.int64)
    inputs["bert/padding_mask"] = np.array([[1] * 8, [1] * 6 + [0] * 2])

    tokens = keras.Input((7,), dtype="int32")
    h = L.Embedding(12, 6, mask_zero=True)(tokens)
    h = L.Bidirectional(L.LSTM(5, return_sequences=True))(h)
    h = L.GRU(4)(h)
    keras.Model(tokens, L.Dense(3)(h)).save(os.path.join(folder, "lstm.keras"))
    inputs["lstm"] = np.array([[3, 5, 1, 7, 0, 0, 0], [2, 2, 9, 11, 4, 6, 1]])

    net = it.Sequential([it.Convolution(4, kernel_size=3, stride_size=1), it.Relu(), it.MaxPool(), it.Flatten(),
                         it.Linear(10)])
    net.build((None, 8, 8, 1))
    net.save(os.path.join(folder, "original.keras"))
    inputs["original"] = rng.uniform(-1, 1, (2, 8, 8, 1))
    np.savez(os.path.join(folder, "inputs.npz"), **inputs)


def _inputs(data: dict, name: str):
    if name in data:
        return data[name]
    if name == "bert":
        return {k.split("/")[1]: data[k] for k in data if k.startswith("bert/")}
    return [data[k] for k in sorted(k for k in data if k.startswith(name + "/"))]


def _store(results: dict, key: str, value) -> None:
    """``value`` (an array, or a list or dict of them) under ``key`` (``key/i``, ``key/name``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _store(results, f"{key}/{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _store(results, f"{key}/{i}", v)
    else:
        results[key] = value


def run(folder: str, out: str) -> None:
    import keras

    import interprettensor as it
    from interprettensor import attribution, concepts, evaluate

    data = dict(np.load(os.path.join(folder, "inputs.npz")))
    results = {}
    for name, cases in CASES.items():
        model = keras.models.load_model(os.path.join(folder, name + ".keras"))
        x = _inputs(data, name)
        for case, how, kw in cases:
            kw = dict(kw)
            key = f"{name}/{case}"
            if how == "lrp":
                _store(results, key, it.lrp(model, x, **kw))
            elif how == "layerwise":
                rule = kw.pop("rule")
                _, per_layer = it.Explainer(model, rule=rule, **kw)(x, layerwise=True)
                _store(results, key, per_layer)
            elif how == "conditional":
                results[f"{key}/0"] = concepts.conditional(model, x, kw["layer"], kw["channels"], target=0)
                results[f"{key}/channels"] = concepts.relevance(model, x, kw["layer"], target=0)
            elif how == "baseline":
                results[f"{key}/0"] = getattr(attribution, kw["method"])(model, x)
            elif how == "evaluate":  # the scores along a (seeded, random) ordering of the regions
                results[f"{key}/scores"] = evaluate.region_perturbation(model, x, "random", **kw).scores
            elif how == "metric":  # a Quantus metric of it.metrics (its perturbed batches, stacked model calls)
                call = {"explain_func": kw.pop("explain_func")} if "explain_func" in kw else {}
                metric = getattr(it.metrics, kw.pop("metric"))(**kw)
                a = np.sin(np.arange(x.size)).reshape(x.shape)  # no ties: one order of the features
                before = [np.array(w) for w in model.get_weights()]
                scores = metric(model=model, x_batch=x, y_batch=np.arange(len(x)) % 3, a_batch=a, batch_size=16,
                                **call)
                for w, w0 in zip(model.get_weights(), before):  # MPRT restores the weights it permuted
                    if not np.array_equal(w, w0):
                        raise AssertionError(f"{key}: the model's weights changed after the metric on "
                                             f"{keras.backend.backend()}")
                # MPRT: a dict of the stages (its weights permuted in place, read by the compiled explainer)
                _store(results, f"{key}/scores", {k: np.asarray(v, np.float64) for k, v in scores.items()}
                       if isinstance(scores, dict) else np.asarray(scores, np.float64))
            elif how == "original":
                y = keras.ops.convert_to_numpy(model.forward(x))
                R = np.where(np.arange(y.shape[1]) == np.argmax(y, axis=1)[:, None], y, 0.0)
                results[f"{key}/0"] = model.lrp(R, kw["variant"], kw.get("param"))
            elif how == "fit":  # the 2017 API's net.fit: one epoch of plain SGD, in order, then the weights
                labels = np.eye(10)[np.arange(len(x)) % 10]
                model.fit(x, labels, loss="softmax_crossentropy", optimizer="sgd", opt_params=[0.05], epochs=1,
                          batch_size=1, shuffle=False)
                _store(results, key, model.get_weights())
            else:  # pragma: no cover
                raise ValueError(how)
    np.savez(out, **{k: np.asarray(keras.ops.convert_to_numpy(v), np.float64) for k, v in results.items()})
    print(f"backend {keras.backend.backend()}: {len(results)} results")


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3])
