"""The clock loops every measurement in sparsebench uses: one home, in the bottom layer, so that
accelerators (which time candidates while preparing), the profiler and the benchmark scripts
time things the same way.

- :func:`timed_loop`: one callable, per-call latencies, until a minimum count AND a minimum time.
- :func:`interleaved_timing`: several callables round-robin, the fastest repeat's mean per call
  (the estimator least disturbed by other tenants of a shared machine).
- :func:`interleaved_samples`: several callables round-robin, every call timed on its own, calls
  during which this process was preempted set apart; :func:`interleaved_rounds` the same, kept per
  round, and :func:`round_medians` each round's median, for same-round ratios.

All times are seconds (floats) measured with ``time.perf_counter_ns``. Warm-up is the caller's
job, except that the interleaved loops call each function once untimed to size their loops.
"""
from __future__ import annotations

import random
import resource
import statistics
import time
from typing import Any, Callable, Mapping

Fn = Callable[[], Any]


def timed_loop(
    fn: Fn,
    min_iters: int,
    min_seconds: float,
    max_seconds: float = float("inf"),
    clock_ns: Callable[[], int] = time.perf_counter_ns,
) -> list[float]:
    """Call ``fn`` until at least ``min_iters`` calls AND ``min_seconds`` have passed (or, once
    ``min_iters`` is reached, ``max_seconds``: it only shortens the loop when below ``min_seconds``). Returns per-call latencies in seconds, timed
    with ``clock_ns`` (``perf_counter_ns``; tests inject a fake clock)."""
    samples: list[float] = []
    start = clock_ns()
    while True:
        t0 = clock_ns()
        fn()
        t1 = clock_ns()
        samples.append((t1 - t0) / 1e9)
        elapsed = (t1 - start) / 1e9
        if len(samples) >= min_iters and (elapsed >= min_seconds or elapsed >= max_seconds):
            return samples


def loop_lengths(fns: Mapping[str, Fn], min_time_s: float, max_calls: int | None = None,
                 min_calls: int = 1) -> dict[str, int]:
    """Calls per loop so that one loop of each fn lasts about ``min_time_s`` (>= ``min_calls``,
    <= ``max_calls`` when given): each fn is called once untimed, then once timed."""
    loops = {}
    for k, f in fns.items():
        f()
        t0 = time.perf_counter()
        f()
        n = max(min_calls, int(min_time_s / max(time.perf_counter() - t0, 1e-7)))
        loops[k] = n if max_calls is None else min(max_calls, n)
    return loops


def interleaved_timing(fns: Mapping[str, Fn], repeats: int, min_time_s: float) -> dict[str, float]:
    """Seconds per call of each fn: timed round-robin, each repeat a loop of about min_time_s (its
    length set from one timed call, :func:`loop_lengths`; at least one call);
    returns the fastest repeat's mean per fn. The minimum over repeats is the estimator least
    disturbed by other tenants of a shared machine (interference only ever adds time), and the
    round-robin order exposes every candidate to the same conditions."""
    loops = loop_lengths(fns, min_time_s)
    res: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter_ns()
            for _ in range(loops[k]):
                f()
            res[k].append((time.perf_counter_ns() - t0) * 1e-9 / loops[k])
    return {k: min(v) for k, v in res.items()}


def involuntary_switches() -> int:
    """Involuntary context switches of this process so far (``getrusage``): a change across a call
    means one of our threads was preempted during it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def interleaved_rounds(fns: Mapping[str, Fn], repeats: int, min_time_s: float, max_calls: int | None = 200,
                       preemptions: Callable[[], int] = involuntary_switches,
                       min_calls: int = 1, seed: int | None = 0) -> dict[str, list[tuple[list[float], list[float]]]]:
    """Per-call seconds of each fn, timed round-robin and kept per round: each of ``repeats`` rounds
    runs every fn in turn for a loop of individually timed calls (loop length sized so that one loop
    lasts about ``min_time_s``, from ``min_calls`` to ``max_calls`` calls), after one untimed call
    (the previous fn's caches and the switch are not charged to it). The fns run in a new random
    order each round (``random.Random(seed)``; ``seed=None``: the mapping's order), so that none
    always follows the same neighbour.

    On a shared machine a call during which one of our threads was preempted (``preemptions()``
    changed across it) measures the other tenants, not the callable: such calls are left out of
    the first list. Returns ``{name: [(clean samples, all samples) of each round]}``.
    """
    n = loop_lengths(fns, min_time_s, max_calls, min_calls)
    res: dict[str, list[tuple[list[float], list[float]]]] = {k: [] for k in fns}
    rng = random.Random(seed) if seed is not None else None
    for _ in range(repeats):
        order = list(fns)
        if rng is not None:
            rng.shuffle(order)
        for k in order:
            f = fns[k]
            f()  # untimed: the switch from the previous fn
            clean: list[float] = []
            every: list[float] = []
            for _ in range(n[k]):
                c0 = preemptions()
                t0 = time.perf_counter_ns()
                f()
                dt = (time.perf_counter_ns() - t0) * 1e-9
                if preemptions() == c0:
                    clean.append(dt)
                every.append(dt)
            res[k].append((clean, every))
    return res


def round_medians(rounds: list[tuple[list[float], list[float]]], min_clean: int | None = 3) -> list[float]:
    """The median of each round of :func:`interleaved_rounds`: of its clean calls when there are at
    least ``min_clean`` (``None``: always of all its calls), else of all of them."""
    return [statistics.median(clean if min_clean is not None and len(clean) >= min_clean else every)
            for clean, every in rounds]


def interleaved_samples(fns: Mapping[str, Fn], repeats: int, min_time_s: float, max_calls: int = 200,
                        preemptions: Callable[[], int] = involuntary_switches) -> dict[str, tuple[list[float], list[float]]]:
    """:func:`interleaved_rounds` with the rounds pooled: ``{name: (clean samples, all samples)}``."""
    rounds = interleaved_rounds(fns, repeats, min_time_s, max_calls, preemptions)
    return {k: ([t for clean, _ in r for t in clean], [t for _, every in r for t in every]) for k, r in rounds.items()}
