"""`print_stats()`: the table of a pool's workers and counters."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from typing import Any, TextIO


def _fmt(v: object, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}{unit}"
    return f"{v}{unit}"


def print_stats(stats: dict[str, Any], file: TextIO | None = None) -> None:
    out = file or sys.stdout
    print(f"{'slot':>4} {'pid':>8} {'state':10} {'tasks':>8} {'items':>9} {'busy s':>9} {'idle s':>9} "
          f"{'restarts':>8}  current task", file=out)
    for w in stats["workers"]:
        cur = "-" if w["task"] is None else f"{w['task']} for {w['running_s']:.3f} s"
        print(f"{w['slot']:>4} {_fmt(w['pid']):>8} {w['state']:10} {w['tasks']:>8} {w['items']:>9} "
              f"{w['busy_s']:>9.3f} {w['idle_s']:>9.3f} {w['restarts']:>8}  {cur}", file=out)
    keys = ("submitted", "completed", "failed", "crashed", "retried", "timed_out", "queued", "in_flight",
            "waiting", "results_queued")
    print("  ".join(f"{k}={stats[k]}" for k in keys if k in stats), file=out)
