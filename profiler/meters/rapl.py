"""``rapl``: Intel/AMD RAPL energy counters read directly from the Linux powercap sysfs tree.

Kernel semantics (Documentation/power/powercap/powercap.rst): each zone directory
``<control-type>:<i>[:<j>]`` (``intel-rapl:0``, child ``intel-rapl:0:0``) has ``name``
(``package-0``, ``package-0-die-1``, ``dram``, ``core``, ``uncore``, ``psys``), a cumulative
``energy_uj`` (µJ, wraps to 0 after ``max_energy_range_uj``) and ``constraint_<n>_*`` files.
``/sys/class/powercap`` lists every zone flat (as symlinks); children also appear nested.

How zones become domains here:

* every top-level ``package-X`` zone → domain ``package:X`` (``package-X-die-Y`` →
  ``package:X-die-Y``); sockets/dies are separate domains and the profiler sums them;
* a ``dram`` child of package X → ``dram:X`` — DRAM is *not* inside the package, reported apart
  and summed;
* ``psys`` → ``platform``: the whole SoC/board, which already contains package and DRAM, so it is
  reported but never added (see :data:`profiler.energy.SUMMED_KINDS`);
* ``core``/``uncore`` children are inside the package: dropped (or ``core:X``/``uncore:X``,
  never summed, with ``include_subdomains=True``);
* mirrored trees (``intel-rapl-mmio``, ``intel-rapl-tpmi`` next to ``intel-rapl``) give the same
  domains again: the first tree in :data:`CONTROL_TYPE_PREFERENCE` wins, the mirror is counted
  once; two zones with the same name, or two dies of one package whose counters read identical,
  are duplicates and counted once.

Every read returns ``energy_uj`` and ``max_energy_range_uj`` (re-read each time) so the profiler
can correct wraps between any two reads. An unreadable max flags the counter instead of
allowing a negative value. ``energy_uj`` is readable only by root since Linux 5.10 / CVE-2020-8694
("Platypus"); that makes the meter unavailable with an explicit reason instead of a silent guess.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Annotated, Callable, ClassVar

from accelerators.params import Range

from profiler.meters.base import Counter, EnergyMeter, Reading

DEFAULT_ROOT = "/sys/class/powercap"
#: Assumed zone power when no ``constraint_*_max_power_uw``/``power_limit_uw`` is readable (W).
#: Deliberately high: it only makes the wrap-safe window shorter (more samples), never unsafe.
DEFAULT_MAX_POWER_W = 500.0
#: Mirrors of the same hardware counters; the earliest present wins.
CONTROL_TYPE_PREFERENCE = ("intel-rapl", "intel-rapl-tpmi", "intel-rapl-mmio")

PERMISSION_REASON = (
    "energy_uj is readable by root only; run as root or grant read access with a udev rule "
    '(e.g. ACTION=="add", SUBSYSTEM=="powercap", RUN+="/bin/chmod a+r %S%p/energy_uj")'
)

_ZONE_RE = re.compile(r"^(?P<ctl>[a-z][a-z0-9-]*):(?P<idx>\d+(?::\d+)*)$")
_PKG_RE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")


def _default_reader(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


@dataclass
class Zone:
    """One powercap zone: ``zone_id`` (``intel-rapl:0:1``), its directory, ``name`` file
    contents, the domain it maps to (``None`` if dropped) and a note on why it was dropped."""

    zone_id: str
    path: str
    control_type: str
    indices: tuple[int, ...]
    name: str
    domain: str | None = None
    note: str | None = None


class RaplMeter(EnergyMeter):
    """Direct powercap RAPL reader (``method = "measured"``).

    Args:
        root: powercap root directory (default ``/sys/class/powercap``; tests pass a fake tree).
        reader: ``reader(path) -> str`` returning a sysfs file's contents; raises ``OSError``
            (``PermissionError``, ``FileNotFoundError``) like ``open``. Injectable for tests.
        include_subdomains: also report ``core:X``/``uncore:X`` (never summed).
        default_max_power_w: zone power assumed when no constraint file gives one (W).
        clock: monotonic clock in seconds for reading timestamps.

    Zones are discovered lazily on first use; :meth:`availability` never raises.
    """

    name: ClassVar[str] = "rapl"
    method = "measured"
    resolution_s = 0.001

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        include_subdomains: bool = False,
        default_max_power_w: Annotated[float, Range(1.0, 100_000.0)] = DEFAULT_MAX_POWER_W,
        *,
        reader: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.root = root
        self._reader = reader or _default_reader
        self.include_subdomains = include_subdomains
        self.default_max_power_w = float(default_max_power_w)
        self._clock = clock
        self._zones: list[Zone] | None = None
        self._notes: list[str] = []
        self._avail: tuple[bool, str] | None = None
        self.max_safe_window_s: float | None = None

    # -- discovery ---------------------------------------------------------------------------
    def _read_int(self, path: str) -> int:
        return int(self._reader(path).strip())

    def zones(self) -> list[Zone]:
        """All discovered zones (kept and dropped, see ``Zone.domain``/``Zone.note``).

        Raises ``FileNotFoundError`` if ``root`` does not exist.
        """
        if self._zones is None:
            self._zones = self._discover()
        return self._zones

    def _discover(self) -> list[Zone]:
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{self.root} not found")
        found: dict[str, str] = {}

        def scan(d: str, depth: int) -> None:
            try:
                entries = sorted(os.listdir(d))
            except OSError:
                return
            for e in entries:
                m = _ZONE_RE.match(e)
                p = os.path.join(d, e)
                if m and os.path.isdir(p):
                    found.setdefault(e, p)
                    if depth < 3:
                        scan(p, depth + 1)

        scan(self.root, 0)
        zones: list[Zone] = []
        for zid, path in found.items():
            m = _ZONE_RE.match(zid)
            assert m
            try:
                name = self._reader(os.path.join(path, "name")).strip()
            except OSError as e:
                self._notes.append(f"{zid}: name unreadable ({e.strerror or e}); ignored")
                continue
            zones.append(Zone(zid, path, m["ctl"], tuple(int(i) for i in m["idx"].split(":")),
                              name))
        self._assign_domains(zones)
        return zones

    def _assign_domains(self, zones: list[Zone]) -> None:
        def pref(z: Zone) -> tuple:
            try:
                p = CONTROL_TYPE_PREFERENCE.index(z.control_type)
            except ValueError:
                p = len(CONTROL_TYPE_PREFERENCE)
            return (p, z.control_type, len(z.indices), z.indices)

        zones.sort(key=pref)
        by_id = {z.zone_id: z for z in zones}
        owner: dict[str, Zone] = {}
        for z in zones:
            domain: str | None = None
            if len(z.indices) == 1:
                m = _PKG_RE.match(z.name)
                if m:
                    domain = f"package:{m[1]}" + (f"-die-{m[2]}" if m[2] else "")
                elif z.name == "psys":
                    domain = "platform"
                elif z.name == "dram":
                    domain = f"dram:{z.indices[0]}"
                else:
                    z.note = f"top-level zone {z.name!r} not used"
            else:
                parent_id = f"{z.control_type}:" + ":".join(str(i) for i in z.indices[:-1])
                parent = by_id.get(parent_id)
                if parent is None or parent.domain is None or not parent.domain.startswith(
                    "package:"
                ):
                    z.note = f"child of {parent_id}, which is not counted"
                    continue
                suffix = parent.domain.split(":", 1)[1]
                if z.name == "dram":
                    domain = f"dram:{suffix}"
                elif z.name in ("core", "uncore"):
                    if self.include_subdomains:
                        domain = f"{z.name}:{suffix}"
                    else:
                        z.note = f"{z.name} is inside package {suffix}; not counted"
                else:
                    z.note = f"sub-zone {z.name!r} inside package {suffix}; not counted"
            if domain is None:
                continue
            if domain in owner:
                first = owner[domain]
                kind = "mirrors" if first.control_type != z.control_type else "duplicates"
                z.note = f"{z.name} {kind} {first.zone_id}; counted once"
                continue
            if "-die-" in domain:
                twin = self._identical_die(z, domain, owner)
                if twin is not None:
                    z.note = f"{z.name} reads the same counter as {twin.zone_id}; counted once"
                    continue
            z.domain = domain
            owner[domain] = z

    #: two dies' ``energy_uj`` less than this many µJ (0.5 J) apart read the same counter: it updates
    #: about every millisecond, so two reads microseconds apart straddle at most one update (≤ 0.5 J
    #: at 500 W), while two dies' own counters (joules since boot) differ by far more
    DIE_TWIN_TOLERANCE_UJ: ClassVar[int] = 500_000

    def _identical_die(self, z: Zone, domain: str, owner: dict[str, Zone]) -> Zone | None:
        """Another die of the same package whose ``energy_uj`` reads the same as ``z``'s (within
        :attr:`DIE_TWIN_TOLERANCE_UJ`: the counter may tick between the two reads): the same
        package-scope counter exposed once per die (counted once)."""
        pkg = domain.split("-die-")[0] + "-die-"
        try:
            v = self._read_int(os.path.join(z.path, "energy_uj"))
        except (OSError, ValueError):
            return None
        for dom, other in owner.items():
            if dom.startswith(pkg):
                try:
                    if abs(self._read_int(os.path.join(other.path, "energy_uj")) - v) < self.DIE_TWIN_TOLERANCE_UJ:
                        return other
                except (OSError, ValueError):
                    continue
        return None

    def active_zones(self) -> list[Zone]:
        """Zones that map to a reported domain."""
        return [z for z in self.zones() if z.domain is not None]

    # -- interface ------------------------------------------------------------------------
    def availability(self) -> tuple[bool, str]:
        """``(True, "RAPL: package:0, dram:0, ...")`` or ``(False, reason)``: root absent, no
        RAPL zones, no package/DRAM zone, ``energy_uj`` permission denied (root only) or
        unreadable. Never raises."""
        if self._avail is None:
            self._avail = self._probe()
        return self._avail

    def _probe(self) -> tuple[bool, str]:
        try:
            zones = self.zones()
        except FileNotFoundError:
            return False, f"{self.root} not found (no powercap/RAPL interface on this machine)"
        except OSError as e:
            return False, f"cannot list {self.root}: {e}"
        active = [z for z in zones if z.domain]
        if not zones:
            return False, (f"no RAPL zones under {self.root} (driver intel_rapl_msr / "
                           "intel_rapl_common not loaded, or hidden from this container)")
        if not any(z.domain.split(":")[0] in ("package", "dram") for z in active):
            names = ", ".join(sorted({z.name for z in zones}))
            return False, f"RAPL exposes no package or DRAM zone (found: {names})"
        for z in active:
            p = os.path.join(z.path, "energy_uj")
            try:
                self._read_int(p)
            except PermissionError:
                return False, PERMISSION_REASON
            except (OSError, ValueError) as e:
                return False, f"cannot read {p}: {e}"
        self.max_safe_window_s = self.largest_safe_window_s()
        return True, "RAPL: " + ", ".join(f"{z.domain} ({z.zone_id} {z.name})" for z in active)

    def zone_max_power_w(self, z: Zone) -> tuple[float, str]:
        """Highest power this zone can draw, in W, and where the figure came from.

        From ``constraint_*_max_power_uw``, else ``constraint_*_power_limit_uw``, else
        ``default_max_power_w`` (also for a DRAM zone without constraints: an over-estimate, so
        the wrap-safe window comes out shorter, the safe side).
        """
        for suffix in ("max_power_uw", "power_limit_uw"):
            vals = []
            for n in range(8):
                try:
                    vals.append(self._read_int(os.path.join(z.path, f"constraint_{n}_{suffix}")))
                except (OSError, ValueError):
                    continue
            vals = [v for v in vals if v > 0]
            if vals:
                return max(vals) / 1e6, f"constraint_*_{suffix}"
        return self.default_max_power_w, "default"

    def max_range_j(self, z: Zone) -> tuple[float | None, str | None]:
        """``(max_energy_range_uj in J, None)`` of zone ``z``, or ``(None, why)`` when it is
        unreadable or not positive (the counter then cannot be wrap-corrected)."""
        try:
            rng = self._read_int(os.path.join(z.path, "max_energy_range_uj")) / 1e6
        except (OSError, ValueError) as ex:
            return None, f"max_energy_range_uj unreadable: {ex}"
        return (rng, None) if rng > 0 else (None, "max_energy_range_uj is not positive")

    def largest_safe_window_s(self) -> float | None:
        """Shortest over active zones of ``max_energy_range_uj ÷ max power`` (s): the longest
        interval between two reads in which at most one wrap can happen. ``None`` if no range
        is readable."""
        best: float | None = None
        for z in self.active_zones():
            rng_j, _ = self.max_range_j(z)
            if rng_j is None:
                continue
            w, _ = self.zone_max_power_w(z)
            if w > 0:
                s = rng_j / w
                best = s if best is None else min(best, s)
        return best

    def read(self) -> Reading:
        """Current ``energy_uj`` (→ J) and ``max_energy_range_uj`` (→ J) of every active zone.

        A failed ``energy_uj`` read gives ``Counter(None, flag=...)``; a failed max read gives
        the energy with ``max_range_j=None`` and a flag. Raises ``FileNotFoundError`` if the
        root vanished before discovery.
        """
        counters: dict[str, Counter] = {}
        t = self._clock()
        for z in self.active_zones():
            flag = None
            try:
                e = self._read_int(os.path.join(z.path, "energy_uj")) / 1e6
            except (OSError, ValueError) as ex:
                counters[z.domain] = Counter(None, None, f"energy_uj unreadable: {ex}")
                continue
            rng, flag = self.max_range_j(z)
            counters[z.domain] = Counter(e, rng, flag)
        return Reading(t_s=t, counters=counters)

    def describe(self) -> dict:
        """``rapl_root``, ``rapl_zones`` (domain → ``"zone_id name"``), ``rapl_ignored`` (notes
        on dropped zones: mirrors, duplicates, core/uncore), ``rapl_max_safe_window_s``."""
        d = {"meter": self.name, "method": self.method, "rapl_root": self.root}
        try:
            zones = self.zones()
        except OSError:
            return d
        d["rapl_zones"] = {z.domain: f"{z.zone_id} {z.name}" for z in zones if z.domain}
        d["rapl_ignored"] = [f"{z.zone_id}: {z.note}" for z in zones if z.note] + self._notes
        d["rapl_max_safe_window_s"] = self.max_safe_window_s
        return d
