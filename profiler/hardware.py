"""Hardware fingerprint (``hardware.json``) and a stable ``hardware_id`` derived from it."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Callable

from profiler.identity import stable_hash

ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve",
)
# Fields that identify the hardware; software versions are recorded but do not change the id.
ID_FIELDS = ("cpu_model", "cpu_vendor", "isa_flags", "physical_cores", "logical_cpus", "memory_gib", "gpus")
#: hardware.json fields renamed since run directories were first written: former name → name.
#: ``memory_gb`` always held GiB (MemTotal / 2**20 kB), so its value carries over as it is.
RENAMED_FIELDS = {"memory_gb": "memory_gib"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, vendor, ISA flags of interest and core counts from /proc/cpuinfo text."""
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine(), "cpu_vendor": None}
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    phys, logical = None, 0
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "processor":
            logical += 1
        elif key in ("model name", "Model") and val:
            info["cpu_model"] = val
        elif key == "vendor_id":
            info["cpu_vendor"] = val
        elif key in ("flags", "Features"):
            flags.update(val.split())
        elif key == "physical id":
            phys = val
        elif key == "core id":
            cores.add((phys or "0", val))
    info["isa_flags"] = sorted(f for f in ISA_FLAGS if f in flags)
    info["logical_cpus"] = logical or os.cpu_count()
    info["physical_cores"] = len(cores) or info["logical_cpus"]
    return info


def cache_sizes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[str, str]:
    out = {}
    for idx in sorted(Path(root).glob("index*")) if Path(root).exists() else []:
        level, kind, size = _read(f"{idx}/level").strip(), _read(f"{idx}/type").strip(), _read(f"{idx}/size").strip()
        if level and size:
            out[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    return out


def _nvml_gpus(nvml: Any = None) -> list[dict[str, Any]]:
    """Model, driver and memory of each NVIDIA GPU through NVML (``pynvml`` unless injected)."""
    try:
        if nvml is None:
            import pynvml as nvml  # type: ignore[no-redef]
        nvml.nvmlInit()
    except Exception:
        return []
    try:
        out = []
        driver = nvml.nvmlSystemGetDriverVersion()
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(h)
            gpu = {
                "index": i, "name": name.decode() if isinstance(name, bytes) else name,
                "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(h).total),
                "driver": driver.decode() if isinstance(driver, bytes) else driver,
            }
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
                gpu["compute_capability"] = f"{major}.{minor}"
            except Exception:
                pass
            out.append(gpu)
        return out
    except Exception:
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _torch_gpus() -> list[dict[str, Any]]:
    """The CUDA devices torch sees (name, memory, compute capability); [] without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"index": i, "name": p.name, "memory_bytes": int(p.total_memory), "driver": None,
                        "compute_capability": f"{p.major}.{p.minor}"})
        return out
    except Exception:
        return []


def gpus(nvml: Any = None, torch_probe: Callable[[], list] = _torch_gpus) -> list[dict[str, Any]]:
    """Model, driver, memory and compute capability of each NVIDIA GPU; [] when there is none.

    NVML first (it knows the driver); torch's CUDA view fills the compute capability, and stands in
    when NVML is missing but torch sees a device."""
    found = _nvml_gpus(nvml)
    seen = torch_probe()
    if not found:
        return seen
    for g in found:
        t = next((x for x in seen if x.get("index") == g["index"]), None)
        if t and "compute_capability" not in g:
            g["compute_capability"] = t.get("compute_capability")
    return found


def software_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "numpy", "pandas", "plotly", "sparsebench", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:  # the CUDA toolkit torch was built with (None on CPU builds) and cuDNN
        import torch

        out["torch_cuda"] = torch.version.cuda
        out["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    except Exception:
        pass
    return out


def kernel_variant_info() -> dict[str, Any]:
    """The sparse C kernels' chosen ISA variant, or why it is unknown: ``kernel_variant`` (None when
    the extension does not import), ``kernel_variants_supported``, and without a variant
    ``kernel_status`` (``"not built"``, or ``"unavailable"`` where SPARSEBENCH_KERNEL_VARIANT names a
    variant the built extension cannot run here) and ``kernel_note`` (the reason)."""
    try:
        from accelerators import _sparse_kernels as k  # type: ignore[attr-defined]
    except ImportError as exc:
        if str(exc).startswith("SPARSEBENCH_KERNEL_VARIANT="):  # the extension's own refusal of that variable
            return {"kernel_variant": None, "kernel_variants_supported": [], "kernel_status": "unavailable",
                    "kernel_note": str(exc)}
        return {"kernel_variant": None, "kernel_variants_supported": [], "kernel_status": "not built",
                "kernel_note": f"C extension not built: {exc}"}
    return {"kernel_variant": k.kernel_variant(), "kernel_variants_supported": list(k.supported_variants())}


def fingerprint(cpuinfo: Callable[[], str] = lambda: _read("/proc/cpuinfo"), gpu_probe: Callable[[], list] = gpus) -> dict[str, Any]:
    """Everything recorded in ``hardware.json``; ``hardware_id`` is included."""
    fp = parse_cpuinfo(cpuinfo())
    mem_kb = next((int(l.split()[1]) for l in _read("/proc/meminfo").splitlines() if l.startswith("MemTotal")), 0)
    fp.update({
        "memory_gib": round(mem_kb / 2**20) if mem_kb else None,  # MemTotal is in KiB
        "caches": cache_sizes(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname_hash": stable_hash(platform.node(), 8),
        "gpus": gpu_probe(),
        "versions": software_versions(),
        **kernel_variant_info(),
    })
    fp["hardware_id"] = hardware_id(fp)
    return fp


def current_field_names(fp: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``fp`` (a ``hardware.json`` read back) with every field under its current name
    (:data:`RENAMED_FIELDS`), so that an old run directory's file reads like a new one."""
    out = dict(fp)
    for old, new in RENAMED_FIELDS.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def hardware_id(fp: dict[str, Any]) -> str:
    """Stable short id of the hardware: same machine → same id; a changed ISA flag, core count,
    memory size or GPU → a different id. Software versions do not enter it. ``fp`` may use the
    former field names (:data:`RENAMED_FIELDS`)."""
    fp = current_field_names(fp)
    gpu_ids = [{"name": g.get("name"), "memory_bytes": g.get("memory_bytes")} for g in fp.get("gpus") or []]
    former = {new: old for old, new in RENAMED_FIELDS.items()}
    # hashed under the names the first run directories used: a rename must not change the id of a machine
    key = {former.get(k, k): fp.get(k) for k in ID_FIELDS}
    key["gpus"] = gpu_ids
    return stable_hash(key, 10)


#: environment variables that set the thread pools of OpenMP, MKL and OpenBLAS under torch
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_affinity(getter: Callable[[int], set[int]] | None = None) -> list[int]:
    """The CPUs this process may run on (its affinity mask: ``taskset``, cgroup cpusets), sorted;
    every logical CPU where the platform has no affinity call."""
    getter = getter or getattr(os, "sched_getaffinity", None)
    if getter is None:
        return list(range(os.cpu_count() or 1))
    try:
        return sorted(getter(0))
    except OSError:
        return list(range(os.cpu_count() or 1))


def cpu_list_text(cpus: list[int]) -> str:
    """``[0, 1, 2, 3, 8]`` → ``"0-3,8"`` (the kernel's cpulist format)."""
    parts: list[str] = []
    for c in cpus:
        if parts and c == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{c}"
        else:
            parts.append(str(c))
    return ",".join(parts)


def thread_fields(torch_threads: int, affinity: list[int] | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Row fields that say what a timing ran on: ``cpu_affinity`` (cpulist text),
    ``affinity_cpus`` (count), ``torch_threads`` (``torch.get_num_threads()`` at timing) and
    ``thread_env`` (the :data:`THREAD_ENV_VARS` that are set)."""
    cpus = cpu_affinity() if affinity is None else affinity
    env = os.environ if env is None else env
    return {"cpu_affinity": cpu_list_text(cpus), "affinity_cpus": len(cpus), "torch_threads": int(torch_threads),
            "thread_env": {k: env[k] for k in THREAD_ENV_VARS if k in env}}
