import operator
import pickle

import pytest

import pyconc
from conftest import run_procs
from workers import iadd_many, incr_many


def test_basic_ops_return_new_values():
    a = pyconc.AtomicInt64(5)
    assert a.get() == 5
    assert a.incr() == 6
    assert a.decr() == 5
    assert a.add(10) == 15
    assert a.fetch_add(1) == 15
    assert a.exchange(3) == 16
    assert a.compare_exchange(3, 7) is True
    assert a.compare_exchange(3, 8) is False
    assert a.get() == 7
    a.set(-1)
    assert int(a) == -1
    assert repr(a) == "AtomicInt64(-1)"


def test_default_is_zero_and_range_is_int64():
    assert pyconc.AtomicInt64().get() == 0
    with pytest.raises(OverflowError):
        pyconc.AtomicInt64(2**63)
    a = pyconc.AtomicInt64(2**63 - 1)
    assert a.incr() == -(2**63), "incr wraps like a C int64_t"


@pytest.mark.parametrize(
    "op, other",
    [
        (operator.add, 3), (operator.sub, 3), (operator.mul, 3), (operator.floordiv, 3),
        (operator.truediv, 4), (operator.mod, 3), (operator.lshift, 2), (operator.rshift, 1),
        (operator.and_, 6), (operator.or_, 6), (operator.xor, 6), (operator.pow, 2),
        (operator.add, 1.5), (operator.mul, 2**70),
    ],
)
def test_binary_ops_match_int(op, other):
    a = pyconc.AtomicInt64(10)
    assert op(a, other) == op(10, other)
    assert type(op(a, other)) is type(op(10, other))
    if not isinstance(other, float):
        assert op(other, a) == op(other, 10)
    assert a.get() == 10, "binary ops do not modify"


@pytest.mark.parametrize(
    "op, iop, other",
    [
        (operator.add, operator.iadd, 3), (operator.sub, operator.isub, 5), (operator.mul, operator.imul, -3),
        (operator.floordiv, operator.ifloordiv, -4), (operator.mod, operator.imod, -4),
        (operator.lshift, operator.ilshift, 3), (operator.rshift, operator.irshift, 2),
        (operator.and_, operator.iand, 12), (operator.or_, operator.ior, 17), (operator.xor, operator.ixor, 5),
        (operator.pow, operator.ipow, 3),
    ],
)
def test_inplace_ops_are_atomic_and_return_self(op, iop, other):
    a = pyconc.AtomicInt64(-13)
    b = iop(a, other)
    assert b is a
    assert a.get() == op(-13, other)


@pytest.mark.parametrize(
    "iop, other",
    [
        (operator.iadd, 2**64), (operator.iadd, 2**64 + 5), (operator.isub, 2**64 + 1), (operator.iadd, -(2**70)),
        (operator.imul, 2**64 + 3), (operator.iand, 2**64 - 1), (operator.ior, 2**65 + 1),
        (operator.ixor, -(2**64) - 1), (operator.ifloordiv, 2**70), (operator.ifloordiv, -(2**70)),
        (operator.imod, 2**70), (operator.imod, -(2**70)), (operator.ipow, 2**40), (operator.ilshift, 2**70),
        (operator.irshift, 2**70),
    ],
)
@pytest.mark.parametrize("start", [-13, 7, 2**63 - 1, -(2**63)])
def test_inplace_ops_wrap_for_operands_out_of_range(iop, other, start):
    # The README's rule: in-place operators wrap modulo 2**64 like a C int64_t, whatever the operand.
    def wrap(v):
        v %= 2**64
        return v - 2**64 if v >= 2**63 else v

    if iop is operator.ipow:
        expected = wrap(pow(start, other, 2**64))
    elif iop is operator.ilshift:
        expected = 0
    elif iop is operator.irshift:
        expected = -1 if start < 0 else 0
    else:
        expected = wrap(iop(start, other))
    a = pyconc.AtomicInt64(start)
    assert iop(a, other) is a
    assert a.get() == expected


def test_inplace_rejects_non_int():
    a = pyconc.AtomicInt64(1)
    with pytest.raises(TypeError):
        a += 1.5
    with pytest.raises(TypeError):
        a /= 2
    with pytest.raises(ZeroDivisionError):
        a //= 0
    assert a.get() == 1


def test_comparisons_and_protocols():
    a = pyconc.AtomicInt64(7)
    assert a == 7 and a != 8 and a < 8 and a <= 7 and a > 6 and a >= 7
    assert a == pyconc.AtomicInt64(7)
    assert bool(a) and not bool(pyconc.AtomicInt64(0))
    assert f"{a:05d}" == "00007" and format(a, "x") == "7"
    assert -a == -7 and +a == 7 and abs(pyconc.AtomicInt64(-3)) == 3 and ~a == ~7
    assert [0, 1, 2, 3, 4, 5, 6, 7, 8][a] == 7
    assert float(a) == 7.0
    with pytest.raises(TypeError):
        hash(a)


def test_threads_increment_exactly():
    import threading

    a = pyconc.AtomicInt64()
    threads = [threading.Thread(target=incr_many, args=(a, 20000)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert a.get() == 80000


def test_pickle_is_a_handle_not_a_copy():
    a = pyconc.AtomicInt64(41)
    data = pickle.dumps(a)
    assert len(data) < 200
    b = pickle.loads(data)
    b.incr()
    assert a.get() == 42


def test_processes_increment_exactly(ctx):
    a = pyconc.AtomicInt64()
    run_procs(ctx, incr_many, [(a, 5000)] * 3)
    run_procs(ctx, iadd_many, [(a, 5000)] * 2)
    assert a.get() == 25000


def test_through_an_mp_queue(ctx):
    from workers import attach_and_report

    a = pyconc.AtomicInt64(123)
    q = ctx.Queue()
    p = ctx.Process(target=attach_and_report, args=(a, q))
    p.start()
    try:
        assert q.get(timeout=60) == 123
    finally:
        p.join(60)
    assert p.exitcode == 0


def test_flag():
    f = pyconc.AtomicFlag(True)
    assert bool(f)
    f.set(False)
    assert not f
    f.set([1])
    assert f
    g = pickle.loads(pickle.dumps(f))
    g.set(0)
    assert not f
    assert repr(f) == "AtomicFlag(False)"


def test_close_and_unlink():
    a = pyconc.AtomicInt64(1)
    handle = pickle.dumps(a)
    a.unlink()
    assert a.incr() == 2, "an unlinked segment still works for those who hold it"
    with pytest.raises(FileNotFoundError):
        # The name is gone, but this process still maps it: the registry hands back the mapping.
        # Drop every reference first to force a real open.
        del a
        import gc

        gc.collect()
        pickle.loads(handle)
    b = pyconc.AtomicInt64(1)
    b.close()
    assert b.closed
    with pytest.raises(ValueError, match="closed"):
        b.incr()
