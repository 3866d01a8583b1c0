"""The pool's exceptions, and the remote-traceback convention shared with multiprocessing and concurrent.futures.

A task that raises in a worker comes back as the same exception, with the worker's formatted traceback attached
as ``__cause__`` (a `RemoteTraceback`, the way `multiprocessing.pool` does it), so the parent's traceback shows
both sides.
"""

from __future__ import annotations

import multiprocessing
import signal as _signal
from concurrent.futures.process import BrokenProcessPool

__all__ = ["BrokenProcessPool", "RemoteTraceback", "TaskTimeoutError", "WorkerCrashedError", "describe_exit"]


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker (attached as ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def with_remote_traceback(exc: BaseException, tb_text: str | None) -> BaseException:
    """Attaches a worker's traceback text to `exc` as its ``__cause__`` and returns `exc`."""
    if tb_text:
        exc.__cause__ = RemoteTraceback(f'\n"""\n{tb_text}"""')
    return exc


def describe_exit(exitcode: int | None) -> str:
    """'signal 9 (SIGKILL)' for a negative exit code, 'exit code 3' otherwise."""
    if exitcode is None:
        return "an unknown exit status"
    if exitcode < 0:
        try:
            name = _signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-exitcode} ({name})"
    return f"exit code {exitcode}"


class WorkerCrashedError(BrokenProcessPool):
    """The worker process running a task died (killed, out of memory, os._exit, a segfault in an extension).

    Only that task fails (after ``max_retries`` retries on fresh workers); the pool replaces the worker and stays
    usable. ``exitcode`` is the worker's exit status (negative: killed by that signal), ``pid`` its process id,
    ``task`` a short description of the task, ``attempts`` how many times it was run.
    """

    def __init__(
        self, task: str = "a task", exitcode: int | None = None, pid: int | None = None, attempts: int = 1
    ) -> None:
        self.task = task
        self.exitcode = exitcode
        self.pid = pid
        self.attempts = attempts
        super().__init__(task, exitcode, pid, attempts)

    @property
    def signal(self) -> int | None:
        """The signal that killed the worker, or None if it exited."""
        return -self.exitcode if self.exitcode is not None and self.exitcode < 0 else None

    def __str__(self) -> str:
        tries = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        return f"worker process {self.pid} died running {self.task}{tries}: {describe_exit(self.exitcode)}"

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.task, self.exitcode, self.pid, self.attempts)


class TaskTimeoutError(multiprocessing.TimeoutError, TimeoutError):
    """A task ran longer than its ``timeout``/``task_timeout``: its worker was killed and replaced.

    Both the builtin `TimeoutError` and `multiprocessing.TimeoutError`.
    """

    def __init__(self, task: str = "a task", timeout: float | None = None) -> None:
        self.task = task
        self.timeout = timeout
        super().__init__(task, timeout)

    def __str__(self) -> str:
        return f"{self.task} ran longer than its timeout of {self.timeout:g} s; its worker was killed"

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.task, self.timeout)
