"""Energy windows: the one place where cumulative meter counters become joules per inference.

A meter (:mod:`profiler.meters`) only reports *cumulative* counters per domain. Everything else
lives here, once:

* begin/end reads around the timed loop (:class:`EnergyWindow`), with intermediate samples when
  the window is longer than the meter's wrap-safe interval (``meter.max_safe_window_s``);
* wrap correction between every pair of consecutive samples using the counter's
  ``max_range_j`` (RAPL ``max_energy_range_uj``); a counter that goes backwards with an unknown
  range gives ``None`` for that domain plus a flag — never a negative joule;
* which domains add up to the per-inference total (:data:`SUMMED_KINDS`: CPU package(s), DRAM,
  GPUs; never ``platform``/psys, never the core/uncore sub-domains already inside a package);
* the idle baseline (:func:`measure_idle_power`, watts per domain) and the net energy;
* short-window handling: windows shorter than ``10 × meter.resolution_s`` are rejected (values
  ``None`` and a flag), never reported as 0 J, never a division by zero.

Units: joules, seconds, watts. An absent device is ``None``, never ``0.0``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from profiler.meters.base import Counter, EnergyMeter, Reading

#: Domain kinds (the part of a domain name before the first ``:``) that add up to the total.
#: ``package``/``cpu`` (CPU sockets or the estimate of them), ``dram`` (not inside package),
#: ``gpu`` (one per device). ``platform`` (psys, whole SoC/board) already contains the others,
#: ``core``/``uncore`` are inside ``package``: both are reported but never added.
SUMMED_KINDS: frozenset[str] = frozenset({"package", "cpu", "dram", "gpu"})

#: Minimum window length as a multiple of the meter's counter update period.
MIN_RESOLUTION_MULTIPLE = 10

_METHOD_RANK = {"measured": 0, "power-poll": 1, "estimated": 2, "unavailable": 3}


def domain_kind(domain: str) -> str:
    """Return the kind of a domain name: ``"package:0"`` → ``"package"``, ``"gpu:1"`` → ``"gpu"``."""
    return domain.split(":", 1)[0]


def is_summed(domain: str) -> bool:
    """True when ``domain`` counts towards ``energy_j_per_inference`` (see :data:`SUMMED_KINDS`)."""
    return domain_kind(domain) in SUMMED_KINDS


def weakest_method(methods) -> str:
    """The least trustworthy of several methods (measured < power-poll < estimated < unavailable)."""
    methods = [m for m in methods if m]
    if not methods:
        return "unavailable"
    return max(methods, key=lambda m: _METHOD_RANK.get(m, 3))


# --------------------------------------------------------------------------------------------
# counter arithmetic
# --------------------------------------------------------------------------------------------


def counter_delta(c0: Counter, c1: Counter) -> tuple[float | None, list[str]]:
    """Energy in joules between two readings of one cumulative counter, wrap-corrected.

    Returns ``(joules, flags)``. ``joules`` is ``None`` (never negative) when either read failed,
    or when the counter went backwards and its wrap range is unknown. Flags carried on either
    counter are passed through. At most one wrap per interval is assumed; keeping intervals
    shorter than the meter's ``max_safe_window_s`` is the caller's job (:class:`EnergyWindow`).
    """
    flags = [f for f in (c0.flag, c1.flag) if f]
    if c0.energy_j is None or c1.energy_j is None:
        return None, flags or ["counter unreadable"]
    d = c1.energy_j - c0.energy_j
    if d >= 0:
        return d, flags
    rng = c1.max_range_j if c1.max_range_j is not None else c0.max_range_j
    if rng is None or rng <= 0:
        return None, flags + ["counter went backwards and its wrap range is unknown; value dropped"]
    d += rng
    if d < 0:
        return None, flags + ["counter went backwards by more than its wrap range; value dropped"]
    return d, flags


def readings_energy(
    readings: list[Reading],
) -> tuple[dict[str, float | None], list[str]]:
    """Sum wrap-corrected deltas over consecutive readings, per domain.

    Only domains present in the first and last reading are reported; a domain missing from an
    intermediate reading, or unreadable in any interval, is ``None`` for the whole window.
    Returns ``(joules per domain, flags)`` where flags are prefixed with the domain name.
    """
    if len(readings) < 2:
        return {}, ["fewer than two readings"]
    domains = [d for d in readings[0].counters if d in readings[-1].counters]
    out: dict[str, float | None] = {}
    flags: list[str] = []
    for dom in domains:
        total: float | None = 0.0
        seen: list[str] = []
        for r0, r1 in zip(readings, readings[1:]):
            c0, c1 = r0.counters.get(dom), r1.counters.get(dom)
            if c0 is None or c1 is None:
                total = None
                seen.append("missing from an intermediate reading")
                break
            d, fl = counter_delta(c0, c1)
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


def _domain_methods(meter: EnergyMeter, reading: Reading) -> dict[str, str]:
    return {d: (c.method or meter.method) for d, c in reading.counters.items()}


# --------------------------------------------------------------------------------------------
# idle baseline
# --------------------------------------------------------------------------------------------


@dataclass
class IdlePower:
    """Idle power per domain in watts (``None`` where it could not be measured).

    ``duration_s`` is the measured interval in seconds (from the meter's reading timestamps).
    """

    watts: dict[str, float | None]
    duration_s: float
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able form: ``{"watts": {...}, "duration_s": s, "flags": [...]}``."""
        return {"watts": dict(self.watts), "duration_s": self.duration_s, "flags": list(self.flags)}


def measure_idle_power(
    meter: EnergyMeter, seconds: float = 2.0, sleep: Callable[[float], None] = time.sleep
) -> IdlePower:
    """Measure idle power per domain by reading ``meter`` before and after ``sleep(seconds)``.

    Run it before the matrix, with nothing else of ours running. If ``seconds`` is shorter than
    ``10 × meter.resolution_s`` it is lengthened to that. An unavailable meter, a failed read or a
    zero-length interval gives ``None`` watts (never 0 W, never a division by zero); this
    function does not raise for meter problems.

    Args:
        meter: any :class:`~profiler.meters.base.EnergyMeter`.
        seconds: idle interval in seconds.
        sleep: injectable sleep (tests pass one that advances a fake clock).
    """
    ok, reason = _safe_availability(meter)
    if not ok:
        return IdlePower(watts={}, duration_s=0.0, flags=[f"meter unavailable: {reason}"])
    seconds = max(float(seconds), MIN_RESOLUTION_MULTIPLE * float(meter.resolution_s))
    meter.start()
    try:
        readings = [meter.read()]
        safe = meter.max_safe_window_s
        remaining = seconds
        step = seconds if not safe else min(seconds, safe / 4.0)
        while remaining > 1e-12:
            chunk = min(step, remaining)
            sleep(chunk)
            remaining -= chunk
            readings.append(meter.read())
    except Exception as e:  # a meter failing mid-way must not kill the run
        return IdlePower(watts={}, duration_s=0.0, flags=[f"idle read failed: {e!r}"])
    finally:
        meter.stop()
    dt = readings[-1].t_s - readings[0].t_s
    energies, flags = readings_energy(readings)
    if dt <= 0:
        return IdlePower(
            watts={d: None for d in energies}, duration_s=max(dt, 0.0),
            flags=flags + ["idle interval has zero length; idle power unknown"],
        )
    watts = {d: (None if e is None else e / dt) for d, e in energies.items()}
    return IdlePower(watts=watts, duration_s=dt, flags=flags)


def _safe_availability(meter: EnergyMeter) -> tuple[bool, str]:
    try:
        ok, reason = meter.availability()
        return bool(ok), str(reason)
    except Exception as e:  # availability() must never raise; be defensive anyway
        return False, f"availability() raised {e!r}"


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass
class EnergyResult:
    """Energy of one timed window.

    Attributes:
        method: ``measured`` | ``power-poll`` | ``estimated`` | ``unavailable`` — the weakest
            method among the summed domains (a mix of measured CPU and estimated anything is
            ``estimated``).
        reason: why values are missing, or ``None``.
        window_s: window length in seconds (0.0 when unknown).
        energy_j: gross joules per domain over the window; ``None`` where unknown.
        energy_j_per_inference: gross joules per inference, summed over :data:`SUMMED_KINDS`
            domains; ``None`` when any summed domain is unknown, nothing was summed, or
            ``n_inferences <= 0``.
        energy_j_per_inference_net: gross minus idle power × window, per inference; ``None``
            without a usable idle baseline. If idle power exceeds the window's power this is
            negative and flagged (not clamped) — the only place a negative number can appear.
        flags: human-readable notes about anything suspect.
        domain_methods: method per domain.
        idle_power_w: the idle baseline used (watts per domain), or ``None``.
        meter_info: ``meter.describe()``.
        n_inferences: the count the totals were divided by.
    """

    method: str
    reason: str | None
    window_s: float
    energy_j: dict[str, float | None]
    energy_j_per_inference: float | None
    energy_j_per_inference_net: float | None
    flags: list[str] = field(default_factory=list)
    domain_methods: dict[str, str] = field(default_factory=dict)
    idle_power_w: dict[str, float | None] | None = None
    meter_info: dict = field(default_factory=dict)
    n_inferences: int = 0

    def row_fields(self) -> dict:
        """Flat, JSON-able fields for a Result row (joules, seconds, watts).

        Keys: ``energy_j_per_inference``, ``energy_j_per_inference_net``, ``energy_method``,
        ``energy_reason``, ``energy_window_s``, ``energy_flags`` (list of str),
        ``energy_domains_j`` (dict), ``energy_domain_methods`` (dict), ``idle_power_w`` (dict or
        ``None``), plus every ``meter.describe()`` entry prefixed with ``energy_`` (``meter`` →
        ``energy_meter``, ``estimate_tdp_w`` → ``energy_estimate_tdp_w``); the describe entry
        ``method`` (the meter's nominal method) is stored as ``energy_meter_method``.
        """
        row: dict = {}
        for k, v in self.meter_info.items():
            if k == "method":
                key = "energy_meter_method"
            elif k.startswith("energy_"):
                key = k
            else:
                key = f"energy_{k}"
            row[key] = v
        row.update(
            energy_j_per_inference=self.energy_j_per_inference,
            energy_j_per_inference_net=self.energy_j_per_inference_net,
            energy_method=self.method,
            energy_reason=self.reason,
            energy_window_s=self.window_s,
            energy_flags=list(self.flags),
            energy_domains_j=dict(self.energy_j),
            energy_domain_methods=dict(self.domain_methods),
            idle_power_w=None if self.idle_power_w is None else dict(self.idle_power_w),
        )
        return row


# --------------------------------------------------------------------------------------------
# window
# --------------------------------------------------------------------------------------------


class EnergyWindow:
    """Context manager around the timed loop; :meth:`result` turns it into joules per inference.

    Usage::

        with EnergyWindow(meter, idle) as w:
            while n < min_iters or clock() - t0 < max(min_seconds, w.min_duration_s):
                run_one(); n += 1
        row.update(w.result(n).row_fields())

    On enter it starts the meter's background sampling (if any) and reads it; on exit it reads
    again and stops. If the meter's counters can wrap (``meter.max_safe_window_s`` set), a
    daemon thread also reads every ``max_safe_window_s / 4`` seconds so every interval has at
    most one wrap; :meth:`sample` does the same by hand. Meter errors never propagate out of the
    window: they become ``method="unavailable"`` with a reason. Exceptions raised by the body are
    not swallowed.

    Attributes:
        min_duration_s: ``10 × meter.resolution_s`` seconds; the caller keeps the loop running
            at least this long, shorter windows are rejected by :meth:`result`.
    """

    def __init__(
        self,
        meter: EnergyMeter,
        idle: IdlePower | None = None,
        *,
        background_sampling: bool = True,
    ):
        """Args:
            meter: the energy meter.
            idle: idle baseline from :func:`measure_idle_power` (same meter), or ``None``.
            background_sampling: start the wrap-guard sampling thread when the meter needs it.
        """
        self.meter = meter
        self.idle = idle
        self.min_duration_s = MIN_RESOLUTION_MULTIPLE * float(meter.resolution_s)
        self._background = background_sampling
        self._readings: list[Reading] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._available: tuple[bool, str] | None = None
        self._entered = False
        self._exited = False
        self.sample_interval_s: float | None = None

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> "EnergyWindow":
        self._entered = True
        self._available = _safe_availability(self.meter)
        if not self._available[0]:
            return self
        try:
            self.meter.start()
            first = self.meter.read()
        except Exception as e:
            self._error = f"meter read failed at window start: {e!r}"
            return self
        with self._lock:
            self._readings.append(first)
        safe = self.meter.max_safe_window_s
        if self._background and safe and safe > 0:
            self.sample_interval_s = safe / 4.0
            self._thread = threading.Thread(
                target=self._sampler, name="energy-window-sampler", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._exited = True
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._available and self._available[0] and self._error is None:
            try:
                self.sample()
            except Exception as e:
                self._error = f"meter read failed at window end: {e!r}"
        try:
            self.meter.stop()
        except Exception:
            pass
        return None

    def _sampler(self) -> None:
        assert self.sample_interval_s is not None
        while not self._stop.wait(self.sample_interval_s):
            try:
                self.sample()
            except Exception as e:
                self._error = f"meter read failed inside window: {e!r}"
                return

    def sample(self) -> None:
        """Take an intermediate reading (thread-safe). Raises whatever ``meter.read()`` raises."""
        r = self.meter.read()
        with self._lock:
            self._readings.append(r)

    @property
    def readings(self) -> list[Reading]:
        """A copy of the readings taken so far (begin, intermediate samples, end)."""
        with self._lock:
            return list(self._readings)

    # -- result ----------------------------------------------------------------------------
    def result(self, n_inferences: int) -> EnergyResult:
        """Energy over the window, divided by ``n_inferences``.

        Never raises for meter problems and never divides by zero: an unavailable meter gives
        ``method="unavailable"`` with the reason; a window shorter than :attr:`min_duration_s`
        or ``n_inferences <= 0`` gives ``None`` values with a flag. Raises ``RuntimeError`` if
        called before the window was entered and exited.
        """
        if not (self._entered and self._exited):
            raise RuntimeError("EnergyWindow.result() needs a completed `with` block")
        try:
            info = dict(self.meter.describe())
        except Exception as e:
            info = {"meter": getattr(self.meter, "name", "?"), "describe_error": repr(e)}
        idle_w = None if self.idle is None else dict(self.idle.watts)

        def unavailable(reason: str, window_s: float = 0.0, flags=()) -> EnergyResult:
            return EnergyResult(
                method="unavailable", reason=reason, window_s=window_s, energy_j={},
                energy_j_per_inference=None, energy_j_per_inference_net=None,
                flags=list(flags), idle_power_w=idle_w, meter_info=info,
                n_inferences=n_inferences,
            )

        assert self._available is not None
        if not self._available[0]:
            return unavailable(self._available[1])
        readings = self.readings
        if self._error is not None or len(readings) < 2:
            return unavailable(self._error or "no end reading")

        window_s = max(readings[-1].t_s - readings[0].t_s, 0.0)
        energies, flags = readings_energy(readings)
        methods = _domain_methods(self.meter, readings[-1])
        methods = {d: m for d, m in methods.items() if d in energies}
        summed = [d for d in energies if is_summed(d)]
        method = weakest_method(methods[d] for d in summed) if summed else self.meter.method
        reason: str | None = None

        # sampling gaps longer than the wrap-safe interval may hide a second wrap
        safe = self.meter.max_safe_window_s
        if safe:
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

        if len(set(methods[d] for d in summed)) > 1:
            flags.append(
                "mixed methods: " + ", ".join(f"{d}={methods[d]}" for d in summed)
            )

        if window_s < self.min_duration_s:
            flags.append(
                f"window {window_s:.6f} s is shorter than {MIN_RESOLUTION_MULTIPLE}× the meter "
                f"resolution ({self.min_duration_s:.6f} s); energy rejected — extend the loop"
            )
            return EnergyResult(
                method=method, reason="window shorter than 10× meter resolution",
                window_s=window_s, energy_j={d: None for d in energies},
                energy_j_per_inference=None, energy_j_per_inference_net=None, flags=flags,
                domain_methods=methods, idle_power_w=idle_w, meter_info=info,
                n_inferences=n_inferences,
            )

        # a measured counter that did not move over a long-enough window did not update: unknown
        for d, e in list(energies.items()):
            if e == 0.0 and methods.get(d) in ("measured", "power-poll"):
                energies[d] = None
                flags.append(f"{d}: counter did not advance over {window_s:.3f} s; value dropped")

        gross_total: float | None = None
        if not summed:
            reason = "meter reported no CPU/DRAM/GPU domain"
        elif any(energies[d] is None for d in summed):
            missing = [d for d in summed if energies[d] is None]
            reason = f"no value for {', '.join(missing)}"
        else:
            gross_total = sum(energies[d] for d in summed)  # type: ignore[misc]

        per_inf = net_per_inf = None
        if n_inferences is None or n_inferences <= 0:
            flags.append("no inferences counted; per-inference energy not computed")
            reason = reason or "n_inferences <= 0"
        elif gross_total is not None:
            per_inf = gross_total / n_inferences
            net_per_inf = self._net(gross_total, summed, window_s, n_inferences, flags)

        return EnergyResult(
            method=method, reason=reason, window_s=window_s, energy_j=energies,
            energy_j_per_inference=per_inf, energy_j_per_inference_net=net_per_inf,
            flags=flags, domain_methods=methods, idle_power_w=idle_w, meter_info=info,
            n_inferences=n_inferences,
        )

    def _net(self, gross: float, summed: list[str], window_s: float, n: int, flags: list[str]):
        if self.idle is None:
            return None
        missing = [d for d in summed if self.idle.watts.get(d) is None]
        if missing:
            flags.append(f"no idle baseline for {', '.join(missing)}; net energy not computed")
            return None
        idle_w = sum(self.idle.watts[d] for d in summed)  # type: ignore[misc]
        net = gross - idle_w * window_s
        if net < 0:
            flags.append(
                f"idle power {idle_w:.3f} W exceeds the window's mean power "
                f"{gross / window_s:.3f} W; net energy is negative (not clamped)"
            )
        return net / n
