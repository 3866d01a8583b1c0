"""Functions run in child processes by the dict tests (importable by name under spawn and forkserver)."""


def add_many(d, keys, n):
    for i in range(n):
        d.add(keys[i % len(keys)], 1)


def write_range(d, start, stop):
    for i in range(start, stop):
        d[i] = ("v", i)


def check_and_write(d, key, value):
    assert d["from_parent"] == [1, 2, 3]
    d[key] = value


def update_with_many(d, key, n):
    for _ in range(n):
        d.update_with(key, lambda v: [*v, 1], [])




def check_ref(r):
    assert r.get() is None or r.get() == "shared"
    r.set("child")
