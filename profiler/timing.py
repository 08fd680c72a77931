"""Latency statistics: nearest-rank percentiles, IQR spread flag.

The clock loop itself (:func:`timed_loop`) lives with the other clock loops in
:mod:`accelerators.timing` and is re-exported here for the profiler's callers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from accelerators.timing import timed_loop

__all__ = ["SPREAD_LIMIT", "LatencyStats", "nearest_rank", "tail_min_samples", "timed_loop"]

SPREAD_LIMIT = 0.10  # IQR / median above this is flagged (design.md, measurement rules)


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 < q <= 100) by the nearest-rank method: the value of rank ⌈q/100 · n⌉.

    Raises ValueError on an empty sequence or q outside (0, 100].
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    rank = max(1, math.ceil(q / 100 * n))
    return float(sorted_values[rank - 1])


def tail_min_samples(q: float) -> int:
    """The fewest samples whose nearest-rank q-th percentile is not simply their maximum: the rank
    ⌈q/100 · n⌉ is below n only when n > 1 / (1 − q/100), e.g. 10 for p90 and 100 for p99."""
    return math.floor(1 / (1 - q / 100) + 1e-9) if q < 100 else math.inf


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary of ``n`` timed iterations, seconds per iteration (one batch). ``p90_s`` /
    ``p99_s`` are None when ``n`` is below :func:`tail_min_samples` (10 / 100): the nearest rank
    of fewer samples is the slowest call, not a percentile; :attr:`null_reasons` says so."""

    n: int
    mean_s: float
    p50_s: float
    p90_s: float | None
    p99_s: float | None
    iqr_over_median: float

    @property
    def null_reasons(self) -> dict[str, str]:
        """Why a tail percentile is None, keyed by its result field (``latency_p99_s``)."""
        return {f"latency_p{q}_s": f"needs at least {tail_min_samples(q)} timed calls, had {self.n} (the nearest "
                                   f"rank of fewer is the slowest call)"
                for q, v in ((90, self.p90_s), (99, self.p99_s)) if v is None}

    @property
    def spread_flag(self) -> bool:
        """True when the interquartile range exceeds :data:`SPREAD_LIMIT` of the median (a noisy cell)."""
        return self.iqr_over_median > SPREAD_LIMIT

    @classmethod
    def from_samples(cls, samples_s: Sequence[float]) -> "LatencyStats":
        """Nearest-rank percentiles of ``samples_s`` (seconds per call); a tail percentile needs
        :func:`tail_min_samples` samples (else None). Raises ValueError when empty."""
        s = sorted(samples_s)
        p50 = nearest_rank(s, 50)
        iqr = nearest_rank(s, 75) - nearest_rank(s, 25)
        tail = {q: nearest_rank(s, q) if len(s) >= tail_min_samples(q) else None for q in (90, 99)}
        return cls(
            n=len(s), mean_s=sum(s) / len(s), p50_s=p50, p90_s=tail[90], p99_s=tail[99],
            iqr_over_median=iqr / p50 if p50 > 0 else 0.0,
        )
