"""Side-by-side timing: cells that share a model family and a shape are timed in interleaved rounds.

On a shared machine the speed of one cell drifts by several per cent within minutes, so latencies
timed minutes apart cannot be divided. Here every cell of a group is *visited* once per round, in
a new random order each round (so no cell always follows the same neighbour, whose cache and
frequency state it would inherit); a visit is one untimed call followed by timed calls filling
``visit_seconds``. A cell's latency percentiles pool all its samples; a savings factor is the
**median of same-round ratios** (baseline's median latency in round r ÷ the cell's median latency
in round r), with a percentile-bootstrap 95 % interval over the rounds (Efron & Tibshirani 1993,
ch. 13). Drift that is slow compared with a round cancels in each ratio.

Everything here is pure: the clock, the random order and the per-visit hooks (energy windows) are
injected, so tests drive it with a fake clock.
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping, Sequence

from profiler.timing import timed_loop

#: bootstrap resamples for the interval of a median of ratios
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class CellSamples:
    """Per-call latencies (seconds) of one cell, by round: ``rounds[r]`` holds round r's samples."""

    rounds: list[list[float]] = field(default_factory=list)

    @property
    def all(self) -> list[float]:
        return [s for r in self.rounds for s in r]

    @property
    def timed_s(self) -> float:
        return sum(self.all)

    def round_medians(self) -> list[float | None]:
        return [statistics.median(r) if r else None for r in self.rounds]


@dataclass(frozen=True)
class RoundPlan:
    """How long to keep visiting. Seconds throughout.

    A group stops after ``min_rounds`` rounds once every live cell has ``min_iters`` samples and
    ``min_seconds`` of timed calls, or once a cell reached ``max_seconds`` of timed calls (and
    ``min_iters``), or after ``max_rounds``.
    """

    visit_seconds: float
    min_rounds: int
    min_iters: int
    min_seconds: float
    max_seconds: float = float("inf")
    max_rounds: int = 10_000

    def __post_init__(self) -> None:
        if not self.visit_seconds > 0:
            raise ValueError(f"visit_seconds must be > 0, got {self.visit_seconds!r}")
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {self.min_rounds}, {self.max_rounds}")

    def done(self, cells: Mapping[Hashable, CellSamples], n_rounds: int) -> bool:
        if n_rounds >= self.max_rounds:
            return True
        if n_rounds < self.min_rounds:
            return False
        enough = all(len(c.all) >= self.min_iters and c.timed_s >= self.min_seconds for c in cells.values())
        capped = any(len(c.all) >= self.min_iters and c.timed_s >= self.max_seconds for c in cells.values())
        return enough or capped


class VisitHooks:
    """Called at every visit: ``start`` before its untimed call (the runner sets the cell's thread
    count here), ``begin`` and ``end`` around its timed calls (the runner opens and closes the
    cell's energy window segment). Default: nothing."""

    def start(self, key: Hashable) -> None: ...
    def begin(self, key: Hashable) -> None: ...
    def end(self, key: Hashable, n_calls: int) -> None: ...


def run_rounds(
    fns: Mapping[Hashable, Callable[[], object]],
    plan: RoundPlan,
    *,
    rng: random.Random | None = None,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
    hooks: VisitHooks | None = None,
    on_round: Callable[[int], None] | None = None,
) -> tuple[dict[Hashable, CellSamples], list[list[Hashable]]]:
    """Visit every fn once per round in a fresh random order until ``plan`` says done.

    Returns ``(samples per key, visiting order of each round)``. ``rng`` makes the order
    reproducible (seeded by the caller); ``hooks`` start each visit and wrap its timed calls.
    """
    rng = rng or random.Random(0)
    hooks = hooks or VisitHooks()
    cells = {k: CellSamples() for k in fns}
    orders: list[list[Hashable]] = []
    while not plan.done(cells, len(orders)):
        order = list(fns)
        rng.shuffle(order)
        orders.append(order)
        for k in order:
            fn = fns[k]
            hooks.start(k)
            fn()  # untimed: re-warms caches the previous visitor evicted
            hooks.begin(k)
            samples = timed_loop(fn, 1, plan.visit_seconds, clock_ns=clock_ns)
            hooks.end(k, len(samples))
            cells[k].rounds.append(samples)
        if on_round:
            on_round(len(orders))
    return cells, orders


@dataclass(frozen=True)
class Ratio:
    """A savings factor from same-round ratios: ``median`` with a bootstrap 95 % interval
    [``low``, ``high``] over ``n_rounds`` rounds. > 1 means the cell is faster than the baseline."""

    median: float
    low: float
    high: float
    n_rounds: int


def same_round_ratios(baseline: Sequence[float | None], cell: Sequence[float | None]) -> list[float]:
    """Per-round ``baseline / cell`` of the two cells' round medians (rounds where either is
    missing or non-positive are left out)."""
    return [b / c for b, c in zip(baseline, cell) if b is not None and c is not None and b > 0 and c > 0]


def median_ratio(ratios: Sequence[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> Ratio | None:
    """Median of ``ratios`` with a percentile-bootstrap 95 % interval (``resamples`` resamples of
    the rounds with replacement, seeded). ``None`` for no ratios."""
    if not ratios:
        return None
    rng = random.Random(seed)
    n = len(ratios)
    meds = sorted(statistics.median(rng.choices(ratios, k=n)) for _ in range(resamples))
    lo = meds[int(0.025 * (resamples - 1))]
    hi = meds[int(round(0.975 * (resamples - 1)))]
    return Ratio(median=statistics.median(ratios), low=lo, high=hi, n_rounds=n)
