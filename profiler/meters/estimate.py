"""``estimate``: a documented energy model for machines without energy counters.

Model (every input is reported by :meth:`EstimateMeter.describe` and lands in result rows)::

    cpu_J  = tdp_w × Δcpu_time_s / logical_cpus          # = TDP × utilisation × wall
    dram_J = memory_w_per_gib × ram_gib × Δwall_s          # constant memory power

* ``tdp_w`` is the power of the CPUs *visible to this machine* at full load: either given by the
  user, or the CPU model string (``/proc/cpuinfo``) matched against :data:`TDP_TABLE`
  (per-socket TDP × sockets, scaled down to the visible cores when a VM sees fewer cores than
  the model has), or a family rule (e.g. Intel Core ``…U`` = 15 W), or, if nothing matches,
  ``default_w_per_core`` (10 W) × physical cores. ``estimate_source`` says which.
* utilisation is this process's CPU time (user + system, including waited-for children, all
  threads) divided by wall time × logical CPUs — so OpenMP threads count, other processes don't.
* memory power is 0.375 W per GiB (2**30 bytes) × installed RAM in GiB: the figure of codecarbon
  before 3.0, 3 W per 8 GiB (its "GB" is 2**30 bytes). codecarbon 3.x, which the
  ``codecarbon>=2.3`` requirement installs now, models RAM power per DIMM slot instead (5 W each
  on x86), so the ``codecarbon`` meter's ``dram`` is another model than this one.

The model ignores idle/static power below TDP, turbo above it, and GPUs. Values are labelled
``estimated`` and must never be compared with measured ones as if they were measurements.
"""
from __future__ import annotations

import os
import platform
import re
import resource
import time
from typing import Annotated, Callable, ClassVar

from accelerators.params import Range, check_ranges

from profiler.meters.base import Counter, EnergyMeter, Reading

#: (regex on the normalised model string, TDP watts per socket, cores per socket or None, label).
#: Specific models first; the first match wins. Sources: vendor spec sheets (ark.intel.com,
#: amd.com). Cores are physical cores of the full part, used to scale TDP inside VMs.
TDP_TABLE: list[tuple[str, float, int | None, str]] = [
    # Intel Xeon Scalable / E5 (servers, cloud)
    (r"platinum 8480\+?", 350, 56, "Intel Xeon Platinum 8480+"),
    (r"platinum 8380\b", 270, 40, "Intel Xeon Platinum 8380"),
    (r"platinum 8375c\b", 300, 32, "Intel Xeon Platinum 8375C"),
    (r"platinum 8370c\b", 270, 32, "Intel Xeon Platinum 8370C"),
    (r"platinum 8280\b", 205, 28, "Intel Xeon Platinum 8280"),
    (r"platinum 8272cl\b", 195, 26, "Intel Xeon Platinum 8272CL"),
    (r"platinum 8259cl\b", 210, 24, "Intel Xeon Platinum 8259CL"),
    (r"platinum 8180\b", 205, 28, "Intel Xeon Platinum 8180"),
    (r"platinum 8175m\b", 240, 24, "Intel Xeon Platinum 8175M"),
    (r"gold 6252\b", 150, 24, "Intel Xeon Gold 6252"),
    (r"gold 6248r\b", 205, 24, "Intel Xeon Gold 6248R"),
    (r"gold 6248\b", 150, 20, "Intel Xeon Gold 6248"),
    (r"gold 6230\b", 125, 20, "Intel Xeon Gold 6230"),
    (r"gold 6148\b", 150, 20, "Intel Xeon Gold 6148"),
    (r"gold 6130\b", 125, 16, "Intel Xeon Gold 6130"),
    (r"silver 4214\b", 85, 12, "Intel Xeon Silver 4214"),
    (r"silver 4210\b", 85, 10, "Intel Xeon Silver 4210"),
    (r"silver 4110\b", 85, 8, "Intel Xeon Silver 4110"),
    (r"e5-2699 v4\b", 145, 22, "Intel Xeon E5-2699 v4"),
    (r"e5-2686 v4\b", 145, 18, "Intel Xeon E5-2686 v4"),
    (r"e5-2690 v4\b", 135, 14, "Intel Xeon E5-2690 v4"),
    (r"e5-2680 v4\b", 120, 14, "Intel Xeon E5-2680 v4"),
    # AMD EPYC / Ryzen
    (r"epyc 9654\b", 360, 96, "AMD EPYC 9654"),
    (r"epyc 7763\b", 280, 64, "AMD EPYC 7763"),
    (r"epyc 7742\b", 225, 64, "AMD EPYC 7742"),
    (r"epyc 7543\b", 225, 32, "AMD EPYC 7543"),
    (r"epyc 7r32\b", 280, 48, "AMD EPYC 7R32"),
    (r"epyc 7313\b", 155, 16, "AMD EPYC 7313"),
    (r"ryzen 9 7950x\b", 170, 16, "AMD Ryzen 9 7950X"),
    (r"ryzen 9 5950x\b", 105, 16, "AMD Ryzen 9 5950X"),
    (r"ryzen 9 5900x\b", 105, 12, "AMD Ryzen 9 5900X"),
    (r"ryzen 9 3950x\b", 105, 16, "AMD Ryzen 9 3950X"),
    (r"ryzen 9 3900x\b", 105, 12, "AMD Ryzen 9 3900X"),
    (r"ryzen 7 5800x\b", 105, 8, "AMD Ryzen 7 5800X"),
    (r"ryzen 5 5600x\b", 65, 6, "AMD Ryzen 5 5600X"),
    # Intel Core desktop
    (r"i9-14900k", 125, 24, "Intel Core i9-14900K"),
    (r"i9-13900k", 125, 24, "Intel Core i9-13900K"),
    (r"i9-12900k", 125, 16, "Intel Core i9-12900K"),
    (r"i7-13700k", 125, 16, "Intel Core i7-13700K"),
    (r"i7-12700k", 125, 12, "Intel Core i7-12700K"),
    (r"i5-13600k", 125, 14, "Intel Core i5-13600K"),
    (r"i5-12600k", 125, 10, "Intel Core i5-12600K"),
    (r"i5-12400\b", 65, 6, "Intel Core i5-12400"),
    (r"i9-10900k", 125, 10, "Intel Core i9-10900K"),
    (r"i7-10700k", 125, 8, "Intel Core i7-10700K"),
    (r"i9-9900k", 95, 8, "Intel Core i9-9900K"),
    (r"i7-9700k", 95, 8, "Intel Core i7-9700K"),
    (r"i7-8700k", 95, 6, "Intel Core i7-8700K"),
    (r"i7-8700\b", 65, 6, "Intel Core i7-8700"),
    (r"i7-7700k", 91, 4, "Intel Core i7-7700K"),
    (r"i7-6700k", 91, 4, "Intel Core i7-6700K"),
]

#: Family rules for Intel Core model numbers not in the table: (regex, TDP W, label).
FAMILY_RULES: list[tuple[str, float, str]] = [
    (r"\bi[3579]-\d{4,5}u\b", 15, "Intel Core U-series (15 W)"),
    (r"\bi[3579]-\d{4}g\d\b", 15, "Intel Core G-series mobile (15 W)"),
    (r"\bi[3579]-\d{4,5}p\b", 28, "Intel Core P-series (28 W)"),
    (r"\bi[3579]-\d{4,5}h[a-z]?\b", 45, "Intel Core H-series (45 W)"),
    (r"\bi[3579]-\d{4,5}t\b", 35, "Intel Core T-series (35 W)"),
    (r"\bi[3579]-\d{4,5}kf?s?\b", 125, "Intel Core K-series desktop (125 W)"),
    (r"\bi[3579]-\d{4,5}f?\b", 65, "Intel Core desktop (65 W)"),
]

DEFAULT_W_PER_CORE = 10.0
DEFAULT_MEMORY_W_PER_GIB = 0.375  # codecarbon < 3.0: 3 W per 8 GiB
# Meter settings: ranges the registry enforces. Upper bounds are far above any real machine
# (a 100 kW CPU, 100 W per GiB) so that only typos and unit mix-ups (mW for W) are rejected.
Watts = Annotated[float, Range(0.0, 100_000.0)]
WattsPerGiB = Annotated[float, Range(0.0, 100.0)]
GiB = Annotated[float, Range(0.0, 1_000_000.0)]
Count = Annotated[int, Range(1, 1_000_000)]


def normalise_cpu_model(model: str) -> str:
    """Lower-case a CPU model string and strip trademark marks, clock speeds and filler words.

    ``"Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"`` → ``"intel xeon gold 6248"``.
    """
    s = model.lower()
    s = re.sub(r"\((r|tm|c)\)|®|™", " ", s)
    s = re.sub(r"@\s*[\d.]+\s*[gm]hz", " ", s)
    s = re.sub(r"\b\d+-core\b|\bprocessor\b|\bcpu\b|\bwith radeon.*$", " ", s)
    s = s.replace("_", " ")
    s = re.sub(r"\s+", " ", s).strip()
    return s


def lookup_tdp(model: str) -> tuple[float, int | None, str] | None:
    """Match a CPU model string against :data:`TDP_TABLE` then :data:`FAMILY_RULES`.

    Returns ``(tdp_w_per_socket, cores_per_socket or None, label)`` or ``None`` if nothing
    matches.
    """
    s = normalise_cpu_model(model)
    for pat, w, cores, label in TDP_TABLE:
        if re.search(pat, s):
            return float(w), cores, label
    for pat, w, label in FAMILY_RULES:
        if re.search(pat, s):
            return float(w), None, label
    return None


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict:
    """Parse ``/proc/cpuinfo``: ``{"model": str | None, "logical": int | None,
    "physical_cores": int | None, "sockets": int | None}``. Missing file → ``None`` values."""
    out: dict = {"model": None, "logical": None, "physical_cores": None, "sockets": None}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return out
    logical = 0
    pairs: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        if "processor" in fields:
            logical += 1
        for key in ("model name", "cpu model", "hardware", "model"):
            if out["model"] is None and fields.get(key) and not fields[key].isdigit():
                out["model"] = fields[key]
        if "physical id" in fields:
            sockets.add(fields["physical id"])
            if "core id" in fields:
                pairs.add((fields["physical id"], fields["core id"]))
    out["logical"] = logical or None
    out["sockets"] = len(sockets) or None
    out["physical_cores"] = len(pairs) or None
    return out


def _ram_gib() -> float | None:
    """Installed RAM in GiB (2**30 bytes), or None when the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def former_name(value: float | None, default: float | None, former: float | None, key: str, former_key: str) -> float | None:
    """The value of setting ``key``: ``value``, or the one given under its former name
    ``former_key`` when that is given and ``value`` is still its ``default``. ValueError when both
    are given and differ; a ``value`` equal to ``default`` cannot be told from one not given, so
    there the former name's value is taken without an error."""
    if former is None:
        return value
    if value != default and value != former:
        raise ValueError(f"{key} = {value} and its former name {former_key} = {former} are both given; give {key} only")
    return former


def _process_cpu_time() -> float:
    """CPU seconds of this process and its waited children, user + system. getrusage counts in
    microseconds where os.times() counts in clock ticks (10 ms): ±10-20 % of a 0.1 s window."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class EstimateMeter(EnergyMeter):
    """CPU energy = TDP × utilisation, memory energy = W/GiB × RAM; labelled ``estimated``.

    Domains: ``cpu`` (all sockets together) and ``dram`` (``None`` is never used: the model always
    has a value; ``dram`` is omitted when the RAM size is unknown, and stays at 0 J with ``memory_w_per_gib = 0``).
    Counters start at 0 J when the meter is created.

    Args:
        tdp_w: machine CPU power at full load in watts; ``None`` → looked up (see module doc).
        memory_w_per_gib: memory power in W per GiB (2**30 bytes) of RAM (default 0.375).
        default_w_per_core: W per physical core when the CPU is not in the table (default 10).
        cpu_model, logical_cpus, physical_cores, sockets, ram_gib: override what is read from
            ``/proc/cpuinfo`` and ``sysconf`` (tests, or machines that misreport); RAM in GiB.
        memory_w_per_gb, ram_gb: the former names of ``memory_w_per_gib`` and ``ram_gib`` (same
            values: the RAM they were applied to is now counted in GiB), so that configs and run
            manifests written with them still load.
        clock: monotonic wall clock in seconds (injectable for tests).
        cpu_time: cumulative CPU seconds of this process (injectable for tests); default
            ``getrusage`` user + system (+ waited children).
        cpuinfo_path: where to read the CPU description.

    Raises:
        ValueError: a negative or non-finite ``tdp_w``/``memory_w_per_gib``/``default_w_per_core``,
            or a setting given under both its names with two values (:func:`former_name`).
    """

    name: ClassVar[str] = "estimate"
    when_omitted: ClassVar[dict[str, str]] = {
        "tdp_w": "the CPU's TDP table entry, else default_w_per_core × physical cores",
        "cpu_model": "read from the machine", "logical_cpus": "read from the machine",
        "physical_cores": "read from the machine", "sockets": "read from the machine",
        "ram_gib": "read from the machine",
        "memory_w_per_gb": "the former name of memory_w_per_gib", "ram_gb": "the former name of ram_gib"}
    method = "estimated"
    resolution_s = 0.01

    def __init__(
        self,
        tdp_w: Watts | None = None,
        memory_w_per_gib: WattsPerGiB = DEFAULT_MEMORY_W_PER_GIB,
        default_w_per_core: Watts = DEFAULT_W_PER_CORE,
        cpu_model: str | None = None,
        logical_cpus: Count | None = None,
        physical_cores: Count | None = None,
        sockets: Count | None = None,
        ram_gib: GiB | None = None,
        memory_w_per_gb: WattsPerGiB | None = None,
        ram_gb: GiB | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_time: Callable[[], float] | None = None,
        cpuinfo_path: str = "/proc/cpuinfo",
    ):
        check_ranges(EstimateMeter.__init__, {"tdp_w": tdp_w, "memory_w_per_gib": memory_w_per_gib,
                                              "default_w_per_core": default_w_per_core, "ram_gib": ram_gib,
                                              "memory_w_per_gb": memory_w_per_gb, "ram_gb": ram_gb})
        memory_w_per_gib = former_name(memory_w_per_gib, DEFAULT_MEMORY_W_PER_GIB, memory_w_per_gb, "memory_w_per_gib",
                                       "memory_w_per_gb")
        ram_gib = former_name(ram_gib, None, ram_gb, "ram_gib", "ram_gb")
        info = read_cpuinfo(cpuinfo_path)
        self.cpu_model = cpu_model or info["model"] or platform.processor() or "unknown"
        self.logical_cpus = int(logical_cpus or info["logical"] or os.cpu_count() or 1)
        self.sockets = int(sockets or info["sockets"] or 1)
        self.physical_cores = int(physical_cores or info["physical_cores"] or self.logical_cpus)
        self.ram_gib = ram_gib if ram_gib is not None else _ram_gib()
        self.memory_w_per_gib = float(memory_w_per_gib)
        self.default_w_per_core = float(default_w_per_core)
        self.tdp_w, self.tdp_source = self._resolve_tdp(tdp_w)
        self.memory_w = (self.memory_w_per_gib * self.ram_gib) if self.ram_gib is not None else None
        self._clock = clock
        self._cpu_time = cpu_time or _process_cpu_time
        self._t0 = clock()
        self._c0 = self._cpu_time()

    def _resolve_tdp(self, tdp_w: float | None) -> tuple[float, str]:
        if tdp_w is not None:
            return float(tdp_w), "user-supplied tdp_w"
        hit = lookup_tdp(self.cpu_model)
        if hit is not None:
            w, cores, label = hit
            total = w * self.sockets
            src = f"table: {label} {w:g} W/socket × {self.sockets} socket(s)"
            if cores:
                full = cores * self.sockets
                if self.physical_cores < full:
                    total = w * self.physical_cores / cores
                    src += f", scaled to {self.physical_cores} of {full} cores visible"
            return total, src
        total = self.default_w_per_core * self.physical_cores
        return total, (
            f"default {self.default_w_per_core:g} W/core × {self.physical_cores} core(s) "
            f"(CPU model {self.cpu_model!r} not in the TDP table)"
        )

    def availability(self) -> tuple[bool, str]:
        """Always available: ``(True, "<model summary>")``."""
        return True, f"estimate: CPU {self.tdp_w:g} W ({self.tdp_source}) × utilisation"

    def read(self) -> Reading:
        """Cumulative modelled joules since construction: ``cpu`` and (if RAM known) ``dram``."""
        t = self._clock()
        c = self._cpu_time()
        cpu_s = max(c - self._c0, 0.0)
        counters = {"cpu": Counter(self.tdp_w * cpu_s / self.logical_cpus)}
        if self.memory_w is not None:
            counters["dram"] = Counter(self.memory_w * max(t - self._t0, 0.0))
        return Reading(t_s=t, counters=counters)

    def describe(self) -> dict:
        """Model inputs: ``estimate_tdp_w`` (W), ``estimate_source``, ``estimate_cpu_model``,
        ``estimate_logical_cpus``, ``estimate_physical_cores``, ``estimate_sockets``,
        ``estimate_ram_gib``, ``estimate_memory_w_per_gib``, ``estimate_memory_w`` (W),
        ``estimate_model`` (the formula)."""
        return {
            "meter": self.name,
            "method": self.method,
            "estimate_tdp_w": self.tdp_w,
            "estimate_source": self.tdp_source,
            "estimate_cpu_model": self.cpu_model,
            "estimate_logical_cpus": self.logical_cpus,
            "estimate_physical_cores": self.physical_cores,
            "estimate_sockets": self.sockets,
            "estimate_ram_gib": self.ram_gib,
            "estimate_memory_w_per_gib": self.memory_w_per_gib,
            "estimate_memory_w": self.memory_w,
            "estimate_model": "cpu_J = tdp_w * cpu_time_s / logical_cpus; "
                              "dram_J = memory_w_per_gib * ram_gib * wall_s",
        }
