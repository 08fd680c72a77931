"""``auto``: probe the machine and combine the best available meter per device.

CPU side: ``rapl`` (measured) when its counters are readable, else ``estimate`` (TDP ×
utilisation) — never a silent switch: :attr:`AutoMeter.choice_reason` says what was picked and
why, and it is stored in every row (``energy_auto_choice``). GPU side: ``nvml`` (counter =
measured, or power-poll) for every NVIDIA GPU when NVML works; nothing otherwise (no GPU → no
``gpu`` domain, never 0 J). The combined method is the worst of the parts
(:func:`profiler.energy.worst_method`), and each counter carries its own method.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from profiler.energy import safe_availability, worst_method
from profiler.meters.base import EnergyMeter, Reading
from profiler.meters.estimate import DEFAULT_MEMORY_W_PER_GIB, EstimateMeter, Watts, WattsPerGiB, former_name
from profiler.meters.rapl import DEFAULT_ROOT, RaplMeter


class AutoMeter(EnergyMeter):
    """Picks ``rapl`` else ``estimate`` for the CPU, plus ``nvml`` for GPUs when present.

    Args:
        rapl_root: powercap root for the RAPL probe.
        gpu: probe NVML for GPUs (``False`` skips it).
        tdp_w, memory_w_per_gib: passed to the ``estimate`` fallback (W; W per GiB of RAM).
        memory_w_per_gb: the former name of ``memory_w_per_gib`` (configs and run manifests
            written with it still load).
        meters: for tests: ``{"rapl": meter, "nvml": meter, "estimate": meter}`` replacing the
            probed candidates (a missing key is built normally; ``None`` disables it).

    Probing happens in the constructor; it never raises for missing hardware.
    """

    name: ClassVar[str] = "auto"
    when_omitted: ClassVar[dict[str, str]] = {
        "tdp_w": "the estimate's own (TDP table, else per core)",
        "memory_w_per_gb": "the former name of memory_w_per_gib"}

    def __init__(
        self,
        rapl_root: str = DEFAULT_ROOT,
        gpu: bool = True,
        tdp_w: Watts | None = None,
        memory_w_per_gib: WattsPerGiB = DEFAULT_MEMORY_W_PER_GIB,
        memory_w_per_gb: WattsPerGiB | None = None,
        *,
        meters: dict[str, EnergyMeter | None] | None = None,
    ):
        memory_w_per_gib = former_name(memory_w_per_gib, DEFAULT_MEMORY_W_PER_GIB, memory_w_per_gb, "memory_w_per_gib",
                                       "memory_w_per_gb")
        given = dict(meters or {})
        rapl = given["rapl"] if "rapl" in given else RaplMeter(root=rapl_root)
        if "nvml" in given:
            nvml = given["nvml"]
        elif gpu:
            nvml = self._default_nvml()
        else:
            nvml = None
        self.probes: dict[str, tuple[bool, str]] = {}
        parts: list[EnergyMeter] = []
        why: list[str] = []

        if rapl is not None:
            ok, reason = self.probes.setdefault("rapl", safe_availability(rapl))
        else:
            ok, reason = False, "disabled"
        if ok:
            parts.append(rapl)
            why.append(f"CPU: rapl measured ({reason})")
        else:
            est = (given["estimate"] if "estimate" in given and given["estimate"] is not None
                   else EstimateMeter(tdp_w=tdp_w, memory_w_per_gib=memory_w_per_gib))
            self.probes["estimate"] = safe_availability(est)
            parts.append(est)
            why.append(f"CPU: estimated (TDP × utilisation, {est.describe().get('estimate_source', '')})"
                       f" because RAPL is unavailable: {reason}")

        if nvml is not None:
            ok, reason = self.probes.setdefault("nvml", safe_availability(nvml))
            if ok:
                parts.append(nvml)
                why.append(f"GPU: nvml ({reason})")
            else:
                why.append(f"GPU: none ({reason})")
        else:
            why.append("GPU: not probed" if not gpu else "GPU: NVML meter not built")

        self.parts = parts
        self.choice_reason = "; ".join(why)
        self.method = worst_method(p.method for p in parts)
        self.resolution_s = max(p.resolution_s for p in parts)
        safes = [p.max_safe_window_s for p in parts if p.max_safe_window_s]
        self.max_safe_window_s = min(safes) if safes else None

    @staticmethod
    def _default_nvml() -> EnergyMeter | None:
        try:
            from profiler.meters.nvml import NvmlMeter
        except ImportError:
            return None
        return NvmlMeter()

    def availability(self) -> tuple[bool, str]:
        """Always ``(True, choice_reason)``: the estimate is the floor."""
        return True, self.choice_reason

    def start(self) -> None:
        """Start every part's background sampling."""
        for p in self.parts:
            p.start()

    def stop(self) -> None:
        """Stop every part's background sampling."""
        for p in self.parts:
            p.stop()

    def close(self) -> None:
        """Close every part (a codecarbon tracker, an NVML handle)."""
        for p in self.parts:
            p.close()

    def read(self) -> Reading:
        """Counters of all parts, each tagged with its part's method; ``t_s`` of the first."""
        counters = {}
        t = None
        for p in self.parts:
            r = p.read()
            t = r.t_s if t is None else t
            for dom, c in r.counters.items():
                counters[dom] = c if c.method else dataclasses.replace(c, method=p.method)
        return Reading(t_s=t if t is not None else 0.0, counters=counters)

    def describe(self) -> dict:
        """``auto_choice`` (why), ``auto_parts`` (meter names) and every part's own entries."""
        d = {"meter": self.name, "method": self.method, "auto_choice": self.choice_reason,
             "auto_parts": [p.name for p in self.parts]}
        for p in self.parts:
            for k, v in p.describe().items():
                if k not in ("meter", "method"):
                    d[k] = v
        return d
