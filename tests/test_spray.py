"""Spectral relevance analysis (SpRAy, Lapuschkin et al. 2019), its results on disk, its command line and
the ViRelAy export.

References are independent of the code under test: the preprocessing is recomputed with loops over
bins, the affinity graph from brute-force numpy distances, the spectrum from numpy's dense
eigendecomposition of the normalised Laplacian written from its definition, and the ViRelAy files are
read by a reader written here from ViRelAy's database specification and project file format."""

import inspect
import json
import os
import shutil

import numpy as np
import pytest

from interprettensor.analysis.spray import SpRAy, SpRAyError, load_spray, preprocess, spray
from interprettensor.apps.cli import main

sklearn_metrics = pytest.importorskip("sklearn.metrics")
ari = sklearn_metrics.adjusted_rand_score

FAST = dict(n_threads=1, umap=False)  # one thread: the machine is shared (t-SNE slows down when oversubscribed)


# ---------------------------------------------------------------------------------------------- references
def reference_preprocess(R, grid, normalise, absolute=False):
    """Loops over samples and bins: bin i of g covers rows floor(i*H/g) .. floor((i+1)*H/g)."""
    R = np.asarray(R, np.float64)
    if R.ndim == 4:
        R = R.sum(-1)
    if absolute:
        R = np.abs(R)
    n, H, W = R.shape
    gh, gw = min(grid[0], H), min(grid[1], W)
    out = np.zeros((n, gh * gw))
    for s in range(n):
        for i in range(gh):
            for j in range(gw):
                block = R[s, (i * H) // gh:((i + 1) * H) // gh, (j * W) // gw:((j + 1) * W) // gw]
                out[s, i * gw + j] = block.mean()
        v = out[s]
        scale = {"l2": np.sqrt((v ** 2).sum()), "l1": np.abs(v).sum(), "max": np.abs(v).max(), "none": 1.0}[normalise]
        out[s] = v / scale if scale > 0 else v
    return out


def reference_spectrum(X, k, m):
    """Symmetric binary kNN graph from all pairwise distances; L = I - D^-1/2 W D^-1/2; eigh."""
    X = np.asarray(X, np.float64)
    d = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    Wm = np.zeros_like(d)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    Wm[np.repeat(np.arange(len(X)), k), nn.ravel()] = 1.0
    Wm = np.maximum(Wm, Wm.T)
    dinv = 1.0 / np.sqrt(Wm.sum(1))
    L = np.eye(len(X)) - dinv[:, None] * Wm * dinv[None, :]
    return Wm, L, np.linalg.eigvalsh(L)[:m]


def planted_heatmaps(n=160, size=16, seed=0, offsets=(5, 8)):
    """Half the heatmaps put their relevance on a 'watermark' corner, half on a central object (with
    random strength, a random offset of the object in ``range(*offsets)`` along each axis, and noise)."""
    rng = np.random.default_rng(seed)
    R = rng.normal(0.0, 0.3, (n, size, size, 3)).astype(np.float32)
    strategy = rng.permutation(np.arange(n) % 2)
    for i in range(n):
        a = rng.uniform(2.0, 4.0)
        if strategy[i]:
            R[i, :4, :4] += a
        else:
            r, c = rng.integers(offsets[0], offsets[1], 2)
            R[i, r:r + 4, c:c + 4] += a
    return R, strategy


# ---------------------------------------------------------------------------------------------- estimator
@pytest.mark.parametrize("normalise", ["l2", "max", "l1", "none"])
def test_preprocessing_equals_numpy(normalise):
    R = np.random.default_rng(1).normal(size=(5, 13, 11, 3)).astype(np.float32)
    R[2] = 0.0  # a zero heatmap stays zero (no division by zero)
    for grid, absolute in (((4, 3), False), ((5, 5), True), ((20, 20), False)):  # (20, 20): capped at 13 x 11
        got = preprocess(R, grid, normalise, absolute)
        want = reference_preprocess(R, grid, normalise, absolute)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preprocess(R[..., 0], 4, normalise), reference_preprocess(R[..., 0], (4, 4), normalise),
                               rtol=1e-5, atol=1e-6)


def test_planted_strategies_are_separated():
    """The two strategies are two components of the kNN graph (two zero eigenvalues, the next one far
    from 0): spectral k-means with k = 2 recovers them exactly. HDBSCAN (min_cluster_size 16, 10 % of
    the class) is not told the number of clusters: on the object strategy, whose nine positions make
    sub-groups, it may split the object into several clusters and mark some samples as noise, and which
    it does turns on kNN ties that float32 rounding of the features decides differently on different
    CPUs (seen: 2 clusters on one machine, 3 and noise on another). What a density method guarantees on
    disconnected strategies, and what is asserted: no cluster mixes them."""
    R, strategy = planted_heatmaps()
    est = SpRAy(n_neighbors=10, n_eigenvectors=8, n_clusters=(2, 3), grid=8, min_cluster_size=16, **FAST).fit(R)
    assert est.eigenvalues_[1] < 1e-10 < 0.01 < est.eigenvalues_[2]  # two components, then a gap
    assert ari(strategy, est.labels_["kmeans-2"]) == 1.0
    hdb = est.labels_["hdbscan"]
    found = [c for c in np.unique(hdb) if c >= 0]
    assert all(len(np.unique(strategy[hdb == c])) == 1 for c in found)  # every cluster is one strategy's
    assert {int(strategy[hdb == c][0]) for c in found} == {0, 1}  # and each strategy has a cluster
    assert est.eigengap_ == 2
    assert set(est.labels_) == {"kmeans-2", "kmeans-3", "hdbscan"} == set(est.clustering_names())
    # the affinity graph and spectrum against numpy written from the definitions
    Wm, L, values = reference_spectrum(est.features_, 10, 8)
    np.testing.assert_array_equal(est.affinity_.toarray(), Wm)
    np.testing.assert_allclose(est.eigenvalues_, values, atol=1e-8)
    V = est.embedding_.astype(np.float64)
    assert V.shape == (len(R), 8) and est.embedding_.dtype == np.float32
    np.testing.assert_allclose(L @ V, V * est.eigenvalues_[None], atol=1e-5)  # eigenvectors of L
    np.testing.assert_allclose(V.T @ V, np.eye(8), atol=1e-5)
    assert est.tsne_.shape == (len(R), 2) and np.isfinite(est.tsne_).all() and est.umap_ is None
    # deterministic
    again = SpRAy(n_neighbors=10, n_eigenvectors=8, n_clusters=(2, 3), grid=8, min_cluster_size=16, **FAST).fit(R)
    np.testing.assert_array_equal(again.embedding_, est.embedding_)
    np.testing.assert_array_equal(again.labels_["kmeans-3"], est.labels_["kmeans-3"])


def test_hdbscan_separates_unambiguous_strategies():
    """With the object always at one place, each strategy is one dense group: HDBSCAN finds exactly
    the two, without noise, also when the features move by far more than float32 rounding (so the
    assertion does not depend on the CPU's summation order)."""
    R, strategy = planted_heatmaps(offsets=(6, 7))
    est = SpRAy(n_neighbors=10, n_eigenvectors=8, n_clusters=(2,), grid=8, min_cluster_size=16, tsne=False, **FAST)
    X = est.preprocess(R)
    rng = np.random.default_rng(0)
    for scale in (0.0, 3e-3, 3e-3):
        est.fit_features(X + rng.normal(0.0, scale, X.shape).astype(np.float32))
        assert ari(strategy, est.labels_["hdbscan"]) == 1.0 and (est.labels_["hdbscan"] >= 0).all()


def test_eigengap_on_spectra():
    """Worked by hand from the relative gap (lambda_{k+1} - lambda_k) / lambda_{k+1}, k >= 2."""
    from interprettensor.analysis.spray import eigengap

    assert eigengap([0.0, 0.01, 0.3, 0.35, 0.5]) == 2  # two weakly linked clusters: 0.97 > 0.14, 0.3
    assert eigengap([0.0, 1e-17, 2e-17, 0.2, 0.3]) == 3  # three components (round-off below tol is 0)
    assert eigengap([0.0, 0.3, 0.35, 0.4, 0.8]) == 4  # no small eigenvalue: 0.14, 0.125, 0.5
    assert eigengap([0.0, 0.2]) == 1


def test_large_class_uses_the_sparse_eigensolver():
    """Above 1500 samples the Lanczos solver (on 2I - L) replaces the dense one: same spectrum."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1600, 6)).astype(np.float32)
    X[:800, 0] += 6.0
    est = SpRAy(n_neighbors=8, n_eigenvectors=5, clusterings=("kmeans",), n_clusters=(2,), tsne=False,
                **FAST).fit_features(X)
    Wm, L, values = reference_spectrum(est.features_, 8, 5)
    np.testing.assert_allclose(est.eigenvalues_, values, atol=1e-7)
    V = est.embedding_.astype(np.float64)
    np.testing.assert_allclose(L @ V, V * est.eigenvalues_[None], atol=1e-5)
    assert ari(np.arange(1600) < 800, est.labels_["kmeans-2"]) >= 0.99


def test_estimator_errors():
    R, _ = planted_heatmaps(n=12)
    with pytest.raises(SpRAyError, match=r"at least 17 heatmaps .*n_neighbors=10, n_eigenvectors=16.*got 12"):
        SpRAy(**FAST).fit(R)
    bad = R.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(SpRAyError, match=r"NaN or inf \(samples 3\)"):
        SpRAy(n_neighbors=3, n_eigenvectors=4, n_clusters=(2,), **FAST).fit(bad)
    with pytest.raises(SpRAyError, match="heatmaps .* got shape \\(12, 48\\)"):
        SpRAy(n_neighbors=3, n_eigenvectors=4, n_clusters=(2,), **FAST).fit(R.reshape(12, 48, 16)[:, :, 0])
    with pytest.raises(SpRAyError, match="n_eigenvectors \\(4\\) must be at least the largest number of clusters \\(8\\)"):
        SpRAy(n_eigenvectors=4)
    with pytest.raises(SpRAyError, match="unknown clustering.*'spectral'"):
        SpRAy(clusterings=("spectral",))
    with pytest.raises(SpRAyError, match="n_clusters must be >= 2"):
        SpRAy(n_clusters=(1, 2))
    with pytest.raises(SpRAyError, match="normalise must be one of"):
        SpRAy(normalise="z")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(SpRAyError, match="umap-learn"):
            SpRAy(n_neighbors=3, n_eigenvectors=4, n_clusters=(2,), tsne=False, umap=True, n_threads=1).fit(R)


# ---------------------------------------------------------------------------------------------- a model's run
@pytest.fixture(scope="module")
def watermark_run(tmp_path_factory):
    """A small CNN trained on 16x16 images: class 0 a horizontal bar; class 1 a vertical bar, or, for
    half of its samples, only a watermark in the top-left corner (which then decides the label).
    Explained with LRP-epsilon by explain_dataset (shards of 128, inputs stored)."""
    import keras

    import interprettensor as it

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, S = 400, 16
    x = rng.uniform(0.0, 0.2, (n, S, S, 1)).astype("float32")
    y = np.arange(n) % 2
    watermark = np.zeros(n, bool)
    for i in range(n):
        r, c = rng.integers(5, 11, 2)
        if y[i] == 0:
            x[i, r, c - 3:c + 3, 0] = 1.0
        elif (i // 2) % 2 == 0:
            watermark[i] = True
            x[i, 1:4, 1:4, 0] = 1.0
        else:
            x[i, r - 3:r + 3, c, 0] = 1.0
    model = keras.Sequential([keras.Input((S, S, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.9
    run = str(tmp_path_factory.mktemp("spray") / "run")
    extra = {"store_inputs": True} if "store_inputs" in inspect.signature(it.explain_dataset).parameters else {}
    it.explain_dataset(model, (x, y), rule="epsilon", out=run, shard_size=128, target="label", progress=False,
                       **extra)
    return run, x, y, watermark, bool(extra)


RUN_PARAMS = dict(n_neighbors=10, n_eigenvectors=8, n_clusters=(2, 3), grid=8, **FAST)


def test_spray_on_a_run_finds_the_watermark(watermark_run, tmp_path):
    run, x, y, watermark, _ = watermark_run
    out = str(tmp_path / "sp")
    res = spray(run, classes=[1], out=out, **RUN_PARAMS)
    r = res.classes[1]
    assert sorted(res.classes) == [1] and res.computed == [1]
    np.testing.assert_array_equal(r.indices, np.flatnonzero(y == 1))
    assert ari(watermark[r.indices], r.labels["kmeans-2"]) >= 0.9
    assert r.eigengap == 2
    # the same as SpRAy on the heatmaps read in one piece (another code path than the shard stream)
    import interprettensor as it

    full = it.load_relevances(run)
    est = SpRAy(**RUN_PARAMS).fit(full["relevance"][full["targets"] == 1])
    np.testing.assert_allclose(r.eigenvalues, est.eigenvalues_, atol=1e-10)
    np.testing.assert_allclose(r.spectral, est.embedding_, atol=1e-6)
    for name, lab in est.labels_.items():
        np.testing.assert_array_equal(r.labels[name], lab)
    # round trip through the files (format of /work/notes/formats.md)
    back = load_spray(out)
    meta = json.load(open(os.path.join(out, "spray.json")))
    assert meta["format"] == 1 and meta["kind"] == "spray" and meta["classes"]["1"]["file"] == "class-1.npz"
    assert meta["classes"]["1"]["clusterings"] == ["kmeans-2", "kmeans-3", "hdbscan"]
    assert meta["classes"]["1"]["embeddings"] == ["spectral", "tsne"] and meta["classes"]["1"]["n"] == 200
    assert meta["params"]["n_neighbors"] == 10 and meta["params"]["random_state"] == 0
    with np.load(os.path.join(out, "class-1.npz")) as z:
        assert z["indices"].dtype == np.int64 and z["eigenvalues"].dtype == np.float64
        assert z["spectral"].dtype == np.float32 and z["tsne"].shape == (200, 2) and z["tsne"].dtype == np.float32
        assert z["cluster-hdbscan"].dtype == np.int64 and np.all(np.diff(z["eigenvalues"]) >= 0)
    b = back.classes[1]
    for field in ("indices", "eigenvalues", "spectral", "tsne"):
        np.testing.assert_array_equal(getattr(b, field), getattr(r, field))
    assert b.labels.keys() == r.labels.keys() and b.eigengap == 2


def _mtimes(folder):
    return {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in sorted(os.listdir(folder)) if f.endswith(".npz")}


def test_cli_end_to_end_resumable(watermark_run, tmp_path, capsys):
    run, *_ = watermark_run
    run = shutil.copytree(run, str(tmp_path / "run"))
    args = ["spray", run, "--neighbors", "10", "--eigenvectors", "8", "--grid", "8", "8", "--clusters", "2..3",
            "--threads", "1", "--umap", "no"]
    assert main(args + ["--classes", "1"]) == 0
    out = capsys.readouterr().out
    assert "class 1: 200 samples, eigengap suggests 2 clusters; kmeans-2 cluster sizes [100, 100]" in out
    assert "[computed]" in out
    folder = os.path.join(run, "spray")
    first = _mtimes(folder)
    assert list(first) == ["class-1.npz"]
    # a rerun with one more class keeps class 1 (same parameters) and computes class 0
    assert main(args + ["--classes", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "class 1: 200 samples" in out and "unchanged" in out and "class 0: 200 samples" in out
    second = _mtimes(folder)
    assert second["class-1.npz"] == first["class-1.npz"] and "class-0.npz" in second
    assert sorted(load_spray(run).classes) == [0, 1]
    # nothing to do
    assert main(args + ["--classes", "0", "1"]) == 0
    assert _mtimes(folder) == second and "computed" not in capsys.readouterr().out
    # --force redoes both; another parameter redoes both (same results for --force)
    before = load_spray(run).classes[1].labels["kmeans-3"]
    assert main(args + ["--classes", "0", "1", "--force"]) == 0
    assert capsys.readouterr().out.count("[computed]") == 2
    np.testing.assert_array_equal(load_spray(run).classes[1].labels["kmeans-3"], before)
    assert main(args[:3] + ["15"] + args[4:] + ["--classes", "0", "1"]) == 0
    assert capsys.readouterr().out.count("[computed]") == 2
    assert json.load(open(os.path.join(folder, "spray.json")))["params"]["n_neighbors"] == 15


# ---------------------------------------------------------------------------------------------- ViRelAy
def read_virelay_project(project_file):
    """A reader written from ViRelAy's project file format and database specification: the YAML project
    (paths relative to it), the label map, the input, attribution and analysis HDF5 databases."""
    import h5py
    import yaml

    folder = os.path.dirname(project_file)
    with open(project_file) as f:
        p = yaml.safe_load(f)["project"]
    for key in ("name", "model", "label_map", "dataset", "attributions", "analyses"):
        assert key in p, key
    assert p["dataset"]["type"] == "hdf5"
    assert p["attributions"]["attribution_strategy"] in ("true_label", "predicted_label")
    with open(os.path.join(folder, p["label_map"])) as f:
        label_map = json.load(f)
    assert all({"index", "word_net_id", "name"} <= set(e) for e in label_map)
    out = {"project": p, "label_map": label_map}
    with h5py.File(os.path.join(folder, p["dataset"]["path"]), "r") as f:
        out["data"], out["label"] = f["data"][()], f["label"][()]
    attr_files = p["attributions"]["sources"]
    assert len(attr_files) == 1
    with h5py.File(os.path.join(folder, attr_files[0]), "r") as f:
        out["attr"] = {k: f[k][()] for k in ("index", "attribution", "label", "prediction")}
    (analysis,) = p["analyses"]
    assert analysis["analysis_method"] == "Spectral"
    out["analysis"] = {}
    with h5py.File(os.path.join(folder, analysis["sources"][0]), "r") as f:
        for category, g in f.items():
            a = {"index": g["index"][()], "embedding": {}, "eigenvalue": None, "cluster": {}, "attrs": {}}
            for e, d in g["embedding"].items():
                a["embedding"][e] = d[()]
                if "eigenvalue" in d.attrs:
                    a["eigenvalue"] = d.attrs["eigenvalue"]
            for c, d in g["cluster"].items():
                a["cluster"][c] = d[()]
                a["attrs"][c] = dict(d.attrs)
            out["analysis"][category] = a
    return out


def test_virelay_export_follows_the_specification(watermark_run, tmp_path):
    import h5py  # noqa: F401 - the export's dependencies (extra "analysis")

    from interprettensor.analysis.spray.virelay import export_virelay

    run, x, y, watermark, stored = watermark_run
    sp = str(tmp_path / "sp")
    res = spray(run, classes=[0, 1], out=sp, **RUN_PARAMS)
    project = export_virelay(run, str(tmp_path / "vr"), inputs=None if stored else x, spray_dir=sp,
                             class_names=["horizontal", "vertical"])
    v = read_virelay_project(project)
    import interprettensor as it

    full = it.load_relevances(run)
    N = len(x)
    # input database: samples x channel x height x width, float32; single labels (uint)
    assert v["data"].shape == (N, 1, 16, 16) and v["data"].dtype == np.float32
    np.testing.assert_array_equal(v["data"], np.moveaxis(x, -1, 1))
    if stored:  # the run recorded its labels
        assert v["label"].dtype.kind == "u" and v["label"].shape == (N,)
        np.testing.assert_array_equal(v["label"], y)
    # attribution database: the valid samples, indices into the input database
    a = v["attr"]
    np.testing.assert_array_equal(a["index"], np.arange(N))
    assert a["index"].dtype.kind == "u" and a["attribution"].dtype == np.float32
    np.testing.assert_array_equal(a["attribution"], np.moveaxis(full["relevance"], -1, 1))
    np.testing.assert_array_equal(a["label"], full["targets"])
    np.testing.assert_allclose(a["prediction"], full["outputs"])
    assert v["project"]["attributions"]["attribution_strategy"] == "true_label"
    assert v["project"]["dataset"]["input_width"] == 16 and v["project"]["dataset"]["input_height"] == 16
    # label map and analysis categories
    assert [e["index"] for e in v["label_map"]] == [0, 1] and v["label_map"][1]["name"] == "vertical"
    ids = {e["word_net_id"]: e["index"] for e in v["label_map"]}
    assert {ids[c] for c in v["analysis"]} == {0, 1}
    for category, an in v["analysis"].items():
        r = res.classes[ids[category]]
        # analysis indices -> attribution database (by its index) -> the samples SpRAy analysed
        np.testing.assert_array_equal(a["index"][np.searchsorted(a["index"], an["index"])], r.indices)
        np.testing.assert_array_equal(an["embedding"]["spectral"], r.spectral)
        np.testing.assert_array_equal(an["embedding"]["tsne"], r.tsne)
        np.testing.assert_allclose(an["eigenvalue"], r.eigenvalues, rtol=1e-6)
        assert set(an["cluster"]) == set(r.labels)
        for name, lab in an["cluster"].items():
            np.testing.assert_array_equal(lab.astype(np.int64), r.labels[name])
        assert an["attrs"]["kmeans-2"]["k"] == 2 and an["attrs"]["kmeans-2"]["embedding"] == "spectral"


# ---------------------------------------------------------------------------------------------- errors
def _npz_run(folder, R, targets):
    os.makedirs(folder, exist_ok=True)
    n = len(R)
    np.savez(os.path.join(folder, "relevances.npz"), relevance=R, indices=np.arange(n), targets=targets,
             outputs=np.zeros((n, 3), np.float32), valid=np.ones(n, bool))
    return folder


def test_errors(tmp_path, capsys):
    R, _ = planted_heatmaps(n=40)
    targets = np.r_[np.zeros(30, int), np.ones(10, int)]
    run = _npz_run(str(tmp_path / "npz"), R, targets)
    with pytest.raises(SpRAyError, match="does not exist"):
        spray(str(tmp_path / "missing"))
    with pytest.raises(SpRAyError, match="holds no explanations"):
        spray(str(tmp_path))
    with pytest.raises(SpRAyError, match=r"class\(es\) 1 \(10\) have fewer than 17 samples"):
        spray(run, classes=[0, 1], **FAST)
    with pytest.raises(SpRAyError, match=r"class\(es\) 2 were not explained .*explained: 0, 1"):
        spray(run, classes=[2], **FAST)
    # all classes: the small one is skipped with a warning and listed
    with pytest.warns(UserWarning, match="skips class"):
        res = spray(run, n_neighbors=12, n_eigenvectors=4, n_clusters=(2,), tsne=False, **FAST)
    assert sorted(res.classes) == [0] and res.skipped == {1: "10 samples, fewer than 13"}
    # NaN in a valid heatmap
    bad = R.copy()
    bad[7, 2, 2, 0] = np.nan
    nan_run = _npz_run(str(tmp_path / "nan"), bad, targets)
    with pytest.raises(SpRAyError, match=r"relevances.npz.*samples 7 hold NaN or inf"):
        spray(nan_run, classes=[0], n_neighbors=5, n_eigenvectors=4, n_clusters=(2,), **FAST)
    # an unfinished run of explain_dataset
    unfinished = str(tmp_path / "unfinished")
    os.makedirs(unfinished)
    json.dump({"format": 1, "identity": {}, "complete": False, "n_samples": None, "shards": []},
              open(os.path.join(unfinished, "manifest.json"), "w"))
    with pytest.raises(SpRAyError, match="is not finished"):
        spray(unfinished)
    # on the command line: clear messages, exit status 1 or 2
    assert main(["spray", str(tmp_path / "missing")]) == 1
    assert "error: run " in capsys.readouterr().err
    assert main(["spray", run, "--classes", "1"]) == 1
    err = capsys.readouterr().err
    assert "error: class(es) 1 (10) have fewer than 17 samples" in err and "Traceback" not in err
    assert main(["spray", run, "--clusters", "1..3"]) == 1
    assert "--clusters: numbers of clusters must be >= 2" in capsys.readouterr().err
    assert main(["spray", run, "--classes", "0", "--neighbors", "5", "--eigenvectors", "4", "--clusters", "2",
                 "--no-tsne", "--threads", "1", "--virelay", str(tmp_path / "vr")]) == 1
    assert "did not store its inputs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["spray", run, "--neighbors", "0"])


def test_a_run_whose_classes_are_all_skipped_is_an_error(tmp_path, capsys):
    """One sample per class (regression: spray exited 0 with an empty result the viewer could not show)."""
    R, _ = planted_heatmaps(n=4)
    run = _npz_run(str(tmp_path / "tiny"), R, np.arange(4))
    with pytest.raises(SpRAyError, match=r"SpRAy analysed no class of .*class\(es\) 0 \(1 samples, fewer than 17\), "
                                          r"1 \(1 samples.*at least 17 heatmaps per class.*spray.json"):
        with pytest.warns(UserWarning, match="skips class"):
            spray(run, **FAST)
    meta = json.load(open(os.path.join(run, "spray", "spray.json")))
    assert meta["classes"] == {} and sorted(meta["skipped"]) == ["0", "1", "2", "3"]  # the viewer says why
    assert np.load(os.path.join(run, "relevances.npz"))["relevance"].shape == R.shape  # the run is untouched
    assert main(["spray", run, "--threads", "1"]) == 1
    captured = capsys.readouterr()
    assert "error: SpRAy analysed no class" in captured.err and "Traceback" not in captured.err
    assert "SpRAy results:" not in captured.out
    # no valid sample at all
    run2 = _npz_run(str(tmp_path / "none"), R, np.full(4, -1))
    with pytest.raises(SpRAyError, match="no valid sample with an explained class"):
        spray(run2, **FAST)


def test_virelay_export_of_a_file_run_reads_the_images(tmp_path):
    """A run of image files that did not store its inputs: the images are found by the run's names."""
    from PIL import Image

    from interprettensor.analysis.spray.virelay import export_virelay

    rng = np.random.default_rng(3)
    R, _ = planted_heatmaps(n=24, size=8)
    R = R[..., :1]
    pixels = rng.integers(0, 256, (24, 8, 8), dtype=np.uint8)
    images = tmp_path / "images"
    images.mkdir()
    names = np.array([f"img{i:02d}" for i in range(24)])
    for name, p in zip(names, pixels):
        Image.fromarray(p).save(images / f"{name}.png")
    run = str(tmp_path / "run")
    os.makedirs(run)
    outputs = rng.normal(size=(24, 2)).astype(np.float32)
    outputs[:, 0] += 10.0  # class 0 predicted everywhere
    np.savez(os.path.join(run, "relevances.npz"), relevance=R, indices=np.arange(24), targets=np.zeros(24, int),
             outputs=outputs, valid=np.arange(24) != 5, names=names)
    spray(run, n_neighbors=4, n_eigenvectors=3, n_clusters=(2, 3), tsne=False, **FAST)
    v = read_virelay_project(export_virelay(run, str(tmp_path / "vr"), inputs=str(images)))
    np.testing.assert_allclose(v["data"][:, 0], pixels / 255.0, atol=1e-7)
    np.testing.assert_array_equal(v["attr"]["index"], np.r_[0:5, 6:24])  # sample 5 was not valid
    assert v["label"].dtype == bool and not v["label"].any()  # no labels known: n-hot, all False
    (an,) = v["analysis"].values()
    np.testing.assert_array_equal(an["index"], np.r_[0:5, 6:24])
    assert v["project"]["attributions"]["attribution_strategy"] == "predicted_label"
    # a folder of class subfolders, as `interprettensor digits` writes and explain names (SUBFOLDER_STEM)
    for i, (name, p) in enumerate(zip(names, pixels)):
        os.makedirs(tmp_path / "classes" / str(i % 2), exist_ok=True)
        Image.fromarray(p).save(tmp_path / "classes" / str(i % 2) / f"{name}.png")
    np.savez(os.path.join(run, "relevances.npz"), relevance=R, indices=np.arange(24), targets=np.zeros(24, int),
             outputs=outputs, valid=np.arange(24) != 5, names=[f"{i % 2}_{n}" for i, n in enumerate(names)])
    spray(run, n_neighbors=4, n_eigenvectors=3, n_clusters=(2, 3), tsne=False, **FAST)
    v = read_virelay_project(export_virelay(run, str(tmp_path / "vr2"), inputs=str(tmp_path / "classes")))
    np.testing.assert_allclose(v["data"][:, 0], pixels / 255.0, atol=1e-7)
    outputs[3] = [0.0, 10.0]  # sample 3 was explained for class 0, not its prediction: say which strategy
    np.savez(os.path.join(run, "relevances.npz"), relevance=R, indices=np.arange(24), targets=np.zeros(24, int),
             outputs=outputs, valid=np.arange(24) != 5, names=names)
    with pytest.raises(SpRAyError, match="computed on another state of the run"):
        export_virelay(run, str(tmp_path / "vr2"), inputs=str(images))
    spray(run, n_neighbors=4, n_eigenvectors=3, n_clusters=(2, 3), tsne=False, **FAST)
    with pytest.raises(SpRAyError, match="neither the samples' known labels nor the highest outputs"):
        export_virelay(run, str(tmp_path / "vr2"), inputs=str(images))
    os.remove(images / "img07.png")
    with pytest.raises(SpRAyError, match="no image file named 'img07'"):
        export_virelay(run, str(tmp_path / "vr2"), inputs=str(images), attribution_strategy="true_label")


def test_old_virelay_module_is_a_deprecated_alias():
    """``interprettensor.io.virelay`` (the export's old place) still imports, warns with the new place
    and gives the same functions."""
    import subprocess
    import sys

    code = ("import warnings\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    from interprettensor.io.virelay import export_virelay, category_name, _safe\n"
            "import interprettensor.analysis.spray.virelay as new\n"
            "msgs = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]\n"
            "print('SAME', export_virelay is new.export_virelay, category_name is new.category_name, _safe is new._safe)\n"
            "print('WARNED', any('interprettensor.analysis.spray.virelay' in m for m in msgs))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "SAME True True True" in p.stdout and "WARNED True" in p.stdout, p.stdout

def _sharded_run(folder, R, targets, shard_size):
    """A finished sharded run written the way explain_dataset writes one (shards and manifest.json)."""
    from interprettensor.io.shards import shard_path, write_json, write_npz

    os.makedirs(folder)
    entries = []
    for k, lo in enumerate(range(0, len(R), shard_size)):
        hi = min(lo + shard_size, len(R))
        write_npz(shard_path(folder, k), {"relevance": R[lo:hi], "indices": np.arange(lo, hi),
                                          "targets": targets[lo:hi].astype(np.int32),
                                          "outputs": np.zeros((hi - lo, 3), np.float32), "valid": np.ones(hi - lo, bool)})
        entries.append({"file": f"shard-{k:05d}.npz", "start": lo, "count": hi - lo, "nonfinite": 0})
    write_json(os.path.join(folder, "manifest.json"), {"format": 1, "identity": {"shard_size": shard_size},
                                                       "complete": True, "n_samples": len(R), "shards": entries})
    return folder


def _files(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def test_damaged_or_missing_shard_is_named_with_what_to_do(tmp_path, capsys):
    R, _ = planted_heatmaps(n=30, size=8)
    run = _sharded_run(str(tmp_path / "run"), R, np.zeros(30, int), 10)
    shard = os.path.join(run, "shard-00001.npz")
    kw = dict(n_neighbors=4, n_eigenvectors=3, n_clusters=(2,), tsne=False, **FAST)
    advice = (r"rerun `interprettensor explain \.\.\. --resume` \(or explain_dataset with the same arguments\), which "
              r"rewrites missing or damaged shards")
    good = open(shard, "rb").read()
    with open(shard, "r+b") as f:  # truncated: spray said "zipfile.BadZipFile: File is not a zip file" (traceback)
        f.truncate(len(good) // 2)
    before = _files(run)
    with pytest.raises(SpRAyError, match=r"shard-00001\.npz' of the run in .* is damaged \(BadZipFile.*" + advice):
        spray(run, **kw)
    assert main(["spray", run, "--neighbors", "4", "--eigenvectors", "3", "--clusters", "2", "--no-tsne",
                 "--threads", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: shard ") and "shard-00001.npz" in err, err
    assert "--resume" in err
    assert _files(run) == before  # nothing of the run deleted or rewritten (and no spray folder yet)
    # deleted: "holds no explanations: neither a sharded run ..." was misleading
    os.remove(shard)
    with pytest.raises(SpRAyError, match=r"shard-00001\.npz' of the run in .* is missing.*" + advice):
        spray(run, **kw)
    # readable archive, damaged data (bad CRC): found when the heatmaps are read
    raw = bytearray(good)
    at = bytes(raw).index(R[10:20].tobytes()) + 100
    raw[at] ^= 0xFF
    open(shard, "wb").write(bytes(raw))
    with pytest.raises(SpRAyError, match=r"shard-00001\.npz' of the run in .* is damaged \(BadZipFile: Bad CRC.*"
                                         + advice):
        spray(run, **kw)
    open(shard, "wb").write(good)  # restored: the run reads as before
    assert spray(run, **kw).classes[0].n == 30


def test_unfinished_run_names_both_ways_to_finish_it(tmp_path):
    unfinished = str(tmp_path / "unfinished")
    os.makedirs(unfinished)
    json.dump({"format": 1, "identity": {}, "complete": False, "n_samples": None, "shards": []},
              open(os.path.join(unfinished, "manifest.json"), "w"))
    with pytest.raises(SpRAyError, match=r"run explain_dataset again with the same arguments \(on the command line: "
                                         r"the same `interprettensor explain \.\.\.` with --resume\)"):
        spray(unfinished)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_spray_files_follow_the_umask(tmp_path, mask):
    R, _ = planted_heatmaps(n=20, size=8)
    run = _npz_run(str(tmp_path / "npz"), R, np.zeros(20, int))
    old = os.umask(mask)
    try:
        res = spray(run, n_neighbors=4, n_eigenvectors=3, n_clusters=(2,), tsne=False, **FAST)
    finally:
        os.umask(old)
    files = sorted(os.listdir(res.path))
    assert files == ["class-0.npz", "spray.json"]
    for f in files:
        assert os.stat(os.path.join(res.path, f)).st_mode & 0o777 == 0o666 & ~mask, f
