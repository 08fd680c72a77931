"""``codecarbon``: codecarbon's ``OfflineEmissionsTracker`` behind the meter interface.

For users who want codecarbon's CO₂ conversion next to our joules. The tracker runs offline
(no API, no file output, no network) and is started once and kept running until
:meth:`CodecarbonMeter.close` (the runner closes its meters when done; ``stop()``, called after
every window, leaves it running, since a codecarbon tracker cannot be restarted); each
:meth:`CodecarbonMeter.read` asks it to measure now and returns its cumulative totals converted
from kWh to joules, per domain ``cpu``, ``dram`` and (if it tracks GPUs) ``gpu``.

codecarbon's own status is carried through per domain and never upgraded:

* CPU: ``measured`` only when its CPU mode reads counters (``intel_rapl``, ``windows_emi``,
  ``intel_power_gadget``, Apple ``powermetrics``); ``cpu_load``/``constant`` (TDP models) →
  ``estimated``;
* RAM: always ``estimated`` (codecarbon models RAM power from its size);
* GPU: ``measured`` when every device's NVML energy counter worked, else ``power-poll``.

These reach private attributes of the tracker (``_hardware``, ``_total_*_energy``,
``_measure_power_and_energy``), checked at :meth:`availability`; a codecarbon release that
changes them makes the meter unavailable with that reason rather than wrong.
"""
from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Callable, ClassVar, Literal

from accelerators.params import Range

from profiler.energy import worst_method
from profiler.meters.base import Counter, EnergyMeter, Reading

_J_PER_KWH = 3.6e6
_MEASURED_CPU_MODES = {"intel_rapl", "windows_emi", "intel_power_gadget", "apple_powermetrics"}


class CodecarbonMeter(EnergyMeter):
    """codecarbon's offline tracker; domains ``cpu``, ``dram``, ``gpu``.

    Args:
        country_iso_code: 3-letter country code for codecarbon's offline carbon intensity.
        tracking_mode: codecarbon ``"machine"`` or ``"process"``.
        measure_power_secs: codecarbon's own background interval (s); reads also measure.
        tracker_factory: ``() -> tracker`` (tests inject a fake); default builds
            ``codecarbon.OfflineEmissionsTracker`` with file/API output off.
        clock: monotonic clock in seconds.
    """

    name: ClassVar[str] = "codecarbon"
    method = "estimated"   # until availability() has seen what codecarbon measures
    resolution_s = 0.1

    def __init__(
        self,
        country_iso_code: str = "USA",
        tracking_mode: Literal["machine", "process"] = "machine",  # codecarbon's own two modes: checked at config load
        measure_power_secs: Annotated[float, Range(0.1, 3600.0)] = 1.0,
        *,
        tracker_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.country_iso_code = country_iso_code
        self.tracking_mode = tracking_mode
        self.measure_power_secs = float(measure_power_secs)
        self._factory = tracker_factory or self._default_factory
        self._clock = clock
        self._tracker = None
        self._avail: tuple[bool, str] | None = None
        self.domain_methods: dict[str, str] = {}
        self.cpu_mode: str | None = None

    def _default_factory(self):
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # after import: it sets INFO

        return OfflineEmissionsTracker(
            country_iso_code=self.country_iso_code,
            tracking_mode=self.tracking_mode,
            measure_power_secs=self.measure_power_secs,
            save_to_file=False,
            save_to_api=False,
            log_level="error",
            allow_multiple_runs=True,
        )

    def availability(self) -> tuple[bool, str]:
        """Build and start the tracker once (≈1–2 s on first call). ``(False, reason)`` if
        codecarbon is not installed, cannot run offline, or its internals changed. Never raises."""
        if self._avail is None:
            try:
                self._avail = self._probe()
            except Exception as e:
                self._avail = (False, f"codecarbon cannot run offline here: {type(e).__name__}: {e}")
        return self._avail

    def _probe(self) -> tuple[bool, str]:
        try:
            tracker = self._factory()
        except ImportError as e:
            return False, f"codecarbon is not installed ({e})"
        tracker.start()
        for attr in ("_hardware", "_total_cpu_energy", "_total_ram_energy",
                     "_measure_power_and_energy"):
            if not hasattr(tracker, attr):
                try:
                    tracker.stop()
                except Exception:
                    pass
                return False, f"unsupported codecarbon version: tracker has no {attr}"
        if getattr(tracker, "_start_time", 0) is None:
            return False, "codecarbon tracker did not start (another instance running?)"
        self._tracker = tracker
        self._classify()
        parts = ", ".join(f"{d}={m}" for d, m in self.domain_methods.items())
        return True, f"codecarbon (cpu mode {self.cpu_mode}): {parts}"

    def _classify(self) -> None:
        methods: dict[str, str] = {}
        for hw in self._tracker._hardware:
            kind = type(hw).__name__
            part = getattr(hw, "chip_part", None)
            if kind == "CPU" or part == "CPU":
                mode = getattr(hw, "_mode", None) or ("apple_powermetrics"
                                                       if kind == "AppleSiliconChip" else None)
                self.cpu_mode = mode
                methods["cpu"] = "measured" if mode in _MEASURED_CPU_MODES else "estimated"
            elif kind == "RAM" or part == "RAM":
                methods["dram"] = "estimated"
            elif kind == "GPU" or part == "GPU":
                if kind != "GPU":      # Apple silicon GPU: powermetrics reading
                    methods["gpu"] = "measured"
                    continue
                devs = getattr(getattr(hw, "devices", None), "devices", None) or []
                counter_ok = bool(devs) and not any(
                    getattr(d, "_counter_error", None) for d in devs)
                methods["gpu"] = "measured" if counter_ok else "power-poll"
        self.domain_methods = methods
        self.method = worst_method(methods.values()) if methods else "estimated"

    def read(self) -> Reading:
        """Cumulative codecarbon totals in J per domain. Raises ``RuntimeError`` if unavailable."""
        ok, reason = self.availability()
        if not ok:
            raise RuntimeError(f"codecarbon unavailable: {reason}")
        tr = self._tracker
        flag = None
        try:
            tr._measure_power_and_energy()
        except Exception as e:
            flag = f"codecarbon measurement failed: {e!r}"
        self._classify()  # codecarbon may have fallen back (e.g. a GPU counter error) since
        t = self._clock()
        totals = {"cpu": tr._total_cpu_energy, "dram": tr._total_ram_energy,
                  "gpu": getattr(tr, "_total_gpu_energy", None)}
        counters = {}
        for dom, m in self.domain_methods.items():
            e = totals.get(dom)
            kwh = getattr(e, "kWh", None)
            counters[dom] = Counter(None if (kwh is None or flag) else float(kwh) * _J_PER_KWH,
                                    flag=flag, method=m)
        return Reading(t, counters)

    def describe(self) -> dict:
        """``codecarbon_cpu_mode``, ``codecarbon_domain_methods``, ``codecarbon_country_iso_code``,
        ``codecarbon_tracking_mode``."""
        return {"meter": self.name, "method": self.method,
                "codecarbon_cpu_mode": self.cpu_mode,
                "codecarbon_domain_methods": dict(self.domain_methods),
                "codecarbon_country_iso_code": self.country_iso_code,
                "codecarbon_tracking_mode": self.tracking_mode}

    def close(self) -> None:
        """Stop codecarbon's tracker (it cannot be restarted; build a new meter after)."""
        if self._tracker is not None:
            try:
                self._tracker.stop()
            except Exception:
                pass
            self._tracker = None
            self._avail = (False, "closed")
