"""``sparsebench doctor``: what this machine can measure, and what the profiler will do about it.

:func:`doctor_report` probes every energy meter (availability and reason), what ``auto`` would
pick and why, the CPU/GPU fingerprint (:mod:`profiler.hardware`, when present) and the sparse
kernel variant; :func:`format_doctor` turns it into plain sentences such as
``RAPL: absent (/sys/class/powercap not found) — energy will be estimated (TDP × utilisation)``.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from profiler.energy import MIN_RESOLUTION_MULTIPLE, close_quietly, safe_availability
from profiler.hardware import cpu_display_name
from profiler.meters.base import EnergyMeter

_LABELS = {"rapl": "RAPL", "pyrapl": "pyRAPL", "nvml": "NVML", "codecarbon": "codecarbon",
           "estimate": "estimate"}


def _default_meters(include_codecarbon: bool) -> dict[str, EnergyMeter]:
    from profiler.meters import CodecarbonMeter, EstimateMeter, NvmlMeter, PyRaplMeter, RaplMeter

    ms: dict[str, EnergyMeter] = {"rapl": RaplMeter(), "pyrapl": PyRaplMeter(),
                                  "nvml": NvmlMeter(), "estimate": EstimateMeter()}
    if include_codecarbon:
        ms["codecarbon"] = CodecarbonMeter()
    return ms


def _status(name: str, ok: bool, reason: str, method: str) -> str:
    if ok:
        return method
    r = reason.lower()
    if "permission" in r or "root only" in r:
        return "not readable"
    if "not found" in r or "no rapl zones" in r or "not installed" in r or "no nvidia" in r:
        return "absent"
    return "unavailable"


def _short_reason(reason: str) -> str:
    """``"/sys/class/powercap not found (no powercap…)"`` → ``"/sys/class/powercap not found"``."""
    if " (" in reason and reason.endswith(")") and "root only" not in reason:
        return reason.split(" (", 1)[0]
    return reason


def doctor_report(
    meters: dict[str, EnergyMeter] | None = None,
    auto: EnergyMeter | None = None,
    include_codecarbon: bool = True,
    fingerprint: Callable[[], dict] | None = None,
    compare_seconds: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Probe the machine; return a JSON-able dict.

    Keys: ``meters`` (name → ``{"available", "status", "reason", "method"}``), ``auto``
    (``{"choice", "method", "parts", "resolution_s", "min_window_s"}``), ``pyrapl_vs_direct``
    (only when both RAPL readers work: see :func:`~profiler.meters.compare_with_direct`), ``cpu_energy`` (one
    sentence on what CPU energy will be), ``summary`` (list of sentences), ``hardware`` (the
    :func:`profiler.hardware.fingerprint` dict, or ``None``), ``hardware_id``, ``hardware_note``,
    ``kernel_variant`` (``"not built"`` when the C extension is missing, ``"unavailable"`` when
    SPARSEBENCH_KERNEL_VARIANT names a variant this CPU cannot run; ``kernel_note`` says why).

    Args:
        meters: meters to probe (tests inject fakes); default: every meter with default config.
        auto: the ``auto`` meter to describe; default ``AutoMeter()`` built from ``meters``.
        include_codecarbon: probe codecarbon too (starts its tracker, ≈2 s).
        fingerprint: ``() -> dict``; default :func:`profiler.hardware.fingerprint` if importable.
        compare_seconds, sleep: when both ``rapl`` and ``pyrapl`` work, they are read over
            ``compare_seconds`` and ``pyrapl_vs_direct`` says whether they agree.

    Never raises for missing hardware or missing optional modules.
    """
    meters = meters if meters is not None else _default_meters(include_codecarbon)
    rep: dict[str, Any] = {"meters": _probe_meters(meters)}
    if rep["meters"].get("rapl", {}).get("available") and \
            rep["meters"].get("pyrapl", {}).get("available"):
        rep["pyrapl_vs_direct"] = _compare_rapl_readers(meters, compare_seconds, sleep)
    rep["auto"] = _auto_section(meters, auto)
    for m in meters.values():  # a probe may have started a tracker thread (codecarbon)
        close_quietly(m)
    rep.update(_hardware_section(fingerprint))
    rep.update(_kernel_section())
    parts = rep["auto"]["parts"]
    rep["cpu_energy"] = _cpu_sentence(rep, parts)
    rep["summary"] = _summary(rep, parts)
    return rep


def _probe_meters(meters: dict[str, EnergyMeter]) -> dict[str, dict[str, Any]]:
    """name → ``{"available", "reason", "method", "status"}`` for each meter."""
    out = {}
    for name, m in meters.items():
        ok, reason = safe_availability(m)
        out[name] = {"available": ok, "reason": reason,
                     "method": m.method if ok else "unavailable",
                     "status": _status(name, ok, reason, m.method)}
    return out


def _compare_rapl_readers(meters: dict[str, EnergyMeter], seconds: float,
                          sleep: Callable[[float], None]) -> dict[str, Any]:
    from profiler.meters.pyrapl import compare_with_direct

    try:
        return compare_with_direct(meters["rapl"], meters["pyrapl"], seconds=seconds, sleep=sleep)
    except Exception as e:
        return {"agree": None, "message": f"comparison failed: {e!r}", "domains": {}}


def _auto_section(meters: dict[str, EnergyMeter], auto: EnergyMeter | None) -> dict[str, Any]:
    """What ``auto`` picks: ``{"choice", "method", "parts", "resolution_s", "min_window_s"}``."""
    from profiler.meters.auto import AutoMeter

    if auto is None:
        auto = AutoMeter(meters={k: meters[k] for k in ("rapl", "nvml", "estimate")
                                 if k in meters})
    choice = getattr(auto, "choice_reason", None)
    return {"choice": choice if choice is not None else safe_availability(auto)[1],
            "method": auto.method, "parts": [p.name for p in getattr(auto, "parts", [])],
            "resolution_s": auto.resolution_s,
            "min_window_s": MIN_RESOLUTION_MULTIPLE * auto.resolution_s}


def _hardware_section(fingerprint: Callable[[], dict] | None) -> dict[str, Any]:
    """``hardware``, ``hardware_id`` and, when something failed, ``hardware_note``."""
    out: dict[str, Any] = {"hardware": None, "hardware_id": None}
    fp_fn = fingerprint
    if fp_fn is None:
        try:
            from profiler.hardware import fingerprint as fp_fn  # type: ignore[no-redef]
        except ImportError as e:
            out["hardware_note"] = f"profiler.hardware not available: {e}"
            return out
    try:
        fp = fp_fn()
        out["hardware"] = fp
        out["hardware_id"] = fp.get("hardware_id")
        if out["hardware_id"] is None:
            try:
                from profiler.hardware import hardware_id
                out["hardware_id"] = hardware_id(fp)
            except ImportError:
                pass
    except Exception as e:
        out["hardware_note"] = f"fingerprint failed: {e!r}"
    return out


def _kernel_section() -> dict[str, Any]:
    """``kernel_variant`` the C extension dispatches to (``"not built"`` without it, ``"unavailable"``
    when SPARSEBENCH_KERNEL_VARIANT names one this CPU cannot run), with ``kernel_note`` saying why."""
    from profiler.hardware import kernel_variant_info

    info = kernel_variant_info()
    if info["kernel_variant"]:
        return {"kernel_variant": info["kernel_variant"]}
    return {"kernel_variant": info["kernel_status"], "kernel_note": info["kernel_note"]}


def _cpu_sentence(rep: dict, parts: list[str]) -> str:
    if "rapl" in parts:
        return "CPU energy will be measured (RAPL counters)"
    if "estimate" in parts:
        return "energy will be estimated (TDP × utilisation)"
    return "CPU energy: " + rep["auto"]["choice"]


def _summary(rep: dict, parts: list[str]) -> list[str]:
    lines = []
    ms = rep["meters"]
    if "rapl" in ms:
        r = ms["rapl"]
        if r["available"]:
            lines.append(f"RAPL: measured ({r['reason'].removeprefix('RAPL: ')})")
        else:
            lines.append(f"RAPL: {r['status']} ({_short_reason(r['reason'])}) — "
                         f"{rep['cpu_energy']}")
    if "nvml" in ms:
        n = ms["nvml"]
        if n["available"]:
            lines.append(f"NVML: {n['method']} ({n['reason']})")
        else:
            lines.append(f"NVML: {n['status']} ({n['reason']}) — no GPU energy")
    for name in ("pyrapl", "codecarbon", "estimate"):
        if name in ms:
            x = ms[name]
            state = x["method"] if x["available"] else x["status"]
            lines.append(f"{_LABELS[name]}: {state} ({x['reason']})")
            if name == "pyrapl" and "pyrapl_vs_direct" in rep:
                lines.append(f"pyRAPL vs direct RAPL: {rep['pyrapl_vs_direct']['message']}")
    lines.append(f"auto will use: {', '.join(parts) or 'nothing'} — {rep['auto']['choice']}")
    lines.append(f"energy rows will be labelled: {rep['auto']['method']} "
                 f"(windows of at least {rep['auto']['min_window_s']:g} s)")
    return lines


def format_doctor(report: dict) -> str:
    """Human-readable text of a :func:`doctor_report` dict (one fact per line)."""
    out = ["sparsebench doctor — what this machine can measure", ""]
    out += ["Energy"] + [f"  {line}" for line in report.get("summary", [])]
    out.append("")
    hw = report.get("hardware")
    out.append("Hardware")
    if hw:
        cpu = cpu_display_name({**hw, "cpu_model": hw.get("cpu_model") or hw.get("model")})
        cores = hw.get("physical_cores") or hw.get("cores")
        logical = hw.get("logical_cpus") or hw.get("threads")
        flags = hw.get("isa") or hw.get("isa_flags")
        out.append(f"  CPU: {cpu}" + (f", {cores} cores" if cores else "")
                   + (f" / {logical} threads" if logical else ""))
        if flags:
            out.append(f"  ISA: {', '.join(flags) if isinstance(flags, (list, tuple)) else flags}")
        if hw.get("memory_gib") is not None:
            out.append(f"  RAM: {hw['memory_gib']} GiB")
        gpus = hw.get("gpus") or []
        out.append("  GPU: " + (", ".join(str(g.get("name", g)) if isinstance(g, dict) else str(g)
                                          for g in gpus) or "none"))
        out.append(f"  hardware_id: {report.get('hardware_id')}")
    else:
        out.append(f"  fingerprint unavailable ({report.get('hardware_note', 'unknown')})")
    out.append(f"  sparse kernel variant: {report.get('kernel_variant', 'not built')}"
               + (f" ({report['kernel_note']})" if report.get("kernel_note") else ""))
    return "\n".join(out)
