"""``interprettensor view``: the server's API on real explain runs and on SpRAy / concepts files written
here as docs (formats of issue 13) describe them, and the page in a headless Chromium (playwright
driving the system's ``chromium``; skipped with a message where there is none)."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from interprettensor.apps import cli
from interprettensor.apps.viewer import make_server, serve_in_thread

N, CLASSES = 24, 3


# ------------------------------------------------------------------ fixtures: runs on disk
def _tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    return keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu"), L.Flatten(),
                             L.Dense(CLASSES)])


def _write_npz(path, arrays):
    """An uncompressed .npz as the project's shards are (numpy.savez stores without compression)."""
    np.savez(path, **arrays)


def _spray(run, x_labels):
    """RUN/spray/spray.json and class-<c>.npz exactly as /work/notes/formats.md describes them."""
    folder = os.path.join(run, "spray")
    os.makedirs(folder)
    rng = np.random.default_rng(1)
    classes = {}
    for c in range(CLASSES):
        idx = np.flatnonzero(x_labels == c).astype(np.int64)
        n = len(idx)
        km2 = (np.arange(n) % 2).astype(np.int64)
        db = np.where(np.arange(n) % 3 == 0, -1, km2).astype(np.int64)
        eig = np.sort(np.concatenate([[0.0], rng.random(5)]))
        _write_npz(os.path.join(folder, f"class-{c}.npz"), {
            "indices": idx, "eigenvalues": eig.astype(np.float64),
            "spectral": rng.normal(size=(n, 6)).astype(np.float32),
            "tsne": np.stack([km2 * 10.0 + rng.random(n), rng.random(n)], 1).astype(np.float32),
            "cluster-kmeans-2": km2, "cluster-dbscan": db})
        classes[str(c)] = {"file": f"class-{c}.npz", "n": n, "clusterings": ["dbscan", "kmeans-2"],
                           "embeddings": ["spectral", "tsne"], "eigengap": 2}
    meta = {"format": 1, "kind": "spray", "run": run,
            "params": {"preprocessing": "sum_channels", "n_neighbors": 5, "n_eigenvectors": 6,
                       "clusterings": ["kmeans-2", "dbscan"], "random_state": 0}, "classes": classes}
    with open(os.path.join(folder, "spray.json"), "w") as f:
        json.dump(meta, f)


def _concepts(crun):
    """CRUN/concepts.json and layer-<safe name>.npz as the formats describe (k=4, S=16, 3 channels)."""
    os.makedirs(crun)
    C, k, S = 3, 4, 16
    rng = np.random.default_rng(2)
    arrays = {}
    for mode in ("relevance", "activation"):
        idx = rng.integers(0, N, size=(C, k)).astype(np.int64)
        idx[2, 3] = -1  # channel 2 has only 3 examples
        vals = -np.sort(-rng.random((C, k)), axis=1).astype(np.float32)
        arrays.update({f"{mode}_indices": idx, f"{mode}_values": vals,
                       f"{mode}_boxes": np.tile(np.array([0, 0, 4, 4], np.int64), (C, k, 1)),
                       f"{mode}_crops": rng.integers(0, 256, size=(C, k, S, S, 3)).astype(np.uint8),
                       f"{mode}_heatmaps": rng.normal(size=(C, k, S, S)).astype(np.float16)})
    arrays["mean_relevance"] = np.array([0.1, 0.5, -0.2], np.float32)
    _write_npz(os.path.join(crun, "layer-conv_1.npz"), arrays)
    meta = {"format": 1, "kind": "concepts", "model": "tiny.keras", "rule": "epsilon", "params": {},
            "n_samples": N, "k": k, "input_shape": [8, 8, 1], "complete": True,
            "layers": {"conv/1": {"channels": C, "file": "layer-conv_1.npz"}}}
    with open(os.path.join(crun, "concepts.json"), "w") as f:
        json.dump(meta, f)
    return arrays


def _big_run(folder, n=50_000, shards=5):
    """A fake explain_dataset run of ``n`` samples (2x2x1 each) in a few shards, manifest included."""
    os.makedirs(folder)
    size = n // shards
    entries = []
    for k in range(shards):
        idx = np.arange(k * size, (k + 1) * size, dtype=np.int64)
        _write_npz(os.path.join(folder, f"shard-{k:05d}.npz"), {
            "relevance": np.random.default_rng(k).normal(size=(size, 2, 2, 1)).astype(np.float32),
            "indices": idx, "targets": (idx % 10).astype(np.int32), "outputs": np.zeros((size, 10), np.float32),
            "valid": np.ones(size, bool), "labels": (idx % 7).astype(np.int64)})
        entries.append({"file": f"shard-{k:05d}.npz", "start": int(k * size), "count": size, "nonfinite": 0})
    manifest = {"format": 1, "complete": True, "n_samples": n, "shards": entries,
                "identity": {"rule": "'epsilon' {} (rules 0)", "sample_shape": [2, 2, 1], "shard_size": size}}
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import interprettensor as it

    root = tmp_path_factory.mktemp("viewer")
    x = np.random.default_rng(0).random((N, 8, 8, 1), dtype=np.float32)
    y = np.arange(N) % CLASSES
    model = _tiny_model()
    run = root / "RUN"
    it.explain_dataset(model, (x, y), "epsilon", out=str(run / "epsilon"), shard_size=10, progress=False,
                       store_inputs=True)
    it.explain_dataset(model, (x, y), "alphabeta", out=str(run / "alphabeta"), shard_size=10, progress=False,
                       store_inputs=True)
    _spray(str(run / "epsilon"), y)
    concepts = _concepts(str(root / "CRUN"))
    _big_run(str(root / "BIG"))
    return {"root": root, "run": str(run), "crun": str(root / "CRUN"), "big": str(root / "BIG"), "x": x, "y": y,
            "concepts": concepts}


@pytest.fixture(scope="module")
def server(runs):
    srv = make_server([runs["run"], runs["crun"]])
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv, path, **params):
    """(status, body bytes, content type) of a GET."""
    from urllib.parse import urlencode

    url = srv.url.rstrip("/") + path + ("?" + urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type")


def get_json(srv, path, **params):
    status, body, ctype = get(srv, path, **params)
    assert ctype == "application/json", (status, body[:200])
    return status, json.loads(body)


def decode_png(data):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ------------------------------------------------------------------ the API, without a browser
def test_runs_are_discovered_and_grouped(server, runs):
    status, info = get_json(server, "/api/runs")
    assert status == 200
    names = {r["name"]: r for r in info["runs"]}
    assert sorted(names) == ["alphabeta", "epsilon"]  # found under RUN/, one level down
    assert names["epsilon"]["group"] == names["alphabeta"]["group"]  # same data: the rule can be switched
    assert names["epsilon"]["rule"] == "epsilon" and names["alphabeta"]["rule"] == "alphabeta"
    assert names["epsilon"]["has_inputs"] and names["epsilon"]["has_labels"] and names["epsilon"]["n"] == N
    assert names["epsilon"]["labels"] == {str(c): N // CLASSES for c in range(CLASSES)}
    assert list(info["spray"]) == ["epsilon"]
    assert info["spray"]["epsilon"]["classes"]["1"]["clusterings"] == ["dbscan", "kmeans-2"]
    assert [c["name"] for c in info["concepts"]] == ["CRUN"]
    assert info["concepts"][0]["layers"] == {"conv/1": {"channels": 3}}


def test_samples_pages_and_filters(server, runs):
    _, page = get_json(server, "/api/samples", run="epsilon", offset=5, limit=4)
    assert page["total"] == N and [it["index"] for it in page["items"]] == [5, 6, 7, 8]
    _, page = get_json(server, "/api/samples", run="epsilon", label=2, limit=100)
    assert [it["index"] for it in page["items"]] == list(np.flatnonzero(runs["y"] == 2))
    assert all(it["label"] == 2 and it["target"] == 2 for it in page["items"])  # labels were explained
    _, page = get_json(server, "/api/samples", run="epsilon", ids="7,3")
    assert [it["index"] for it in page["items"]] == [7, 3]


def test_heatmap_png_is_the_bwr_colour_of_the_relevance(server, runs):
    import interprettensor as it

    R = it.load_relevances(os.path.join(runs["run"], "epsilon"))["relevance"][5, ..., 0].astype(np.float64)
    v = R / np.abs(R).max()
    # blue-white-red, by hand: white at 0, red at +1, blue at -1
    want = np.stack([np.where(v < 0, 1 + v, 1), 1 - np.abs(v), np.where(v > 0, 1 - v, 1)], -1) * 255
    status, data, ctype = get(server, "/img/sample.png", run="epsilon", index=5, kind="heatmap", cmap="bwr", size=8)
    assert status == 200 and ctype == "image/png"
    got = decode_png(data).astype(np.float64)
    assert got.shape == (8, 8, 3)
    assert np.abs(got - want).max() <= 2.0
    # the input: scaled to its own range, grey
    x = runs["x"][5, ..., 0].astype(np.float64)
    inp = decode_png(get(server, "/img/sample.png", run="epsilon", index=5, kind="input", size=8)[1])
    np.testing.assert_allclose(inp[..., 0], (x - x.min()) / (x.max() - x.min()) * 255, atol=1.0)
    # enlarged for thumbnails: pixels repeated
    big = decode_png(get(server, "/img/sample.png", run="epsilon", index=5, kind="heatmap", size=64)[1])
    np.testing.assert_array_equal(big[::8, ::8], got.astype(np.uint8))


def test_spray_and_concepts_api(server, runs):
    _, d = get_json(server, "/api/spray", run="epsilon", **{"class": "1", "embedding": "tsne"})
    want = np.load(os.path.join(runs["run"], "epsilon", "spray", "class-1.npz"))
    assert d["indices"] == want["indices"].tolist()
    assert d["clusterings"]["dbscan"] == want["cluster-dbscan"].tolist()
    np.testing.assert_allclose(d["points"], want["tsne"], atol=1e-4)
    _, d = get_json(server, "/api/spray", run="epsilon", **{"class": "1", "embedding": "spectral"})
    assert d["columns"] == [1, 2]  # the first eigenvalue is 0: its constant eigenvector is not shown
    np.testing.assert_allclose(d["points"], want["spectral"][:, 1:3], atol=1e-4)
    _, ch = get_json(server, "/api/concepts/channels", run="CRUN", layer="conv/1", order="relevance")
    assert [c["channel"] for c in ch["channels"]] == [1, 0, 2]  # by mean relevance, descending
    _, ex = get_json(server, "/api/concepts/examples", run="CRUN", layer="conv/1", channel=2, mode="activation")
    assert [e["sample"] for e in ex["examples"]] == runs["concepts"]["activation_indices"][2, :3].tolist()
    crop = decode_png(get(server, "/img/concept.png", run="CRUN", layer="conv/1", channel=1, mode="relevance",
                          rank=2, kind="crop", size=16)[1])
    np.testing.assert_array_equal(crop, runs["concepts"]["relevance_crops"][1, 2])


def test_api_errors_are_4xx_messages(server, runs):
    cases = [({"run": "nope"}, "/api/samples", 404, "no explain run 'nope'; runs: alphabeta, epsilon"),
             ({"run": "epsilon", "offset": "x"}, "/api/samples", 400, "parameter 'offset' must be an integer"),
             ({"run": "epsilon", "index": 999}, "/api/sample", 404, "has no sample 999"),
             ({"run": "epsilon", "index": 1, "cmap": "nocmap"}, "/img/sample.png", 400, "unknown colour map 'nocmap'"),
             ({"run": "alphabeta", "class": "1"}, "/api/spray", 404, "has no SpRAy results"),
             ({"run": "epsilon", "class": "9"}, "/api/spray", 400, "no class '9'"),
             ({"run": "CRUN", "layer": "x"}, "/api/concepts/channels", 400, "has no layer 'x'"),
             ({}, "/api/nothing", 404, "no such route")]
    for params, path, code, msg in cases:
        status, body = get_json(server, path, **params)
        assert status == code and msg in body["error"], (path, params, status, body)
        assert "Traceback" not in body["error"]


def test_run_without_inputs_says_so(tmp_path):
    import interprettensor as it

    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    it.explain_dataset(_tiny_model(), x, out=str(tmp_path / "r"), shard_size=4, progress=False)
    srv = make_server([str(tmp_path / "r")])
    serve_in_thread(srv)
    try:
        _, info = get_json(srv, "/api/runs")
        assert not info["runs"][0]["has_inputs"]
        status, body = get_json(srv, "/img/sample.png", run="r", index=0, kind="overlay")
        assert status == 404 and "store_inputs=True (--store-inputs)" in body["error"]
        assert get(srv, "/img/sample.png", run="r", index=0, kind="heatmap")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_relevances_npz_of_explain_is_a_run(tmp_path):
    """What `interprettensor explain --store-inputs` writes without --shard-size: a relevances.npz (np.savez)."""
    rng = np.random.default_rng(3)
    R, x = rng.normal(size=(5, 6, 6, 3)).astype(np.float32), rng.random((5, 6, 6, 3), dtype=np.float32)
    (tmp_path / "out").mkdir()
    np.savez(tmp_path / "out" / "relevances.npz", relevance=R, indices=np.arange(5), targets=np.array([1, 0, 1, 1, 2]),
             outputs=rng.normal(size=(5, 3)).astype(np.float32), valid=np.ones(5, bool),
             names=np.array([f"img{i}" for i in range(5)]), inputs=x)
    for path in (tmp_path / "out", tmp_path / "out" / "relevances.npz"):
        srv = make_server([str(path)])
        serve_in_thread(srv)
        try:
            _, info = get_json(srv, "/api/runs")
            assert [(r["name"], r["n"], r["has_inputs"], r["targets"]) for r in info["runs"]] == \
                [(info["runs"][0]["name"], 5, True, {"0": 1, "1": 3, "2": 1})]
            name = info["runs"][0]["name"]
            _, page = get_json(srv, "/api/samples", run=name, target=1)
            assert [(i["index"], i["name"]) for i in page["items"]] == [(0, "img0"), (2, "img2"), (3, "img3")]
            _, d = get_json(srv, "/api/sample", run=name, index=4)
            assert d["top_outputs"][0]["class"] == int(np.argmax(np.load(path if path.suffix else path / "relevances.npz")
                                                                 ["outputs"][4]))
            assert abs(d["relevance_sum"] - float(R[4].astype(np.float64).sum())) < 1e-3
            # an RGB input: its own channels, scaled to its range
            img = decode_png(get(srv, "/img/sample.png", run=name, index=4, kind="input", size=6)[1])
            np.testing.assert_allclose(img, (x[4] - x[4].min()) / (x[4].max() - x[4].min()) * 255, atol=1.0)
        finally:
            srv.shutdown()
            srv.server_close()


def test_large_run_pages_without_loading_relevance(runs):
    t0 = time.perf_counter()
    srv = make_server([runs["big"]])
    serve_in_thread(srv)
    try:
        _, page = get_json(srv, "/api/samples", run="BIG", offset=49_990, limit=48)
        assert page["total"] == 50_000 and [it["index"] for it in page["items"]] == list(range(49_990, 50_000))
        _, page = get_json(srv, "/api/samples", run="BIG", label=3, offset=7000, limit=5)
        assert [it["index"] for it in page["items"]] == [3 + 7 * i for i in range(7000, 7005)]
        assert get(srv, "/img/sample.png", run="BIG", index=31_234, kind="heatmap")[0] == 200
        elapsed = time.perf_counter() - t0
        # relevance is memory-mapped per shard, never read as a whole: only the metadata is in memory
        cached = srv.viewer.members.cache
        assert all(isinstance(a, np.memmap) for (f, k), a in cached.items() if k == "relevance")
        assert sum(k == "relevance" for _, k in cached) == 1  # only the shard of the picture
    finally:
        srv.shutdown()
        srv.server_close()
    assert elapsed < 20, elapsed  # generous: about a second on 2 cores


def test_cli_errors_name_the_path(tmp_path, capsys):
    assert cli.main(["view", str(tmp_path / "missing"), "--no-browser"]) == 1
    err = capsys.readouterr().err
    assert "missing' does not exist; expected a run folder (manifest.json and shard-*.npz" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["view", str(tmp_path / "empty"), "--no-browser"]) == 1
    assert "empty' holds no run the viewer can show" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "concepts.json").write_text("[1, 2]")
    assert cli.main(["view", str(tmp_path / "bad"), "--no-browser"]) == 1
    assert "concepts.json' is not a concepts run" in capsys.readouterr().err


def test_cli_prints_the_url_and_opens_the_browser(runs, monkeypatch, capsys):
    import webbrowser

    from interprettensor.apps.viewer.server import ViewerServer

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url))
    monkeypatch.setattr(ViewerServer, "serve_forever", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(["view", runs["run"], "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 explain run(s), 1 with SpRAy results, 0 concepts run(s)" in out
    url = out.split("serving on ")[1].split()[0]
    assert url.startswith("http://127.0.0.1:") and opened == [url]
    assert cli.main(["view", runs["run"], "--no-browser"]) == 0 and opened == [url]


def test_view_needs_no_tensorflow_and_serves_from_the_command_line(runs):
    """A separate process: the command answers, and neither TensorFlow nor Keras was imported."""
    code = ("import sys, threading, urllib.request, json\n"
            "from interprettensor.apps import cli\n"
            "from interprettensor.apps.viewer.server import ViewerServer\n"
            "orig = ViewerServer.serve_forever\n"
            "def serve(self):\n"
            "    t = threading.Thread(target=orig, args=(self,), daemon=True)\n"
            "    t.start()\n"
            "    body = urllib.request.urlopen(self.url + 'img/sample.png?run=epsilon&index=3&kind=overlay').read()\n"
            "    runs = json.loads(urllib.request.urlopen(self.url + 'api/runs').read())\n"
            "    print('PNG', body[:4] == b'\\x89PNG', len(runs['runs']))\n"
            "    self.shutdown()\n"
            "    t.join()\n"
            "ViewerServer.serve_forever = serve\n"
            f"rc = cli.main(['view', {runs['run']!r}, '--no-browser'])\n"
            "print('RC', rc, 'TF', 'tensorflow' in sys.modules, 'KERAS', 'keras' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "PNG True 2" in p.stdout and "RC 0 TF False KERAS False" in p.stdout, (p.stdout, p.stderr[-2000:])



def test_an_internal_error_is_a_500_message_printed_with_its_traceback(server, monkeypatch, capfd):
    """A bug in an answer: the page gets a JSON message (500), the terminal the traceback, the server
    keeps it (``internal_errors``, read by the page tests' messages) and serves on."""
    def broken(q):
        raise RuntimeError("a planted bug")

    monkeypatch.setattr(server.viewer, "api_runs", broken)
    status, body, _ = get(server, "/api/runs")
    assert status == 500 and json.loads(body) == {"error": "internal error: RuntimeError: a planted bug"}
    path, trace = server.internal_errors.pop()
    assert path == "/api/runs" and "RuntimeError: a planted bug" in trace
    assert "internal error answering /api/runs" in capfd.readouterr().err
    monkeypatch.undo()
    assert get(server, "/api/runs")[0] == 200

def test_dropped_requests_are_not_reported_and_the_server_serves_on(server, capfd):
    """A browser cancels image requests whose source changed: the connection resets mid-answer. The
    server says nothing about it (before: a traceback per dropped request on the terminal) and goes on."""
    import socket

    port = server.server_address[1]
    for k in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /img/sample.png?run=epsilon&index={k}&kind=overlay&size={200 + k} HTTP/1.1\r\n"
                  f"Host: x\r\n\r\n".encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close: reset
        s.close()
    time.sleep(1.0)
    status, data, _ = get(server, "/img/sample.png?run=epsilon&index=0&kind=heatmap")
    assert status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert server.internal_errors == []

# ------------------------------------------------------------------ the page in a headless browser
def _chromium():
    for name in (os.environ.get("INTERPRETTENSOR_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (playwright's sync API allows one instance at a time)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set INTERPRETTENSOR_CHROMIUM): browser tests "
                    "skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install interprettensor[test]): browser tests skipped")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _open_page(browser, url):
    pg = browser.new_page(viewport={"width": 1300, "height": 900})
    pg.console_errors = []
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    pg.on("response", lambda r: pg.console_errors.append(f"{r.status} from {r.url}") if r.status >= 500 else None)
    pg.goto(url)
    pg.wait_for_selector("body[data-ready='1']", timeout=20_000)
    return pg


@pytest.fixture(scope="module")
def page(browser, server):
    pg = _open_page(browser, server.url)
    yield pg
    pg.close()


def _img_bytes(server, src):
    status, data, _ = get(server, src)
    assert status == 200
    return data


def _loaded(pg, selector):
    pg.wait_for_function(f"""() => [...document.querySelectorAll({selector!r})].length > 0 &&
        [...document.querySelectorAll({selector!r})].every(i => i.complete && i.naturalWidth > 0)""", timeout=20_000)


def test_page_loads_without_console_errors(page, server):
    page.wait_for_selector("#grid .thumb img")
    _loaded(page, "#grid .thumb img")
    assert page.locator("#grid .thumb").count() == N
    assert "1-24 of 24" in page.inner_text("#page-info")
    assert page.console_errors == [], server.internal_errors


def test_switching_rule_and_colour_map_changes_the_heatmap(page, server):
    page.select_option("#kind", "heatmap")
    first = page.locator("#grid .thumb img").first
    assert page.input_value("#rule") == "alphabeta"  # the first of the runs of the same data
    src_ab = first.get_attribute("src")
    assert "run=alphabeta" in src_ab and "cmap=bwr" in src_ab
    page.select_option("#rule", "epsilon")
    page.wait_for_function("() => document.querySelector('#grid .thumb img').src.includes('run=epsilon')")
    src_eps = first.get_attribute("src")
    assert _img_bytes(server, src_ab) != _img_bytes(server, src_eps)
    page.select_option("#cmap", "coldnhot")
    page.wait_for_function("() => document.querySelector('#grid .thumb img').src.includes('cmap=coldnhot')")
    src_hot = first.get_attribute("src")
    assert "run=epsilon" in src_hot and _img_bytes(server, src_hot) != _img_bytes(server, src_eps)
    _loaded(page, "#grid .thumb img")
    # a click on a thumbnail shows the sample: input, heatmap and overlay
    first.click()
    page.wait_for_selector("#detail:not([hidden]) img[data-kind='overlay']")
    _loaded(page, "#detail-images img")
    assert "sample 0" in page.inner_text("#detail-title")
    page.click("#detail-close")
    page.select_option("#cmap", "bwr")
    assert page.console_errors == [], server.internal_errors


def test_class_filter_pages_the_samples_of_one_class(page, server, runs):
    page.select_option("#filter-by", "label")
    page.select_option("#class", "2")
    page.wait_for_function("() => document.querySelectorAll('#grid .thumb').length === 8")
    shown = [int(v) for v in page.eval_on_selector_all("#grid .thumb", "els => els.map(e => e.dataset.index)")]
    assert shown == list(np.flatnonzero(runs["y"] == 2))
    page.select_option("#class", "")
    page.wait_for_function(f"() => document.querySelectorAll('#grid .thumb').length === {N}")


def test_spray_view_click_on_a_cluster_shows_its_samples(page, server, runs):
    page.click("#tabs button[data-tab='spray']")
    page.select_option("#spray-class", "1")
    page.wait_for_function("() => document.querySelectorAll('#scatter circle').length === 8")
    assert page.input_value("#spray-clustering") == "kmeans-2"  # as the eigengap suggests, not the first listed
    page.select_option("#spray-embedding", "tsne")
    page.wait_for_selector("#legend button[data-cluster='1']")
    assert page.locator("#eigen circle.eigenvalue").count() == 6
    assert not page.is_visible("#cluster-pager")  # issue 18: no pager before a cluster is chosen
    with np.load(os.path.join(runs["run"], "epsilon", "spray", "class-1.npz")) as z:
        idx, km2 = z["indices"], z["cluster-kmeans-2"]
    page.click("#legend button[data-cluster='1']")
    page.wait_for_function("() => document.querySelectorAll('#cluster-grid .thumb').length > 0")
    shown = sorted(int(v) for v in page.eval_on_selector_all("#cluster-grid .thumb", "els => els.map(e => e.dataset.index)"))
    assert shown == sorted(idx[km2 == 1].tolist())
    # a click on a point: its cluster's samples and the sample itself
    point = page.locator(f"#scatter circle[data-index='{idx[0]}']")
    point.click()
    page.wait_for_function(f"() => document.querySelector('#cluster-title').textContent.startsWith('cluster {km2[0]}:')")
    page.wait_for_selector("#detail:not([hidden])")
    assert f"sample {idx[0]}" in page.inner_text("#detail-title")
    _loaded(page, "#cluster-grid .thumb img")
    page.click("#detail-close")
    assert page.console_errors == [], server.internal_errors


def test_concepts_view_shows_reference_crops(page, server, runs):
    page.click("#tabs button[data-tab='concepts']")
    page.wait_for_selector("#channels button")
    order = page.eval_on_selector_all("#channels button", "els => els.map(e => +e.dataset.channel)")
    assert order == [1, 0, 2]
    page.click("#channels button[data-channel='2']")
    page.wait_for_function("() => document.querySelector('#channel-title').textContent.includes('channel 2')")
    page.wait_for_function("() => document.querySelectorAll('#examples figure').length === 3")  # one slot empty
    _loaded(page, "#examples img.crop")
    _loaded(page, "#examples img.heat")
    samples = page.eval_on_selector_all("#examples figure", "els => els.map(e => +e.dataset.sample)")
    assert samples == runs["concepts"]["relevance_indices"][2, :3].tolist()
    src = page.locator("#examples img.crop").first.get_attribute("src")
    crop = decode_png(_img_bytes(server, src + "&size=16"))
    np.testing.assert_array_equal(crop, runs["concepts"]["relevance_crops"][2, 0])
    page.select_option("#concepts-mode", "activation")
    page.wait_for_function("() => document.querySelector('#channel-title').textContent.includes('activating')")
    assert page.console_errors == [], server.internal_errors



def _hold_first(pg, pattern, wanted):
    """Route ``pattern``: the first request whose URL holds ``wanted`` is kept unanswered (returned in a
    list, to be released with ``continue_()``); every other request goes through."""
    held = []

    def route(r):
        if wanted in r.request.url and not held:
            held.append(r)
        else:
            r.continue_()

    pg.route(pattern, route)
    return held


def _until(pg, cond, what, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pg.wait_for_timeout(20)


def _settled(pg):
    """Every API request answered and the code that follows each answer run (body[data-pending] is 0)."""
    pg.wait_for_selector("body[data-pending='0']", timeout=20_000)


def test_a_late_answer_never_draws_over_a_newer_choice(browser, server):
    """A request answered after a later request of the same view (a channel or a sample clicked while
    the previous one loads) is dropped: before, the late answer drew its channel's examples (and its
    sample's details) over the newer choice."""
    pg = _open_page(browser, server.url)
    try:
        held = _hold_first(pg, "**/api/concepts/examples*", "channel=1&")  # the first channel, shown on opening
        pg.click("#tabs button[data-tab='concepts']")
        _until(pg, lambda: held, "the first channel's examples request")
        pg.click("#channels button[data-channel='2']")
        pg.wait_for_function("() => document.querySelectorAll('#examples figure').length === 3")
        held[0].continue_()
        _settled(pg)
        assert "channel 2" in pg.inner_text("#channel-title")
        assert pg.locator("#examples figure").count() == 3  # channel 1's four examples were not drawn
        pg.click("#tabs button[data-tab='samples']")
        held = _hold_first(pg, "**/api/sample?*", "index=0")
        pg.locator("#grid .thumb[data-index='0']").click()
        _until(pg, lambda: held, "sample 0's details request")
        pg.locator("#grid .thumb[data-index='1']").click()
        pg.wait_for_function("() => document.querySelector('#detail-title').textContent.startsWith('sample 1 ')")
        held[0].continue_()
        _settled(pg)
        assert pg.inner_text("#detail-title").startswith("sample 1 ")
        assert all("index=1&" in pg.locator("#detail-images img").nth(k).get_attribute("src") for k in range(3))
        assert pg.console_errors == [], server.internal_errors
    finally:
        pg.close()

# ------------------------------------------------------------------ issue 18: what a new user found
EIG_A = np.array([0.0, 0.02, 0.9, 1.0, 1.1, 3.0])  # relative gap: 2 clusters; absolute: after 5
EIG_B = np.array([0.0, 1e-3, 0.01, 0.5, 1.0, 2.0, 4.0])  # relative gap: 3 clusters; absolute: after 6


def _spray_eigengaps(run, y):
    """SpRAy results whose eigengap (the library's relative one) differs from the largest absolute gap:
    class 0 suggests 2 clusters, class 1 3, class 2 as class 1 but written without "eigengap" (old file)."""
    from interprettensor.analysis.spray import eigengap

    folder = os.path.join(run, "spray")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    classes = {}
    for c, eig in ((0, EIG_A), (1, EIG_B), (2, EIG_B)):
        idx = np.flatnonzero(y == c).astype(np.int64)
        n = len(idx)
        _write_npz(os.path.join(folder, f"class-{c}.npz"), {
            "indices": idx, "eigenvalues": eig, "spectral": np.random.default_rng(c).normal(size=(n, 4)).astype(np.float32),
            "cluster-kmeans-2": (np.arange(n) % 2).astype(np.int64), "cluster-kmeans-3": (np.arange(n) % 3).astype(np.int64)})
        classes[str(c)] = {"file": f"class-{c}.npz", "n": n, "clusterings": ["kmeans-2", "kmeans-3"],
                           "embeddings": ["spectral"], "eigengap": eigengap(eig)}
    del classes["2"]["eigengap"]
    with open(os.path.join(folder, "spray.json"), "w") as f:
        json.dump({"format": 1, "kind": "spray", "params": {}, "classes": classes}, f)


def _npz_run(folder, inputs, outputs, seed, labels=None, names=True):
    os.makedirs(folder)
    n = len(outputs)
    arrays = {"relevance": np.random.default_rng(seed).normal(size=(n, 8, 8, 1)).astype(np.float32),
              "indices": np.arange(n), "targets": np.argmax(outputs, 1), "outputs": outputs,
              "valid": np.ones(n, bool)}
    if inputs is not None:
        arrays["inputs"] = inputs
    if names:
        arrays["names"] = np.array([f"img{i}" for i in range(n)])
    if labels is not None:
        arrays["labels"] = np.asarray(labels, np.int64)
    np.savez(os.path.join(folder, "relevances.npz"), **arrays)


NPZ_LABELS = [0, 1, -1, 2, -1, 1, 0, -1]


@pytest.fixture(scope="module")
def runs18(runs, tmp_path_factory):
    """Copies of the epsilon run: SpRAy with eigengaps (good), SpRAy of no class (empty), a broken
    spray.json (brokenspray), a truncated shard (damaged), other inputs of another model with the same
    count, shape and indices (other); relevances.npz runs of the same / other inputs."""
    root = tmp_path_factory.mktemp("issue18") / "I18"
    eps = os.path.join(runs["run"], "epsilon")
    for name in ("good", "empty", "brokenspray", "damaged", "other"):
        shutil.copytree(eps, root / name)
    _spray_eigengaps(str(root / "good"), runs["y"])
    with open(root / "empty" / "spray" / "spray.json", "w") as f:
        json.dump({"format": 1, "kind": "spray", "params": {"n_neighbors": 10}, "classes": {},
                   "skipped": {str(c): "8 samples, fewer than 11" for c in range(CLASSES)}}, f)
    (root / "brokenspray" / "spray" / "spray.json").write_text('{"format": 1, "kind": "spray", "classes": ')
    shutil.rmtree(root / "damaged" / "spray")
    os.truncate(root / "damaged" / "shard-00001.npz", 1000)
    shutil.rmtree(root / "other" / "spray")
    m = json.loads((root / "other" / "manifest.json").read_text())  # what explain_dataset writes for those
    m["identity"]["model"] = "sequential_9 (fingerprint 0123456789abcdef)"
    m["identity"]["input"] = "array(24, 8, 8, 1):float32:fedcba9876543210"
    (root / "other" / "manifest.json").write_text(json.dumps(m))
    rng = np.random.default_rng(7)
    x, out = rng.random((8, 8, 8, 1), dtype=np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    _npz_run(str(root / "npz-a"), x, out, 1, labels=NPZ_LABELS)
    _npz_run(str(root / "npz-b"), x.copy(), out.copy(), 2, labels=NPZ_LABELS)  # same data, another rule
    _npz_run(str(root / "npz-c"), x[::-1].copy(), out[::-1].copy(), 3)  # other inputs, same shape and names
    _npz_run(str(root / "npz-d"), None, out.copy(), 4, names=False)  # nothing to tell the inputs by
    _npz_run(str(root / "npz-e"), None, out.copy(), 5, names=False)
    return {"root": str(root)}


@pytest.fixture(scope="module")
def server18(runs18):
    srv = make_server([runs18["root"]])
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_runs_are_grouped_by_fingerprints_of_inputs_and_model(server18):
    _, info = get_json(server18, "/api/runs")
    group = {r["name"]: r["group"] for r in info["runs"]}
    assert sorted(group) == ["brokenspray", "damaged", "empty", "good", "npz-a", "npz-b", "npz-c", "npz-d", "npz-e",
                             "other"]
    # copies of one run (same inputs, same model): rules of one data set, even with a damaged shard
    assert group["good"] == group["empty"] == group["brokenspray"] == group["damaged"]
    # other images of another model, with the same count, shape and indices: not offered as a rule
    assert group["other"] != group["good"]
    assert group["npz-a"] == group["npz-b"]  # the same stored inputs and outputs
    assert group["npz-c"] not in (group["npz-a"], group["good"])  # other inputs, the same names and shape
    # neither inputs nor names stored: nothing tells the inputs are equal, so never merged
    assert len({group["npz-d"], group["npz-e"], group["npz-a"]}) == 3


def test_empty_spray_is_said_clearly(server18):
    _, info = get_json(server18, "/api/runs")
    empty = info["spray"]["empty"]
    assert empty["classes"] == {} and empty["skipped"]["1"] == "8 samples, fewer than 11"
    assert "SpRAy analysed no class of this run" in empty["empty"] and "class 0: 8 samples" in empty["empty"]
    for params in ({"run": "empty"}, {"run": "empty", "class": "0"}):
        status, body = get_json(server18, "/api/spray", **params)
        assert status == 404 and "SpRAy analysed no class" in body["error"] and "all skipped" in body["error"], body
        assert "missing parameter" not in body["error"]
    # a spray.json that cannot be read: said for that run; the run's samples are served
    assert "spray.json" in info["spray"]["brokenspray"]["error"]
    status, body = get_json(server18, "/api/spray", run="brokenspray", **{"class": "0"})
    assert status == 404 and "spray.json" in body["error"]
    assert get_json(server18, "/api/samples", run="brokenspray")[1]["total"] == N


def test_eigengap_is_the_library_s_relative_gap(server18):
    from interprettensor.analysis.spray import eigengap

    assert eigengap(EIG_A) == 2 and eigengap(EIG_B) == 3
    assert int(np.argmax(np.diff(EIG_A))) + 1 == 5 and int(np.argmax(np.diff(EIG_B))) + 1 == 6  # absolute: not so
    _, info = get_json(server18, "/api/runs")
    classes = info["spray"]["good"]["classes"]
    assert [classes[c]["eigengap"] for c in "012"] == [2, 3, 3]  # class 2: no "eigengap" stored, computed alike
    for c, want in (("0", 2), ("1", 3), ("2", 3)):
        _, d = get_json(server18, "/api/spray", run="good", **{"class": c, "embedding": "spectral"})
        assert d["eigengap"] == want


def test_damaged_shard_is_marked_and_the_rest_served(server18):
    _, info = get_json(server18, "/api/runs")
    r = {r["name"]: r for r in info["runs"]}["damaged"]
    assert r["n"] == N and r["unavailable"] == 10 and sum(r["targets"].values()) == N - 10
    assert len(r["damaged"]) == 1 and "shard-00001.npz" in r["damaged"][0] and "--resume" in r["damaged"][0]
    _, page = get_json(server18, "/api/samples", run="damaged", limit=100)
    assert [it["index"] for it in page["items"]] == list(range(N))
    bad = [it["index"] for it in page["items"] if "unavailable" in it]
    assert bad == list(range(10, 20))
    assert all(it["shard"] == "shard-00001.npz" and "--resume" in it["unavailable"]
               for it in page["items"] if "unavailable" in it)
    assert get(server18, "/img/sample.png", run="damaged", index=5, kind="overlay")[0] == 200
    assert get(server18, "/img/sample.png", run="damaged", index=21, kind="heatmap")[0] == 200
    for path in ("/img/sample.png", "/api/sample"):
        status, body = get_json(server18, path, run="damaged", index=15)
        assert status == 404 and "shard-00001.npz" in body["error"] and "--resume" in body["error"], body


def test_label_filter_with_unknown_labels(server18):
    _, info = get_json(server18, "/api/runs")
    r = {r["name"]: r for r in info["runs"]}
    assert r["npz-a"]["labels"] == {"-1": 3, "0": 2, "1": 2, "2": 1}
    assert not r["npz-c"]["has_labels"] and "labels" not in r["npz-c"]
    _, page = get_json(server18, "/api/samples", run="npz-a", label=-1)
    assert [it["index"] for it in page["items"]] == [2, 4, 7] and all(it["label"] == -1 for it in page["items"])
    status, body = get_json(server18, "/api/samples", run="npz-c", label=1)
    assert status == 400 and "has no labels" in body["error"]


@pytest.fixture(scope="module")
def page18(browser, server18):
    pg = _open_page(browser, server18.url)
    yield pg
    pg.close()


def _choose_run(pg, srv, name):
    _, info = get_json(srv, "/api/runs")
    group = {r["name"]: r["group"] for r in info["runs"]}[name]
    pg.click("#tabs button[data-tab='samples']")
    pg.select_option("#group", str(group))
    pg.select_option("#rule", name)
    pg.wait_for_function(f"() => [...document.querySelectorAll('#grid .thumb')].length > 0 && "
                         f"[...document.querySelectorAll('#grid .thumb')].every(f => f.dataset.run === {name!r})")


def test_page_with_an_empty_spray_and_a_damaged_shard(page18, server18):
    # the samples are shown although the first SpRAy results hold no class
    page18.wait_for_selector("#grid .thumb")
    _choose_run(page18, server18, "damaged")
    page18.wait_for_function("() => document.querySelectorAll('#grid .thumb').length === 24")
    unavailable = page18.locator("#grid .thumb.unavailable")
    assert unavailable.count() == 10
    assert sorted(int(v) for v in page18.eval_on_selector_all("#grid .thumb.unavailable",
                                                               "els => els.map(e => e.dataset.index)")) == list(range(10, 20))
    assert "shard-00001.npz" in unavailable.first.inner_text() and "--resume" in unavailable.first.inner_text()
    assert page18.is_visible("#samples-note") and "shard-00001.npz" in page18.inner_text("#samples-note")
    assert "--resume" in page18.inner_text("#samples-note")
    _loaded(page18, "#grid .thumb img")
    assert page18.locator("#grid .thumb img").count() == 14
    page18.click("#tabs button[data-tab='spray']")
    page18.select_option("#spray-run", "empty")
    page18.wait_for_function("() => !document.querySelector('#spray-note').hidden")
    text = page18.inner_text("#spray-note")
    assert "SpRAy analysed no class of this run" in text and "all skipped: class 0: 8 samples, fewer than 11" in text
    assert not page18.is_visible("#spray-plots") and "missing parameter" not in page18.inner_text("#status")
    page18.select_option("#spray-run", "brokenspray")
    page18.wait_for_function("() => document.querySelector('#spray-note').textContent.includes('cannot be shown')")
    assert "spray.json" in page18.inner_text("#spray-note")
    page18.select_option("#spray-run", "good")
    page18.wait_for_function("() => document.querySelectorAll('#scatter circle').length > 0")
    assert not page18.is_visible("#spray-note")
    assert page18.console_errors == [], server18.internal_errors


def test_page_eigengap_and_clustering_follow_the_class(page18, server18):
    page18.click("#tabs button[data-tab='spray']")
    page18.select_option("#spray-run", "good")
    for cls, k in (("0", 2), ("1", 3), ("0", 2), ("2", 3)):
        page18.select_option("#spray-class", cls)
        page18.wait_for_function(f"() => document.querySelector('#scatter-caption').textContent.includes('class {cls}:')")
        _settled(page18)  # no answer still to be drawn
        assert page18.input_value("#spray-clustering") == f"kmeans-{k}", cls  # as the new class's eigengap suggests
        label = page18.locator("#eigen text.eigengap")
        assert label.count() == 1 and label.text_content().startswith(f"gap after {k} ")
        # the label is above the plot: neither the line nor an eigenvalue's marker overdraws it
        box = label.bounding_box()
        tops = page18.eval_on_selector_all("#eigen circle.eigenvalue, #eigen polyline",
                                           "els => els.map(e => e.getBoundingClientRect().top)")
        assert box["y"] + box["height"] <= min(tops), (box, tops)
        red = page18.eval_on_selector_all("#eigen circle.eigenvalue", "els => els.map(e => e.getAttribute('fill'))")
        assert [i for i, f in enumerate(red) if f == "#d62728"] == [k - 1]  # the last eigenvalue before the gap
        # the cluster pager is hidden until a cluster (of more than a page) is chosen
        assert not page18.is_visible("#cluster-pager")
    page18.click("#legend button[data-cluster='1']")
    page18.wait_for_function("() => document.querySelectorAll('#cluster-grid .thumb').length > 0")
    assert not page18.is_visible("#cluster-pager")  # 3 samples: one page
    assert page18.console_errors == [], server18.internal_errors


def test_page_label_filter(page18, server18):
    _choose_run(page18, server18, "npz-a")
    assert not page18.is_visible("#label-note")
    assert page18.eval_on_selector("#filter-by option[value='label']", "o => o.disabled") is False
    page18.select_option("#filter-by", "label")
    options = page18.eval_on_selector_all("#class option", "els => els.map(e => [e.value, e.textContent])")
    assert ["-1", "unknown (3)"] in options
    page18.select_option("#class", "-1")
    page18.wait_for_function("() => document.querySelectorAll('#grid .thumb').length === 3")
    assert page18.eval_on_selector_all("#grid .thumb", "els => els.map(e => +e.dataset.index)") == [2, 4, 7]
    _choose_run(page18, server18, "npz-c")  # no labels: the filter says so and offers the explained class only
    assert page18.is_visible("#label-note") and "no labels" in page18.inner_text("#label-note")
    assert page18.eval_on_selector("#filter-by option[value='label']", "o => o.disabled") is True
    assert page18.input_value("#filter-by") == "target"
    assert page18.console_errors == [], server18.internal_errors
