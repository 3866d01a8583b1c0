import multiprocessing as mp
import os

# The suite's segments live in their own namespace (set before pyconc creates any), so its checks and
# `pyconc gc --check-empty` see only them, never another program's. `make test` chooses one per run; a bare
# `pytest` gets one per session. Children (and `python -m pyconc` subprocesses) inherit it.
os.environ.setdefault("PYCONC_NAMESPACE", f"t{os.getpid() % 10**7}")

import pytest

from pyconc import _native

START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]


@pytest.fixture(params=START_METHODS)
def ctx(request):
    """A multiprocessing context for each start method."""
    return mp.get_context(request.param)


def own_segments():
    """Names of pyconc segments in /dev/shm that this process uses."""
    me = os.getpid()
    return {r["name"] for r in _native.list_segments() if me in r["users"]}


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Every test must release what it created: no segment this process uses may outlive the test."""
    import gc

    before = own_segments()
    yield
    gc.collect()
    # A process keeps one empty arena per cell size for its next small objects (README, "Lifetime"): not a
    # leak, and removed here so that what remains is.
    _native._arena_trim()
    leaked = own_segments() - before
    assert not leaked, f"test leaked segments: {sorted(leaked)}"


def run_procs(ctx, target, args_list, timeout=60):
    """Start one process per args tuple, join with a timeout, and fail (after killing) on hang or error."""
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join(5)
    assert not hung, f"{len(hung)} process(es) hung"
    codes = [p.exitcode for p in procs]
    assert codes == [0] * len(procs), f"exit codes {codes}"
