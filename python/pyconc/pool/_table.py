"""The pool's state in shared memory: a header row and one row per worker slot.

Every field is a 64-bit unsigned word. Workers write their own row (what they run now, their counters); the
parent writes the header and each row's restart count. Anyone can read it: the parent for crash attribution,
timeouts and `stats()`, another process for `python -m pyconc ls`. Kept minimal and isolated so that it can move
onto the shared owner table (pid + start time slots) when that lands.

Row layout (16 words, 128 bytes, so two workers never write the same cache line pair):

    PID       worker pid (0: slot empty)
    STATE     IDLE / RUNNING / STARTING / RETIRED / INIT_FAILED
    CUR       id of the task message being run (0: none)
    ITEM      index of the item being run inside that message (a chunk)
    T0        CLOCK_MONOTONIC ns when that item started (worker start while STARTING)
    TASKS     task messages completed
    ITEMS     items completed
    BUSY      ns spent running items
    IDLE      ns spent waiting for work
    RESTARTS  times this slot's worker was replaced (written by the parent)
    RSS       resident set size in KiB, sampled after each task when an RSS limit is set
    SINCE     CLOCK_MONOTONIC ns when this worker started
    OWNER     the worker's owner word (pid and start time, `_native._owner_word`, the format of every owner
              table), written by the worker itself: with it another process tells a live worker from a dead one
              whose pid was reused (`_native._owner_alive`)

The header row holds MAGIC, the layout version, the parent pid, the slot count, the pool counters and the
parent's owner word.
"""

from __future__ import annotations

from .. import _native

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from typing import Any

    from ._wire import _Reduced

WORDS = 16
# Worker row fields.
PID, STATE, CUR, ITEM, T0, TASKS, ITEMS, BUSY, IDLE, RESTARTS, RSS, SINCE, OWNER = range(13)
# Header fields.
H_MAGIC, H_VERSION, H_PARENT, H_SLOTS, H_SUBMITTED, H_COMPLETED, H_FAILED, H_CRASHED, H_RETRIED, H_TIMEDOUT, \
    H_CANCELLED, H_CREATED, H_OWNER = range(13)

MAGIC = 0x6C6F6F70636E6F63  # "concpool", little-endian
VERSION = 2
# The block's recorded typecode: how `python -m pyconc ls` tells a pool table from other blocks.
TYPECODE = 0x6C6F6F70  # "pool"

# ITEM while a chunk runs at full speed (no per-item record).
FAST = (1 << 64) - 1

IDLE_STATE, RUNNING, STARTING, RETIRED, INIT_FAILED = 0, 1, 2, 3, 4
STATE_NAMES = {IDLE_STATE: "idle", RUNNING: "running", STARTING: "starting", RETIRED: "retired",
               INIT_FAILED: "init failed"}


def base(slot: int) -> int:
    """Index of `slot`'s first word."""
    return WORDS * (slot + 1)


class Table:
    """A view of the table: ``words`` is a memoryview of u64 over the shared buffer."""

    __slots__ = ("buf", "slots", "words")

    def __init__(self, slots: int | None = None, _buf: _native.SharedBuffer | _Reduced | None = None) -> None:
        if _buf is None:
            _buf = _native.SharedBuffer("Q", 8, WORDS * (slots + 1), TYPECODE)  # type: ignore[operator]  # slots given
        elif isinstance(_buf, tuple):
            fn, args = _buf
            _buf = fn(*args)
        self.buf = _buf
        self.words = memoryview(_buf)
        self.slots = len(self.words) // WORDS - 1

    @classmethod
    def create(cls, slots: int, parent_pid: int, now_ns: int) -> Table:
        t = cls(slots)
        w = t.words
        w[H_VERSION] = VERSION
        w[H_PARENT] = parent_pid
        w[H_SLOTS] = slots
        w[H_CREATED] = now_ns
        w[H_OWNER] = _native._owner_word()
        w[H_MAGIC] = MAGIC
        return t

    def __reduce__(self) -> tuple[object, ...]:
        from ._wire import reduce_buffer

        return Table, (None, reduce_buffer(self.buf))

    def base(self, slot: int) -> int:
        """Index of `slot`'s first word."""
        return WORDS * (slot + 1)

    def row(self, slot: int) -> list[int]:
        b = self.base(slot)
        return list(self.words[b:b + WORDS])

    def close(self) -> None:
        self.words.release()


def attach(name: str) -> Table | None:
    """The pool table in segment `name`, or None if that segment holds something else."""
    typecode, itemsize, length, handle = _native.block_shape(name)
    if typecode != TYPECODE or itemsize != 8 or length < WORDS or length % WORDS:
        return None
    t = Table(None, _native.SharedBuffer("Q", 8, length, TYPECODE, _handle=handle))
    if t.words[H_MAGIC] != MAGIC or t.words[H_VERSION] != VERSION:
        t.close()
        return None
    return t


def describe(t: Table) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The table as plain data: the header's counters and one dict per worker slot."""
    w = t.words
    head = {
        "parent": w[H_PARENT], "parent_alive": _native._owner_alive(w[H_OWNER]), "slots": w[H_SLOTS],
        "submitted": w[H_SUBMITTED], "completed": w[H_COMPLETED],
        "failed": w[H_FAILED], "crashed": w[H_CRASHED], "retried": w[H_RETRIED], "timed_out": w[H_TIMEDOUT],
    }
    rows = []
    for slot in range(min(t.slots, w[H_SLOTS])):
        r = t.row(slot)
        rows.append({
            "slot": slot, "pid": r[PID], "alive": _native._owner_alive(r[OWNER]),
            "state": STATE_NAMES.get(r[STATE], "?") if not r[CUR] else "running",
            "task": r[CUR], "tasks": r[TASKS], "items": r[ITEMS], "busy_s": r[BUSY] / 1e9, "idle_s": r[IDLE] / 1e9,
            "restarts": r[RESTARTS], "since": r[SINCE], "t0": r[T0],
        })
    return head, rows
