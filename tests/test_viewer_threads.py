"""The viewer reads run files from the threads that answer its requests. numpy parses an array's
header with ``ast.literal_eval``, and CPython 3.11's AST construction fails when threads parse at once
and a garbage collection (running a finaliser) switches between them (``SystemError: AST constructor
recursion depth mismatch``, CPython gh-106905): a page of thumbnails answered some images with an
internal error. The reads are serialised; here eight threads read arrays, switching as often as the interpreter
lets them, while making cyclic garbage with finalisers: without the lock this failed within two
seconds."""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np

from interprettensor.apps.viewer.runs.files import _open_member


class _Finalised:
    def __del__(self):
        sum(range(200))  # Python code in a finaliser: the collection may switch threads


def test_array_headers_read_from_many_threads_at_once(tmp_path):
    path = str(tmp_path / "run.npz")
    arrays = {f"a{i}": np.full((3, i + 1), i, np.float32) for i in range(20)}
    np.savez(path, **arrays)
    errors: list = []

    def read() -> None:
        try:
            for _ in range(40):
                for name, want in arrays.items():
                    a, b = _Finalised(), _Finalised()
                    a.other, b.other = b, a  # cyclic garbage: freed by the collector
                    got = _open_member(path, name)
                    if got.shape != want.shape or not np.array_equal(got, want):
                        errors.append(f"{name}: {got.shape}")
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(repr(e))

    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(1, 1, 1)
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can
    try:
        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
    assert errors == []
