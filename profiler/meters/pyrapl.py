"""``pyrapl``: the same RAPL package/DRAM domains read through the pyRAPL library.

pyRAPL (``pyRAPL.Sensor``) reads ``/sys/class/powercap/intel-rapl/intel-rapl:<i>/energy_uj`` for
each ``package-<socket>`` zone and its ``dram`` child, returning raw µJ (its docstring says J;
the values are ``energy_uj``). It does no wrap correction and no psys handling; here each value
becomes a cumulative counter (``package:<s>``, ``dram:<s>``) with the zone's
``max_energy_range_uj`` attached when readable, so the profiler's wrap correction applies. Use
:func:`compare_with_direct` to check it against :class:`~profiler.meters.rapl.RaplMeter`.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, ClassVar

from profiler.meters.base import Counter, EnergyMeter, Reading
from profiler.meters.rapl import PERMISSION_REASON, RaplMeter


class PyRaplMeter(EnergyMeter):
    """RAPL through pyRAPL (``method = "measured"``).

    Args:
        pyrapl: the ``pyRAPL`` module; ``None`` imports it. Tests inject a fake.
        powercap_dir: the directory pyRAPL reads (used only to attach ``max_energy_range_uj``).
        clock: monotonic clock in seconds.
    """

    name: ClassVar[str] = "pyrapl"
    method = "measured"
    resolution_s = 0.001

    def __init__(
        self,
        powercap_dir: str = "/sys/class/powercap/intel-rapl",
        *,
        pyrapl: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._mod = pyrapl
        self.powercap_dir = powercap_dir
        self._clock = clock
        self._sensor = None
        self._avail: tuple[bool, str] | None = None
        self._doms: list[str] = []
        self._rapl: RaplMeter | None = None

    def availability(self) -> tuple[bool, str]:
        """``(True, "pyRAPL: package:0, dram:0")`` or ``(False, reason)``: pyRAPL not installed,
        no RAPL interface, ``energy_uj`` root-only, or any other pyRAPL failure. Never raises."""
        if self._avail is None:
            self._avail = self._probe()
        return self._avail

    def _probe(self) -> tuple[bool, str]:
        mod = self._mod
        if mod is None:
            prev = logging.root.manager.disable
            logging.disable(logging.WARNING)  # pyRAPL warns about pymongo on import
            try:
                import pyRAPL as mod  # type: ignore[no-redef]
            except ImportError as e:
                return False, f"pyRAPL is not installed ({e})"
            finally:
                logging.disable(prev)
            self._mod = mod
        try:
            sensor = mod.Sensor()
            values = list(sensor.energy())
        except PermissionError:
            return False, PERMISSION_REASON
        except FileNotFoundError as e:
            return False, f"pyRAPL cannot work here: {e.filename or e} not found (no RAPL)"
        except Exception as e:
            cls = type(e).__name__
            if not os.path.isdir(self.powercap_dir):  # worded as the rapl meter words it: doctor says "absent" for both
                return False, f"{self.powercap_dir} not found; no RAPL interface for pyRAPL to read ({cls})"
            if "CantRecordEnergyConsumption" in cls or "CantInitDeviceAPI" in cls:
                return False, ("pyRAPL found no usable RAPL package/DRAM interface under "
                               f"{self.powercap_dir} ({cls})")
            return False, f"pyRAPL failed: {cls}: {e}"
        self._sensor = sensor
        doms = [d for d, v in self._domains(values).items() if v is not None]
        self._doms = doms
        if not doms:
            return False, "pyRAPL returned no readable counter"
        self.max_safe_window_s = self._safe_window_s()
        return True, "pyRAPL: " + ", ".join(doms)

    def _safe_window_s(self) -> float | None:
        """The longest interval in which a counter wraps at most once (s), as
        :meth:`RaplMeter.largest_safe_window_s` reads it from the same zones; None when no range
        is readable."""
        try:
            return self._zones().largest_safe_window_s()
        except Exception:  # pyRAPL located its zones; the direct reader may not (another layout)
            return None

    def _zones(self) -> RaplMeter:
        """The direct reader over pyRAPL's directory: it locates the zones of our domain names."""
        if self._rapl is None:
            self._rapl = RaplMeter(self.powercap_dir)
        return self._rapl

    @staticmethod
    def _domains(values: list) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for i, v in enumerate(values):
            sock, kind = divmod(i, 2)
            dom = f"{'package' if kind == 0 else 'dram'}:{sock}"
            out[dom] = None if v is None or v < 0 else float(v) / 1e6
        return out

    def _max_range_j(self, dom: str) -> tuple[float | None, str | None]:
        """``max_energy_range_uj`` (J) of the zone of ``dom`` (``package:0``, ``dram:0``), or ``(None, why)``."""
        try:
            rapl = self._zones()
            zone = next((z for z in rapl.active_zones() if z.domain == dom), None)
        except Exception as e:
            return None, f"max_energy_range_uj unreadable: {e}"
        return rapl.max_range_j(zone) if zone is not None else (None, "max_energy_range_uj not found")

    def read(self) -> Reading:
        """Cumulative J per ``package:<s>``/``dram:<s>`` from ``pyRAPL.Sensor.energy()``.

        Raises ``RuntimeError`` when pyRAPL is unavailable."""
        ok, reason = self.availability()
        if not ok:
            raise RuntimeError(f"pyRAPL unavailable: {reason}")
        t = self._clock()
        try:
            values = list(self._sensor.energy())
        except OSError as e:
            return Reading(t, {d: Counter(None, flag=f"pyRAPL read failed: {e}")
                               for d in self._doms})
        counters = {}
        for dom, e in self._domains(values).items():
            if e is None:
                continue  # pyRAPL reports -1 for a device it does not monitor: absent, not 0
            rng, flag = self._max_range_j(dom)
            counters[dom] = Counter(e, rng, flag)
        return Reading(t, counters)

    def describe(self) -> dict:
        return {"meter": self.name, "method": self.method,
                "pyrapl_status": self.availability()[1]}


def compare_with_direct(
    direct: RaplMeter,
    pyrapl: PyRaplMeter,
    seconds: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    rel_tol: float = 0.05,
    abs_tol_j: float = 0.5,
) -> dict:
    """Read both RAPL paths over the same ``seconds`` and say whether they agree.

    Returns ``{"agree": bool | None, "message": str, "domains": {dom: {"direct_j", "pyrapl_j",
    "diff_j"}}}``. ``agree`` is ``None`` when either reader is unavailable or they share no
    domain. Domains are compared after wrap correction; a difference above
    ``max(abs_tol_j, rel_tol × direct)`` joules is a disagreement. Never raises for meter
    problems.
    """
    from profiler.energy import readings_energy

    for label, m in (("direct RAPL", direct), ("pyRAPL", pyrapl)):
        ok, reason = m.availability()
        if not ok:
            return {"agree": None, "message": f"cannot compare: {label} unavailable: {reason}",
                    "domains": {}}
    d0, p0 = direct.read(), pyrapl.read()
    sleep(seconds)
    d1, p1 = direct.read(), pyrapl.read()
    ed, _ = readings_energy([d0, d1])
    ep, _ = readings_energy([p0, p1])
    common = sorted(set(ed) & set(ep))
    only_direct = sorted(set(ed) - set(ep))
    out: dict[str, dict] = {}
    bad = []
    for dom in common:
        a, b = ed[dom], ep[dom]
        diff = None if a is None or b is None else b - a
        out[dom] = {"direct_j": a, "pyrapl_j": b, "diff_j": diff}
        if diff is None or abs(diff) > max(abs_tol_j, rel_tol * abs(a)):
            bad.append(dom)
    if not common:
        return {"agree": None, "message": "no domain in common", "domains": out}
    msg = ("pyRAPL and the direct reader agree" if not bad else
           "pyRAPL and the direct reader DISAGREE on " + ", ".join(
               f"{d} (direct {out[d]['direct_j']} J, pyRAPL {out[d]['pyrapl_j']} J)" for d in bad))
    if only_direct:
        msg += f"; pyRAPL does not see {', '.join(only_direct)}"
    return {"agree": not bad, "message": msg, "domains": out}
