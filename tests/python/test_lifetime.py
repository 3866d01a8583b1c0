"""The one lifetime API of every shared object: `segment_name`, `close()`, `closed`, `unlink()` (README,
"Lifetime of shared memory"), for every class, in one process and across fork/spawn/forkserver."""

import gc
import os
import pickle

import pytest

from lifetime_workers import CLASSES, RAW, attach_use_close
from pyconc import _native


def _exists(name):
    return os.path.exists(f"/dev/shm/{name}")


def _in_arena(name):
    return any(s["name"] == name and s["kind"] == "arena" for s in _native.list_segments())


def _alive(name):
    """Whether segment `name` still holds a live object. A small object lives in an arena, which a process keeps
    as a spare once empty (README, "Lifetime"): trimming the spare first leaves only arenas with live objects."""
    _native._arena_trim()
    return _exists(name)


def _close(name, obj):
    """Closes `obj` as its user would let go of it (a raw ctypes object is let go of when it is collected)."""
    obj.close()
    if name in RAW:
        del obj
        gc.collect()


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_close_is_per_object_idempotent_and_final(name):
    make, use = CLASSES[name]
    obj = make()
    use(obj)
    seg = obj.segment_name
    assert isinstance(seg, str) and _exists(seg)
    assert obj.closed is False
    twin = pickle.loads(pickle.dumps(obj))  # a second object of the same shared state, in this process
    obj.close()
    assert obj.closed is True
    obj.close()  # idempotent
    assert obj.closed is True
    use(twin)  # another object keeps working: close() is per object
    assert _alive(seg)
    with pytest.raises((ValueError, OSError), match="closed"):  # OSError: SimpleQueue's, as multiprocessing's
        pickle.dumps(obj)
    if name not in RAW:
        with pytest.raises((ValueError, OSError), match="closed"):
            use(obj)
        with pytest.raises(ValueError, match="closed"):
            obj.segment_name  # noqa: B018 - the getter raises
    repr(obj)  # never raises
    twin.close()
    if name in RAW:
        del obj, twin
        gc.collect()
    assert not _alive(seg), "the segment outlived the last object that held it"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_unlink_keeps_holders_working(name):
    make, use = CLASSES[name]
    obj = make()
    seg = obj.segment_name
    obj.unlink()
    # An object's name: its segment's, or in an arena its cell's (the arena stays for its other objects; that
    # new processes cannot attach is checked across processes below).
    assert _exists(seg) == _in_arena(seg)
    obj.unlink()  # idempotent
    use(obj)
    assert obj.closed is False
    _close(name, obj)


def _child(ctx):
    conn, child_conn = ctx.Pipe()
    p = ctx.Process(target=attach_use_close, args=(child_conn,))
    p.start()
    return p, conn


def _recv(conn):
    assert conn.poll(60), "the child did not answer"
    return conn.recv()


def _join(p):
    p.join(30)
    if p.is_alive():
        p.kill()
        p.join(5)
    assert p.exitcode == 0


def test_across_processes(ctx):
    """For every class: a child attaching after unlink() fails with FileNotFoundError; after close() in the
    parent a child that attached keeps working; once both closed, the segment is gone."""
    # Objects made after the children started, so a forked child attaches (it inherits nothing).
    late, holder = _child(ctx), _child(ctx)
    try:
        objs = {name: make() for name, (make, _) in CLASSES.items()}
        segs = {name: o.segment_name for name, o in objs.items()}
        blobs = {name: pickle.dumps(o) for name, o in objs.items()}

        holder[1].send(blobs)
        assert _recv(holder[1]) == dict.fromkeys(CLASSES, "ok")
        for o in objs.values():
            o.unlink()
        late[1].send(blobs)
        assert _recv(late[1]) == dict.fromkeys(CLASSES, "FileNotFoundError")
        late[1].send("use")
        assert _recv(late[1]) == {}
        late[1].send("close")
        assert _recv(late[1]) == "closed"

        for name in list(objs):
            _close(name, objs.pop(name))
        holder[1].send("use")
        assert _recv(holder[1]) == dict.fromkeys(CLASSES, "ok"), "a holder stopped working when another closed"
        holder[1].send("close")
        assert _recv(holder[1]) == "closed"
        left = sorted(name for name, s in segs.items() if _alive(s))
        assert not left, f"segments outlived every holder: {left}"
    finally:
        _join(late[0])
        _join(holder[0])



def test_close_waits_for_a_running_call_of_another_thread():
    """close() while another thread is blocked in a call of the same object: that call goes on over mapped memory
    and returns normally (the object lets go when it has)."""
    import threading
    import time

    import pyconc

    for attempt in range(6):
        q = pyconc.Queue()
        twin = pickle.loads(pickle.dumps(q))
        seg = q.segment_name
        out = []

        def consume(q=q, out=out):
            try:
                out.append(q.get(timeout=30))
            except ValueError as e:  # it only got to get() after close()
                out.append(e)

        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.05 * 2**attempt)  # let it block in get()
        q.close()
        twin.put("item")
        t.join(30)
        assert not t.is_alive()
        if out == ["item"]:
            twin.close()
            assert not _exists(seg)
            return
        assert isinstance(out[0], ValueError) and "closed" in str(out[0])
        assert twin.get(timeout=5) == "item"
        twin.close()
    pytest.fail("the thread never reached get() before close()")
