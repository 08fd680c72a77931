"""Counter arithmetic of energy windows: wrap-corrected deltas per domain, summed over the
readings of a window or over the segments (visits) of an interleaved one; gross and net totals.

Pure functions of :class:`profiler.meters.base.Reading` values; joules, seconds, watts. Never a
negative joule from a counter (a backwards counter with an unknown wrap range gives ``None``).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: meters import profiler.energy, which imports this module
    from profiler.meters.base import Counter, Reading


def counter_delta(c0: Counter, c1: Counter) -> tuple[float | None, list[str]]:
    """Energy in joules between two readings of one cumulative counter, wrap-corrected.

    Returns ``(joules, flags)``. ``joules`` is ``None`` (never negative) when either read failed,
    either value is NaN or infinite (the flag says which), or when the counter went backwards and
    its wrap range is unknown. Flags carried on either counter are passed through. At most one wrap per interval is assumed; keeping intervals
    shorter than the meter's ``max_safe_window_s`` is the caller's job (:class:`EnergyWindow`).
    """
    flags = [f for f in (c0.flag, c1.flag) if f]
    if c0.energy_j is None or c1.energy_j is None:
        return None, flags or ["counter unreadable"]
    bad = [v for v in (c0.energy_j, c1.energy_j) if not math.isfinite(v)]
    if bad:  # NaN compares false both ways: it would read as a counter that went backwards
        return None, flags + [f"counter read {_nonfinite(bad[0])}; value dropped"]
    d = c1.energy_j - c0.energy_j
    if d >= 0:
        return d, flags
    rng = c1.max_range_j if c1.max_range_j is not None else c0.max_range_j
    if rng is not None and not math.isfinite(rng):
        return None, flags + [f"counter went backwards and its wrap range is {_nonfinite(rng)}; value dropped"]
    if rng is None or rng <= 0:
        return None, flags + ["counter went backwards and its wrap range is unknown; value dropped"]
    d += rng
    if d < 0:
        return None, flags + ["counter went backwards by more than its wrap range; value dropped"]
    return d, flags


def _nonfinite(v: float) -> str:
    """``"NaN"``, ``"inf"`` or ``"-inf"``: how a flag names a non-finite counter value."""
    return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def readings_energy(
    readings: list[Reading],
) -> tuple[dict[str, float | None], list[str]]:
    """Sum wrap-corrected deltas over consecutive readings, per domain.

    Every domain seen in any reading is reported (first appearance order). A domain missing from
    any reading (the first, the last or one in between) or unreadable in any interval is ``None``
    for the whole window, with a flag saying which: its energy over the window is unknown, and a
    summed domain that silently left the total would understate it.
    Returns ``(joules per domain, flags)`` where flags are prefixed with the domain name.
    """
    if len(readings) < 2:
        return {}, ["fewer than two readings"]
    domains = list(dict.fromkeys(d for r in readings for d in r.counters))
    out: dict[str, float | None] = {}
    flags: list[str] = []
    for dom in domains:
        total: float | None = 0.0
        seen: list[str] = []
        absent = [i for i, r in enumerate(readings) if dom not in r.counters]
        if absent:
            where = ("the first reading" if absent[0] == 0 else
                     "the last reading" if absent[0] == len(readings) - 1 else "an intermediate reading")
            out[dom] = None
            flags.append(f"{dom}: missing from {where}; value dropped")
            continue
        for r0, r1 in zip(readings, readings[1:]):
            d, fl = counter_delta(r0.counters[dom], r1.counters[dom])
            for f in fl:
                if f not in seen:
                    seen.append(f)
            if d is None:
                total = None
                break
            total += d
        out[dom] = total
        flags.extend(f"{dom}: {f}" for f in seen)
    return out, flags


# --------------------------------------------------------------------------------------------
# energy over several measured segments

def segments_energy(segments: list[list[Reading]]) -> tuple[dict[str, float | None], list[str]]:
    """:func:`readings_energy` summed over segments (visits), per domain.

    Every domain seen in any segment is reported; one missing from a segment (flagged "missing
    from visit k", 1-based) or unknown in one is ``None`` overall. Flags are merged without repeats.
    """
    per_seg = [readings_energy(seg) for seg in segments]
    domains = list(dict.fromkeys(d for energies, _ in per_seg for d in energies))
    total: dict[str, float | None] = dict.fromkeys(domains, 0.0)
    flags: list[str] = []
    for k, (energies, fl) in enumerate(per_seg, start=1):
        flags += [f for f in fl if f not in flags]
        for d in domains:
            if d not in energies:
                # a segment with fewer than two readings already says so; naming every domain adds nothing
                if energies:
                    flags.append(f"{d}: missing from visit {k}; value dropped")
                total[d] = None
                continue
            e = energies[d]
            total[d] = None if total[d] is None or e is None else total[d] + e
    return total, flags


def sampling_flags(readings: list[Reading], window_s: float, safe: float | None) -> list[str]:
    """Flags for sampling gaps longer than the wrap-safe interval (they may hide a second wrap)."""
    if not safe:
        return []
    flags = []
    if window_s > safe:
        flags.append(
            f"window {window_s:.1f} s is longer than the counter's safe window "
            f"{safe:.1f} s; sampled {len(readings)} times to correct wraps"
        )
    gaps = [b.t_s - a.t_s for a, b in zip(readings, readings[1:])]
    if gaps and max(gaps) > safe:
        flags.append(
            f"gap of {max(gaps):.1f} s between samples exceeds the safe window "
            f"{safe:.1f} s; a counter wrap may be missed"
        )
    return flags


def gross_total(
    energies: dict[str, float | None], summed: list[str]
) -> tuple[float | None, str | None]:
    """``(joules summed over the summed domains, None)``, or ``(None, reason)`` when any is unknown."""
    if not summed:
        return None, "meter reported no CPU/DRAM/GPU domain"
    missing = [d for d in summed if energies[d] is None]
    if missing:
        return None, f"no value for {', '.join(missing)}"
    return sum(energies[d] for d in summed), None  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# idle baseline

def net_energy(
    gross: float, summed: list[str], window_s: float,
    idle_w: dict[str, float | None] | None, flags: list[str],
) -> float | None:
    """Gross joules minus idle watts × window seconds; ``None`` without a full idle baseline.

    A negative result (idle power above the window's mean power) is flagged, not clamped; one
    within float rounding of zero (a meter whose power never changes) is zero.
    """
    if idle_w is None:
        return None
    missing = [d for d in summed if idle_w.get(d) is None]
    if missing:
        flags.append(f"no idle baseline for {', '.join(missing)}; net energy not computed")
        return None
    idle_total_w = sum(idle_w[d] for d in summed)  # type: ignore[misc]
    net = gross - idle_total_w * window_s
    if abs(net) <= 1e-9 * max(abs(gross), 1e-300):  # rounding of gross − idle · t, not a measurement
        return 0.0
    if net < 0:
        flags.append(
            f"idle power {idle_total_w:.3f} W exceeds the window's mean power "
            f"{gross / window_s:.3f} W; net energy is negative (not clamped)"
        )
    return net
