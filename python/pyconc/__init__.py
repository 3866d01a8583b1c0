"""pyconc: shared-memory queues, atomics, dicts and locks for Python processes.

Every object lives in a POSIX shared-memory segment and pickles as a small handle (segment name, offset, kind,
layout version), so it can be passed to processes started by fork, spawn or forkserver, through queues and to
pool workers, without copying its contents.
"""

import atexit as _atexit
import multiprocessing.util as _mp_util
import os as _os

from . import _native
from ._native import AtomicFlag, AtomicInt64
from .dicts import AtomicReference, ConcurrentDict, ConcurrentGatheringIterator, LocalWrapper
from .queues import ConcurrentQueue, JoinableQueue, Queue, ShutDown, SimpleQueue, StdConcurrentQueue
from .sharedctypes import Array, RawArray, RawValue, Value
from .synchronize import (
    Barrier,
    BoundedSemaphore,
    BrokenBarrierError,
    Condition,
    Event,
    Lock,
    OwnerDiedWarning,
    RLock,
    RWLock,
    Semaphore,
)

__version__ = _native.__version__

__all__ = [
    "Array",
    "AtomicFlag",
    "AtomicInt64",
    "AtomicReference",
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "ConcurrentDict",
    "ConcurrentGatheringIterator",
    "ConcurrentQueue",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "LocalWrapper",
    "OwnerDiedWarning",
    "Queue",
    "RLock",
    "RWLock",
    "RawArray",
    "RawValue",
    "Semaphore",
    "ShutDown",
    "SimpleQueue",
    "StdConcurrentQueue",
    "Value",
]

# A forked child inherits this process's mappings; it registers itself as a user of each, so segments stay alive
# while the child uses them even if the parent exits first. The registry lock is held across fork() so the child
# never sees it half-updated.
_os.register_at_fork(
    before=_native._before_fork,
    after_in_parent=_native._after_fork_parent,
    after_in_child=_native._after_fork_child,
)


# Leaving the user tables at exit unlinks segments whose last user this process is, even when objects are not
# destroyed (module globals at shutdown). multiprocessing's fork and forkserver children end with os._exit after
# running their finalizers, so they get a finalizer instead of an atexit hook.
_atexit.register(_native._release_all)


def _register_child_finalizer(_):
    _mp_util.Finalize(None, _native._release_all, exitpriority=-100)


_mp_util.register_after_fork(_register_child_finalizer, _register_child_finalizer)
