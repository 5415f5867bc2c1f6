"""The viewer's web server: the page (static files), a JSON API and PNG pictures, on 127.0.0.1.

Python's standard library serves it (``http.server.ThreadingHTTPServer``): a handful of read-only
routes on the loopback interface need no web framework, and the viewer adds no dependency.

Routes (all GET; errors are ``4xx`` with ``{"error": message}``):

* ``/api/runs``: the explain runs (name, samples, shape, rule, arrays, classes), their groups of the
  same data (switchable rules), SpRAy results, concepts runs and the colour maps;
* ``/api/samples?run=&offset=&limit=&target=&label=&ids=``: one page of samples (filtered by
  explained class or label, or the given sample ids), with the total;
* ``/api/sample?run=&index=``: one sample's details (outputs' top classes, relevance sum);
* ``/api/spray?run=&class=&embedding=``: a class's 2-D embedding, clusterings and eigenvalues;
* ``/api/concepts/channels?run=&layer=&order=`` and ``/api/concepts/examples?run=&layer=&channel=&mode=``;
* ``/img/sample.png?run=&index=&kind=input|heatmap|overlay&cmap=&size=`` and
  ``/img/concept.png?run=&layer=&channel=&mode=&rank=&kind=crop|heatmap|overlay&cmap=&size=``.
"""

from __future__ import annotations

import json
import mimetypes
import os
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import parse_qs, urlparse

import numpy as np

from ...engine.errors import InterpretTensorError
from . import images
from .runs import ConceptsRun, ExplainRun, Found, RunError, _Members, discover

__all__ = ["Viewer", "make_server", "ApiError"]

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_LIMIT = 500
MAX_SIZE = 1024


class ApiError(InterpretTensorError):
    """A bad request: answered with ``status`` and the message as JSON."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Viewer:
    """The runs found in the given paths and the answers to the API's questions about them."""

    def __init__(self, paths: Sequence[str], error: Any = RunError):
        self.members = _Members()
        self.found: Found = discover(paths, self.members, error)
        self.explain = dict(self.found.explain)
        self.concepts = dict(self.found.concepts)
        self.pngs = images.PngCache()
        # runs of the same inputs and the same model (fingerprints): their rules can be switched; a run
        # whose inputs or model are not known is a group of its own
        groups: dict[Any, list[str]] = {}
        for name, run in self.found.explain:
            key = run.group_key()
            groups.setdefault(("alone", name) if key is None else key, []).append(name)
        self.group_of = {name: g for g, names in enumerate(groups.values()) for name in names}
        for w in self.found.warnings:
            print(f"interprettensor viewer: warning: {w}", file=sys.stderr)

    # ------------------------------------------------------------------ lookups
    def run(self, q: dict) -> ExplainRun:
        name = _param(q, "run")
        if name not in self.explain:
            raise ApiError(f"no explain run {name!r}; runs: {', '.join(self.explain) or 'none'}", 404)
        return self.explain[name]

    def concepts_run(self, q: dict) -> ConceptsRun:
        name = _param(q, "run")
        if name not in self.concepts:
            raise ApiError(f"no concepts run {name!r}; runs: {', '.join(self.concepts) or 'none'}", 404)
        return self.concepts[name]

    # ------------------------------------------------------------------ API
    def api_runs(self, q: dict) -> dict:
        runs = []
        for name, r in self.found.explain:
            ok = r.available()  # the classes of the samples that can be shown (not of damaged shards)
            classes, counts = np.unique(r.targets[ok], return_counts=True)
            entry = {"name": name, "path": r.path, "n": r.n, "sample_shape": list(r.sample_shape), "rule": r.rule,
                     "arrays": sorted(r.keys), "has_inputs": "inputs" in r.keys, "has_labels": r.labels is not None,
                     "complete": r.complete, "group": self.group_of[name],
                     "targets": {str(int(c)): int(k) for c, k in zip(classes, counts)},
                     "unavailable": int((~ok).sum()), "damaged": list(r.damaged.values())}
            if r.labels is not None:
                lc, lk = np.unique(r.labels[ok], return_counts=True)
                entry["labels"] = {str(int(c)): int(k) for c, k in zip(lc, lk)}
            runs.append(entry)
        spray = {name: s.summary() for name, s in self.found.spray.items()}
        spray.update({name: {"error": msg, "classes": {}, "skipped": {}}
                      for name, msg in self.found.spray_errors.items()})
        concepts = [{"name": name, "path": c.path, **c.summary()} for name, c in self.found.concepts]
        return {"runs": runs, "spray": spray, "concepts": concepts, "cmaps": list(images.CMAPS),
                "kinds": list(images.KINDS), "warnings": list(self.found.warnings)}

    def api_samples(self, q: dict) -> dict:
        r = self.run(q)
        offset, limit = _int(q, "offset", 0, 0), _int(q, "limit", 48, 1, MAX_LIMIT)
        if "ids" in q:
            try:
                ids = [int(v) for v in _param(q, "ids").split(",") if v.strip()]
            except ValueError:
                raise ApiError("ids must be comma-separated sample indices") from None
            rows = np.array([r.row_of(i) for i in ids], np.int64) if ids else np.zeros(0, np.int64)
        else:
            keep = np.ones(r.n, bool)
            if q.get("target", [""])[0] != "":
                keep &= r.targets == _int(q, "target", 0)
            if q.get("label", [""])[0] != "":
                if r.labels is None:
                    raise ApiError(f"run {_param(q, 'run')!r} has no labels (the data had none)")
                keep &= r.labels == _int(q, "label", 0)
            rows = np.flatnonzero(keep)
        page = rows[offset:offset + limit]
        return {"run": _param(q, "run"), "total": int(len(rows)), "offset": offset, "limit": limit,
                "items": [self._item(r, int(i)) for i in page]}

    @staticmethod
    def _item(r: ExplainRun, row: int) -> dict:
        item = {"index": int(r.ids[row]), "target": int(r.targets[row]), "valid": bool(r.valid[row])}
        if r.labels is not None:
            item["label"] = int(r.labels[row])
        if r.names is not None:
            item["name"] = str(r.names[row])
        why = r.unavailable(row)
        if why:
            item["shard"], item["unavailable"] = why
        return item

    def api_sample(self, q: dict) -> dict:
        r = self.run(q)
        index = _int(q, "index", None)
        try:
            row = r.row_of(index)
            R = r.relevance(index)
            out = r.outputs(index) if "outputs" in r.keys else np.zeros(0, np.float32)
        except RunError as e:
            raise ApiError(str(e), 404) from None
        top = np.argsort(-out, kind="stable")[:5]
        return {**self._item(r, row), "run": _param(q, "run"), "shape": list(R.shape),
                "relevance_sum": float(np.nan_to_num(R.sum(dtype=np.float64))),
                "relevance_maxabs": float(np.nan_to_num(np.abs(R).max())) if R.size else 0.0,
                "top_outputs": [{"class": int(c), "value": float(out[c])} for c in top]}

    def api_spray(self, q: dict) -> dict:
        name = _param(q, "run")
        spray = self.found.spray.get(name)
        if name in self.found.spray_errors:
            raise ApiError(self.found.spray_errors[name], 404)
        if spray is not None and not spray.classes:  # every class skipped: said, whatever was asked
            raise ApiError(spray.empty_message(), 404)
        if spray is None:
            raise ApiError(f"run {name!r} has no SpRAy results (RUN/spray/spray.json); runs with them: "
                           f"{', '.join(self.found.spray) or 'none'}", 404)
        return spray.class_data(_param(q, "class"), q.get("embedding", ["tsne"])[0])

    def api_channels(self, q: dict) -> dict:
        c = self.concepts_run(q)
        layer = _param(q, "layer")
        return {"layer": layer, "channels": c.channels(layer, q.get("order", ["relevance"])[0])}

    def api_examples(self, q: dict) -> dict:
        c = self.concepts_run(q)
        layer, mode = _param(q, "layer"), q.get("mode", ["relevance"])[0]
        return {"layer": layer, "channel": _int(q, "channel", None), "mode": mode,
                "examples": c.examples(layer, _int(q, "channel", None), mode)}

    # ------------------------------------------------------------------ pictures
    def img_sample(self, q: dict) -> bytes:
        name, r = _param(q, "run"), self.run(q)
        index = _int(q, "index", None)
        kind = q.get("kind", ["heatmap"])[0]
        cmap = images.check_cmap(q.get("cmap", ["bwr"])[0])
        size = _int(q, "size", 96, 1, MAX_SIZE)
        if kind not in images.KINDS:
            raise ApiError(f"unknown kind {kind!r}; use {', '.join(images.KINDS)}")

        def make() -> bytes:
            try:
                R = r.relevance(index)
                x = r.inputs(index) if kind != "heatmap" else None
            except RunError as e:
                raise ApiError(str(e), 404) from None
            if kind != "heatmap" and x is None:
                raise ApiError(f"run {name!r} holds no inputs: explain with store_inputs=True (--store-inputs) "
                               f"to see them; the heatmap is there", 404)
            return images.png(images.picture(kind, R, x, cmap), size)

        return self.pngs.get(("s", name, index, kind, cmap if kind != "input" else "", size), make)

    def img_concept(self, q: dict) -> bytes:
        name, c = _param(q, "run"), self.concepts_run(q)
        layer, mode = _param(q, "layer"), q.get("mode", ["relevance"])[0]
        channel, rank = _int(q, "channel", None), _int(q, "rank", None)
        kind = q.get("kind", ["crop"])[0]
        cmap = images.check_cmap(q.get("cmap", ["bwr"])[0])
        size = _int(q, "size", 96, 1, MAX_SIZE)
        if mode not in ConceptsRun.MODES or kind not in ("crop", "heatmap", "overlay"):
            raise ApiError(f"mode must be relevance or activation and kind crop, heatmap or overlay; got {mode!r}, "
                           f"{kind!r}")

        def make() -> bytes:
            crops = c.array(layer, f"{mode}_crops")
            if not (0 <= channel < crops.shape[0] and 0 <= rank < crops.shape[1]):
                raise ApiError(f"layer {layer!r} has {crops.shape[0]} channels and {crops.shape[1]} examples each; "
                               f"got channel {channel}, rank {rank}", 404)
            crop = np.asarray(crops[channel, rank], np.float64) / 255.0
            crop = np.repeat(crop, 3, axis=-1) if crop.shape[-1] == 1 else crop[..., :3]
            if kind == "crop":
                return images.png(crop, size)
            H = np.asarray(c.array(layer, f"{mode}_heatmaps")[channel, rank], np.float32)
            if kind == "heatmap":
                return images.png(images.picture("heatmap", H, None, cmap), size)
            return images.png(images.picture("overlay", H, crop, cmap), size)

        return self.pngs.get(("c", name, layer, mode, channel, rank, kind, cmap, size), make)


def _param(q: dict, key: str) -> str:
    v = q.get(key)
    if not v or v[0] == "":
        raise ApiError(f"missing parameter {key!r}")
    return v[0]


def _int(q: dict, key: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int:
    raw = q.get(key, [None])[0]
    if raw is None or raw == "":
        if default is None:
            raise ApiError(f"missing parameter {key!r} (an integer)")
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(f"parameter {key!r} must be an integer, got {raw!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ApiError(f"parameter {key!r} must be in {lo}..{'' if hi is None else hi}, got {v}")
    return v


ROUTES = {"/api/runs": "api_runs", "/api/samples": "api_samples", "/api/sample": "api_sample",
          "/api/spray": "api_spray", "/api/concepts/channels": "api_channels",
          "/api/concepts/examples": "api_examples"}
IMAGES = {"/img/sample.png": "img_sample", "/img/concept.png": "img_concept"}


class Handler(BaseHTTPRequestHandler):
    server: "ViewerServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        q = parse_qs(url.query, keep_blank_values=True)
        viewer = self.server.viewer
        try:
            if url.path in ROUTES:
                self._json(200, getattr(viewer, ROUTES[url.path])(q))
            elif url.path in IMAGES:
                self._send(200, getattr(viewer, IMAGES[url.path])(q), "image/png", cache=True)
            elif url.path.startswith("/api/") or url.path.startswith("/img/"):
                raise ApiError(f"no such route {url.path!r}", 404)
            else:
                self._static(url.path)
        except ApiError as e:
            self._json(e.status, {"error": str(e)})
        except (RunError, ValueError) as e:
            self._json(400, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - a bug: a message, not a traceback, for the page
            trace = traceback.format_exc()
            self.server.internal_errors.append((self.path, trace))
            del self.server.internal_errors[:-100]  # the latest hundred
            sys.stderr.write(f"interprettensor viewer: internal error answering {self.path}:\n{trace}")
            self._json(500, {"error": f"internal error: {type(e).__name__}: {e}"})

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        full = os.path.realpath(os.path.join(STATIC, name))
        if not full.startswith(os.path.realpath(STATIC) + os.sep) or not os.path.isfile(full):
            raise ApiError(f"not found: {path}", 404)
        with open(full, "rb") as f:
            body = f.read()
        ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(200, body, ctype)


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, viewer: Viewer, port: int = 0, verbose: bool = False):
        self.viewer, self.verbose = viewer, verbose
        self.internal_errors: list[tuple[str, str]] = []  # (request path, traceback): bugs, kept for tests
        super().__init__(("127.0.0.1", port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that drops a request it no longer needs (an image whose source changed, a page
        closed) resets the connection: nothing to report. Anything else is printed as before."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def make_server(paths: Sequence[str], port: int = 0, verbose: bool = False, error: Any = RunError) -> ViewerServer:
    """A server (not yet serving) for the runs in ``paths`` on ``127.0.0.1:port`` (0: a free port)."""
    return ViewerServer(Viewer(paths, error), port, verbose)


def serve_in_thread(server: ViewerServer) -> threading.Thread:
    """Serve in a daemon thread (tests, notebooks); ``server.shutdown()`` stops it."""
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t

