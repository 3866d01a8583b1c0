"""Task functions for the pool tests (importable by spawn and forkserver workers)."""

import ctypes
import os
import signal
import time


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def identity(x):
    return x


def pid_of(_=None):
    return os.getpid()


def slow_square(x, delay=0.01):
    time.sleep(delay)
    return x * x


def fail_on(x, bad=3):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def kill_self_on(x, bad=5):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def exit_on(x, bad=2, code=3):
    if x == bad:
        os._exit(code)
    return x


def segfault_on(x, bad=1):
    if x == bad:
        ctypes.string_at(0)
    return x


def c_sleep(seconds):
    """Sleeps inside one C call (libc sleep): no Python-level checkpoint a signal handler could use."""
    ctypes.CDLL(None).sleep(int(seconds))
    return seconds


def c_sleep_on(x, bad=0, seconds=30):
    if x == bad:
        ctypes.CDLL(None).sleep(seconds)
    return x


def kill_once(marker, x):
    """SIGKILLs its worker the first time it runs (per marker file), then succeeds."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x * 10
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def always_killed(_x):
    os.kill(os.getpid(), signal.SIGKILL)


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


_INIT = []


def record_initializer(value):
    _INIT.append(value)


def initialized_value(_=None):
    return _INIT[-1] if _INIT else None


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object refuses to pickle")


def return_unpicklable(_=None):
    return Unpicklable()


class FailsToUnpickle:
    def __reduce__(self):
        return _raise_on_load, ()


def _raise_on_load():
    raise RuntimeError("cannot be rebuilt here")


def return_fails_to_unpickle(_=None):
    # Rebuilding raises in the parent; in the worker this only pickles.
    return FailsToUnpickle()


def big_result(n):
    return b"x" * n


def length(data):
    return len(data)


def leak_memory(n_mb):
    global _HOARD
    try:
        _HOARD  # noqa: B018 (is the global set yet?)
    except NameError:
        _HOARD = []
    _HOARD.append(bytearray(n_mb << 20))
    return os.getpid()


def queue_put(q, value):
    q.put(value)
    return value


def kill_once_len(marker, data):
    """Like kill_once, for a large argument: returns len(data) on the second run."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return len(data)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def sys_exit_on(x, bad=1, code=3):
    if x == bad:
        import sys

        sys.exit(code)
    return x


def exit_in_initializer(code=5):
    os._exit(code)
