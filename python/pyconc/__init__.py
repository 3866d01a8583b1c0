"""pyconc: shared-memory queues, atomics, dicts and locks for Python processes.

Every object lives in a POSIX shared-memory segment and pickles as a small handle (segment name, offset, kind,
layout version), so it can be passed to processes started by fork, spawn or forkserver, through queues and to
pool workers, without copying its contents.

The core structures are imported with the package; the parts that not every program needs are imported on first
use (PEP 562), so `import pyconc` stays fast.
"""

import importlib as _importlib

from . import _lifecycle, _native
from ._lifecycle import exit_on_sigterm
from ._native import AtomicFlag, AtomicInt64
from .dicts import ConcurrentDict
from .queues import ConcurrentQueue, Empty, Full, JoinableQueue, Queue, ShutDown, SimpleQueue, StdConcurrentQueue
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

__version__: str = _native.__version__

# The names imported on first use (below), as type checkers see them. `typing` is not imported at run time: a type
# checker takes any `TYPE_CHECKING` name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import local as local  # submodules: `as` marks them re-exported
    from . import synchronization as synchronization
    from .aio import ProcessSemaphore
    from .deques import ConcurrentDeque
    from .gathering import ConcurrentGatheringIterator
    from .local import BatchExecutor, LocalWrapper
    from .pool import Pool, ProcessPoolExecutor, TaskTimeoutError, WorkerCrashedError
    from .reference import AtomicReference
    from .synchronization import IntervalLock, RWReadContext, RWWriteContext

# Public names imported on first use: name -> module (relative to the package), None for a submodule.
_LAZY: "dict[str, str | None]" = {
    "AtomicReference": ".reference",
    "BatchExecutor": ".local",
    "ConcurrentDeque": ".deques",
    "IntervalLock": ".synchronization",
    "RWReadContext": ".synchronization",
    "RWWriteContext": ".synchronization",
    "ConcurrentGatheringIterator": ".gathering",
    "LocalWrapper": ".local",
    "synchronization": None,
    "local": None,
    "ProcessSemaphore": ".aio",
    "Pool": ".pool",
    "ProcessPoolExecutor": ".pool",
    "WorkerCrashedError": ".pool",
    "TaskTimeoutError": ".pool",
}

__all__ = [
    "Array",
    "AtomicFlag",
    "AtomicInt64",
    "AtomicReference",
    "Barrier",
    "BatchExecutor",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "ConcurrentDeque",
    "ConcurrentDict",
    "ConcurrentGatheringIterator",
    "ConcurrentQueue",
    "Condition",
    "Empty",
    "Event",
    "Full",
    "IntervalLock",
    "JoinableQueue",
    "LocalWrapper",
    "Lock",
    "OwnerDiedWarning",
    "Pool",
    "ProcessPoolExecutor",
    "ProcessSemaphore",
    "Queue",
    "RLock",
    "RWLock",
    "RWReadContext",
    "RWWriteContext",
    "RawArray",
    "RawValue",
    "Semaphore",
    "ShutDown",
    "SimpleQueue",
    "StdConcurrentQueue",
    "TaskTimeoutError",
    "Value",
    "WorkerCrashedError",
    "exit_on_sigterm",
]


if not TYPE_CHECKING:  # hidden from type checkers, which would take every unknown name for one of these

    def __getattr__(name: str) -> object:
        if name not in _LAZY:
            raise AttributeError(f"module 'pyconc' has no attribute {name!r}")
        module = _LAZY[name]
        if module is None:  # a submodule
            value = _importlib.import_module("." + name, __name__)
        else:
            value = getattr(_importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value

del TYPE_CHECKING  # dir(pyconc) lists the API only


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_lifecycle.install()
