"""How busy the machine was with *other* work during a measurement window.

A competing process ruins CPU latency far beyond its share: OpenMP workers wait at every
operator for a descheduled thread, so one busy process on a small machine can multiply a
multi-threaded model's latency many times over. Each row therefore records the average number of
CPUs other processes kept busy while it was timed, on the CPUs the run may use (all of them unless
it is pinned).
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
    machine_busy_s: float | None  # CPU-seconds all processes spent busy on the CPUs this process may use (None: unknown)
    own_s: float  # CPU-seconds of this process


def _busy_s(cpus: frozenset[int] | None = None, path: str = "/proc/stat") -> float | None:
    """CPU-seconds all processes spent busy on ``cpus`` (the ``cpuN`` lines of ``/proc/stat``; None =
    the machine's total ``cpu`` line); None where the file, or a line of one of ``cpus``, is absent.
    Busy = user + nice + system + irq + softirq + steal (not idle, not iowait)."""
    try:
        with open(path) as f:
            lines = [ln.split() for ln in f if ln.startswith("cpu")]
    except OSError:
        return None
    want = {"cpu"} if cpus is None else {f"cpu{c}" for c in cpus}
    rows = [ln for ln in lines if ln and ln[0] in want]
    if len(rows) != len(want):
        return None
    busy = sum(int(r[1]) + int(r[2]) + int(r[3]) + sum(map(int, r[6:9])) for r in rows)
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on when pinned to fewer than all of them (taskset, a cpuset):
    work on the others cannot slow it and is not counted; None = every CPU (read the total line)."""
    try:
        mine = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return None if len(mine) >= (os.cpu_count() or len(mine)) else mine


def snapshot() -> CpuSnapshot:
    t = os.times()
    return CpuSnapshot(time.monotonic(), _busy_s(_own_cpus()), t.user + t.system)


def other_busy_cpus(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    """Average CPUs kept busy by other processes between two snapshots (0 = quiet); None if unknown."""
    wall = after.t_s - before.t_s
    if before.machine_busy_s is None or after.machine_busy_s is None or wall <= 0:
        return None
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / wall)
