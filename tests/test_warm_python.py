"""tests/warm_python.py, which runs the docs' blocks and the command lines in processes forked from a warm
interpreter: each run must behave as a fresh ``python -c`` / ``interprettensor`` process would (its own
module state, working folder, environment, streams and exit status), and a run past its time is stopped."""

import os
import subprocess

import pytest
import warm_python


def test_a_block_runs_as_python_c_would(tmp_path):
    code = ("import os, sys\n"
            "print(__name__, sys.argv, repr(sys.path[0]), os.getcwd())\n"
            "print('to stderr', file=sys.stderr)\n"
            "open('written.txt', 'w').write('x')\n")
    p = warm_python.run_code(code, tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["__main__", "['-c']", "''", str(tmp_path)]
    assert "to stderr" in p.stderr
    assert (tmp_path / "written.txt").read_text() == "x"


def test_each_run_is_a_fresh_process(tmp_path):
    """What one run changes (module state, the environment, a module it imports) the next does not see."""
    first = warm_python.run_code("import os, json, keras\n"
                                 "keras.config.set_floatx('float16'); json.marker = 1; os.environ['MARKER'] = '1'\n"
                                 "print(os.getpid())", tmp_path)
    second = warm_python.run_code("import os, json, keras\n"
                                  "print(os.getpid(), keras.config.floatx(), hasattr(json, 'marker'), "
                                  "os.environ.get('MARKER'))", tmp_path)
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    pid, floatx, marker, env = second.stdout.split()
    assert pid != first.stdout.strip() and pid != str(os.getpid())
    assert (floatx, marker, env) == ("float32", "False", "None")


def test_exit_status_and_traceback_as_a_fresh_interpreter_gives_them(tmp_path):
    p = warm_python.run_code("raise ValueError('the message')", tmp_path)
    assert p.returncode == 1 and "Traceback" in p.stderr and "ValueError: the message" in p.stderr
    assert "warm_python" not in p.stderr  # the traceback is the block's own
    assert warm_python.run_code("import sys; sys.exit(3)", tmp_path).returncode == 3
    assert warm_python.run_code("import sys; sys.exit('said')", tmp_path).stderr.strip() == "said"


def test_the_environment_is_the_one_given(tmp_path):
    env = dict(warm_python.ENV, INTERPRETTENSOR_SOMETHING="given")
    p = warm_python.run_code("import os; print(os.environ['INTERPRETTENSOR_SOMETHING'])", tmp_path, env)
    assert p.stdout.strip() == "given"


def test_a_backend_or_an_import_time_variable_starts_cold():
    assert warm_python.needs_cold_start("KERAS_BACKEND=jax python -c 'import keras'")
    assert warm_python.needs_cold_start("interprettensor --backend torch explain m.keras x.npy")
    assert warm_python.needs_cold_start("print(1)", dict(warm_python.ENV, TF_NUM_INTEROP_THREADS="1"))
    assert not warm_python.needs_cold_start("print(1)", dict(warm_python.ENV, INTERPRETTENSOR_X="1"))


def test_the_command_line_runs_with_its_arguments(tmp_path):
    """As ``python -m interprettensor ARGS`` started cold: the same exit status, output and error."""
    argv = ["explain", "missing.keras", "x.npy", "--rule", "no-such-rule"]
    warm = warm_python.run_cli(argv, tmp_path)
    cold = warm_python._cold(warm.args, tmp_path, warm_python.ENV, 300)
    errors = [[line for line in p.stderr.splitlines() if line.startswith("error:")] for p in (warm, cold)]
    assert warm.returncode == cold.returncode == 1 and warm.stdout == cold.stdout
    assert errors[0] == errors[1] and "no-such-rule" in errors[0][0]
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint(__name__, sys.argv[1:])\n")
    p = warm_python.run_script(str(script), ["--flag", "1"], tmp_path)
    assert p.stdout.split() == ["__main__", "['--flag',", "'1']"]


def test_a_run_past_its_time_is_stopped(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        warm_python.run_code("import time; time.sleep(60)", tmp_path, timeout=1)
    assert warm_python.run_code("print('next')", tmp_path).stdout.strip() == "next"  # the server goes on
