"""The energy-meter plugin interface.

A meter reads *cumulative* energy counters per domain (``package``, ``dram``, ``platform``,
``gpu:0``, ...). All window arithmetic (begin/end deltas, wrap correction, idle baseline,
per-inference division) lives once in :mod:`profiler.energy` and :mod:`profiler.energy_math`,
never in a meter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from profiler.energy import EnergyMethod


@dataclass(frozen=True)
class Counter:
    """One cumulative energy counter reading.

    Attributes:
        energy_j: cumulative joules since an arbitrary origin; ``None`` when the read failed.
        max_range_j: value at which the counter wraps back to 0 (RAPL ``max_energy_range_uj``/1e6);
            ``None`` when the counter does not wrap or the range is unknown.
        flag: a short reason when this reading is suspect (e.g. ``"max_energy_range_uj unreadable"``).
        method: how this counter was obtained, when a meter mixes methods across domains (the
            ``auto`` meter: RAPL ``measured`` + NVML ``power-poll``); ``None`` means the meter's
            own :attr:`EnergyMeter.method`.
    """

    energy_j: float | None
    max_range_j: float | None = None
    flag: str | None = None
    method: EnergyMethod | None = None


@dataclass(frozen=True)
class Reading:
    """All counters of a meter at one instant. ``t_s`` is a monotonic time in seconds."""

    t_s: float
    counters: dict[str, Counter] = field(default_factory=dict)


class EnergyMeter:
    """Base class for meters. Constructor keyword arguments are the meter's config.

    Subclasses set ``name`` and ``method`` and implement :meth:`availability` and :meth:`read`.
    ``resolution_s`` is the counter's update period: windows shorter than 10× it are extended or
    flagged by the profiler.
    """

    name: ClassVar[str] = ""
    method: EnergyMethod = "measured"
    resolution_s: float = 0.001
    #: Longest interval (s) between two reads for which wrap correction is still unambiguous
    #: (counter range ÷ max power). ``None``: the counters do not wrap (a meter whose counters wrap
    #: must set it, as ``rapl`` and ``pyrapl`` do). The profiler samples the meter more often than
    #: this inside long windows.
    max_safe_window_s: float | None = None

    def availability(self) -> tuple[bool, str]:
        """Return ``(ok, reason)``. Never raises."""
        raise NotImplementedError

    def read(self) -> Reading:
        """Return the current cumulative counters per domain."""
        raise NotImplementedError

    def start(self) -> None:
        """Start background sampling, if the meter needs it (power polling). Idempotent."""

    def stop(self) -> None:
        """Stop background sampling. Idempotent. Called after every window: the meter must be able
        to :meth:`start` again."""

    def close(self) -> None:
        """Release the meter for good: stop its background sampling and any tracker thread or
        library handle it holds. The profiler calls it once it is done with the meter (the end of a
        run, after a preflight probe); the meter need not work afterwards. Idempotent. The default
        only calls :meth:`stop`."""
        self.stop()

    def describe(self) -> dict:
        """Flat, JSON-able description of how the energy was obtained (stored in result rows)."""
        return {"meter": self.name, "method": self.method}
