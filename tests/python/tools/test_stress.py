"""Short versions of `python -m pyconc stress queue` (the full runs are 8 processes x 1M items)."""

import io

import pytest

from pyconc.tools import stress


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_queue_stress_every_item_exactly_once(start_method):
    out = io.StringIO()
    ok, r = stress.run_queue(2, 2, 20_000, start_method, size=100, timeout=120, out=out)
    assert ok, out.getvalue()
    assert r["received"] == r["items"] and r["lost"] == r["duplicated"] == r["corrupt"] == 0


def test_queue_stress_with_random_kills():
    out = io.StringIO()
    ok, r = stress.run_queue(3, 3, 300_000, "fork", size=64, kill=True, seed=11, timeout=240, out=out)
    assert ok, out.getvalue()
    assert r["producer_kills"] + r["consumer_kills"] > 0, out.getvalue()
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["corrupt"] == 0 and r["hung_consumers"] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_pool_stress_with_kills_is_exact(method):
    from pyconc.tools import stress_pool

    ok, result = stress_pool.run_pool(2, 2000, method, kill=True, seed=3, timeout=30, out=lambda *_: None)
    assert ok, result["errors"]
    assert result["kills"] > 0
    # A forkserver worker takes longer to replace than the killer's interval: fewer rounds fit in the time.
    assert result["rounds"] >= (3 if method == "fork" else 1)
