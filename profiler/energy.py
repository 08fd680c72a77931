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
  ``None`` and a flag), never reported as 0 J, never a division by zero;
* the method rank (:data:`ENERGY_METHODS`, :func:`worst_method`) and the never-raising
  availability probe (:func:`safe_availability`) every caller uses.

:func:`window_result` is the arithmetic as a pure function of the readings; :class:`EnergyWindow`
only takes the readings. This module imports nothing outside the standard library at run time.

Units: joules, seconds, watts. An absent device is ``None``, never ``0.0``.
"""
from __future__ import annotations

import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, get_args

from profiler.energy_math import counter_delta, gross_total, net_energy, readings_energy, sampling_flags, segments_energy

if TYPE_CHECKING:  # annotations only: meters import this module, so no import cycle at run time
    from profiler.meters.base import EnergyMeter, Reading

#: How an energy value was obtained, best first: ``measured`` (a hardware counter: RAPL, NVML
#: total energy), ``power-poll`` (power samples integrated over time), ``estimated`` (a model,
#: e.g. TDP × utilisation), ``unavailable`` (no value, with a reason).
EnergyMethod = Literal["measured", "power-poll", "estimated", "unavailable"]
ENERGY_METHODS: tuple[str, ...] = get_args(EnergyMethod)

#: Domain kinds (the part of a domain name before the first ``:``) that add up to the total.
#: ``package``/``cpu`` (CPU sockets or the estimate of them), ``dram`` (not inside package),
#: ``gpu`` (one per device). ``platform`` (psys, whole SoC/board) already contains the others,
#: ``core``/``uncore`` are inside ``package``: both are reported but never added.
SUMMED_KINDS: frozenset[str] = frozenset({"package", "cpu", "dram", "gpu"})

#: Minimum window length as a multiple of the meter's counter update period.
MIN_RESOLUTION_MULTIPLE = 10


def domain_kind(domain: str) -> str:
    """Return the kind of a domain name: ``"package:0"`` → ``"package"``, ``"gpu:1"`` → ``"gpu"``."""
    return domain.split(":", 1)[0]


def is_summed(domain: str) -> bool:
    """True when ``domain`` counts towards ``energy_j_per_inference`` (see :data:`SUMMED_KINDS`)."""
    return domain_kind(domain) in SUMMED_KINDS


def worst_method(methods: Iterable[str | None]) -> str:
    """The least trustworthy of several methods, by their place in :data:`ENERGY_METHODS`.

    Empty or ``None`` entries are ignored; no methods at all gives ``"unavailable"``. A name not
    in :data:`ENERGY_METHODS` ranks as ``"unavailable"`` and is returned as it is
    (:func:`window_result` then reports no value, naming it).
    """
    rank = {m: i for i, m in enumerate(ENERGY_METHODS)}
    known = [m for m in methods if m]
    if not known:
        return "unavailable"
    return max(known, key=lambda m: rank.get(m, len(ENERGY_METHODS) - 1))


def safe_availability(plugin: Any, *args: Any) -> tuple[bool, str]:
    """``plugin.availability(*args)`` as ``(bool, str)``, an exception turned into ``(False, reason)``.

    For any plugin with ``availability()`` (meters; accelerators, which take their prepare
    settings as ``args``). ``availability()`` is documented never to raise; third-party plugins
    may still do so, and a probe must never end a run or ``sparsebench doctor``.
    """
    try:
        ok, reason = plugin.availability(*args)
        return bool(ok), str(reason)
    except (Exception, SystemExit) as e:  # a plugin's sys.exit() too: the probe said no, nothing more
        return False, f"availability() raised {e!r}"


def checked_read(meter: EnergyMeter) -> Reading:
    """``meter.read()``, checked against the meter contract before any arithmetic uses it.

    A third-party meter may return something else than a :class:`~profiler.meters.base.Reading`
    of :class:`~profiler.meters.base.Counter` values (a bare float, joules as a string); the window
    arithmetic would then crash the run far from the cause. Raises TypeError naming the meter and
    what it returned; the callers treat it as a failed read (energy ``unavailable`` with that
    reason, the matrix goes on). Non-finite joules are left to :func:`counter_delta` (it names them).
    """
    from profiler.meters.base import Counter, Reading  # meters import this module: no cycle at import time

    r = meter.read()
    who = f"meter {getattr(meter, 'name', '?')!r}: read()"
    contract = "it must return profiler.meters.base.Reading(t_s, {domain: Counter(joules, max_range_j)})"
    if not isinstance(r, Reading):
        raise TypeError(f"{who} returned {type(r).__name__} {_short(r)}; {contract}")
    if isinstance(r.t_s, bool) or not isinstance(r.t_s, numbers.Real) or not math.isfinite(r.t_s):
        raise TypeError(f"{who} returned a Reading whose t_s is {type(r.t_s).__name__} {_short(r.t_s)}; "
                        "it must be a finite monotonic time in seconds")
    if not isinstance(r.counters, dict):
        raise TypeError(f"{who} returned a Reading whose counters are {type(r.counters).__name__} "
                        f"{_short(r.counters)}; {contract}")
    for d, c in r.counters.items():
        if not isinstance(d, str) or not isinstance(c, Counter):
            raise TypeError(f"{who} returned domain {_short(d)} as {type(c).__name__} {_short(c)}; {contract}")
        for attr in ("energy_j", "max_range_j"):
            v = getattr(c, attr)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise TypeError(f"{who} returned domain {d!r} with {attr} = {type(v).__name__} {_short(v)}; "
                                "it must be a number of joules, or None when unreadable")
    return r


def _short(v: Any) -> str:
    """``repr(v)``, cut to 60 characters (a message names what a plugin returned, not all of it)."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------
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

    @classmethod
    def from_dict(cls, d: Any) -> "IdlePower":
        """The inverse of :meth:`to_dict` (``flags`` optional). Raises ValueError when ``d`` lacks
        ``watts`` per domain (numbers or null) or a numeric ``duration_s``."""
        watts = d.get("watts") if isinstance(d, dict) else None
        duration = d.get("duration_s") if isinstance(d, dict) else None
        if not isinstance(watts, dict) or not all(w is None or isinstance(w, (int, float)) for w in watts.values()) \
                or isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise ValueError("needs 'watts' per domain (numbers or null) and a numeric 'duration_s'")
        flags = d.get("flags")
        return cls(watts=dict(watts), duration_s=float(duration), flags=list(flags) if isinstance(flags, list) else [])


def _stop_quietly(meter: EnergyMeter) -> None:
    """``meter.stop()``; a meter that fails to stop has already given (or failed) its readings."""
    try:
        meter.stop()
    except Exception:
        pass


def close_quietly(meter: EnergyMeter) -> None:
    """``meter.close()`` (see :meth:`~profiler.meters.base.EnergyMeter.close`) for a caller done with
    the meter. An exception is ignored: the readings are taken, and a meter that fails to close must
    not replace the error a run is ending with."""
    try:
        meter.close()
    except Exception:
        pass


def measure_idle_power(
    meter: EnergyMeter, seconds: float = 2.0, sleep: Callable[[float], None] = time.sleep
) -> IdlePower:
    """Measure idle power per domain by reading ``meter`` before and after ``sleep(seconds)``.

    Run it before the matrix, with nothing else of ours running. If ``seconds`` is shorter than
    ``10 × meter.resolution_s`` it is lengthened to that. An unavailable meter gives no watts at
    all (an empty ``watts``, with a flag saying why); a failed read or a zero-length interval gives
    ``None`` watts for the domains concerned (never 0 W, never a division by zero); this function
    does not raise for meter problems.

    Args:
        meter: any :class:`~profiler.meters.base.EnergyMeter`.
        seconds: idle interval in seconds.
        sleep: injectable sleep (tests pass one that advances a fake clock).
    """
    ok, reason = safe_availability(meter)
    if not ok:
        return IdlePower(watts={}, duration_s=0.0, flags=[f"meter unavailable: {reason}"])
    seconds = max(float(seconds), MIN_RESOLUTION_MULTIPLE * float(meter.resolution_s))
    try:  # a meter failing to start or mid-way must not kill the run
        meter.start()
        try:
            readings = [checked_read(meter)]
            safe = meter.max_safe_window_s
            remaining = seconds
            step = seconds if not safe else min(seconds, safe / 4.0)
            while remaining > 1e-12:
                chunk = min(step, remaining)
                sleep(chunk)
                remaining -= chunk
                readings.append(checked_read(meter))
        finally:
            _stop_quietly(meter)
    except Exception as e:
        return IdlePower(watts={}, duration_s=0.0, flags=[f"idle read failed: {e!r}"])
    dt = readings[-1].t_s - readings[0].t_s
    energies, flags = readings_energy(readings)
    if dt <= 0:
        return IdlePower(
            watts={d: None for d in energies}, duration_s=max(dt, 0.0),
            flags=flags + ["idle interval has zero length; idle power unknown"],
        )
    watts = {d: (None if e is None else e / dt) for d, e in energies.items()}
    for d, e in energies.items():  # as in a window: a measured counter that did not move did not update
        c = readings[-1].counters.get(d)
        if e == 0.0 and c is not None and (c.method or getattr(meter, "method", None)) in ("measured", "power-poll"):
            watts[d] = None
            flags.append(f"{d}: counter did not advance over the {dt:.3f} s idle interval; idle power unknown")
    return IdlePower(watts=watts, duration_s=dt, flags=flags)


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass
class EnergyResult:
    """Energy of one timed window.

    Attributes:
        method: one of :data:`ENERGY_METHODS`: the worst (:func:`worst_method`) among the
            summed domains (a mix of measured CPU and estimated anything is ``estimated``).
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
        ``method`` (the meter's nominal method) is stored as ``energy_meter_method``; and, when any
        value is estimated, ``energy_estimated_because`` (:func:`estimate_reason`).
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
        if "estimated" in (self.method, *self.domain_methods.values()):
            row["energy_estimated_because"] = estimate_reason(self.meter_info)
        return row


def estimate_reason(meter_info: dict) -> str:
    """Why energy is an estimate, from the meter's ``describe()``: the ``auto`` meter's own words
    for the CPU (e.g. "RAPL is unavailable: energy_uj is readable by root only"), else that the
    config chose an estimating meter."""
    choice = str(meter_info.get("auto_choice") or "")
    cpu = next((part.strip() for part in choice.split(";") if part.strip().startswith("CPU: estimated")), None)
    if cpu:
        return cpu
    return f"the config chose the {meter_info.get('meter', '?')!r} meter, which estimates"


# --------------------------------------------------------------------------------------------
# window
# --------------------------------------------------------------------------------------------


def _meter_info(meter: EnergyMeter) -> dict:
    """``meter.describe()``, or what is known when it raises."""
    try:
        return dict(meter.describe())
    except Exception as e:
        return {"meter": getattr(meter, "name", "?"), "describe_error": repr(e)}


def unavailable_result(reason: str, idle_w: dict | None, info: dict, n_inferences: int) -> EnergyResult:
    """An :class:`EnergyResult` without values: ``method="unavailable"`` and the ``reason``."""
    return EnergyResult(method="unavailable", reason=reason, window_s=0.0, energy_j={},
                        energy_j_per_inference=None, energy_j_per_inference_net=None,
                        idle_power_w=idle_w, meter_info=info, n_inferences=n_inferences)


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
        self._available = safe_availability(self.meter)
        if not self._available[0]:
            return self
        try:
            self.meter.start()
            first = checked_read(self.meter)
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
        _stop_quietly(self.meter)
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
        """Take an intermediate reading (thread-safe). Raises whatever ``meter.read()`` raises, and
        TypeError for a reading that breaks the meter contract (:func:`checked_read`)."""
        r = checked_read(self.meter)
        with self._lock:
            self._readings.append(r)

    @property
    def readings(self) -> list[Reading]:
        """A copy of the readings taken so far (begin, intermediate samples, end)."""
        with self._lock:
            return list(self._readings)

    # -- result ----------------------------------------------------------------------------
    def result(self, n_inferences: int) -> EnergyResult:
        """Energy over the window, divided by ``n_inferences`` (see :func:`window_result`).

        Never raises for meter problems and never divides by zero: an unavailable meter or a
        failed read gives ``method="unavailable"`` with the reason; a window shorter than
        :attr:`min_duration_s` or ``n_inferences <= 0`` gives ``None`` values with a flag.
        Raises ``RuntimeError`` if called before the window was entered and exited.
        """
        if not (self._entered and self._exited):
            raise RuntimeError("EnergyWindow.result() needs a completed `with` block")
        info = _meter_info(self.meter)
        idle_w = None if self.idle is None else dict(self.idle.watts)
        assert self._available is not None
        readings = self.readings
        failure = None if self._available[0] else self._available[1]
        if failure is None and (self._error is not None or len(readings) < 2):
            failure = self._error or "no end reading"
        if failure is not None:
            return unavailable_result(failure, idle_w, info, n_inferences)
        return window_result(
            [readings], n_inferences, meter_method=self.meter.method,
            resolution_s=float(self.meter.resolution_s),
            max_safe_window_s=self.meter.max_safe_window_s, idle_w=idle_w, meter_info=info,
        )


# --------------------------------------------------------------------------------------------
# the window arithmetic, as a pure function of the readings
# --------------------------------------------------------------------------------------------


def window_result(
    segments: list[list[Reading]],
    n_inferences: int,
    *,
    meter_method: str,
    resolution_s: float,
    max_safe_window_s: float | None = None,
    idle_w: dict[str, float | None] | None = None,
    meter_info: dict | None = None,
) -> EnergyResult:
    """Joules per inference from the readings of one or more segments of a window: a cell timed
    in interleaved visits counts only its own visits, each a segment (begin, intermediate
    samples, end); joules and seconds add up over the segments, the gaps between them (other
    cells' visits) are not counted.

    Wrap-corrected deltas per domain (:func:`readings_energy`), the method of the summed domains
    (:func:`worst_method`; a counter's own ``method`` overrides ``meter_method``), rejection of
    windows shorter than ``MIN_RESOLUTION_MULTIPLE × resolution_s`` seconds, dropping of
    measured counters that did not advance, the sum over :data:`SUMMED_KINDS` domains, the
    division by ``n_inferences`` and the idle-baseline net energy.

    Args:
        segments: readings per segment, each at least two, oldest first (``t_s`` in seconds).
        n_inferences: inferences run inside the window; ``<= 0`` gives ``None`` values and a flag.
        meter_method: the meter's nominal method (for counters that carry none).
        resolution_s: the meter's counter update period in seconds.
        max_safe_window_s: the meter's wrap-safe interval in seconds, or ``None`` (no wrap).
        idle_w: idle power in watts per domain (:attr:`IdlePower.watts`), or ``None``.
        meter_info: ``meter.describe()``, stored in the result.

    Never raises and never divides by zero; fewer than two readings count as no value.
    """
    info = dict(meter_info or {})
    segments = [seg for seg in segments if seg] or [[]]
    window_s = sum(max(seg[-1].t_s - seg[0].t_s, 0.0) for seg in segments if seg)
    energies, flags = segments_energy(segments)
    # every domain of energies has a method, even one absent from the last reading (a counter
    # that dropped out in a later visit: its energy is None, its method still named): the worst of
    # its readings, since a delta that spans a fallback (power-poll at the start, measured at the
    # end) is no better than its weaker end
    seen: dict[str, list[str]] = {}
    for seg in segments:
        for reading in seg:
            for d, c in reading.counters.items():
                if d in energies:
                    seen.setdefault(d, []).append(c.method or meter_method)
    methods = {d: worst_method(ms) for d, ms in seen.items()}
    for d, ms in seen.items():
        if len(set(ms)) > 1:
            flags.append(f"{d}: method changed inside the window ({', '.join(dict.fromkeys(ms))}); the worst is named")
    summed = [d for d in energies if is_summed(d)]
    method = worst_method(methods[d] for d in summed) if summed else meter_method
    for seg in segments:
        flags += [f for f in sampling_flags(seg, max(seg[-1].t_s - seg[0].t_s, 0.0), max_safe_window_s)
                  if f not in flags] if seg else []
    if len(set(methods[d] for d in summed)) > 1:
        flags.append("mixed methods: " + ", ".join(f"{d}={methods[d]}" for d in summed))

    def result(energy_j, reason, per_inf=None, net=None) -> EnergyResult:
        # no per-inference value is no measurement, whatever the counters were: "unavailable" + the reason
        return EnergyResult(
            method=method if per_inf is not None else "unavailable",
            reason=reason if per_inf is not None else (reason or "no energy value"), window_s=window_s, energy_j=energy_j,
            energy_j_per_inference=per_inf, energy_j_per_inference_net=net, flags=flags,
            domain_methods=methods, idle_power_w=idle_w, meter_info=info,
            n_inferences=n_inferences,
        )

    if method not in ENERGY_METHODS:  # a third-party meter's own word: no value we could label honestly
        return result(energies, f"meter method {method!r} is none of {', '.join(ENERGY_METHODS)}")
    min_duration_s = MIN_RESOLUTION_MULTIPLE * float(resolution_s)
    short = [seg[-1].t_s - seg[0].t_s for seg in segments if seg and seg[-1].t_s - seg[0].t_s < min_duration_s]
    if len(segments) > 1 and short:  # a counter that updates every resolution_s smears energy across visits
        flags.append(f"{len(short)} of {len(segments)} visits are shorter than {MIN_RESOLUTION_MULTIPLE}× the meter "
                     f"resolution ({min_duration_s:.3f} s; the shortest {min(short):.3f} s): energy may leak between "
                     "interleaved cells — raise measure.visit_seconds")
    if window_s < min_duration_s:
        flags.append(
            f"window {window_s:.6f} s is shorter than {MIN_RESOLUTION_MULTIPLE}× the meter "
            f"resolution ({min_duration_s:.6f} s); energy rejected — extend the loop"
        )
        return result({d: None for d in energies}, "window shorter than 10× meter resolution")

    # a measured counter that did not move over a long-enough window did not update: unknown. A
    # DRAM zone that never moves is one the board does not implement (many client boards list
    # one): it leaves the sum, where it would otherwise leave the CPU's measured energy unknown.
    for d, e in list(energies.items()):
        if e == 0.0 and methods.get(d) in ("measured", "power-poll"):
            energies[d] = None
            if domain_kind(d) == "dram" and d in summed:
                summed.remove(d)
                flags.append(f"{d}: counter did not advance over {window_s:.3f} s (a DRAM zone the board does not "
                             "implement); left out of the sum")
            else:
                flags.append(f"{d}: counter did not advance over {window_s:.3f} s; value dropped")

    gross, reason = gross_total(energies, summed)
    per_inf = net_per_inf = None
    if n_inferences is None or n_inferences <= 0:
        flags.append("no inferences counted; per-inference energy not computed")
        reason = reason or "n_inferences <= 0"
    elif gross is not None:
        per_inf = gross / n_inferences
        net = net_energy(gross, summed, window_s, idle_w, flags)
        net_per_inf = None if net is None else net / n_inferences
    return result(energies, reason, per_inf, net_per_inf)


class VisitWindows:
    """The energy window of a cell timed in interleaved visits: one segment per visit.

    :meth:`begin` and :meth:`end` read the meter around each visit's timed calls; :meth:`result`
    adds joules and seconds over the visits only (:func:`window_result`), so the energy of the
    other cells' visits in between is never counted. The meter is started and stopped by the
    caller (once per run). Meter errors never propagate: they end in ``method="unavailable"``.
    Visits are expected to be shorter than ``meter.max_safe_window_s`` (longer ones are flagged).
    """

    def __init__(self, meter: EnergyMeter, idle: IdlePower | None = None) -> None:
        self.meter, self.idle = meter, idle
        self._available = safe_availability(meter)
        self._segments: list[list[Reading]] = []
        self._error: str | None = None

    def begin(self) -> None:
        self._read(new_segment=True)

    def end(self) -> None:
        self._read(new_segment=False)

    def _read(self, new_segment: bool) -> None:
        if not self._available[0] or self._error is not None:
            return
        try:
            r = checked_read(self.meter)
        except Exception as e:
            self._error = f"meter read failed at a visit's {'start' if new_segment else 'end'}: {e!r}"
            return
        if new_segment:
            self._segments.append([r])
        elif self._segments:
            self._segments[-1].append(r)

    def result(self, n_inferences: int) -> EnergyResult:
        """Joules per inference over all visits (see :func:`window_result`)."""
        info = _meter_info(self.meter)
        idle_w = None if self.idle is None else dict(self.idle.watts)
        failure = None if self._available[0] else self._available[1]
        complete = [seg for seg in self._segments if len(seg) >= 2]
        failure = failure or self._error or (None if complete else "no complete visit")
        if failure is not None:
            return unavailable_result(failure, idle_w, info, n_inferences)
        return window_result(complete, n_inferences, meter_method=self.meter.method,
                               resolution_s=float(self.meter.resolution_s),
                               max_safe_window_s=self.meter.max_safe_window_s, idle_w=idle_w, meter_info=info)
