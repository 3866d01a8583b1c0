"""The one place pool results become awaitable.

Today: `asyncio.wrap_future` for futures and a loop future completed through `call_soon_threadsafe` for
`AsyncResult` (no thread per waiter either way). When pyconc's asyncio bridge lands, only this function changes.
"""


def awaitable(obj):
    """An asyncio future on the running loop that completes with `obj` (a Future or an AsyncResult)."""
    import asyncio
    import concurrent.futures

    if isinstance(obj, concurrent.futures.Future):
        return asyncio.wrap_future(obj)
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(ok, value):
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    obj._add_listener(lambda ok, value: loop.call_soon_threadsafe(settle, ok, value))
    return fut
