"""Energy meters. Each class has a ``name`` (the config name) and its constructor keyword
arguments are its config. :func:`make_meter` builds one by name; the project registry
(:mod:`profiler.registry`) registers these classes explicitly."""
from __future__ import annotations

import inspect

from profiler.meters.auto import AutoMeter
from profiler.meters.base import Counter, EnergyMeter, EnergyMethod, Reading
from profiler.meters.codecarbon_meter import CodecarbonMeter
from profiler.meters.estimate import EstimateMeter
from profiler.meters.nvml import NvmlMeter
from profiler.meters.pyrapl import PyRaplMeter, compare_with_direct
from profiler.meters.rapl import RaplMeter

#: name → class for every meter (the lead's registry registers these explicitly).
METER_CLASSES: dict[str, type[EnergyMeter]] = {
    c.name: c
    for c in (AutoMeter, RaplMeter, PyRaplMeter, NvmlMeter, CodecarbonMeter, EstimateMeter)
}


def make_meter(name: str, **params) -> EnergyMeter:
    """Build the meter called ``name`` with ``params`` as constructor keyword arguments.

    Raises:
        ValueError: unknown meter name, or a parameter the meter does not take (the message
            lists the valid choices).
    """
    cls = METER_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"unknown energy meter {name!r}; choose one of {sorted(METER_CLASSES)}")
    sig = inspect.signature(cls.__init__)
    valid = [p for p in sig.parameters if p != "self"]
    bad = [k for k in params if k not in valid]
    if bad:
        raise ValueError(f"meter {name!r} has no parameter(s) {bad}; valid: {valid}")
    return cls(**params)


__all__ = [
    "AutoMeter", "CodecarbonMeter", "Counter", "EnergyMeter", "EnergyMethod", "EstimateMeter",
    "METER_CLASSES", "NvmlMeter", "PyRaplMeter", "RaplMeter", "Reading", "compare_with_direct",
    "make_meter",
]
