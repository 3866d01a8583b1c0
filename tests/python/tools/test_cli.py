"""The command line: `python -m pyconc ls|gc|stress|bench` run end to end (short runs)."""

import subprocess
import sys


def _run(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "pyconc", *args], capture_output=True, text=True, timeout=timeout)


def test_bench_quick_counters_runs_and_prints_a_table():
    out = _run("bench", "--quick", "--only", "counters")
    assert out.returncode == 0, out.stderr
    assert "| counters | incr, 1 process |" in out.stdout
    assert "final counts exact" in out.stdout


def test_bench_rejects_unknown_groups():
    out = _run("bench", "--only", "nonsense")
    assert out.returncode == 2 and "unknown group" in out.stderr


def test_stress_dict_cli():
    out = _run("stress", "dict", "--procs", "3", "--ops", "2000", "--start-method", "fork", "--kill")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stress dict: OK" in out.stdout


def test_stress_queue_cli():
    out = _run("stress", "queue", "--producers", "2", "--consumers", "2", "--messages", "20000")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lost: 0" in out.stdout and "duplicated: 0" in out.stdout


def test_ls_and_gc():
    assert _run("ls").returncode == 0
    out = _run("gc")
    assert out.returncode == 0 and "removed" in out.stdout


def test_ls_into_a_closed_pipe_prints_no_traceback():
    import pyconc

    keep = [pyconc.AtomicInt64(i) for i in range(300)]  # enough rows to overflow the pipe buffer
    names = [a._handle[1] for a in keep]  # shared: ls sees them
    assert len(names) == 300
    p = subprocess.run(
        f"{sys.executable} -m pyconc ls | head -n 2", shell=True, capture_output=True, text=True, timeout=60
    )
    assert p.stdout.count("\n") == 2
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr
