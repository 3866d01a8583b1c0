"""How pyconc follows this process's life: fork, interpreter exit and multiprocessing children's exit.

Imported once by the package. A forked child inherits this process's mappings and registers itself as a user of
each, so segments stay alive while the child uses them even if the parent exits first; the registry lock is held
across fork() so the child never sees it half-updated. Leaving the user tables at exit unlinks segments whose
last user this process is, even when objects are not destroyed (module globals at shutdown). multiprocessing's
fork and forkserver children end with os._exit after running their finalizers, so they get a finalizer instead
of an atexit hook.

At import, one bounded pass (at most ~10 ms) removes the segments of this namespace whose users were all killed
(SIGKILL, SIGTERM, the OOM killer): the same rule as ``python -m pyconc gc``. Creating a segment runs another
pass (2 ms) at most every 2 s, so a running program also cleans up after processes killed meanwhile.

SIGTERM is left alone by default: a library changing what SIGTERM does would change the exit codes and
``Pool.terminate()`` of programs that rely on it, and the segments a SIGTERMed process leaves are reaped as
those of a SIGKILLed one. ``pyconc.exit_on_sigterm()`` opts in to running the normal exit path instead.
"""

from __future__ import annotations

import atexit
import os
import sys

from . import _native

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn


def _register_child_finalizer(_: object) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _native._release_all, exitpriority=-100)


_hooked = False


def _hook_multiprocessing() -> None:
    """Has multiprocessing's children (which end with os._exit after their finalizers) release at exit, once
    multiprocessing is loaded: at import if it already is, else at the first fork (multiprocessing forks through
    os.fork, whose `before` hook runs in the parent first), so `import pyconc` does not import it."""
    global _hooked
    util = sys.modules.get("multiprocessing.util")
    if util is not None and not _hooked:
        _hooked = True
        util.register_after_fork(_register_child_finalizer, _register_child_finalizer)


def _before_fork() -> None:
    _hook_multiprocessing()
    _native._before_fork()


def install() -> None:
    """Installs the fork, exit and child-exit hooks (once, from the package's import)."""
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_native._after_fork_parent,
        after_in_child=_native._after_fork_child,
    )
    atexit.register(_native._release_all)
    _hook_multiprocessing()
    try:
        _native._reap_dead_segments(0.01)
    except (OSError, ValueError):  # an unreadable /dev/shm or a bad PYCONC_NAMESPACE: reported when used
        pass


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> bool:
    """Makes SIGTERM (``kill``, ``timeout``, ``docker stop``) run this process's normal exit path: the handler
    raises ``SystemExit(143)``, so ``finally`` blocks and ``atexit`` hooks run and the segments whose last user
    this process is are removed at once. Installed only if SIGTERM still has its default action (an existing
    handler is kept); call it from the main thread. Returns whether it installed the handler.

    Off by default: a process that handles SIGTERM exits with status 143 instead of being killed by the signal
    (``Process.exitcode`` is 143, not -15), and code that catches ``BaseException`` can delay the exit.
    Without it, what a SIGTERMed process leaves is removed by the next pyconc process's reaping.
    """
    import signal  # here, not at import: it imports enum (~5 ms)

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return True
