"""The text demo: generated sentences whose class is decided by one marker word, a small transformer,
AttnLRP / CP-LRP relevance on the marker (the known answer), its HTML / PNG / JSON outputs and the
``demo-text`` subcommand (a run, and clean errors without a traceback)."""

import html.parser
import json
import os
import re

import numpy as np
import pytest
import warm_python
from PIL import Image

from interprettensor.apps import demo_text as dt

#: a small configuration that still trains to (near) perfect accuracy in a few seconds
SMALL = {"epochs": 3, "n_train": 600, "n_test": 150, "n_examples": 4, "seed": 0}


class Blocks(html.parser.HTMLParser):
    """The sentence blocks of the demo's HTML: each one's title and token spans (text, title attribute)."""

    def __init__(self):
        super().__init__()
        self.blocks: list[dict] = []
        self.tags: list[str] = []
        self._where = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "div" and a.get("class") == "it-sentence":
            self.blocks.append({"title": "", "spans": []})
        elif tag == "div" and a.get("class") == "it-title":
            self._where = "title"
        elif tag == "span" and a.get("class") == "it-token":
            self.blocks[-1]["spans"].append({"text": "", "R": float(a["title"].removeprefix("R="))})
            self._where = "span"

    def handle_endtag(self, tag):
        if tag in ("div", "span"):
            self._where = None

    def handle_data(self, data):
        if self._where == "title":
            self.blocks[-1]["title"] += data
        elif self._where == "span":
            self.blocks[-1]["spans"][-1]["text"] += data


# ---------------------------------------------------------------------------------- data (no TensorFlow)
def test_sentences_hold_exactly_one_marker_that_decides_the_class():
    ids, labels, where = dt.make_sentences(400, np.random.default_rng(3))
    assert ids.shape == (400, dt.SEQ_LEN) and ids.dtype == np.int32
    assert np.all(ids[:, 0] == dt.CLS)
    lengths = (ids != dt.PAD).sum(1) - 1  # words after [CLS]
    assert lengths.min() >= 8 and lengths.max() <= 16 and len(set(lengths)) > 5
    for row, n in zip(ids, lengths):  # padding only at the end, no special token among the words
        assert np.all(row[1:1 + n] >= dt.FIRST_MARKER) and np.all(row[1 + n:] == dt.PAD)
    markers = (ids >= dt.FIRST_MARKER) & (ids < dt.FIRST_FILLER)
    assert np.all(markers.sum(1) == 1)
    np.testing.assert_array_equal(markers.argmax(1), where)
    np.testing.assert_array_equal(ids[np.arange(400), where] - dt.FIRST_MARKER, labels)
    assert set(labels) == {0, 1, 2} and len(dt.VOCAB) == 45 and len(set(dt.VOCAB)) == len(dt.VOCAB)
    assert dt.VOCAB[dt.PAD] == "[PAD]" and dt.VOCAB[dt.CLS] == "[CLS]"
    assert [dt.VOCAB[dt.FIRST_MARKER + c] for c in range(3)] == ["excellent", "terrible", "average"]
    a, _, _ = dt.make_sentences(5, np.random.default_rng(9))
    b, _, _ = dt.make_sentences(5, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def test_marker_top_fraction_ignores_padding():
    ids = np.array([[1, 7, 2, 9, 0, 0], [1, 3, 8, 0, 0, 0]])
    R = np.array([[0.1, 0.2, 0.9, 0.0, 5.0, 5.0],  # padding's relevance does not count
                  [0.0, 0.1, 0.3, 9.0, 0.0, 0.0]])
    assert dt.marker_top_fraction(R, ids, np.array([2, 1])) == 0.5
    assert dt.marker_top_fraction(R, ids, np.array([2, 2])) == 1.0
    share = dt.marker_share(R, ids, np.array([2, 2]))  # 0.9 / 1.2 and 0.3 / 0.4
    np.testing.assert_allclose(share, (0.75 + 0.75) / 2)


def test_bad_arguments_fail_before_training(tmp_path):
    for kw, match in (({"epochs": 0}, "epochs must be positive"), ({"n_train": -1}, "n_train"),
                      ({"dim": 30, "heads": 4}, "multiple of heads"), ({"cmap": "nope"}, "colour map")):
        with pytest.raises(ValueError, match=match):
            dt.run_text_demo(str(tmp_path / "o"), quiet=True, **kw)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_text")
    return dt.run_text_demo(str(out), quiet=True, **SMALL), out


@pytest.mark.slow
def test_model_learns_and_attnlrp_finds_the_marker(small_run):
    res, out = small_run
    assert res["accuracy"] > 0.9
    assert res["marker_top"]["attnlrp"] >= 0.95  # the acceptance figure
    assert res["marker_top"]["cp_lrp"] >= 0.9
    for m in res["methods"].values():
        assert 0.3 < m["marker_share"] <= 1.0
    assert res["explained"] == round(res["accuracy"] * SMALL["n_test"])
    with open(out / "text_demo_summary.json", encoding="utf-8") as f:
        saved = json.load(f)
    for key in ("accuracy", "explained", "marker_top", "methods", "n_train", "n_test", "epochs", "seed", "seconds"):
        assert saved[key] == res[key], key
    assert saved["methods"]["AttnLRP"]["preset"] == "attnlrp" and saved["methods"]["CP-LRP"]["preset"] == "cp_lrp"
    assert res["html"] == str(out / "text_demo.html") and res["png"] == str(out / "text_demo.png")


@pytest.mark.slow
def test_html_shows_each_example_without_padding(small_run):
    _, out = small_run
    text = (out / "text_demo.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    p = Blocks()
    p.feed(text)
    p.close()
    assert p.tags.count("div") == text.count("</div>") and p.tags.count("span") == text.count("</span>")
    blocks = p.blocks
    assert len(blocks) == 2 * SMALL["n_examples"]  # each example with AttnLRP and CP-LRP
    # regenerate the test set to know each example's tokens
    rng = np.random.default_rng(SMALL["seed"])
    dt.make_sentences(SMALL["n_train"], rng)
    x_test, y_test, where = dt.make_sentences(SMALL["n_test"], rng)
    classes = set()
    marker_top = 0
    for k, b in enumerate(blocks):
        m = re.match(r"test sentence (\d+): '(\w+)' -> class (\d) \(\w+\), (AttnLRP|CP-LRP)$", b["title"])
        assert m, b["title"]
        i, method = int(m.group(1)), m.group(4)
        assert method == ("AttnLRP" if k % 2 == 0 else "CP-LRP")
        assert m.group(2) == dt.MARKERS[y_test[i]] and int(m.group(3)) == y_test[i]
        classes.add(int(y_test[i]))
        visible = [dt.VOCAB[t] for t in x_test[i] if t != dt.PAD]
        assert [s["text"] for s in b["spans"]] == visible  # one span per visible token, no [PAD]
        R = np.array([s["R"] for s in b["spans"]])
        assert np.isfinite(R).all() and np.abs(R).max() > 0
        marker_top += int(R.argmax() == where[i])
    assert classes == {0, 1, 2}
    assert marker_top >= len(blocks) - 1
    assert text.count('class="it-token"') == sum(len(b["spans"]) for b in blocks)


@pytest.mark.slow
def test_png_is_an_image_of_the_examples(small_run):
    _, out = small_run
    path = out / "text_demo.png"
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] == 800 and im.size[1] > 8 * 40
        a = np.asarray(im.convert("RGB"))
    assert (a[..., 0] > 200).any() and ((a[..., 0] > 200) & (a[..., 1] < 80)).any()  # red (positive) boxes


# ------------------------------------------------------------------------------------------- command
def cli(*args, cwd, timeout=300):
    p = warm_python.run_cli(list(args), cwd, timeout=timeout)  # a fresh process (tests/warm_python.py)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_command_runs(tmp_path):
    p = cli("demo-text", "--out", "tmp", "--quiet", "--train-size", "300", "--test-size", "60", "--epochs", "2",
            "--examples", "2", "--blocks", "1", "--seed", "1", cwd=tmp_path)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    assert "marker top" not in p.stdout  # --quiet: no table, no progress
    assert "text_demo.html" in p.stdout and "text_demo_summary.json" in p.stdout
    for name in ("text_demo.html", "text_demo.png", "text_demo_summary.json"):
        assert (tmp_path / "tmp" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "tmp" / "text_demo_summary.json").read_text())
    assert saved["n_train"] == 300 and saved["n_test"] == 60 and saved["blocks"] == 1 and saved["seed"] == 1


def test_command_errors_are_clear(tmp_path, capsys):
    from interprettensor.apps.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["demo-text", "--out", str(tmp_path / "afile" / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to the output folder") and "Traceback" not in err
    assert main(["demo-text", "--out", str(tmp_path / "o"), "--cmap", "nope", "-q"]) == 1
    err = capsys.readouterr().err
    assert "error: unknown colour map 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    for bad in (["--epochs", "0"], ["--train-size", "x"]):
        with pytest.raises(SystemExit) as e:
            main(["demo-text", *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "expected a positive integer" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["demo-text", "--help"])
    assert e.value.code == 0
    assert "--train-size" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ recurrent models
@pytest.mark.slow
def test_recurrent_models_learn_and_lrp_finds_the_marker(tmp_path):
    for arch in ("lstm", "gru"):
        res = dt.run_text_demo(str(tmp_path), quiet=True, arch=arch, **SMALL)
        assert res["accuracy"] > 0.9, arch
        assert res["marker_top"]["epsilon"] >= 0.95, (arch, res["marker_top"])
        assert res["methods"]["LRP-epsilon"]["preset"] == "epsilon"
        saved = json.loads((tmp_path / f"text_demo_{arch}_summary.json").read_text(encoding="utf-8"))
        assert saved["arch"] == arch and saved["rule"].startswith("epsilon")
        gxi = saved["marker_top"]["gradient_x_input"]  # the baseline's figure is there (its value not asserted)
        assert isinstance(gxi, float) and saved["methods"]["Gradient x input"]["marker_top"] == gxi
        for ext in ("html", "png"):
            assert (tmp_path / f"text_demo_{arch}.{ext}").stat().st_size > 0
    assert not (tmp_path / "text_demo_summary.json").exists()  # the transformer's files are left alone
