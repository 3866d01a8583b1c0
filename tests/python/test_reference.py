import pickle

from conftest import run_procs
from dict_workers import check_ref


def test_atomic_reference(ctx):
    from pyconc import AtomicReference  # a lazily imported name

    r = AtomicReference([1])
    assert r.get() == [1]
    assert r.exchange("x") == [1] and r.get() == "x"
    assert not r.compare_exchange("y", 2) and r.compare_exchange("x", 2) and r.get() == 2
    assert not r.compare_exchange(2.0, 3)  # compared by encoded value
    r.set(None)
    r2 = pickle.loads(pickle.dumps(r))
    r2.set("shared")
    assert r.get() == "shared" and repr(r) == "AtomicReference('shared')"
    run_procs(ctx, check_ref, [(r,)])
    assert r.get() == "child"
