"""The one place pool results become awaitable.

Today: `asyncio.wrap_future` for futures and a loop future completed through `call_soon_threadsafe` for
`AsyncResult` (no thread per waiter either way). When pyconc's asyncio bridge lands, only this function changes.
"""

from __future__ import annotations

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    from typing import Any

    from ._pool import AsyncResult


def awaitable(obj: concurrent.futures.Future[Any] | AsyncResult[Any]) -> asyncio.Future[Any]:
    """An asyncio future on the running loop that completes with `obj` (a Future or an AsyncResult)."""
    import asyncio
    import concurrent.futures

    if isinstance(obj, concurrent.futures.Future):
        return asyncio.wrap_future(obj)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    obj._add_listener(lambda ok, value: loop.call_soon_threadsafe(settle, ok, value))
    return fut
