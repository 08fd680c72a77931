"""Energy meters. Each class has a ``name`` (the config name) and its constructor keyword
arguments are its config. :mod:`profiler.plugins` registers these classes in ``METERS``
(:mod:`profiler.registry`), which builds them by name and checks their parameters."""
from __future__ import annotations

from profiler.meters.auto import AutoMeter
from profiler.meters.base import Counter, EnergyMeter, EnergyMethod, Reading
from profiler.meters.codecarbon_meter import CodecarbonMeter
from profiler.meters.estimate import EstimateMeter
from profiler.meters.nvml import NvmlMeter
from profiler.meters.pyrapl import PyRaplMeter, compare_with_direct
from profiler.meters.rapl import RaplMeter

#: name → class for every built-in meter; :mod:`profiler.plugins` registers each in ``METERS``.
METER_CLASSES: dict[str, type[EnergyMeter]] = {
    c.name: c
    for c in (AutoMeter, RaplMeter, PyRaplMeter, NvmlMeter, CodecarbonMeter, EstimateMeter)
}


__all__ = [
    "AutoMeter", "CodecarbonMeter", "Counter", "EnergyMeter", "EnergyMethod", "EstimateMeter",
    "METER_CLASSES", "NvmlMeter", "PyRaplMeter", "RaplMeter", "Reading", "compare_with_direct",
]
