"""The command line, run in subprocesses on tiny models and data: demo, train -> explain, input formats,
clean errors (no traceback, non-zero exit), and the examples."""

import os

import numpy as np
import pytest
import warm_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = warm_python.ENV


def run(*args, cwd, ok=True, module=True, env=None, timeout=300):
    """``python -m interprettensor ARGS`` (or ``python ARGS`` with ``module=False``) in a fresh process forked
    from a warm interpreter (tests/warm_python.py)."""
    if module:
        p = warm_python.run_cli(list(args), cwd, env or ENV, timeout=timeout)
    else:
        p = warm_python.run_script(args[0], list(args[1:]), cwd, env or ENV, timeout=timeout)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    if ok:
        assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    return p


def fail(*args, cwd, match, env=None):
    p = run(*args, cwd=cwd, ok=False, env=env)
    assert p.returncode == 1, (p.returncode, p.stdout[-1000:], p.stderr[-2000:])
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert err, p.stderr[-2000:]
    assert any(m in p.stderr for m in ([match] if isinstance(match, str) else match)), p.stderr[-2000:]
    return p


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A trained tiny model (`train`, 1 epoch) and inputs in every format."""
    from PIL import Image

    from interprettensor.io.digits import load_digits

    d = tmp_path_factory.mktemp("cli")
    p = run("train", "--epochs", "1", "--out", "m.keras", "--logdir", "trainlogs", "-q", cwd=d)
    assert "test accuracy" in p.stdout and (d / "m.keras").exists()
    x, _ = load_digits()
    imgs = d / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray((x[i, ..., 0] * 255).round().astype("uint8")).save(imgs / f"digit{i}.png")
    Image.fromarray((x[2, ..., 0] * 255).round().astype("uint8")).save(d / "digit.jpg", quality=95)
    np.save(d / "batch.npy", x[:5])
    np.save(d / "one.npy", x[7, ..., 0])  # (28, 28): one sample without the channel axis
    Image.fromarray(np.zeros((28, 28, 3), "uint8")).save(d / "rgb.png")
    Image.fromarray(np.zeros((30, 20), "uint8")).save(d / "big.png")
    (d / "corrupt.keras").write_bytes(b"PK\x03\x04 this is not a zip archive")
    return d, x


def test_help_for_every_command(tmp_path):
    p = run("--help", cwd=tmp_path)
    for c in ("demo", "train", "explain"):
        assert c in p.stdout
    from interprettensor.apps.cli import main

    for c, opt in (("demo", "--pretrained"), ("train", "--dataset"), ("explain", "--rule")):
        with pytest.raises(SystemExit) as e:
            main([c, "--help"])
        assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "0"])
    assert e.value.code == 2


@pytest.mark.slow
def test_demo_writes_png_and_events(tmp_path):
    from interprettensor.io.summaries import read_events

    p = run("demo", "--epochs", "2", "--n", "3", "--aopc", "4", "--out", "out", "-q", cwd=tmp_path)
    png = tmp_path / "out" / "demo_heatmaps.png"
    assert is_png(png)
    assert is_png(tmp_path / "out" / "aopc_curves.png")  # --aopc 4: the region perturbation ran
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 600 and im.size[1] > 300  # 7 columns, 3 rows
    lines = p.stdout.splitlines()
    acc = float(next(line for line in lines if line.startswith("test accuracy")).split()[-1])
    assert 0.5 < acc <= 1.0
    table = {line.split()[0]: line.split()[1:] for line in lines if line.split()
             and line.split()[0] in ("simple", "epsilon", "flat", "ww", "alphabeta", "epsilon_gamma_box")}
    assert len(table) == 6
    s, out, _ = map(float, table["epsilon"])
    assert s == pytest.approx(out, rel=0.1)  # epsilon LRP (almost) conserves the explained output
    ev = read_events(str(tmp_path / "out" / "logs"))
    for tag in ("train/loss", "train/accuracy", "test/accuracy", "test/heatmaps/simple",
                "test/heatmaps/epsilon_gamma_box", "test/inputs"):
        assert tag in ev, sorted(ev)
    assert [s for s, _ in ev["train/loss"]] == [0, 1]
    assert any(t.startswith("test/relevance/alphabeta/") for t in ev)


@pytest.mark.slow
def test_demo_pretrained(tmp_path, capsys, monkeypatch):
    # in this process (the demo's own process start runs in test_demo_writes_png_and_events)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "demo", "--pretrained", "--n", "2", "--aopc", "0", "--out", "o", "-q")
    assert code == 0, err
    acc = float(next(line for line in out.splitlines() if line.startswith("test accuracy")).split()[-1])
    assert acc > 0.75  # the original project's weights: about 84% on the digits
    assert is_png(tmp_path / "o" / "demo_heatmaps.png")
    assert not (tmp_path / "o" / "aopc_curves.png").exists()  # --aopc 0 skips the region perturbation


def test_train_then_explain_all_formats(work):
    d, x = work
    from interprettensor.io.summaries import read_events

    assert "train/loss" in read_events(str(d / "trainlogs"))
    p = run("explain", "m.keras", "imgs", "digit.jpg", "batch.npy", "one.npy", "--out", "ex",
            "--rule", "epsilon_gamma_box", "--low", "0", "--high", "1", "--batch-size", "4", cwd=d)
    assert "explained 9 input(s)" in p.stdout
    names = ["digit0", "digit1", "digit", "batch_0", "batch_1", "batch_2", "batch_3", "batch_4", "one"]
    for n in names:
        assert is_png(d / "ex" / f"{n}_heatmap.png") and is_png(d / "ex" / f"{n}_overlay.png"), n
    z = np.load(d / "ex" / "relevances.npz")
    assert sorted(z["names"]) == sorted(names)
    assert z["relevance"].shape == (9, 28, 28, 1)
    # the .npy batch is used as is: its relevance matches the library's on the same model
    import keras

    import interprettensor as it

    model = keras.models.load_model(d / "m.keras")
    R = it.lrp(model, x[:5], rule="epsilon_gamma_box", low=0.0, high=1.0)
    idx = [list(z["names"]).index(f"batch_{i}") for i in range(5)]
    np.testing.assert_allclose(z["relevance"][idx], R, rtol=1e-4, atol=1e-6)
    # the PNG digit reads back to (almost) the same input: same prediction as the array
    i_png, i_npy = list(z["names"]).index("digit0"), list(z["names"]).index("batch_0")
    assert z["targets"][i_png] == z["targets"][i_npy]
    explained = z["outputs"][i_npy, z["targets"][i_npy]]
    assert explained == pytest.approx(float(z["relevance"][i_npy].sum()), rel=0.05)
    assert list(z["indices"]) == list(range(9)) and z["valid"].all()


def test_explain_target_and_options(work, capsys, monkeypatch):
    d, _ = work
    monkeypatch.chdir(d)
    code, _, err = cli(capsys, "explain", "m.keras", "batch.npy", "--target", "3", "--rule", "alphabeta", "--alpha",
                       "2", "--beta", "1", "--out", "ex_t", "--no-png", "-q")
    assert code == 0, err
    z = np.load(d / "ex_t" / "relevances.npz")
    assert list(z["targets"]) == [3] * 5
    assert not any(f.endswith(".png") for f in os.listdir(d / "ex_t"))


def test_explain_bad_inputs_give_clean_errors(work):
    """A real process: exit code 1, an ``error:`` line and no traceback (the other bad inputs run in this
    process, below: the same entry point, without a process start that imports TensorFlow each)."""
    d, _ = work
    fail("explain", "missing.keras", "imgs", cwd=d, match="does not exist")


def cli(capsys, *args):
    """The same entry point in this process (faster): exit code, stdout, stderr."""
    from interprettensor.apps.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.mark.parametrize("args,match", [
    (("corrupt.keras", "imgs"), "cannot load the model"),
    (("m.keras", "rgb.png"), "has shape (28, 28, 3) (3 channels), but the model expects (28, 28, 1)"),
    (("m.keras", "big.png"), "'big.png' has shape (30, 20, 1), but the model expects (28, 28, 1)"),  # both shapes
    (("m.keras", "imgs", "--rule", "no_such_rule"), "unknown rule or preset 'no_such_rule'"),
    (("m.keras", "imgs", "--out", "m.keras/sub"), "cannot write to the output folder"),
    (("m.keras", "imgs", "--target", "12", "--out", "ex_bad"), "target out of range"),
    (("m.keras", "nothing.txt"), "does not exist"),
    (("m.keras", "m.keras"), "unsupported file type"),
])
def test_explain_errors_in_process(work, capsys, monkeypatch, args, match):
    d, _ = work
    monkeypatch.chdir(d)
    code, _, err = cli(capsys, "explain", *args, "-q")
    assert code == 1 and any(line.startswith("error: ") for line in err.splitlines()), err
    assert match in err, err


def test_later_failure_keeps_earlier_outputs(work, capsys, monkeypatch):
    d, _ = work
    monkeypatch.chdir(d)
    code, _, err = cli(capsys, "explain", "m.keras", "imgs/digit0.png", "imgs/digit1.png", "big.png", "--out",
                       "partial")
    assert code == 1 and any(line.startswith("error: ") for line in err.splitlines()) and "big.png" in err, err
    assert "wrote the outputs of the first 2" in err
    assert is_png(d / "partial" / "digit0_heatmap.png") and is_png(d / "partial" / "digit1_overlay.png")
    z = np.load(d / "partial" / "relevances.npz")
    assert list(z["names"]) == ["digit0", "digit1"]


def test_train_mnist_offline_is_a_clean_error(tmp_path):
    env = dict(ENV, INTERPRETTENSOR_DATASET_MIRROR=(tmp_path / "offline").as_uri())
    p = fail("train", "--dataset", "mnist", "--data-dir", "cache", "-q", cwd=tmp_path, env=env, match="digits")
    assert "download failed" in p.stderr
    fail("train", "--out", "model.h5", cwd=tmp_path, match=".keras")


@pytest.mark.slow
def test_example_scripts_write_tensorboard_logs(tmp_path):
    from interprettensor.io.summaries import read_events

    run(os.path.join(ROOT, "examples", "mnist_convolutional.py"), "--max_steps=12", "--test_every=5",
        "--relevance=True", "--relevance_method=epsilon", "--save_model=True", "--quiet", cwd=tmp_path, module=False)
    ev = read_events(str(tmp_path / "mnist_convolutional_logs"))
    assert [s for s, _ in ev["test/accuracy"]] == [0, 5, 10]
    assert "train/loss" in ev and "test/relevance" in ev and any(t.startswith("test/relevance/") for t in ev)
    assert (tmp_path / "mnist_convolutional_model" / "model.keras").exists()
    p = run(os.path.join(ROOT, "examples", "mnist_linear.py"), "--max_steps=3", "--test_every=2",
            "--quiet", cwd=tmp_path, module=False)
    assert "Accuracy at step 2" in p.stdout


def test_explain_plain_keras_model(work, capsys, monkeypatch):
    """A model trained anywhere (plain Keras layers, RGB input) and saved as .keras."""
    import keras
    from PIL import Image

    d, _ = work
    monkeypatch.chdir(d)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 10, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.save("plain.keras")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save("c.png")
    code, out, err = cli(capsys, "explain", "plain.keras", "c.png", "rgb.png", "--out", "plain_ex",
                         "--input-range", "-1", "1", "--rule", "epsilon_plus", "-q")
    assert code == 1 and "rgb.png" in err and "(12, 10, 3)" in err  # wrong size, after c.png was written
    z = np.load("plain_ex/relevances.npz")
    assert list(z["names"]) == ["c"] and z["relevance"].shape == (1, 12, 10, 3)
    x = np.asarray(Image.open("c.png"), "float32")[None] / 255.0 * 2 - 1
    import interprettensor as it

    np.testing.assert_allclose(z["relevance"], it.lrp(model, x, rule="epsilon_plus"), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("argv,want", [
    (["concepts", "m.keras", "x.npy", "--layer", "c", "--out", "C"],
     "interrupted; the finished statistics shards in C are kept: run the same command again to continue"),
    (["concepts", "m.keras", "x.npy", "--layer", "c", "--out", "C", "--restart"],
     "interrupted; the finished statistics shards in C are kept: run the same command again without --restart to "
     "continue"),
    (["spray", "RUN"], "the finished classes in RUN/spray are kept: run the same command again to continue"),
    (["explain", "m.keras", "x.npy", "--out", "E", "--shard-size", "4"],
     "interrupted; the finished shards in E are kept: run the same command again with --resume to continue"),
    (["explain", "m.keras", "x.npy", "--out", "E", "--resume"],
     "interrupted; the finished shards in E are kept: run the same command again to continue"),
    (["explain", "m.keras", "x.npy", "--out", "E"], "interrupted\n"),
])
def test_ctrl_c_says_how_to_continue(capsys, monkeypatch, argv, want):
    import importlib

    from interprettensor.apps import cli as cli_mod

    def interrupted(args):
        raise KeyboardInterrupt

    module = importlib.import_module(f"interprettensor.apps.commands.{argv[0]}")
    monkeypatch.setattr(module, f"cmd_{argv[0]}", interrupted)
    assert cli_mod.main(argv) == 130
    err = capsys.readouterr().err
    assert want in err and "Traceback" not in err, err
