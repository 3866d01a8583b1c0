"""How pyconc follows this process's life: fork, interpreter exit and multiprocessing children's exit.

Imported once by the package. A forked child inherits this process's mappings and registers itself as a user of
each, so segments stay alive while the child uses them even if the parent exits first; the registry lock is held
across fork() so the child never sees it half-updated. Leaving the user tables at exit unlinks segments whose
last user this process is, even when objects are not destroyed (module globals at shutdown). multiprocessing's
fork and forkserver children end with os._exit after running their finalizers, so they get a finalizer instead
of an atexit hook.
"""

import atexit
import multiprocessing.util
import os

from . import _native


def _register_child_finalizer(_: object) -> None:
    multiprocessing.util.Finalize(None, _native._release_all, exitpriority=-100)


def install() -> None:
    """Installs the fork, exit and child-exit hooks (once, from the package's import)."""
    os.register_at_fork(
        before=_native._before_fork,
        after_in_parent=_native._after_fork_parent,
        after_in_child=_native._after_fork_child,
    )
    atexit.register(_native._release_all)
    multiprocessing.util.register_after_fork(_register_child_finalizer, _register_child_finalizer)
