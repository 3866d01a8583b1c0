"""Corrupting live pyconc segments, for the fault tests (`test_corruption.py`).

The layouts come from `shm-layouts/*.md` (the tables `tests/layouts.rs` checks against the Rust structs), so every
documented field of every structure is a corruption site: `sites(kind, obj)` lists them for a live object, as
(label, byte offset in the segment, size). `Mapped` writes into a segment through its file in /dev/shm.

Run as a script, it is the child process of the tests: `python corrupt.py MODE KIND SEED SCALE` runs every
scenario of one kind (MODE `fields`: each field set to a few values; MODE `random`: seeded random writes), each
under a `faulthandler` watchdog, printing `BEGIN label` / `END label`. Every operation must end in a result or an
exception; the process must neither crash nor hang. Each scenario restores what it changed and removes its own
segments (and only those: other processes on the machine have theirs in /dev/shm too).
"""

import faulthandler
import gc
import mmap
import os
import pickle
import random
import re
import sys
import threading
import time

LAYOUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shm-layouts")
DATA_OFFSET = 3840  # segment::header::DATA_OFFSET
USERS_OFFSET = 256
USER_SLOT = 16
STATE_AT = 64  # sync::shared::STATE_AT
ARENA_KIND = 8  # segment::header::Kind::Arena
REF_MASK = (1 << 40) - 1  # dict::layout::REF_OFFSET_MASK
SHM = "/dev/shm"


def parse_layouts():
    """{struct name (qualified by document when ambiguous): [(field, offset, size)]} from shm-layouts/*.md."""
    out = {}
    for fname in sorted(os.listdir(LAYOUT_DIR)):
        if not fname.endswith(".md"):
            continue
        doc = fname[:-3]
        struct = None
        for line in open(os.path.join(LAYOUT_DIR, fname)):
            m = re.match(r"## struct (\w+)", line)
            if m:
                struct = m.group(1)
                out[f"{doc}.{struct}"] = []
                continue
            m = re.match(r"\|\s*(\w+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", line)
            if m and struct:
                out[f"{doc}.{struct}"].append((m.group(1), int(m.group(2)), int(m.group(3))))
    return out


LAYOUTS = parse_layouts()


def fields(struct, base, prefix=None, skip=()):
    """Sites for every field of `struct` (e.g. "queue.Slot") at `base`. Fields over 8 bytes are arrays of words
    (or nested structs listed separately): their first and last words are sites."""
    prefix = prefix or struct.split(".")[1]
    out = []
    for name, off, size in LAYOUTS[struct]:
        if name in skip:
            continue
        if size <= 8:
            out.append((f"{prefix}.{name}", base + off, size))
        else:
            out.append((f"{prefix}.{name}[0]", base + off, 8))
            out.append((f"{prefix}.{name}[-1]", base + off + size - 8, 8))
    return out


class Mapped:
    """A segment's bytes, read and written through its file (the name may be unlinked later: the map stays)."""

    def __init__(self, name):
        with open(os.path.join(SHM, name), "r+b") as f:
            self.m = mmap.mmap(f.fileno(), 0)

    def get(self, off, size):
        return int.from_bytes(self.m[off : off + size], "little")

    def put(self, off, size, value):
        self.m[off : off + size] = (value % (1 << (8 * size))).to_bytes(size, "little")

    def raw(self, off, data):
        self.m[off : off + len(data)] = data

    def __len__(self):
        return len(self.m)


def live_pid():
    """A live process that is not this one (the test runner): lock words naming it look held forever."""
    return os.getppid()


def start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def owner_word(pid):
    """The `segment::owners` word naming live process `pid`: pid in bits 0..22, start time in bits 22..63."""
    return pid | (start_time(pid) & ((1 << 41) - 1)) << 22


# Values that the hangs of issue 11 were reproduced with, written on top of the generic ones to the fields they
# concern (as functions of the field's current value).
TARGETED = {
    "SegmentHeader.state": [lambda v: 2],  # "unlinked" while the file exists
    "BarrierState.phase": [lambda v: 2, lambda v: 5],  # an action nobody runs; an unknown phase
    "Slot[0].state": [lambda v: v + 1, lambda v: v + 1000],  # a slot ahead of its position
    "Slot[2].state": [lambda v: v + 1],
    "Shard[0].len": [lambda v: 1 << 62, lambda v: (1 << 64) - 1],  # a counter no table holds
    "Shard[0].tombstones": [lambda v: 1 << 62],
    "TableHeader.capacity": [lambda v: 1 << 39],
}


def values(size, orig, rng, scale, label=""):
    """Values to write into a field of `size` bytes holding `orig`: the ones that break invariants most often
    (all ones, a live pid, zero), those of `TARGETED`, and a seeded sample of the rest."""
    top = (1 << (8 * size)) - 1
    pid = live_pid()
    special = [top, pid if size >= 4 else 0] + [f(orig) for f in TARGETED.get(label, [])]
    others = [0, orig + 1, orig - 1, orig ^ (1 << rng.randrange(8 * size)), rng.getrandbits(8 * size), top >> 1]
    if size == 8:
        others += [1 << 40, (1 << 63) | (pid << 41), orig + (1 << 32)]
    if scale > 1:
        return special + others
    return [*special, rng.choice(others)]


def attempt(log, what, fn, *args, **kwargs):
    """Runs one operation; any exception is a fine outcome (recorded), as is any result."""
    try:
        r = fn(*args, **kwargs)
        log.append((what, "ok"))
        return r
    except Exception as e:  # every exception is an acceptable outcome here
        log.append((what, type(e).__name__))
        return None


# ---- the structures: build one, list its segments and sites, exercise it --------------------------------------

T = 0.01  # timeout of blocking operations


def seg_of_handle(obj):
    return obj._handle[1]


def cell_of_handle(obj):
    """Byte offset of an arena object's cell (the handle's offset without the generation in its high bits)."""
    return obj._handle[2] & 0xFFFFFFFF


def in_arena(obj):
    h = getattr(obj, "_handle", None)  # a Condition is a lock plus a wait queue
    return h is not None and h[3] == ARENA_KIND


class Kind:
    def build(self):
        raise NotImplementedError

    def segments(self, obj):
        return [seg_of_handle(obj)]

    def sites(self, obj, m):
        return []

    def exercise(self, obj, log):
        pass


class Segment(Kind):
    """The segment header and user table, on an atomic cell."""

    def build(self):
        import pyconc

        return pyconc.AtomicInt64(5)

    def sites(self, obj, m):
        return (
            fields("segment-header.SegmentHeader", 0, skip=("reserved0", "reserved"))
            + fields("segment-header.UserSlot", USERS_OFFSET, "UserSlot[0]")
            + fields("segment-header.UserSlot", USERS_OFFSET + 2 * USER_SLOT, "UserSlot[2]")
        )

    def exercise(self, obj, log):
        attempt(log, "get", obj.get)
        attempt(log, "incr", obj.incr)


class Atomic(Kind):
    def build(self):
        import pyconc

        return pyconc.AtomicInt64(5)

    def sites(self, obj, m):
        return fields("atomic.AtomicCell", cell_of_handle(obj))

    def exercise(self, obj, log):
        attempt(log, "get", obj.get)
        attempt(log, "set", obj.set, 3)
        attempt(log, "cas", obj.compare_exchange, 3, 4)
        attempt(log, "add", obj.add, 1 << 62)


class Arena(Kind):
    """An arena's header, the cell meta entry and bitmap word of the object, and its owner slot."""

    def build(self):
        import pyconc

        return pyconc.AtomicInt64(5)

    def sites(self, obj, m):
        cell = cell_of_handle(obj)
        cells_at, cell_size = m.get(DATA_OFFSET + 32, 8), m.get(DATA_OFFSET, 4)
        i = (cell - cells_at) // cell_size
        meta = m.get(DATA_OFFSET + 24, 8) + 16 * i
        owners = m.get(DATA_OFFSET + 16, 8)
        pid_of = lambda k: m.get(owners + 16 * k, 8) & ((1 << 22) - 1)
        slot = next(k for k in range(m.get(DATA_OFFSET + 8, 4)) if pid_of(k) == os.getpid())
        bitmap = m.get(DATA_OFFSET + 40, 8) + slot * m.get(DATA_OFFSET + 12, 4) + 8 * (i // 64)
        return (
            fields("arena.ArenaHeader", DATA_OFFSET, skip=("reserved",))
            + fields("arena.CellMeta", meta, f"CellMeta[{i}]", skip=("reserved",))
            + [("OwnerSlot.owner", owners + 16 * slot, 8), (f"bitmap[{i // 64}]", bitmap, 8)]
        )

    def exercise(self, obj, log):
        import pyconc

        attempt(log, "get", obj.get)
        attempt(log, "incr", obj.incr)
        more = attempt(log, "create", lambda: [pyconc.AtomicInt64(i) for i in range(3)])
        if more:
            attempt(log, "more-get", more[2].get)
        attempt(log, "lock", pyconc.Lock)
        attempt(log, "pickle", lambda: pickle.loads(pickle.dumps(obj)).get())


class Block(Kind):
    items = 40  # its own segment

    def build(self):
        import pyconc

        return pyconc.Array("i", self.items)

    def segments(self, obj):
        return [obj.get_obj()._pyconc_buffer.segment_name]

    def header_at(self, obj):
        return DATA_OFFSET

    def sites(self, obj, m):
        base = self.header_at(obj)
        return fields("block.ArrayHeader", base, skip=("reserved",)) + fields(
            "sync.LockState", base, "ArrayHeader.lock"
        )

    def exercise(self, obj, log):
        # Not `obj[3]`: that takes the embedded RLock without a timeout, and a lock word naming a live process
        # is a held lock (waiting for it is the user's choice, as with any lock).
        raw = obj.get_obj()
        attempt(log, "item", raw.__getitem__, 3)
        attempt(log, "setitem", raw.__setitem__, 3, 9)
        lock = obj.get_lock()
        if attempt(log, "acquire", lock.acquire, timeout=T):
            attempt(log, "locked-item", obj.__getitem__, 3)
            attempt(log, "release", lock.release)
        attempt(log, "slice", raw.__getitem__, slice(0, self.items))


class SmallBlock(Block):
    """A Value/Array whose items fit an arena cell: its header and lock at the cell's start."""

    items = 8

    def header_at(self, obj):
        return obj.get_obj()._pyconc_buffer._handle[2] & 0xFFFFFFFF


class SyncKind(Kind):
    state = None
    extra = ()

    def sites(self, obj, m):
        if in_arena(obj):  # a cell of an arena: the state alone (the arena's own fields are kind "arena")
            base, out = cell_of_handle(obj), []
        else:
            base = DATA_OFFSET + STATE_AT
            out = fields("sync.SyncHeader", DATA_OFFSET, skip=("reserved",))
        out += fields(self.state, base, skip=("reserved", "slots"))
        for struct, at, label in self.extra:
            out += fields(struct, base + at, label)
        return out


class Lock(SyncKind):
    state = "sync.LockState"

    def build(self):
        import pyconc

        return pyconc.Lock()

    def exercise(self, lock, log):
        if attempt(log, "acquire", lock.acquire, timeout=T):
            attempt(log, "release", lock.release)
        attempt(log, "locked", lock.locked)
        attempt(log, "repr", repr, lock)


class RLock(Lock):
    def build(self):
        import pyconc

        return pyconc.RLock()

    def exercise(self, lock, log):
        if attempt(log, "acquire", lock.acquire, timeout=T):
            if attempt(log, "reenter", lock.acquire, timeout=T):
                attempt(log, "release", lock.release)
            attempt(log, "release", lock.release)
        attempt(log, "repr", repr, lock)


class Semaphore(SyncKind):
    state = "sync.SemState"

    def build(self):
        import pyconc

        return pyconc.BoundedSemaphore(2)

    def exercise(self, s, log):
        if attempt(log, "acquire", s.acquire, timeout=T):
            attempt(log, "release", s.release)
        attempt(log, "release-too-many", s.release)
        attempt(log, "value", s.get_value)


class Event(SyncKind):
    state = "sync.EventState"

    def build(self):
        import pyconc

        return pyconc.Event()

    def exercise(self, e, log):
        attempt(log, "wait", e.wait, T)
        attempt(log, "set", e.set)
        attempt(log, "wait-set", e.wait, T)
        attempt(log, "clear", e.clear)


class Condition(SyncKind):
    state = "sync.CondState"
    extra = (("sync.CondSlot", 32, "CondSlot[0]"), ("sync.CondSlot", 32 + 16 * 1023, "CondSlot[1023]"))

    def build(self):
        import pyconc

        return pyconc.Condition()

    def segments(self, c):
        return [c._queue._handle[1], c._lock._handle[1]]

    def exercise(self, c, log):
        if attempt(log, "acquire", c.acquire, timeout=T):
            attempt(log, "notify", c.notify)
            attempt(log, "wait", c.wait, T)
            attempt(log, "notify_all", c.notify_all)
            attempt(log, "release", c.release)


class Barrier(SyncKind):
    state = "sync.BarrierState"
    extra = (
        ("sync.LockState", 0, "BarrierState.lock"),
        ("sync.BarrierSlot", 64, "BarrierSlot[0]"),
        ("sync.BarrierSlot", 64 + 16 * 3, "BarrierSlot[3]"),
    )

    def build(self):
        import pyconc

        return pyconc.Barrier(1)

    def exercise(self, b, log):
        attempt(log, "wait", b.wait, T)
        attempt(log, "abort", b.abort)
        attempt(log, "wait-broken", b.wait, T)
        attempt(log, "reset", b.reset)
        attempt(log, "wait-again", b.wait, T)
        attempt(log, "n_waiting", lambda: b.n_waiting)


class RWLock(SyncKind):
    state = "sync.RwState"
    extra = (("sync.LockState", 0, "RwState.wlock"), ("sync.ReaderSlot", 64, "ReaderSlot[0]"))

    def build(self):
        import pyconc

        return pyconc.RWLock()

    def exercise(self, rw, log):
        if attempt(log, "lock_read", rw.lock_read, T):
            attempt(log, "unlock_read", rw.unlock_read)
        if attempt(log, "lock_write", rw.lock_write, T):
            attempt(log, "unlock_write", rw.unlock_write)
        attempt(log, "readers", lambda: rw.readers())


class Queue(Kind):
    def build(self):
        import pyconc

        q = pyconc.Queue(8, capacity_bytes=1 << 16)
        q.put(b"x" * 200)  # a heap block, freed again: the heap has a block header and a free list
        q.get()
        q.put(1)
        q.put("two")
        return q

    def segments(self, q):
        return [q.segment_name]

    def sites(self, q, m):
        hdr = DATA_OFFSET
        parts = m.get(hdr + 32, 8)
        slots = m.get(hdr + 40, 8)
        heap = m.get(hdr + 48, 8)
        heap_start = m.get(heap + 8, 8)
        return (
            fields("queue.QueueHeader", hdr, skip=tuple(f"reserved{i}" for i in range(8)))
            + fields("queue.Participant", parts, "Participant[0]", skip=("reserved", "pad", "ops"))
            + fields("queue.OpRecord", parts + 16, "Participant[0].ops[0]")
            + fields("queue.OpRecord", parts + 16 + 24 * 3, "Participant[0].ops[3]")
            + fields("queue.Slot", slots, "Slot[0]")
            + fields("queue.Slot", slots + 64 * 2, "Slot[2]")
            + fields("heap.HeapHeader", heap, skip=("reserved",))
            + fields("heap.BlockHeader", heap_start, "heap.BlockHeader[0]")
        )

    def exercise(self, q, log):
        attempt(log, "put", q.put, 3, timeout=T)
        attempt(log, "put-heap", q.put, b"y" * 300, timeout=T)
        for i in range(4):
            attempt(log, f"get{i}", q.get, timeout=T)
        attempt(log, "get_many", q.get_many, 10, block=False)
        attempt(log, "put_many", q.put_many, range(3), timeout=T)
        attempt(log, "qsize", q.qsize)
        attempt(log, "empty", q.empty)
        attempt(log, "full", q.full)
        attempt(log, "stats", q.stats)


class Dict(Kind):
    def build(self):
        import pyconc

        d = pyconc.ConcurrentDict(scaling=2)
        for i in range(12):
            d[f"k{i}"] = i if i % 2 else "v" * (i * 10)
        return d

    def segments(self, d):
        return [d.segment_name]

    def sites(self, d, m):
        hdr = DATA_OFFSET
        shards = m.get(hdr + 16, 8)
        heap = m.get(hdr + 24, 8)
        heap_start = m.get(heap + 8, 8)
        table = m.get(shards + 40, 8) & REF_MASK
        cap = m.get(table + 8, 8)
        out = (
            fields("dict.DictHeader", hdr, skip=("reserved",))
            + fields("dict.Shard", shards, "Shard[0]", skip=("reserved", "lock"))
            + fields("sync.LockState", shards, "Shard[0].lock")
            + fields("dict.Shard", shards + 128, "Shard[1]", skip=("reserved", "lock"))
            + fields("dict.TableHeader", table, skip=("reserved",))
            + fields("heap.HeapHeader", heap, skip=("reserved",))
            + fields("heap.BlockHeader", heap_start, "heap.BlockHeader[0]")
        )
        used = [i for i in range(min(cap, 64)) if m.get(table + 16 + 16 * i + 8, 8) > 1]
        for i in used[:2]:
            out += fields("dict.TableSlot", table + 16 + 16 * i, f"TableSlot[{i}]")
        if used:
            entry = m.get(table + 16 + 16 * used[0] + 8, 8) & REF_MASK
            out += fields("dict.EntryHeader", entry, skip=("reserved",))
        return out

    def exercise(self, d, log):
        attempt(log, "set", d.__setitem__, "k1", 100)
        attempt(log, "set-new", d.__setitem__, "new", "n" * 50)
        attempt(log, "get", d.__getitem__, "k2")
        attempt(log, "contains", d.__contains__, "k3")
        attempt(log, "len", len, d)
        attempt(log, "items", lambda: list(d.items()))
        attempt(log, "pop", d.pop, "k4", None)
        attempt(log, "add", d.add, "counter")
        attempt(log, "update_with", d.update_with, "u", lambda v: (v or 0) + 1)
        attempt(log, "grow", lambda: [d.__setitem__(f"g{i}", i) for i in range(40)])
        attempt(log, "popitem", d.popitem)


KINDS = {
    "segment": Segment(),
    "atomic": Atomic(),
    "block": Block(),
    "smallblock": SmallBlock(),
    "lock": Lock(),
    "rlock": RLock(),
    "semaphore": Semaphore(),
    "event": Event(),
    "condition": Condition(),
    "arena": Arena(),
    "barrier": Barrier(),
    "rwlock": RWLock(),
    "queue": Queue(),
    "dict": Dict(),
}


# ---- scenarios -------------------------------------------------------------------------------------------------


def own_segments():
    from pyconc import _native

    me = os.getpid()
    return {r["name"] for r in _native.list_segments() if me in r["users"]}


def add_fake_user(m):
    """Registers the (live) parent in a free user slot, so that the segment outlives our handles and is attached
    afresh (mapped, validated, registered) when the handle is unpickled again."""
    word = owner_word(live_pid())
    for i in range(1, 224):
        off = USERS_OFFSET + i * USER_SLOT
        if m.get(off, 8) == 0:
            m.put(off, 8, word)
            return


def remove_own(names):
    """Removes the files of our own segments that a scenario left behind (its corruption may have made their
    lifetime bookkeeping wrong, or the fake user keeps them)."""
    for n in names:
        try:
            os.unlink(os.path.join(SHM, n))
        except FileNotFoundError:
            pass


def scenario(kind, corrupt, label, watchdog):
    """Builds a fresh object of `kind`, applies `corrupt(m, obj)` (which returns an undo function), exercises the
    object, lists and inspects its segments, re-attaches through a pickled handle and exercises that, then undoes
    and cleans up."""
    from pyconc import _native

    print(f"BEGIN {label}", flush=True)
    faulthandler.dump_traceback_later(watchdog, exit=True)
    log = []
    k = KINDS[kind]
    obj = k.build()
    handle = pickle.dumps(obj)
    names = set(k.segments(obj)) | own_segments()
    maps = {n: Mapped(n) for n in k.segments(obj)}
    main = maps[k.segments(obj)[0]]
    for m in maps.values():
        add_fake_user(m)
    undo = corrupt(main, obj)
    k.exercise(obj, log)
    attempt(log, "list", _native.list_segments)
    for n in names:
        attempt(log, "users", _native.segment_users, n)
    names |= own_segments()  # a dict may have added an extension segment
    del obj
    gc.collect()
    again = attempt(log, "reattach", pickle.loads, handle)
    if again is not None:
        k.exercise(again, log)
        names |= own_segments()
        del again
        gc.collect()
    undo()
    _native._arena_trim()  # the emptied arena this process kept for reuse: the next scenario gets a fresh one
    remove_own(names)
    faulthandler.cancel_dump_traceback_later()
    print(f"END {label} {len(log)} ops, {sum(1 for _, r in log if r != 'ok')} exceptions", flush=True)
    if os.environ.get("PYCONC_CORRUPT_VERBOSE"):
        print("    " + " ".join(f"{w}={r}" for w, r in log), flush=True)


def field_scenarios(kind, rng, scale):
    """Every field of every structure of `kind`, set to a few values."""
    k = KINDS[kind]
    probe = k.build()
    m = Mapped(k.segments(probe)[0])
    sites, seen = [], set()
    for label, off, size in k.sites(probe, m):
        if (off, size) not in seen:  # a nested struct listed on its own, and as its parent's field
            seen.add((off, size))
            sites.append((label, off, size))
    del probe, m
    gc.collect()
    from pyconc import _native

    _native._arena_trim()
    out = []
    for label, off, size in sites:
        for i in range(len(values(size, 0, random.Random(0), scale, label))):

            def corrupt(m, obj, off=off, size=size, i=i, seed=rng.random(), label=label):  # noqa: B008 - bound now
                orig = m.get(off, size)
                v = values(size, orig, random.Random(seed), scale, label)[i]
                m.put(off, size, v)
                return lambda: m.put(off, size, orig)

            out.append((f"{label}#{i}", corrupt))
    return out


def random_scenarios(kind, rng, scale, n=8):
    """Seeded random writes of 1 to 8 bytes anywhere in the first 16 KiB of the payload (and the header page)."""
    out = []
    for j in range(n * scale):
        seed = rng.getrandbits(64)

        def corrupt(m, obj, seed=seed):
            r = random.Random(seed)
            span = min(len(m), DATA_OFFSET + (16 << 10))
            saved = []
            for _ in range(r.randint(1, 4)):
                size = r.choice([1, 2, 4, 8])
                off = r.randrange(0, span - 8) & ~(size - 1)
                saved.append((off, size, m.get(off, size)))
                m.put(off, size, r.getrandbits(8 * size))
            return lambda: [m.put(o, s, v) for o, s, v in reversed(saved)]

        out.append((f"random#{j}", corrupt))
    return out


def full_user_table_scenario():
    """Every user slot held by a live process (ours too, so that letting go frees none): attaching again is a
    clear MemoryError, not a hang (issue 11, item 1)."""

    def corrupt(m, obj):
        saved = m.m[USERS_OFFSET : USERS_OFFSET + 224 * USER_SLOT]
        word = owner_word(live_pid())
        for i in range(224):
            m.put(USERS_OFFSET + i * USER_SLOT, 8, word)
        return lambda: m.raw(USERS_OFFSET, saved)

    return [("user-table-full", corrupt)]


def body(kind, m):
    """The byte range a scribbler writes into: a queue's participants, slots and heap (and the moving parts of
    its header); a dict's shards and heap. Not the segment header, so lifetime stays intact."""
    if kind == "queue":
        return DATA_OFFSET + 128, min(len(m), DATA_OFFSET + (64 << 10))
    shards = m.get(DATA_OFFSET + 16, 8)
    heap = m.get(DATA_OFFSET + 24, 8)
    return shards, min(len(m), heap + (64 << 10))


def scribble(kind, seed, seconds):
    """One process uses a live queue or dict while a forked scribbler writes random bytes into its body: every
    operation of the user must end (a result or an exception) within its deadline; the process must not crash."""
    k = KINDS[kind]
    obj = k.build()
    names = set(k.segments(obj)) | own_segments()
    m = Mapped(k.segments(obj)[0])
    lo, hi = body(kind, m)
    faulthandler.dump_traceback_later(seconds + 30, exit=True)
    pid = os.fork()
    if pid == 0:
        try:
            r = random.Random(seed)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for _ in range(r.randint(1, 16)):
                    size = r.choice([1, 4, 8, 8])
                    off = r.randrange(lo, hi - 8) & ~(size - 1)
                    m.put(off, size, r.getrandbits(8 * size) if r.random() < 0.7 else r.choice([0, 1, 2]))
                time.sleep(r.random() * 0.002)
        finally:
            os._exit(0)
    log = []
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        k.exercise(obj, log)
        rounds += 1
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    names |= own_segments()
    del obj
    gc.collect()
    from pyconc import _native

    _native._arena_trim()
    remove_own(names)
    faulthandler.cancel_dump_traceback_later()
    bad = sum(1 for _, r in log if r != "ok")
    print(f"DONE scribbled {kind} for {seconds:g} s: {rounds} rounds, {len(log)} ops, {bad} exceptions", flush=True)


def main():
    if sys.argv[1] == "scribble":
        scribble(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    mode, kind, seed, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(f"{kind}-{mode}-{seed}")
    if mode == "fields":
        todo = field_scenarios(kind, rng, scale)
        if kind == "segment":
            todo += full_user_table_scenario()
    else:
        todo = random_scenarios(kind, rng, scale)
    watchdog = float(os.environ.get("PYCONC_SCENARIO_DEADLINE", "20"))
    t0 = time.monotonic()
    for label, corrupt in todo:
        scenario(kind, corrupt, label, watchdog)
    assert threading.active_count() == 1
    print(f"DONE {len(todo)} scenarios in {time.monotonic() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
