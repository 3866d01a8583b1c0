def test_local_wrapper():
    from pyconc.local import LocalWrapper

    w = LocalWrapper([1, 2])
    w.append(3)
    assert len(w) == 3 and w[0] == 1 and 2 in w and list(w) == [1, 2, 3] and w == [1, 2, 3]
    assert w.wrapped == [1, 2, 3] and repr(w) == "LocalWrapper([1, 2, 3])"
    n = LocalWrapper(5)
    assert n + 1 == 6 and int(n) == 5
