import pytest

from profiler.timing import LatencyStats, nearest_rank, tail_min_samples, timed_loop


def test_nearest_rank_golden_values():
    v = list(range(1, 11))  # 1..10
    assert nearest_rank(v, 50) == 5
    assert nearest_rank(v, 90) == 9
    assert nearest_rank(v, 99) == 10
    assert nearest_rank(v, 100) == 10
    assert nearest_rank(v, 1) == 1
    # classic worked example (Wikipedia, nearest-rank method)
    w = [15, 20, 35, 40, 50]
    assert [nearest_rank(w, q) for q in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]


def test_nearest_rank_rejects_bad_input():
    with pytest.raises(ValueError):
        nearest_rank([], 50)
    with pytest.raises(ValueError):
        nearest_rank([1.0], 0)


def test_latency_stats_and_spread_flag():
    s = LatencyStats.from_samples([0.010] * 98 + [0.020, 0.030])
    assert (s.n, s.p50_s, s.p90_s, s.p99_s) == (100, 0.010, 0.010, 0.020)
    assert s.mean_s == pytest.approx(0.0103)
    assert not s.spread_flag
    wide = LatencyStats.from_samples([1.0, 1.0, 2.0, 2.0])
    assert wide.iqr_over_median == pytest.approx(1.0) and wide.spread_flag


@pytest.mark.parametrize("n, p90, p99", [(9, None, None), (10, 0.028, None), (99, 0.028, None), (100, 0.028, 0.028)])
def test_a_tail_percentile_of_too_few_calls_is_none_not_the_maximum(n, p90, p99):
    """The nearest-rank p99 of fewer than 100 calls (p90: 10) is the slowest one: one preempted
    call would be published as the tail. None, with the reason in null_reasons."""
    s = LatencyStats.from_samples([0.028] * (n - 1) + [0.080])
    assert (s.p90_s, s.p99_s) == (p90, p99)
    assert sorted(s.null_reasons) == [f"latency_p{q}_s" for q, v in ((90, p90), (99, p99)) if v is None]
    assert all(f"had {n}" in why for why in s.null_reasons.values())
    assert (tail_min_samples(90), tail_min_samples(99), tail_min_samples(50)) == (10, 100, 2)


def test_timed_loop_stops_at_count_and_time_with_fake_clock():
    t = {"ns": 0}

    def clock():
        return t["ns"]

    def work():
        t["ns"] += 10_000_000  # each call takes 10 ms of fake time

    samples = timed_loop(work, min_iters=5, min_seconds=0.1, clock_ns=clock)
    assert len(samples) == 10 and all(s == pytest.approx(0.01) for s in samples)
    assert len(timed_loop(work, min_iters=30, min_seconds=0.1, clock_ns=clock)) == 30
    assert len(timed_loop(work, min_iters=2, min_seconds=100, max_seconds=0.05, clock_ns=clock)) == 5


def test_profiler_timed_loop_is_the_one_clock_loop():
    from accelerators import timing

    assert timed_loop is timing.timed_loop


def test_interleaved_samples_sets_preempted_calls_apart():
    from accelerators.timing import interleaved_samples, loop_lengths

    switches = {"n": 0}
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1
        switches["n"] += 1  # every call of b is "preempted"

    res = interleaved_samples({"a": a, "b": b}, repeats=3, min_time_s=1.0, max_calls=4, preemptions=lambda: switches["n"])
    assert set(res) == {"a", "b"}
    clean_a, all_a = res["a"]
    clean_b, all_b = res["b"]
    assert len(all_a) == len(all_b) == 12 and len(clean_a) == 12 and clean_b == []  # 3 repeats x 4 calls
    assert calls == {"a": 17, "b": 17}  # 2 sizing calls and one untimed call per loop each
    assert loop_lengths({"a": a}, 0.0) == {"a": 1}


def test_interleaved_rounds_shuffle_the_order_of_each_round():
    from accelerators.timing import interleaved_rounds

    seen: list[str] = []
    fns = {k: (lambda k=k: seen.append(k)) for k in "abcd"}
    interleaved_rounds(fns, repeats=8, min_time_s=0.0, max_calls=1)
    firsts = [seen[i] for i in range(8, len(seen), 8)]  # after the sizing calls, each round is 4 x (untimed + 1)
    assert len(set(firsts)) > 1  # not always the same fn first
    seen.clear()
    interleaved_rounds(fns, repeats=2, min_time_s=0.0, max_calls=1, seed=None)
    assert seen[8:] == ["a", "a", "b", "b", "c", "c", "d", "d"] * 2  # after 2 sizing calls each
