"""What every benchmark group shares: timing (medians of repeated runs), the row format, and the table.

A row is a dict (`Row`): group, name, pyconc, baseline, baseline_name, unit, ratio (> 1 means pyconc is better),
note.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO, TypedDict


class Row(TypedDict):
    group: str
    name: str
    pyconc: float | None
    baseline: float | None
    baseline_name: str
    unit: str
    ratio: float | None
    note: str


def median_rate(fn: Callable[[int], object], n: int, repeat: int) -> float:
    """Median operations per second of `fn(n)` over `repeat` runs."""
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of `fn()` over `repeat` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(
    group: str,
    name: str,
    ours: float | None,
    theirs: float | None,
    unit: str,
    baseline: str,
    higher_is_better: bool = True,
    note: str = "",
) -> Row:
    """One table row; the ratio is pyconc's advantage whichever way the unit points."""
    ratio = (ours / theirs if higher_is_better else theirs / ours) if ours and theirs else None
    return {
        "group": group, "name": name, "pyconc": ours, "baseline": theirs, "baseline_name": baseline,
        "unit": unit, "ratio": ratio, "note": note,
    }


def fmt(x: float | None, unit: str) -> str:
    """A figure in its unit, compactly (12.3M, 45.6k, 0.0199)."""
    if x is None:
        return "-"
    if unit in ("ms", "µs", "GB/s", "s", "threads"):
        return f"{x:,.3g}" if x < 100 else f"{x:,.0f}"
    if x >= 1e6:
        return f"{x / 1e6:,.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:,.1f}k"
    return f"{x:,.3g}"


def print_table(rows: Iterable[Row], out: TextIO = sys.stdout) -> None:
    """The rows as a Markdown table."""
    out.write("\n| group | operation | pyconc | baseline | unit | ratio | note |\n|---|---|---|---|---|---|---|\n")
    for r in rows:
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] is not None else "-"
        out.write(f"| {r['group']} | {r['name']} | {fmt(r['pyconc'], r['unit'])} | "
                  f"{fmt(r['baseline'], r['unit'])} ({r['baseline_name']}) | {r['unit']} | {ratio} | "
                  f"{r['note']} |\n")
