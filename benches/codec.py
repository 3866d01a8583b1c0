"""Codec micro-benchmark: ns per encode, decode and encode+decode, next to pickle.

Method: `timeit` in one process, best of 5 repeats of an auto-ranged loop, the figure includes the Python call
overhead of each function (~40 ns for a C function here). Run after `make build-release`:

    .venv/bin/python benches/codec.py
"""

import pickle
import timeit

from pyconc._native import decode, encode, encode_key, stable_hash

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def ns(fn):
    t = timeit.Timer(fn)
    n, _ = t.autorange()
    return min(t.repeat(5, n)) / n * 1e9


def main():
    cases = [
        ("int 12345", 12345),
        ("str 100 B", "x" * 100),
        ("bytes 10 KB", b"x" * 10_000),
        ("tuple (1, 'a', 2.0)", (1, "a", 2.0)),
        ("dict 10 str->int", {f"k{i}": i for i in range(10)}),
        ("bytes 1 MB", b"x" * 1_000_000),
    ]
    if np is not None:
        cases.append(("ndarray 1000 f8", np.arange(1000.0)))
    print(f"{'value':<22}{'encode':>10}{'decode':>10}{'enc+dec':>10}{'pickle d+l':>12}")
    for name, v in cases:
        data = encode(v)
        e = ns(lambda: encode(v))
        d = ns(lambda: decode(data))
        ed = ns(lambda: decode(encode(v)))
        p = ns(lambda: pickle.loads(pickle.dumps(v, 5)))
        print(f"{name:<22}{e:>9.0f} {d:>9.0f} {ed:>9.0f} {p:>11.0f}")
    for name, fn in [
        ("encode_key('key')", lambda: encode_key("key")),
        ("stable_hash('key')", lambda: stable_hash("key")),
        ("hash('key') (floor)", lambda: hash("key")),
    ]:
        print(f"{name:<22}{ns(fn):>9.0f}")

if __name__ == "__main__":
    main()
