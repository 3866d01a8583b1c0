"""Process pools on shared memory: `Pool` (the `multiprocessing.Pool` API) and `ProcessPoolExecutor` (a
`concurrent.futures.Executor`), one engine under both.

Tasks and results travel through pyconc's shared-memory queues; idle workers pull work; a worker that dies fails
only the task it was running (`WorkerCrashedError`, after `max_retries` retries) and is replaced; per-task
timeouts and `Future.cancel()` kill the worker running the task, even inside a C call. See the README's
"Process pools" section for the differences from the stdlib.
"""

from concurrent.futures.process import BrokenProcessPool

from ._errors import RemoteTraceback, TaskTimeoutError, WorkerCrashedError
from ._executor import Future, ProcessPoolExecutor
from ._pool import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult, Pool

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "BrokenProcessPool",
    "Future",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "Pool",
    "ProcessPoolExecutor",
    "RemoteTraceback",
    "TaskTimeoutError",
    "WorkerCrashedError",
]
