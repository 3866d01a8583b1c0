"""``python -m pyconc``: segment tools and benchmarks.

    python -m pyconc ls [--all]         list pyconc segments in /dev/shm (kind, size, live users)
    python -m pyconc gc [--grace S] [--all]  remove segments whose users all died

ls and gc look at the segments of this process's namespace (PYCONC_NAMESPACE; none by default), --all at
every pyconc segment on the machine.
    python -m pyconc bench [--quick]    benchmarks against multiprocessing, same run
    python -m pyconc stress queue ...   many processes on one queue, every item accounted for (--kill)
    python -m pyconc stress dict ...    many processes on one dict, final state verified (--kill)
    python -m pyconc stress pool ...    pool maps with every result checked, workers SIGKILLed at random (--kill)
"""

from __future__ import annotations

import argparse
import os
import sys


def _ls(args: argparse.Namespace) -> int:
    from .. import _native

    rows = _native.list_segments(args.all)
    if not rows:
        ns = _native.namespace()
        print("no pyconc segments" + ("" if args.all else f" in namespace {ns!r} (--all: every namespace)"))
        return 0
    print(f"{'name':40} {'kind':8} {'size':>12} {'creator':>8}  users")
    for r in rows:
        kind = r["kind"] or "INVALID"
        users = ",".join(map(str, r["users"])) or "-"
        line = f"{r['name']:40} {kind:8} {r['size']:>12} {r['creator_pid']:>8}  {users}"
        if r.get("objects") is not None:
            # An arena's file is mostly sparse: its size is what it can hold, not what it takes.
            line += f"  ({r['objects']} live objects)"
        print(line)
        if r["problem"]:
            print(f"    {r['problem']}")
        elif kind == "block" and r["users"]:
            _show_pool(r["name"])
    return 0


def _show_pool(name: str) -> None:
    """If segment `name` is a pyconc pool's table, prints the pool's counters and its workers."""
    import time

    from ..pool import _table

    try:
        t = _table.attach(name)
    except Exception:
        return
    if t is None:
        return
    try:
        head, rows = _table.describe(t)
    finally:
        t.close()
    dead = "" if head["parent_alive"] else " (dead)"
    print(f"    pool of process {head['parent']}{dead}: {head['slots']} workers, submitted {head['submitted']}, "
          f"completed {head['completed']}, failed {head['failed']}, crashed {head['crashed']}, "
          f"retried {head['retried']}, timed out {head['timed_out']}")
    now = time.monotonic_ns()
    for w in rows:
        running = f" task {w['task']} for {(now - w['t0']) / 1e9:.3f} s" if w["task"] and w["t0"] else ""
        state = w["state"] if w["alive"] or not w["pid"] else f"{w['state']} (dead)"
        print(f"      worker {w['slot']}: pid {w['pid']} {state}{running}, {w['tasks']} tasks "
              f"({w['items']} items), busy {w['busy_s']:.3f} s, idle {w['idle_s']:.3f} s, "
              f"restarts {w['restarts']}")


def _gc(args: argparse.Namespace) -> int:
    from .. import _native

    removed, invalid, kept, problems = _native.collect_segments(args.grace, args.all)
    for name in removed:
        print(f"removed {name} (no live users)")
    for name in invalid:
        print(f"removed {name} (invalid header, older than {args.grace:g} s)")
    for name, why in problems:
        print(f"kept {name}: {why}")
    print(f"{len(removed) + len(invalid)} removed, {kept} in use")
    if args.check_empty and kept:
        print("segments are still in use after the test suite:", file=sys.stderr)
        for r in _native.list_segments(args.all):
            print(f"  {r['name']} kind={r['kind']} users={r['users']}", file=sys.stderr)
        return 1
    if args.check_empty and (removed or invalid):
        print("the test suite left segments behind (their users died without releasing them)", file=sys.stderr)
        return 1
    return 0


def _stress(args: argparse.Namespace) -> int:
    if args.structure == "pool":
        from . import stress_pool

        ok, _ = stress_pool.run_pool(
            args.procs if args.procs_given else 4, args.items, args.start_method, args.kill, args.seed, args.timeout
        )
        return 0 if ok else 1
    if args.structure == "dict":
        from . import stress_dict

        ok, _ = stress_dict.run_dict(args.procs, args.ops, args.start_method, args.kill, args.seed, args.timeout)
        return 0 if ok else 1
    from . import stress

    return stress.main(args)


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyconc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ls", help="list pyconc segments")
    p.add_argument("--all", action="store_true", help="every namespace, not only PYCONC_NAMESPACE's")
    p.set_defaults(fn=_ls)
    p = sub.add_parser("gc", help="remove segments whose users all died")
    p.add_argument("--all", action="store_true", help="every namespace, not only PYCONC_NAMESPACE's")
    p.add_argument("--grace", type=float, default=60.0, help="age after which invalid segments are removed (s)")
    p.add_argument("--check-empty", action="store_true",
                   help="exit 1 if any pyconc segment of the namespace was found (tests)")
    p.set_defaults(fn=_gc)
    p = sub.add_parser("bench", help="benchmarks against multiprocessing, measured in the same run")
    p.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    p.add_argument("--only", default="",
                   help="comma-separated groups to run (counters,arrays,sync,queues,dict,deque,asyncio,pool)")
    p.set_defaults(fn=_bench)
    p = sub.add_parser("stress", help="many processes on one structure, every item accounted for")
    p.add_argument("structure", choices=["queue", "dict", "pool"])
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--consumers", type=int, default=4)
    p.add_argument("--messages", type=int, default=1_000_000, help="queue: total items")
    p.add_argument("--procs", type=int, default=None, help="dict: worker processes (8); pool: workers (4)")
    p.add_argument("--items", type=int, default=20_000, help="pool: items per adaptive map")
    p.add_argument("--ops", type=int, default=20_000, help="dict: operations per worker")
    p.add_argument("--size", type=int, default=64, help="payload bytes per item")
    p.add_argument("--maxsize", type=int, default=1024,
                   help="queue: its maxsize (above 1,024 the queue grows through larger rings while it fills)")
    p.add_argument("--start-method", default="fork", choices=["fork", "spawn", "forkserver"])
    p.add_argument("--kill", action="store_true", help="SIGKILL random processes during the run")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--timeout", type=float, default=1800)
    p.set_defaults(fn=_stress)
    args = parser.parse_args(argv)
    if getattr(args, "structure", None) is not None:
        args.procs_given = args.procs is not None
        if args.procs is None:
            args.procs = 8
    try:
        code: int = args.fn(args)
        return code
    except BrokenPipeError:
        # `python -m pyconc ls | head`: the reader left. Point stdout at /dev/null so the interpreter's final
        # flush does not raise again, and exit quietly (as the docs of `signal` recommend).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
