"""``interprettensor evaluate`` at the edges: the sanity check with seeded methods (SmoothGrad) and with a
failing method, the region size and the random column on small and 1-D inputs, box rules' bounds."""

import csv
import os

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.apps import cli


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small CNN on 8x8x1 inputs, a (N, 100) feature model, and inputs for both."""
    d = tmp_path_factory.mktemp("ev")
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(3)])
    cnn.save(d / "cnn.keras")
    np.save(d / "x.npy", np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32))
    mlp = keras.Sequential([keras.Input((100,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    mlp.save(d / "mlp.keras")
    np.save(d / "f.npy", np.random.default_rng(1).random((4, 100)).astype(np.float32))
    return d


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sanity_check_with_smoothgrad_defaults(folder, capsys, monkeypatch):
    """SmoothGrad's default parameters carry a noise seed: it used to collide with the randomisation's."""
    monkeypatch.chdir(folder)
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "smoothgrad", "epsilon",
                         "--steps", "3", "--value-range", "0", "1", "--sanity", "--out", "sg", "-q")
    assert code == 0, err
    assert {r["method"] for r in rows("sg/randomisation.csv")} == {"smoothgrad", "epsilon"}
    assert "model randomisation (smoothgrad)" in out
    assert (folder / "sg" / "randomisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failing_method_loses_no_finished_result(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    real = it.evaluate.model_randomisation
    seen = []

    def fails_for_epsilon(model, x, method, *a, **k):
        seen.append(method)
        if method == "epsilon":
            raise RuntimeError("simulated failure")
        return real(model, x, method, *a, **k)

    monkeypatch.setattr(it.evaluate, "model_randomisation", fails_for_epsilon)
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "gradient", "epsilon", "smoothgrad",
                         "--steps", "3", "--value-range", "0", "1", "--sanity", "--out", "fail", "-q")
    assert code == 1
    assert seen == ["gradient", "epsilon", "smoothgrad"]  # the methods after the failure still ran
    assert "sanity check of 'epsilon' failed: RuntimeError: simulated failure" in err
    assert err.rstrip().splitlines()[-1].startswith("error: the sanity check failed for epsilon")
    assert {r["method"] for r in rows("fail/randomisation.csv")} == {"gradient", "smoothgrad"}
    assert (folder / "fail" / "randomisation.png").exists()
    assert {r["method"] for r in rows("fail/aopc.csv")} == {"gradient", "epsilon", "smoothgrad"}


def test_small_images_get_a_fitting_region_size_and_the_random_column(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "epsilon", "gradient",
                         "--value-range", "0", "1", "--out", "small", "-q")
    assert code == 0, err
    assert "1x1 regions (64 per input; default for 8x8 inputs: min side // 7)" in out
    assert "AOPC (MORF, uniform, 1x1 regions, 64 steps, 5 samples)" in out
    table = rows("small/aopc.csv")
    assert all(np.isfinite(float(r["aopc_minus_random"])) for r in table)
    assert "nan" not in out
    # --patch still wins
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "epsilon", "--patch", "4",
                         "--value-range", "0", "1", "--out", "small4", "-q")
    assert code == 0, err
    assert "4x4 regions (4 per input; --patch)" in out


def test_feature_vectors_say_positions_not_squares(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    code, out, err = run(capsys, "evaluate", "mlp.keras", "f.npy", "--methods", "epsilon", "gradient",
                         "--value-range", "0", "1", "--out", "vec", "-q")
    assert code == 0, err
    assert "regions of 2 positions (50 per input; default for 100 inputs: length // 49)" in out
    assert "4x4" not in out and "2x2" not in out and "nan" not in out
    assert "random baseline" in out


def test_box_rules_need_bounds_for_arrays(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--steps", "2", "--out", "box", "-q")
    assert code == 1
    assert "epsilon_gamma_box need" in err and "give --value-range LOW HIGH" in err, err
    assert not os.path.exists(folder / "box" / "aopc.csv")
    # bounds in the method's parameters are enough
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "epsilon_gamma_box:low=0,high=1",
                         "--steps", "2", "--out", "box2", "-q")
    assert code == 0, err
    # --value-range gives the bounds: the same numbers as the API with low=0, high=1
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "epsilon_gamma_box", "--steps", "2",
                         "--value-range", "0", "1", "--out", "box3", "-q")
    assert code == 0, err
    model = keras.models.load_model(folder / "cnn.keras")
    x = np.load(folder / "x.npy")
    expected = it.evaluate.region_perturbation(model, x, it.lrp(model, x, rule="epsilon_gamma_box", low=0.0, high=1.0), steps=2,
                                               value_range=(0.0, 1.0))
    assert float(rows("box3/aopc.csv")[0]["aopc"]) == pytest.approx(expected.aopc, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("args,match", [
    (("--value-range", "1", "0"), "--value-range: the low value must be below the high value, got 1 and 0"),
    (("--input-range", "2", "-1"), "--input-range: the low value must be below the high value"),
])
def test_reversed_ranges_are_errors(folder, capsys, monkeypatch, args, match):
    monkeypatch.chdir(folder)
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "epsilon", *args, "--out", "rev", "-q")
    assert code == 1 and match in err, err
