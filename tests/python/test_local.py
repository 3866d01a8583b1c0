def test_local_wrapper():
    from pyconc.local import LocalWrapper

    w = LocalWrapper([1, 2])
    w.append(3)
    assert len(w) == 3 and w[0] == 1 and 2 in w and list(w) == [1, 2, 3] and w == [1, 2, 3]
    assert w.wrapped == [1, 2, 3] and repr(w) == "LocalWrapper([1, 2, 3])"
    n = LocalWrapper(5)
    assert n + 1 == 6 and int(n) == 5


def test_batch_executor():
    import threading

    import pytest

    from pyconc.local import BatchExecutor, LocalWrapper

    calls = []
    lock = threading.Lock()

    def source():
        with lock:
            calls.append(1)
            return len(calls)

    b = BatchExecutor(source, 4)
    assert b.load() == 1 and len(calls) == 4  # one refill calls source `size` times
    assert [b.load() for _ in range(3)] == [2, 3, 4] and len(calls) == 4
    assert b.load() == 5 and len(calls) == 8
    w = b.as_local()
    assert isinstance(w, LocalWrapper) and w.wrapped is b and w.load() == 6

    # Thread-safe: every value handed out exactly once.
    b2 = BatchExecutor(source, 7)
    got, glock = [], threading.Lock()

    def take():
        mine = [b2.load() for _ in range(500)]
        with glock:
            got.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 2000 and len(set(got)) == 2000

    # An exception from source propagates; values made before it are not lost.
    seq = iter([10, 11])

    def flaky():
        return next(seq)

    b3 = BatchExecutor(flaky, 3)
    with pytest.raises(StopIteration):
        b3.load()
    assert b3.load() == 10 and b3.load() == 11

    with pytest.raises(TypeError):
        BatchExecutor(5, 3)
    with pytest.raises(TypeError):
        BatchExecutor(source, 2.0)
    with pytest.raises(TypeError):
        BatchExecutor(source, True)
    with pytest.raises(ValueError):
        BatchExecutor(source, 0)


def test_local_wrapper_declares_every_forwarded_protocol_for_type_checkers():
    # The forwarded dunders are set at run time; the `if TYPE_CHECKING:` block in the class declares them for type
    # checkers. The two lists must stay the same (__str__ needs no declaration: object has it).
    import ast
    import inspect

    from pyconc import local

    tree = ast.parse(inspect.getsource(local.LocalWrapper))
    declared = {
        node.name
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.FunctionDef)
    }
    assert declared == set(local._FORWARDED) - {"__str__"}
