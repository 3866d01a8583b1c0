"""What travels between the parent and the workers, and how it is encoded.

Task messages (parent -> workers, through the task queue): ``(tid, fn_id, mode, payload, fnref)``: `fnref` is
the pickled function (or, when large, a pickled `BigPayload` holding it); a worker unpickles it only the first
time it meets `fn_id`, so a map's function is pickled once, and a plain function once per pool.
Result messages (workers -> parent, through the result queue): ``(tid, status, payload, elapsed_ns, slot)``;
a negative ``tid`` is a control message (a worker died, an initializer failed, a wake-up).

Messages are tuples of ints, bytes and simple scalars, which the queue's codec encodes natively (no pickle).
User objects (functions, arguments, results, exceptions) are pickled here into ``bytes`` payloads, so a value
that fails to pickle or unpickle fails its own task and never the queue operation. Functions and arguments fall
back to cloudpickle (when installed) for lambdas and closures. A payload larger than the queue's per-message
limit goes through a one-off shared buffer (`BigPayload`).
"""

from __future__ import annotations

import pickle
import traceback

from .. import _native

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .._native import _Handle

    #: Builds the error that replaces a value that failed to pickle: wrap(pickling error, value).
    _Wrap = Callable[[BaseException, Any], BaseException]
    #: What reopens a shared buffer in another process: (reopen_buffer, (handle, code, length)).
    _Reduced = tuple[Callable[[_Handle, str, int], _native.SharedBuffer], tuple[_Handle, str, int]]

# Task modes (bits).
M_PICKLED = 1  # payload is pickled
M_STAR = 2  # call fn(*item)
M_KW = 4  # item is (args, kwargs)
M_CHUNK = 8  # payload is a list of items
M_INLINE = 16  # fn_id is 0: the payload is (fn, args, kwargs), pickled
M_TIMED = 32  # record each item's start time (the task has a timeout)
M_BIG = 64  # payload is a pickled BigPayload holding the real payload bytes
M_FNBIG = 128  # the function reference is a pickled BigPayload holding the pickled function
M_CAREFUL = 256  # record each item of a chunk (after a crash in a chunk run at full speed)

# Result statuses.
R_VALUE = 0  # payload is the value itself (a simple scalar)
R_PICKLED = 1  # payload is the pickled value
R_ERROR = 2  # payload is pickled (exception, traceback text)
R_CHUNK = 3  # payload is a pickled list of values, failures as Failure objects
R_SKIPPED = 4  # the task was cancelled before it started
R_NEEDFN = 5  # the worker does not know the message's function id and the message did not carry it
R_CHUNK_FAILED = 6  # like R_CHUNK, and some items are Failures
R_BIG = 8  # added to a status: payload is a pickled BigPayload

# The claim table: one u64 word per in-flight task message, at slot `tid & (len - 1)`. The parent writes the
# message's tid (OPEN) before putting it; the worker that takes it swaps it for tid | TAKEN before running it, so
# exactly one of (a worker runs it, the parent takes it back, the parent cancels it) happens, whoever dies when.
CLAIM_TAKEN = 1 << 62
CLAIM_CANCELLED = 1 << 61
CLAIM_LOST = 1 << 60

# Control messages in the result queue (tid field).
C_DIED = -1  # (C_DIED, slot, (pid, exitcode, cur, item, state, reason), 0, 0)
C_INIT_FAILED = -2  # (C_INIT_FAILED, slot, traceback text, 0, 0)
C_WAKE = -3
C_BROKEN = -4  # (C_BROKEN, slot, reason text, 0, 0): workers cannot be kept alive

SIMPLE = frozenset({int, float, str, bytes, bool, type(None)})

_cloudpickle: Any
try:
    import cloudpickle

    _cloudpickle = cloudpickle
except ImportError:  # pragma: no cover - depends on the environment
    _cloudpickle = None

HAVE_CLOUDPICKLE = _cloudpickle is not None


def dumps(obj: object) -> bytes:
    """pickle.dumps, falling back to cloudpickle for what plain pickle refuses (lambdas, closures)."""
    try:
        return pickle.dumps(obj, 5)
    except (pickle.PicklingError, AttributeError, TypeError):
        if _cloudpickle is None:
            raise
        data: bytes = _cloudpickle.dumps(obj, 5)
        return data


loads = pickle.loads


class Failure:
    """One item's exception inside a chunk's result list."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException, tb: str | None) -> None:
        self.exc = exc
        self.tb = tb

    def __reduce__(self) -> tuple[object, ...]:
        return Failure, (self.exc, self.tb)


def format_tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def encode_error(exc: BaseException, tb: str, wrap: _Wrap) -> bytes:
    """Pickles (exc, tb); if the exception does not pickle, pickles what `wrap(pickling_error, exc)` gives."""
    try:
        return pickle.dumps((exc, tb), 5)
    except Exception as e:  # an exception with unpicklable state
        return pickle.dumps((wrap(e, exc), format_tb(e)), 5)


def encode_chunk(values: list[Any], wrap: _Wrap, failed: bool) -> tuple[bytes, bool]:
    """(pickled result list, whether it holds Failures); items that do not pickle become Failures (`wrap` builds
    their error)."""
    try:
        return pickle.dumps(values, 5), failed
    except Exception:
        pass
    out: list[Any] = []
    for v in values:
        try:
            pickle.dumps(v, 5)
            out.append(v)
        except Exception as e:
            if isinstance(v, Failure):
                out.append(Failure(wrap(e, v.exc), format_tb(e)))
            else:
                out.append(Failure(wrap(e, v), format_tb(e)))
    return pickle.dumps(out, 5), True


def new_buffer(code: str, nbytes_or_len: int) -> _native.SharedBuffer:
    """A fresh shared buffer of u64 words (code "Q") or bytes (code "B")."""
    size = 8 if code == "Q" else 1
    return _native.SharedBuffer(code, size, nbytes_or_len, ord(code))


def reopen_buffer(handle: _Handle, code: str, length: int) -> _native.SharedBuffer:
    size = 8 if code == "Q" else 1
    return _native.SharedBuffer(code, size, length, ord(code), _handle=handle)


def reduce_buffer(buf: _native.SharedBuffer) -> _Reduced:
    """(callable, args) that reopen `buf` in another process (a SharedBuffer pickles through its owner)."""
    return reopen_buffer, (buf._handle, buf.format, buf.length)


class SharedWords:
    """A picklable u64 shared buffer and a memoryview of it."""

    __slots__ = ("buf", "words")

    def __init__(self, length: int | None = None, _buf: _native.SharedBuffer | None = None) -> None:
        if _buf is None:
            assert length is not None
            _buf = new_buffer("Q", length)
        self.buf = _buf
        self.words = memoryview(self.buf)

    def __reduce__(self) -> tuple[object, ...]:
        return _reopen_words, (reduce_buffer(self.buf),)

    def close(self) -> None:
        self.words.release()


def _reopen_words(reduced: _Reduced) -> SharedWords:
    fn, args = reduced
    return SharedWords(None, fn(*args))


class BigPayload:
    """A payload too large for a queue message, in its own shared buffer.

    The sender keeps the buffer until the receiver has copied it out (it sets the first word), so the segment
    outlives the hand-over; `Outbox.collect` then drops it and the segment is unlinked with its last user.
    """

    __slots__ = ("buf",)

    def __init__(self, data: bytes | None = None, _buf: _native.SharedBuffer | None = None) -> None:
        if _buf is None:
            assert data is not None
            _buf = new_buffer("B", 8 + len(data))
            mv = memoryview(_buf)
            mv[8:] = data
            mv.release()
        self.buf = _buf

    def __reduce__(self) -> tuple[object, ...]:
        return _reopen_big, reduce_buffer(self.buf)[1]

    def read(self) -> bytes:
        """The payload, leaving it for other readers (a shared function)."""
        mv = memoryview(self.buf)
        try:
            return bytes(mv[8:])
        finally:
            mv.release()

    def take(self) -> bytes:
        mv = memoryview(self.buf)
        try:
            data = bytes(mv[8:])
            mv[0] = 1
        finally:
            mv.release()
        return data

    def taken(self) -> bool:
        mv = memoryview(self.buf)
        try:
            return mv[0] != 0
        finally:
            mv.release()


def _reopen_big(handle: _Handle, code: str, length: int) -> BigPayload:
    return BigPayload(None, reopen_buffer(handle, code, length))


class Outbox:
    """Big payloads this process sent and the receiver may not have taken yet."""

    def __init__(self) -> None:
        self.pending: list[BigPayload] = []

    def wrap(self, data: bytes) -> bytes:
        self.collect()
        big = BigPayload(data)
        self.pending.append(big)
        return pickle.dumps(big, 5)

    def collect(self) -> None:
        if self.pending:
            self.pending = [b for b in self.pending if not b.taken()]

    def clear(self) -> None:
        self.pending = []
