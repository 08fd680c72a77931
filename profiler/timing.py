"""Latency statistics: nearest-rank percentiles, IQR spread flag.

The clock loop itself (:func:`timed_loop`) lives with the other clock loops in
:mod:`accelerators.timing` and is re-exported here for the profiler's callers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from accelerators.timing import timed_loop

__all__ = ["SPREAD_LIMIT", "LatencyStats", "nearest_rank", "timed_loop"]

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


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary of ``n`` timed iterations, seconds per iteration (one batch)."""

    n: int
    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    iqr_over_median: float

    @property
    def spread_flag(self) -> bool:
        """True when the interquartile range exceeds :data:`SPREAD_LIMIT` of the median (a noisy cell)."""
        return self.iqr_over_median > SPREAD_LIMIT

    @classmethod
    def from_samples(cls, samples_s: Sequence[float]) -> "LatencyStats":
        """Nearest-rank percentiles of ``samples_s`` (seconds per call). Raises ValueError when empty."""
        s = sorted(samples_s)
        p50 = nearest_rank(s, 50)
        iqr = nearest_rank(s, 75) - nearest_rank(s, 25)
        return cls(
            n=len(s), mean_s=sum(s) / len(s), p50_s=p50, p90_s=nearest_rank(s, 90), p99_s=nearest_rank(s, 99),
            iqr_over_median=iqr / p50 if p50 > 0 else 0.0,
        )
