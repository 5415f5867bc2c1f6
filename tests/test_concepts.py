"""Concept Relevance Propagation: conditional heatmaps, channel relevances, attribution graphs and
reference examples over a data set.

References are other code paths: the explainer started at the layer with the masked relevance
(``it.Explainer(model, layer=L)(x, relevance=R_L * mask)``), the layer-wise relevance of one plain
backward pass, a Keras sub-model for activations, and brute-force rankings in numpy."""

import json
import os

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.analysis.relevance_maximization import crop_box
from interprettensor.apps.cli import main
from interprettensor.engine.conditions import ConditionalExplainer

RULES = [("epsilon", {}), ("z", {}), ("epsilon_plus", {}), ("alphabeta", {}), ("gamma", {}), ("flat", {}),
         ("epsilon_gamma_box", {"low": 0.0, "high": 1.0})]


def _cnn(bias: bool = True, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((14, 14, 3))
    h = keras.layers.Conv2D(6, 3, use_bias=bias, name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(5, 3, activation="tanh", use_bias=bias, name="c2")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(7, activation="elu", use_bias=bias, name="d1")(h)
    out = keras.layers.Dense(4, use_bias=bias, name="d2")(h)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")
    bn.set_weights([w + np.random.default_rng(1).uniform(0.2, 1.0, w.shape).astype("float32")
                    for w in bn.get_weights()])
    return model


@pytest.fixture(scope="module")
def model():
    return _cnn()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(0, 1, (3, 14, 14, 3)).astype("float32")


def _masked_reference(model, x, layer, channels, rule, params, target=None):
    """The explainer started at ``layer`` with the full pass's relevance there, masked to ``channels``."""
    _, lw = it.Explainer(model, rule, **params)(x, target, layerwise=True)
    R_L = lw[layer]
    mask = np.zeros(R_L.shape[-1], np.float32)
    mask[np.atleast_1d(channels)] = 1.0
    return it.Explainer(model, rule, layer=layer, **params)(x, relevance=R_L * mask)


@pytest.mark.parametrize("rule,params", RULES, ids=[r for r, _ in RULES])
def test_channel_heatmaps_sum_to_the_heatmap(model, x, rule, params):
    R = it.concepts.conditional(model, x, layer="c2", channels=range(5), rule=rule, **params)
    assert R.shape == (3, 5) + x.shape[1:]
    full = it.lrp(model, x, rule, **params)
    np.testing.assert_allclose(R.sum(1), full, rtol=1e-4, atol=1e-6 * np.abs(full).max())
    assert np.abs(R).sum() > 0 and all(np.abs(R[:, c]).sum() > 0 for c in range(5))


@pytest.mark.parametrize("rule,params", RULES[:4] + RULES[-1:], ids=[r for r, _ in RULES[:4] + RULES[-1:]])
def test_conditional_equals_the_explainer_started_at_the_layer(model, x, rule, params):
    R = it.concepts.conditional(model, x, layer="c2", channels=[1, [0, 3]], rule=rule, target=2, **params)
    for k, chans in enumerate([1, [0, 3]]):
        ref = _masked_reference(model, x, "c2", chans, rule, params, target=2)
        np.testing.assert_allclose(R[:, k], ref, rtol=1e-4, atol=1e-7)


def test_dense_layer_and_nested_conditions(model, x):
    cx = ConditionalExplainer(model, "epsilon", layers=["d1", "c2"])
    one = cx.conditional(x, [{"d1": 4}])[:, 0]
    nested = cx.conditional(x, [{"d1": 4, "c2": c} for c in range(5)])
    np.testing.assert_allclose(nested.sum(1), one, rtol=1e-4, atol=1e-7)
    # a condition on two layers: the lower mask applies to the relevance that the upper one let through
    _, lw = it.Explainer(model, "epsilon")(x, layerwise=True)
    m1 = np.zeros(7, np.float32)
    m1[4] = 1
    R_c2 = it.Explainer(model, "epsilon", layer="d1")(x, relevance=lw["d1"] * m1, layerwise=True)[1]["c2"]
    m2 = np.zeros(5, np.float32)
    m2[2] = 1
    ref = it.Explainer(model, "epsilon", layer="c2")(x, relevance=R_c2 * m2)
    np.testing.assert_allclose(nested[:, 2], ref, rtol=1e-4, atol=1e-7)


def test_batched_conditions_and_samples_equal_one_at_a_time(model, x):
    cx = ConditionalExplainer(model, "epsilon_plus", layers=["c2"])
    conds = [{"c2": c} for c in (4, 0, 2)]
    together = cx.conditional(x, conds)
    apart = cx.conditional(x, conds, condition_batch_size=1, batch_size=1)
    np.testing.assert_allclose(together, apart, rtol=1e-5, atol=1e-8)
    assert cx.conditional(x[:0], conds).shape == (0, 3) + x.shape[1:]


def test_channel_relevance_sums_to_the_layers(model, x):
    R_c = it.concepts.relevance(model, x, "c2", target=1)
    _, lw = it.Explainer(model, "epsilon")(x, 1, layerwise=True)
    np.testing.assert_allclose(R_c, lw["c2"].sum((1, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(R_c.sum(1), lw["c2"].sum((1, 2, 3)), rtol=1e-5, atol=1e-7)
    both = it.concepts.relevance(model, x, ["c2", "d1"], target=1)
    np.testing.assert_allclose(both["d1"], lw["d1"], rtol=1e-5, atol=1e-7)


def test_layer_whose_records_cannot_be_repeated_runs_the_forward_again():
    """A LayerNormalization's record holds its per-sample scale: the pass below recomputes it."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 5))
    h = keras.layers.LayerNormalization()(inp)
    h = keras.layers.Dense(8, activation="tanh", name="h")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(3)(h)
    m = keras.Model(inp, out)
    x = np.random.default_rng(1).normal(size=(2, 6, 5)).astype("float32")
    R = it.concepts.conditional(m, x, layer="h", channels=[0, 5])
    for k, c in enumerate([0, 5]):
        np.testing.assert_allclose(R[:, k], _masked_reference(m, x, "h", c, "epsilon", {}), rtol=1e-4, atol=1e-7)


def test_attribution_graph_edges_sum_to_the_parents_relevance():
    m = _cnn(bias=False, seed=4)
    x = np.random.default_rng(2).uniform(0, 1, (1, 14, 14, 3)).astype("float32")
    R_c = it.concepts.relevance(m, x, "c2", rule="z")[0]
    top = int(np.argmax(np.abs(R_c)))
    g = it.concepts.attribution_graph(m, x, "c2", top, ["c1"], rule="z", top_n=6)
    assert g.nodes[("c2", top)] == pytest.approx(float(R_c[top]), rel=1e-5)
    edges = [r for p, c, r in g.edges if p == ("c2", top)]
    assert len(edges) == 6
    assert sum(edges) == pytest.approx(float(R_c[top]), rel=1e-3, abs=1e-6)  # z-rule, no bias: conserved
    # an edge is the child's relevance conditioned on the parent (a different code path)
    ref = it.concepts.conditional(m, x, conditions=[{"c2": top}], rule="z")
    lower = _masked_reference(m, x, "c2", top, "z", {})
    np.testing.assert_allclose(ref[:, 0], lower, rtol=1e-4, atol=1e-8)
    child, value = g.children(("c2", top))[0]
    assert value == max(edges)
    g2 = it.concepts.attribution_graph(m, x, "d1", 0, ["c2", "c1"], rule="z", top_n=2)
    assert [n[0] for n in g2.nodes] == ["d1", "c2", "c2", "c1", "c1", "c1", "c1"][: len(g2.nodes)]
    for parent, total in g2.totals.items():
        assert total == pytest.approx(g2.nodes[parent], rel=1e-3, abs=1e-6)


def test_errors_name_the_layer_and_channel(model, x):
    with pytest.raises(it.ExplainError, match="no layer 'nope'"):
        it.concepts.conditional(model, x, layer="nope", channels=[0])
    with pytest.raises(it.ExplainError, match="layer 'c2' has 5 channels"):
        it.concepts.conditional(model, x, layer="c2", channels=[5])
    with pytest.raises(it.ExplainError, match="conditions is empty"):
        it.concepts.conditional(model, x, conditions=[])
    cx = ConditionalExplainer(model, "epsilon", layers=["c2"])
    with pytest.raises(it.ExplainError, match="not among the explainer's conditioned layers"):
        cx.conditional(x, [{"d1": 0}])
    with pytest.raises(it.ExplainError, match="one sample"):
        it.concepts.attribution_graph(model, x, "c2", 0, ["c1"])


# ---------------------------------------------------------------------------------------------- data sets
def _brute_force(model, x, layer, k):
    """Top k per channel by relevance (the predicted class) and by largest activation, in numpy."""
    _, lw = it.Explainer(model, "epsilon")(x, layerwise=True)
    rel = lw[layer].sum((1, 2)) if lw[layer].ndim == 4 else lw[layer]
    act = keras.Model(model.inputs, model.get_layer(layer).output)(x).numpy()
    act = act.max((1, 2)) if act.ndim == 4 else act
    return ([np.argsort(-rel[:, c], kind="stable")[:k] for c in range(rel.shape[1])],
            [np.argsort(-act[:, c], kind="stable")[:k] for c in range(act.shape[1])], rel)


def test_reference_examples_equal_a_brute_force_ranking(model, tmp_path):
    x = np.random.default_rng(5).uniform(0, 1, (23, 14, 14, 3)).astype("float32")
    out = str(tmp_path / "crun")
    run = it.concepts.reference_examples(model, x, ["c2", "d1"], out, k=4, shard_size=8, batch_size=5,
                                         crop_size=6, units=True, progress=False)
    assert run.kinds == {"c2": "channels", "d1": "units"}
    by_rel, by_act, rel = _brute_force(model, x, "c2", 4)
    for c in range(5):
        ref = run.references("c2", c)
        np.testing.assert_array_equal(ref["indices"], by_rel[c])
        np.testing.assert_allclose(ref["values"], rel[by_rel[c], c], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(run.references("c2", c, "activation")["indices"], by_act[c])
    np.testing.assert_allclose(run.mean_relevance("c2"), rel.mean(0), rtol=1e-4, atol=1e-7)
    by_rel_d, _, _ = _brute_force(model, x, "d1", 4)
    np.testing.assert_array_equal(run.references("d1", 3)["indices"], by_rel_d[3])
    # the box and crop of a reference: from its conditional heatmap, recomputed by another path
    ref = run.references("c2", 2)
    i = int(ref["indices"][0])
    heat = _masked_reference(model, x[i:i + 1], "c2", 2, "epsilon", {})[0]
    assert tuple(ref["boxes"][0]) == crop_box(heat, 0.1)
    assert ref["crops"].shape == (4, 6, 6, 3) and ref["crops"].dtype == np.uint8
    assert ref["heatmaps"].shape == (4, 6, 6) and np.abs(ref["heatmaps"][0]).max() > 0
    meta = json.load(open(os.path.join(out, "concepts.json")))
    assert meta["complete"] and meta["n_samples"] == 23 and meta["layers"]["c2"]["channels"] == 5
    stats = run.statistics("c2")
    np.testing.assert_array_equal(stats["indices"], np.arange(23))


def test_reference_examples_resume_and_refuse_another_run(model, tmp_path):
    x = np.random.default_rng(6).uniform(0, 1, (12, 14, 14, 3)).astype("float32")
    out = str(tmp_path / "crun")
    kw = dict(k=3, shard_size=5, batch_size=4, crop_size=4, progress=False)
    it.concepts.reference_examples(model, x, ["c2"], out, **kw)
    first = {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".npz")}
    os.remove(os.path.join(out, "stats-00001.npz"))  # an interrupted run: one shard missing
    meta = json.load(open(os.path.join(out, "concepts.json")))
    meta["complete"] = False
    json.dump(meta, open(os.path.join(out, "concepts.json"), "w"))
    it.concepts.reference_examples(model, x, ["c2"], out, **kw)
    again = {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".npz")}
    assert again == first
    with pytest.raises(it.ExplainError, match="another"):
        it.concepts.reference_examples(model, x, ["c2"], out, **dict(kw, k=2))
    with pytest.raises(it.ExplainError, match="no layer 'zz'"):
        it.concepts.ConceptRun(out).references("zz", 0)


def test_reference_examples_from_an_explain_run(model, tmp_path):
    x = np.random.default_rng(7).uniform(0, 1, (9, 14, 14, 3)).astype("float32")
    run_dir = str(tmp_path / "run")
    it.explain_dataset(model, x, "epsilon", run_dir, shard_size=4, store_inputs=True, progress=False, target=2)
    run = it.concepts.reference_examples(model, run_dir, ["c2"], str(tmp_path / "c"), k=2, shard_size=4,
                                         crop_size=4, progress=False)
    rel = it.concepts.relevance(model, x, "c2", target=2)
    np.testing.assert_array_equal(run.references("c2", 1)["indices"], np.argsort(-rel[:, 1], kind="stable")[:2])


def test_concepts_command(model, tmp_path, capsys):
    path = str(tmp_path / "m.keras")
    model.save(path)
    data = str(tmp_path / "x.npy")
    np.save(data, np.random.default_rng(8).uniform(0, 1, (7, 14, 14, 3)).astype("float32"))
    out = str(tmp_path / "c")
    assert main(["concepts", path, data, "--layer", "c2", "--out", out, "--k", "2", "--crop-size", "4", "-q",
                 "--rule", "epsilon"]) == 0
    run = it.concepts.ConceptRun(out)
    assert run.layers == {"c2": 5} and run.references("c2", 0)["indices"].shape == (2,)
    assert main(["concepts", path, data, "--layer", "nope", "--out", str(tmp_path / "d"), "-q"]) == 1
    assert "no layer 'nope'" in capsys.readouterr().err


def test_reference_pictures_for_chosen_channels_only(model, tmp_path):
    x = np.random.default_rng(9).uniform(0, 1, (10, 14, 14, 3)).astype("float32")
    kw = dict(k=3, shard_size=10, crop_size=4, progress=False)
    full = it.concepts.reference_examples(model, x, ["c2"], str(tmp_path / "all"), **kw)
    part = it.concepts.reference_examples(model, x, ["c2"], str(tmp_path / "some"), channels={"c2": [1, 3]}, **kw)
    for c in range(5):
        a, b = full.references("c2", c), part.references("c2", c)
        np.testing.assert_array_equal(a["indices"], b["indices"])  # every channel is ranked
        assert b["referenced"] == (c in (1, 3))
        if c in (1, 3):
            np.testing.assert_array_equal(a["crops"], b["crops"])
            np.testing.assert_array_equal(a["boxes"], b["boxes"])
        else:
            assert not b["crops"].any() and not b["heatmaps"].any()
    with pytest.raises(it.ExplainError, match="integers in 0..4"):
        it.concepts.reference_examples(model, x, ["c2"], str(tmp_path / "bad"), channels={"c2": [9]}, **kw)
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.save(str(tmp_path / "x.npy"), x)
    assert main(["concepts", path, str(tmp_path / "x.npy"), "--layer", "c2", "--channels", "c2:0-1,4",
                 "--out", str(tmp_path / "cli"), "--k", "2", "--crop-size", "4", "-q", "--rule", "epsilon"]) == 0
    np.testing.assert_array_equal(np.load(str(tmp_path / "cli" / "layer-c2.npz"))["referenced"],
                                  [True, True, False, False, True])


@pytest.mark.parametrize("dtype", ["float64", "mixed_float16"])
def test_conditional_in_other_precisions(model, x, dtype):
    """The conditional pass takes the explainer's precision (box bounds included)."""
    params = {"low": 0.0, "high": 1.0, "dtype": dtype}
    R = it.concepts.conditional(model, x, layer="c2", channels=range(5), rule="epsilon_gamma_box", **params)
    full = it.Explainer(model, "epsilon_gamma_box", **params)(x)
    assert np.isfinite(R).all()
    np.testing.assert_allclose(R.sum(1), full, rtol=1e-4 if dtype == "float64" else 2e-2,
                               atol=(1e-9 if dtype == "float64" else 2e-3) * np.abs(full).max())


def test_damaged_or_missing_shard_of_an_explain_run_is_named(model, tmp_path, capsys):
    """An explain run as input: a truncated shard gave "unexpected BadZipFile", a deleted one was skipped
    silently (the samples after it shifted); both now name the file and say how to rewrite it."""
    x = np.random.default_rng(7).uniform(0, 1, (9, 14, 14, 3)).astype("float32")
    run_dir = str(tmp_path / "run")
    kw = dict(shard_size=4, store_inputs=True, progress=False, target=2)
    it.explain_dataset(model, x, "epsilon", run_dir, **kw)
    path = str(tmp_path / "m.keras")
    model.save(path)
    shard = os.path.join(run_dir, "shard-00001.npz")
    advice = (r"rerun `interprettensor explain \.\.\. --resume` \(or explain_dataset with the same arguments\), which "
              r"rewrites missing or damaged shards")
    cargs = dict(k=2, shard_size=4, crop_size=4, progress=False)
    for damage, what in (("truncate", r"is damaged \(BadZipFile"), ("delete", "is missing")):
        if damage == "truncate":
            with open(shard, "r+b") as f:
                f.truncate(os.path.getsize(shard) // 2)
        else:
            os.remove(shard)
        before = {f: open(os.path.join(run_dir, f), "rb").read() for f in sorted(os.listdir(run_dir))}
        with pytest.raises(it.ExplainError, match=r"shard-00001\.npz' of the run in .* " + what + ".*" + advice):
            it.concepts.reference_examples(model, run_dir, ["c2"], str(tmp_path / f"c-{damage}"), **cargs)
        assert main(["concepts", path, run_dir, "--layer", "c2", "--out", str(tmp_path / f"d-{damage}"), "--k", "2",
                     "--crop-size", "4", "-q", "--rule", "epsilon"]) == 1
        err = capsys.readouterr().err
        assert "error: shard " in err and "shard-00001.npz" in err and "unexpected" not in err, err
        after = {f: open(os.path.join(run_dir, f), "rb").read() for f in sorted(os.listdir(run_dir))}
        assert after == before  # nothing of the run deleted or rewritten
        # the advice holds: the rerun rewrites the shard, and the concepts are those of the data
        it.explain_dataset(model, x, "epsilon", run_dir, **kw)
        run = it.concepts.reference_examples(model, run_dir, ["c2"], str(tmp_path / f"e-{damage}"), **cargs)
        rel = it.concepts.relevance(model, x, "c2", target=2)
        np.testing.assert_array_equal(run.references("c2", 1)["indices"], np.argsort(-rel[:, 1], kind="stable")[:2])


def test_models_without_keras_input_have_known_layer_shapes(tmp_path, capsys):
    """Models saved by ``interprettensor train`` (an it.Sequential) and Sequentials built without
    keras.Input have no ``model.inputs``: the layer's shape comes from the shape they were built with.
    (Regression: "cannot tell the output shape of layer 'convolution_1'".)"""
    from interprettensor.apps.demo import build_network

    keras.utils.set_random_seed(0)
    net = build_network("convolutional")
    x = it.data.load_digits()[0][:6]
    net(x[:1])
    path = str(tmp_path / "net.keras")
    net.save(path)
    loaded = keras.models.load_model(path)
    assert not getattr(loaded, "inputs", None)
    conv = [layer.name for layer in loaded.layers if layer.name.startswith("convolution")][1]  # "convolution_1"
    R_c = it.concepts.relevance(loaded, x, layer=conv)                                         # in a fresh process
    _, lw = it.Explainer(loaded, "epsilon")(x, layerwise=True)
    np.testing.assert_allclose(R_c, lw[conv].sum((1, 2)), rtol=1e-5, atol=1e-6 * np.abs(lw[conv]).sum((1, 2, 3)).max())
    seq = keras.Sequential([keras.layers.Conv2D(3, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(2)])
    seq.build((None, 8, 8, 1))
    assert it.concepts.relevance(seq, np.ones((2, 8, 8, 1), "float32"), layer="conv").shape == (2, 3)
    unbuilt = keras.Sequential([keras.layers.Conv2D(3, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(it.ExplainError, match="input shape is not fully known.*keras.Input"):
        ConditionalExplainer(unbuilt, "epsilon", layers=["conv"])
    # the command line on the saved network and a folder of digit images
    os.makedirs(tmp_path / "digits" / "0")
    from PIL import Image
    for i in range(3):
        Image.fromarray((x[i, ..., 0] * 255).round().astype("uint8")).save(str(tmp_path / "digits" / "0" / f"d{i}.png"))
    out = str(tmp_path / "c")
    assert main(["concepts", path, str(tmp_path / "digits"), "--layer", conv, "--k", "2", "--out", out,
                 "--crop-size", "4", "--rule", "epsilon"]) == 0
    assert f"3 samples; reference examples of {conv} (25 channels)" in capsys.readouterr().out
    assert it.concepts.ConceptRun(out).layers == {conv: 25}


def test_layers_without_a_channel_axis_are_refused_unless_asked(model, tmp_path, capsys):
    x = np.random.default_rng(3).uniform(0, 1, (6, 14, 14, 3)).astype("float32")
    kw = dict(k=2, shard_size=8, crop_size=4, progress=False)
    flatten = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Flatten))
    for layer in (flatten, "d1"):
        with pytest.raises(it.ExplainError, match=rf"layer '{layer}' has output shape \(None, \d+\): no channel axis"
                                                  r".*units=True \(--units\)"):
            it.concepts.reference_examples(model, x, [layer], str(tmp_path / layer), **kw)
        assert not os.path.exists(tmp_path / layer / "concepts.json")
    run = it.concepts.reference_examples(model, x, ["d1"], str(tmp_path / "units"), units=True, **kw)
    assert run.layers == {"d1": 7} and run.kinds == {"d1": "units"}
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.save(str(tmp_path / "x.npy"), x)
    assert main(["concepts", path, str(tmp_path / "x.npy"), "--layer", flatten, "--out", str(tmp_path / "f")]) == 1
    assert "--units" in capsys.readouterr().err
    assert main(["concepts", path, str(tmp_path / "x.npy"), "--layer", "d1", "--units", "--k", "2", "--crop-size", "4",
                 "--out", str(tmp_path / "u")]) == 0
    assert "reference examples of d1 (7 units)" in capsys.readouterr().out


def test_channels_option_names_an_empty_range(model, tmp_path, capsys):
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.save(str(tmp_path / "x.npy"), np.zeros((2, 14, 14, 3), "float32"))
    assert main(["concepts", path, str(tmp_path / "x.npy"), "--layer", "c2", "--channels", "c2:3-1",
                 "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "the range '3-1' is empty" in err and "1-3" in err and "must be integers" not in err
    assert not os.path.exists(tmp_path / "c")
