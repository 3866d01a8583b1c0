"""Functions run in child processes by the tests (importable by name under spawn and forkserver)."""

import ctypes as _ctypes


def incr_many(counter, n):
    for _ in range(n):
        counter.incr()


def iadd_many(counter, n):
    for _ in range(n):
        counter += 1


def set_value(obj, value):
    obj.value = value


def fill_array(arr, start, stop, value):
    for i in range(start, stop):
        arr[i] = value


def report_pid_then_sleep(q, seconds):
    import os
    import time

    q.put(os.getpid())
    time.sleep(seconds)


def attach_and_report(obj, q):
    q.put(int(obj))


def modify_values(values, raws):
    for v, r in zip(values, raws):
        v.value = r


def modify_array(arr, factor):
    for i in range(len(arr)):
        arr[i] *= factor


def fetch_add_many(obj, n, index=None):
    for _ in range(n):
        if index is None:
            obj.fetch_add(1)
        else:
            obj.fetch_add(index, 1)


def locked_increments(value, n):
    for _ in range(n):
        with value.get_lock():
            value.value += 1


def numpy_double(arr):
    import numpy as np

    view = np.frombuffer(arr, dtype="d")
    view *= 2


def queue_producer(q, start, n, size=0):
    pad = b"x" * size
    for i in range(start, start + n):
        q.put((i, pad) if size else i)


def queue_consumer(q, n, out):
    total = 0
    count = 0
    for _ in range(n):
        item = q.get(timeout=60)
        total += item[0] if isinstance(item, tuple) else item
        count += 1
    out.put((count, total))


def queue_consume_until_shutdown(q, out):
    import pyconc

    got = 0
    try:
        while True:
            q.get(timeout=60)
            got += 1
    except pyconc.ShutDown:
        out.put(("shutdown", got))


def joinable_worker(q, results):
    while True:
        item = q.get(timeout=60)
        if item is None:
            q.task_done()
            return
        results.put(item * 2)
        q.task_done()


def block_in_get_forever(q, ready):
    ready.set()
    q.get()


def gather_insert(it, keys, delay=0.0):
    import time

    for k in keys:
        if delay:
            time.sleep(delay)
        it.insert(k, ("v", k))


def gather_insert_bad(it):
    it.insert(1, lambda: None)  # not picklable: the insert fails


def dict_fill_past_main_heap(d):
    big = b"y" * (1 << 20)
    for i in range(80):  # 80 MiB: the dict grows into an extension segment created by this process
        d[("big", i)] = big


def hold_array_until(arr, attached, release, out):
    """Signals once attached, waits, then reports whether the segment name still exists and arr[0]."""
    import os

    attached.set()
    release.wait(60)
    with arr.get_lock():
        arr[0] += 1
    name = arr.get_obj()._pyconc_buffer.segment_name
    out.put((os.path.exists(f"/dev/shm/{name}"), arr[0]))



class Point(_ctypes.Structure):
    _fields_ = [("x", _ctypes.c_int), ("y", _ctypes.c_double)]


def double_point(v, a):
    with v.get_lock():
        v.x *= 2
    v.y = v.y * 2
    with a.get_lock():
        a[1].x += 100


def echo_handles(objs, out):
    out.put(objs)


def queue_put_and_hold(q, i, release):
    """Puts `i`, then stays alive (holding its participant entry) until `release` is set."""
    q.put(i)
    release.wait(60)


def attach_when_sent(conn):
    """Says it is running (its import-time reaping pass is done), then attaches to the object it is sent (by
    unpickling it) and sends back its value."""
    conn.send("ready")
    obj = conn.recv()
    conn.send(obj.get())


def queue_producer_tagged(q, tag, n):
    for i in range(n):
        q.put((tag, i))
