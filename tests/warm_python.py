"""Fresh Python processes without paying for TensorFlow's import each time: forked from a warm interpreter.

A fresh ``python`` spends 5-9 s of CPU importing TensorFlow, Keras and keras_hub before a documentation
block's first line runs; the docs' and README's blocks and the command lines they print would spend
about a third of the suite's time on it. So the tests that run them as a user would (a block in a fresh
interpreter, ``interprettensor ARGS`` as a command) run each one in a process forked from a server
interpreter that has imported those modules and done nothing else: no model built, no TensorFlow op run,
no thread pool started. The forked process is a fresh process (its own memory, working folder, standard
streams, exit code, ``atexit`` handlers), running the block as ``python -c`` would (a new ``__main__``
module, ``sys.argv == ['-c']``, the working folder first on ``sys.path``) or the command as the
``interprettensor`` console script would (``interprettensor.apps.cli:main`` with its arguments). What
differs from a cold start is only that the modules above are already in ``sys.modules``.

What would differ is not run this way (:func:`needs_cold_start`): a block or command that picks another
Keras backend (``KERAS_BACKEND``, ``--backend``), which must be chosen before Keras is imported. The
import order a user's script takes (Keras before or after this package, the command line importing
no TensorFlow where it needs none) is tested in fresh interpreters by tests/test_cli_startup.py and
tests/test_import_order.py.

The server runs as ``python tests/warm_python.py``: it reads one JSON request per line on its standard
input, forks, answers the child's process id at once and its exit status when it ends. One server per
test process, started at the first request (:func:`server`) and stopped when that process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

#: the environment the tests' Python processes run in (no GPU, TensorFlow's log quiet, Agg plots, the
#: virtual environment's ``bin`` first on ``PATH``)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
           PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))

#: what the server imports before it forks (each only if it is installed)
PRELOAD = ("numpy", "tensorflow", "keras", "matplotlib.pyplot", "PIL.Image", "keras_hub", "interprettensor",
           "interprettensor.apps.cli")


#: environment variables read when the preloaded modules are imported: a process that changes one starts cold
STARTUP_VARIABLES = re.compile(r"^(KERAS_|TF_|XLA_|CUDA_|JAX_|TORCH|PYTHON|MPL|OMP_|LD_)")


def needs_cold_start(text: str, env: dict = ENV) -> bool:
    """Whether a block or command chooses its Keras backend, or its environment differs from the server's in a
    variable read at import time (either needs a fresh interpreter)."""
    changed = {k for k in set(env) | set(ENV) if env.get(k) != ENV.get(k)}
    return (bool(re.search(r"KERAS_BACKEND|--backend\b|keras\.config\.set_backend", text))
            or any(STARTUP_VARIABLES.match(k) for k in changed))


class Result:
    """What ``subprocess.run(..., capture_output=True, text=True)`` gives: ``returncode``, ``stdout``, ``stderr``."""

    def __init__(self, args, returncode: int, stdout: str, stderr: str):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr


class WarmServer:
    """A warm interpreter (see the module's docstring) and the requests sent to it."""

    def __init__(self, env: dict):
        self.env = env
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=env, cwd=tempfile.gettempdir(),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        bufsize=0)
        self._pending = b""
        line = self._line(600)
        if line.strip() != "ready":
            raise RuntimeError(f"the warm Python server did not start (it said {line!r})")

    def run(self, request: dict, cwd, env: dict, timeout: float, args) -> Result:
        """Run ``request`` (``{"code": ...}``, ``{"cli": [...]}`` or ``{"script": [...]}``) in a forked child
        in ``cwd`` with the environment ``env``."""
        with tempfile.TemporaryDirectory() as streams:
            out, err = os.path.join(streams, "stdout"), os.path.join(streams, "stderr")
            self.process.stdin.write((json.dumps(dict(request, cwd=str(cwd), env=env, stdout=out, stderr=err)) + "\n").encode())
            pid = int(json.loads(self._line(30))["pid"])
            try:
                status = json.loads(self._line(timeout))["status"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._line(30)
                raise subprocess.TimeoutExpired(args, timeout) from None
            with open(out, encoding="utf-8", errors="replace") as f_out, \
                    open(err, encoding="utf-8", errors="replace") as f_err:
                return Result(args, status, f_out.read(), f_err.read())

    def _line(self, timeout: float) -> str:
        """The server's next line, read from its pipe unbuffered (a buffered reader could hold a second line
        that ``select`` would not see)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the warm Python server ended (exit status {self.process.wait()})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


_SERVER: list = []


def server() -> WarmServer:
    """This process's server (started at the first call, in :data:`ENV`; stopped at exit)."""
    if not _SERVER or _SERVER[0].process.poll() is not None:
        _SERVER[:] = [WarmServer(ENV)]
        atexit.register(_SERVER[0].close)
    return _SERVER[0]


def _cold(args, cwd, env: dict, timeout: float) -> Result:
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return Result(args, p.returncode, p.stdout, p.stderr)


def run_code(code: str, cwd, env: dict = ENV, timeout: float = 600) -> Result:
    """``python -c code`` in ``cwd``: forked from the warm server, or cold where the code picks a backend."""
    args = [sys.executable, "-c", code]
    if needs_cold_start(code, env):
        return _cold(args, cwd, env, timeout)
    return server().run({"code": code}, cwd, env, timeout, args)


def run_cli(argv: list, cwd, env: dict = ENV, timeout: float = 600) -> Result:
    """The ``interprettensor`` command with ``argv`` (as ``python -m interprettensor ARGV`` runs it): forked
    from the warm server, or cold where it picks a backend."""
    args = [sys.executable, "-m", "interprettensor", *map(str, argv)]
    if needs_cold_start(" ".join(args), env):
        return _cold(args, cwd, env, timeout)
    return server().run({"cli": args[3:]}, cwd, env, timeout, args)


def run_script(path: str, argv: list, cwd, env: dict = ENV, timeout: float = 600) -> Result:
    """``python PATH ARGV``: forked from the warm server, or cold where the script picks a backend."""
    args = [sys.executable, str(path), *map(str, argv)]
    if needs_cold_start(" ".join(args) + open(path, encoding="utf-8").read(), env):
        return _cold(args, cwd, env, timeout)
    return server().run({"script": args[1:]}, cwd, env, timeout, args)


# --- the server's side ------------------------------------------------------------------------------------


def _serve() -> None:
    import importlib

    answer = os.fdopen(os.dup(1), "w", buffering=1)
    requests = os.fdopen(os.dup(0), "r")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the imports print does not reach the answers
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    print("ready", file=answer)
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            answer.close()
            requests.close()
            _child(request)  # never returns
        print(json.dumps({"pid": pid}), file=answer)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), file=answer)


def _child(request: dict) -> None:
    """Run the request as a fresh interpreter would, then leave with its exit status."""
    import atexit as child_atexit
    import builtins
    import threading
    import traceback
    import types

    status = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        main = types.ModuleType("__main__")
        main.__builtins__ = builtins
        sys.modules["__main__"] = main
        try:
            if "code" in request:
                sys.argv, sys.path[0] = ["-c"], ""
                exec(compile(request["code"], "<string>", "exec"), main.__dict__)
                status = 0
            elif "script" in request:
                import runpy

                sys.argv = list(request["script"])
                sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
                runpy.run_path(sys.argv[0], run_name="__main__")
                status = 0
            else:
                sys.path[0] = os.getcwd()
                from interprettensor.apps.cli import main as cli

                sys.argv = ["interprettensor", *request["cli"]]
                raise SystemExit(cli())
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                status = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                status = 1
        except BaseException as error:  # noqa: BLE001 - printed as an uncaught exception would be
            traceback.print_exception(type(error), error, error.__traceback__.tb_next)
            status = 1
        threading._shutdown()
        child_atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


if __name__ == "__main__":
    _serve()
