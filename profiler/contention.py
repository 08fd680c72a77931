"""How busy the machine was with *other* work during a measurement window.

A competing process ruins CPU latency far beyond its share: OpenMP workers wait at every
operator for a descheduled thread, so one busy process on a small machine can multiply a
multi-threaded model's latency many times over. Each row therefore records the average number of
CPUs other processes kept busy while it was timed.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

# Above this many CPUs of other work during a window, latency is not trusted.
BUSY_LIMIT_CPUS = 0.2


@dataclass(frozen=True)
class CpuSnapshot:
    t_s: float
    machine_busy_s: float | None  # CPU-seconds all processes spent busy (None where /proc/stat is absent)
    own_s: float  # CPU-seconds of this process


def _machine_busy_s(path: str = "/proc/stat") -> float | None:
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    busy = v[0] + v[1] + v[2] + sum(v[5:8])  # user nice system + irq softirq steal (not idle, iowait)
    return busy / os.sysconf("SC_CLK_TCK")


def snapshot() -> CpuSnapshot:
    t = os.times()
    return CpuSnapshot(time.monotonic(), _machine_busy_s(), t.user + t.system)


def other_busy_cpus(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    """Average CPUs kept busy by other processes between two snapshots (0 = quiet); None if unknown."""
    wall = after.t_s - before.t_s
    if before.machine_busy_s is None or after.machine_busy_s is None or wall <= 0:
        return None
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / wall)
