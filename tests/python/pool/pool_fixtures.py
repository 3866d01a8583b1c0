"""The pool tests' own autouse fixture (imported by each pool test module: a conftest.py here would shadow
tests/python/conftest.py for the modules that import it by name)."""

import multiprocessing
import os
import time

import pytest


def _helper_pids():
    """multiprocessing's own long-lived helpers (the forkserver, the resource tracker): not pool workers."""
    pids = set()
    try:
        from multiprocessing import forkserver

        pid = forkserver._forkserver._forkserver_pid
        if pid:
            pids.add(pid)
    except Exception:
        pass
    try:
        from multiprocessing import resource_tracker

        pid = resource_tracker._resource_tracker._pid
        if pid:
            pids.add(pid)
    except Exception:
        pass
    return pids


def child_pids():
    """Live (non-zombie) children of this process, from /proc."""
    me = os.getpid()
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(name))
    return out - _helper_pids()


@pytest.fixture(autouse=True)
def no_leaked_workers():
    """Every pool test must leave no worker behind (multiprocessing's view and the kernel's)."""
    before = child_pids()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = child_pids() - before
        if not left and not multiprocessing.active_children():
            break
        time.sleep(0.02)
    assert not multiprocessing.active_children(), multiprocessing.active_children()
    assert not (child_pids() - before), f"leaked worker processes: {child_pids() - before}"
