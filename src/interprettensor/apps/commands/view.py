"""``interprettensor view RUN_DIR [RUN_DIR ...]``: browse explained data sets, SpRAy results and
concepts in the web browser (:mod:`interprettensor.apps.viewer`). Needs neither TensorFlow nor Keras."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "cmd_view"]


def _port(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {s!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {v}")
    return v


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    v = sub.add_parser("view", parents=[common], help="browse explained runs, SpRAy results and concepts in the browser",
                       description="Serve a local web viewer (on 127.0.0.1 only) of the runs in RUN_DIR: explain_dataset "
                                   "runs (manifest.json + shards) and 'explain' runs (relevances.npz): samples with "
                                   "input, heatmap and overlay, by class, rule (several runs of the same data) and "
                                   "colour map; SpRAy results (RUN/spray/spray.json): embedding, clusters, "
                                   "eigenvalues; concepts runs (concepts.json): reference examples of each channel. "
                                   "A folder may hold several runs (searched 3 levels deep). Stop with Ctrl-C.")
    v.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, folders holding runs, or relevances.npz")
    v.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: 0, a free port)")
    v.add_argument("--no-browser", action="store_true", help="do not open the web browser, only print the URL")
    v.set_defaults(func=cmd_view, light=True)


def cmd_view(args: argparse.Namespace) -> int:
    """``interprettensor view``: find the runs, serve them until interrupted."""
    import webbrowser

    from .options import CLIError
    from ..viewer import make_server

    try:
        server = make_server(args.runs, args.port, verbose=bool(getattr(args, "debug", False)), error=CLIError)
    except OSError as e:
        raise CLIError(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}"
                       f"{' (choose another --port, or 0 for a free one)' if args.port else ''}") from None
    v = server.viewer
    print(f"interprettensor viewer: {len(v.explain)} explain run(s), {len(v.found.spray)} with SpRAy results, "
          f"{len(v.concepts)} concepts run(s)")
    print(f"serving on {server.url}  (Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        try:
            webbrowser.open(server.url)
        except Exception as e:  # noqa: BLE001 - no browser: the URL is printed
            print(f"could not open a browser ({e}); open {server.url}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
