"""MNIST-family loader on small IDX files written here: parsing, file:// mirror, cache, checksums, offline."""

import gzip
import hashlib
import os
import struct

import numpy as np
import pytest

from interprettensor.io import downloads as datasets
from interprettensor.io.downloads import DatasetError, read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A file:// mirror with tiny MNIST-like IDX files, and SOURCES patched to their checksums."""
    rng = np.random.default_rng(0)
    data = {"train_images": rng.integers(0, 256, (5, 28, 28)), "train_labels": np.arange(5) % 10,
            "test_images": rng.integers(0, 256, (3, 28, 28)), "test_labels": np.array([7, 8, 9])}
    folder = tmp_path / "mirror"
    folder.mkdir()
    md5 = {}
    for part, fname in datasets.FILES.items():
        blob = gzip.compress(idx_bytes(data[part]))
        (folder / fname).write_bytes(blob)
        md5[fname] = hashlib.md5(blob).hexdigest()
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"mirrors": [folder.as_uri() + "/"], "md5": md5})
    monkeypatch.delenv("INTERPRETTENSOR_DATASET_MIRROR", raising=False)
    return folder, data, md5


def test_read_idx_raw_and_gzip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(str(tmp_path / "a.idx")), a)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "a.idx.gz")), a)
    ints = np.array([1, -2, 300], ">i4")
    blob = bytes([0, 0, 0x0C, 1]) + struct.pack(">i", 3) + ints.tobytes()
    np.testing.assert_array_equal(read_idx(blob), [1, -2, 300])


def test_read_idx_rejects_bad_files():
    with pytest.raises(DatasetError, match="magic"):
        read_idx(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetError, match="shape"):
        read_idx(idx_bytes(np.zeros((2, 2)))[:-1])  # one byte short


def test_download_verify_and_load(mirror, tmp_path):
    folder, data, _ = mirror
    cache = tmp_path / "cache"
    x_train, y_train, x_test, y_test = datasets.load("mnist", cache_dir=str(cache), quiet=True)
    assert x_train.shape == (5, 28, 28, 1) and x_test.shape == (3, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    np.testing.assert_allclose(x_train[..., 0] * 255.0, data["train_images"], atol=1e-3)
    np.testing.assert_array_equal(y_test, [7, 8, 9])
    assert sorted(os.listdir(cache / "mnist")) == sorted(datasets.FILES.values())
    # the cache is used: no mirror needed the second time
    for f in folder.iterdir():
        f.unlink()
    x2 = datasets.load("mnist", cache_dir=str(cache), quiet=True)[0]
    np.testing.assert_array_equal(x2, x_train)


def test_checksum_failure(mirror, tmp_path, monkeypatch):
    folder, _, md5 = mirror
    bad = dict(md5, **{"train-images-idx3-ubyte.gz": "0" * 32})
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"mirrors": [folder.as_uri() + "/"], "md5": bad})
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="checksum") as e:
        datasets.load("mnist", cache_dir=str(cache), quiet=True)
    assert "--dataset digits" in str(e.value)
    assert not (cache / "mnist" / "train-images-idx3-ubyte.gz").exists()  # the bad file is not kept


def test_corrupt_cached_file_is_downloaded_again(mirror, tmp_path):
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    x_train = datasets.load("mnist", cache_dir=str(cache), quiet=True)[0]
    assert x_train.shape == (5, 28, 28, 1)


def test_offline_names_the_cause_and_suggests_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPRETTENSOR_DATASET_MIRROR", (tmp_path / "nowhere").as_uri())
    with pytest.raises(DatasetError) as e:
        datasets.load("fashion_mnist", cache_dir=str(tmp_path / "cache"), quiet=True)
    msg = str(e.value)
    assert "download failed" in msg and "--dataset digits" in msg and "train-images-idx3-ubyte.gz" in msg


def test_digits_and_unknown():
    x_train, y_train, x_test, y_test = datasets.load("digits")
    assert x_train.shape[1:] == (28, 28, 1) and len(x_train) + len(x_test) == 1797
    with pytest.raises(DatasetError, match="unknown data set"):
        datasets.load("cifar")


def test_official_checksums_are_pinned():
    assert datasets.SOURCES["mnist"]["md5"]["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert datasets.SOURCES["fashion_mnist"]["md5"]["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
