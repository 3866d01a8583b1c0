"""Functions run in child processes by the tests (importable by name under spawn and forkserver)."""


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
