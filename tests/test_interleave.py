"""Interleaved rounds and same-round ratios, driven by a fake clock (no sleeps, no real timing)."""
from __future__ import annotations

import random
import statistics

import pytest

from profiler.interleave import RoundPlan, VisitHooks, median_ratio, run_rounds, same_round_ratios


class FakeClock:
    """A nanosecond clock that only moves when a fake workload advances it."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t

    def work(self, seconds: float):
        def fn() -> None:
            self.t += int(seconds * 1e9)
        return fn


def test_every_round_visits_every_cell_once_in_a_fresh_order():
    clock = FakeClock()
    fns = {k: clock.work(0.01) for k in "abcd"}
    plan = RoundPlan(visit_seconds=0.05, min_rounds=30, min_iters=1, min_seconds=0.0)
    cells, orders = run_rounds(fns, plan, rng=random.Random(1), clock_ns=clock)
    assert len(orders) == 30
    assert all(sorted(o) == list("abcd") for o in orders)
    assert len({tuple(o) for o in orders}) > 10  # reshuffled each round, not one fixed order
    firsts = {o[0] for o in orders}
    assert firsts == set("abcd")
    for c in cells.values():
        assert len(c.rounds) == 30
        assert all(len(r) == 5 for r in c.rounds)  # 0.05 s of 0.01 s calls; the untimed call is not a sample
        assert all(s == pytest.approx(0.01) for s in c.all)


def test_same_seed_same_order():
    clock = FakeClock()
    fns = {k: clock.work(0.01) for k in range(5)}
    plan = RoundPlan(visit_seconds=0.01, min_rounds=8, min_iters=1, min_seconds=0.0)
    _, o1 = run_rounds(fns, plan, rng=random.Random(7), clock_ns=clock)
    _, o2 = run_rounds(fns, plan, rng=random.Random(7), clock_ns=clock)
    assert o1 == o2


def test_stops_when_min_iters_and_min_seconds_reached_or_max_seconds():
    clock = FakeClock()
    fns = {"fast": clock.work(0.001), "slow": clock.work(0.1)}
    plan = RoundPlan(visit_seconds=0.2, min_rounds=3, min_iters=20, min_seconds=1.0, max_seconds=100)
    cells, orders = run_rounds(fns, plan, rng=random.Random(0), clock_ns=clock)
    assert len(cells["slow"].all) >= 20 and cells["slow"].timed_s >= 1.0
    assert len(cells["fast"].all) >= 20 and cells["fast"].timed_s >= 1.0
    # it stopped at the first round where both bars held
    assert len(orders) == 10  # slow gets 2 calls per 0.2 s visit: 20 calls after 10 rounds
    capped = RoundPlan(visit_seconds=0.2, min_rounds=3, min_iters=1, min_seconds=50, max_seconds=0.6)
    _, orders = run_rounds(fns, capped, rng=random.Random(0), clock_ns=clock)
    assert len(orders) == 3  # a cell hit max_seconds: the group stops


def test_hooks_wrap_each_visits_timed_calls():
    clock = FakeClock()
    events = []

    class H(VisitHooks):
        def start(self, key):
            events.append(("start", key, clock.t))

        def begin(self, key):
            events.append(("begin", key, clock.t))

        def end(self, key, n_calls):
            events.append(("end", key, n_calls))

    fns = {"a": clock.work(0.01), "b": clock.work(0.02)}
    run_rounds(fns, RoundPlan(visit_seconds=0.04, min_rounds=2, min_iters=1, min_seconds=0), rng=random.Random(0),
               clock_ns=clock, hooks=H())
    assert [e[0] for e in events] == ["start", "begin", "end"] * 4
    for start, begin in zip(events[0::3], events[1::3]):  # start comes before the visit's untimed call
        assert start[1] == begin[1] and begin[2] - start[2] == int({"a": 0.01, "b": 0.02}[start[1]] * 1e9)
    ends = {e[1]: e[2] for e in events if e[0] == "end"}
    assert ends == {"a": 4, "b": 2}


def test_same_round_ratio_cancels_drift():
    # the machine slows down by 50 % over the run; both cells slow alike within a round
    drift = [1.0 + 0.05 * r for r in range(11)]
    base = [0.010 * d for d in drift]
    cell = [0.004 * d for d in drift]
    ratios = same_round_ratios(base, cell)
    assert ratios == pytest.approx([2.5] * 11)
    r = median_ratio(ratios)
    assert r.median == pytest.approx(2.5) and r.low == pytest.approx(2.5) and r.high == pytest.approx(2.5)
    assert r.n_rounds == 11
    # the ratio of pooled medians over non-overlapping periods would not: first half vs second half
    assert statistics.median(base[:5]) / statistics.median(cell[6:]) < 2.2


def test_ratio_interval_brackets_the_median_and_skips_missing_rounds():
    rng = random.Random(3)
    ratios = [2.0 + rng.gauss(0, 0.1) for _ in range(25)]
    r = median_ratio(ratios, seed=1)
    assert r.low <= r.median <= r.high
    assert r.high - r.low < 0.2
    assert median_ratio(ratios, seed=1) == r  # seeded: reproducible
    assert same_round_ratios([1.0, None, 2.0, 0.0], [0.5, 0.5, None, 1.0]) == [2.0]
    assert median_ratio([]) is None


def test_plan_rejects_nonsense():
    with pytest.raises(ValueError):
        RoundPlan(visit_seconds=0, min_rounds=1, min_iters=1, min_seconds=0)
    with pytest.raises(ValueError):
        RoundPlan(visit_seconds=1, min_rounds=5, max_rounds=2, min_iters=1, min_seconds=0)
