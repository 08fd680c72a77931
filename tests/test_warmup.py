"""Warm-up: ``warmup_iters`` untimed calls of each cell before its timing starts, in both schedules
(``measure_one`` for sequential, ``measure_group`` for interleaved rounds), and none of them timed."""
import pytest

import profiler.measure as measure
from profiler.config import MeasureSpec
from profiler.meters.estimate import EstimateMeter


def _spec(warmup_iters: int) -> MeasureSpec:
    return MeasureSpec(warmup_iters=warmup_iters, min_iters=4, min_seconds=0.0, max_seconds=1.0,
                       visit_seconds=0.05, min_rounds=3)


@pytest.mark.parametrize("warmup_iters", [0, 1, 3])
def test_measure_one_warms_up_exactly_warmup_iters_calls_before_timing(monkeypatch, warmup_iters):
    calls = [0]
    at_window_open: list[int] = []
    at_timing_start: list[int] = []
    real_timed_loop = measure.timed_loop

    class SpyingWindow(measure.EnergyWindow):
        def __enter__(self):
            at_window_open.append(calls[0])
            return super().__enter__()

    def spying_timed_loop(fn, *args, **kwargs):
        at_timing_start.append(calls[0])
        return real_timed_loop(fn, *args, **kwargs)

    monkeypatch.setattr(measure, "EnergyWindow", SpyingWindow)
    monkeypatch.setattr(measure, "timed_loop", spying_timed_loop)

    def call() -> None:
        calls[0] += 1

    timed = measure.measure_one(call, _spec(warmup_iters), EstimateMeter(tdp_w=10.0), None, batch_size=1)
    # the warm-up is done before the energy window opens, so its joules are not counted either
    assert at_window_open == [warmup_iters]
    assert at_timing_start == [warmup_iters]
    # every other call is a timed sample: the warm-up calls are not among the samples
    assert calls[0] == warmup_iters + len(timed.samples)


@pytest.mark.parametrize("warmup_iters", [0, 1, 3])
def test_measure_group_warms_up_every_cell_exactly_warmup_iters_calls_before_the_rounds(monkeypatch, warmup_iters):
    calls = {"a": 0, "b": 0, "c": 0}
    at_rounds_start: list[dict[str, int]] = []
    real_run_rounds = measure.run_rounds

    def spying_run_rounds(fns, *args, **kwargs):
        at_rounds_start.append(dict(calls))
        return real_run_rounds(fns, *args, **kwargs)

    monkeypatch.setattr(measure, "run_rounds", spying_run_rounds)

    def counter(k):
        def call() -> None:
            calls[k] += 1
        return call

    timed = measure.measure_group({k: counter(k) for k in calls}, 1, _spec(warmup_iters),
                                  EstimateMeter(tdp_w=10.0), None, seed=0)
    assert at_rounds_start == [{k: warmup_iters for k in calls}]
    for k, t in timed.items():
        rounds = len(t.round_medians)
        assert rounds >= 3
        # warm-up, then per round one untimed re-warming call and the visit's timed samples
        assert calls[k] == warmup_iters + rounds + len(t.samples)
