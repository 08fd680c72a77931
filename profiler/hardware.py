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
#: x86 family and model numbers: cloud VMs often give several CPU generations one "model name"
#: ("Intel(R) Xeon(R) Processor"), so these tell them apart. Hashed into the id only where known
#: (not None): an id written before they were recorded, or on a CPU without them (ARM), stays as it was.
GENERATION_FIELDS = ("cpu_family", "cpu_model_number")
#: /proc/cpuinfo key → hardware.json field, for the integer fields of x86 CPUs. Case matters: on
#: x86 ``model`` is the number, while ARM's ``Model`` is a name (read as ``cpu_model``).
_CPUINFO_NUMBERS = {"cpu family": "cpu_family", "model": "cpu_model_number", "stepping": "cpu_stepping"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _int_or_none(val: str) -> int | None:
    """``val`` as a decimal integer; None when it is none (another architecture's text)."""
    try:
        return int(val)
    except ValueError:
        return None


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model name, vendor, ISA flags of interest and core counts from /proc/cpuinfo text, and on
    x86 the ``cpu_family``, ``cpu_model_number`` and ``cpu_stepping`` integers (None where the text
    has no such key, as on ARM, or its value is no integer)."""
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine(), "cpu_vendor": None,
                            **{f: None for f in _CPUINFO_NUMBERS.values()}}
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
        elif key in _CPUINFO_NUMBERS:
            info[_CPUINFO_NUMBERS[key]] = _int_or_none(val)
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


def _id_key(fp: dict[str, Any]) -> dict[str, Any]:
    """The fields :func:`legacy_hardware_id` hashes, under the names the first run directories used:
    a rename must not change the id of a machine."""
    fp = current_field_names(fp)
    gpu_ids = [{"name": g.get("name"), "memory_bytes": g.get("memory_bytes")} for g in fp.get("gpus") or []]
    former = {new: old for old, new in RENAMED_FIELDS.items()}
    key = {former.get(k, k): fp.get(k) for k in ID_FIELDS}
    key["gpus"] = gpu_ids
    return key


def hardware_id(fp: dict[str, Any]) -> str:
    """Stable short id (10 hex digits) of the hardware: same machine → same id; a changed CPU name,
    x86 family or model number, ISA flag, core count, memory size or GPU → a different id. Software
    versions and the CPU stepping do not enter it. ``fp`` may use the former field names
    (:data:`RENAMED_FIELDS`); a ``fp`` without :data:`GENERATION_FIELDS` (a ``hardware.json``
    written before they were recorded, or an ARM CPU) gets the id it always had."""
    key = _id_key(fp)
    key.update({f: fp[f] for f in GENERATION_FIELDS if fp.get(f) is not None})
    return stable_hash(key, 10)


def legacy_hardware_id(fp: dict[str, Any]) -> str:
    """The id of ``fp`` as computed before :data:`GENERATION_FIELDS` entered it: what run
    directories written before then recorded for the same machine. It cannot tell apart two CPU
    generations with one model name, flags, core count and memory."""
    return stable_hash(_id_key(fp), 10)


def legacy_fingerprint(fp: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``fp`` as written before the x86 numbers were recorded: without ``cpu_family``,
    ``cpu_model_number`` and ``cpu_stepping``, and with :func:`legacy_hardware_id` as its id. For a
    run directory begun then, so that its files and rows keep the one id they started with."""
    out = {k: v for k, v in fp.items() if k not in _CPUINFO_NUMBERS.values()}
    out["hardware_id"] = legacy_hardware_id(fp)
    return out


def has_generation(recorded: dict[str, Any]) -> bool:
    """Whether ``recorded`` (a ``hardware.json`` read back) holds the x86 family, i.e. whether its
    ``hardware_id`` hashes it. False for files written before it was recorded and for CPUs without
    one (ARM), whose ids are :func:`legacy_hardware_id` ones."""
    return recorded.get("cpu_family") is not None


def same_hardware(recorded: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether ``recorded`` (a ``hardware.json`` read back, or any dict with at least its
    ``hardware_id``, possibly without :data:`GENERATION_FIELDS`) names the machine of ``here`` (this
    machine's :func:`fingerprint`). True when the recorded id is this machine's id; also when the
    recorded data lacks the x86 family and its id is this machine's :func:`legacy_hardware_id`: a run
    directory written before the family was recorded was written on this machine, or on one of
    another generation that the old id could not tell apart (the best that can be known). False
    when ``recorded`` has no ``hardware_id``."""
    rec_id = recorded.get("hardware_id")
    if rec_id is None:
        return False
    if rec_id == (here.get("hardware_id") or hardware_id(here)):
        return True
    return not has_generation(recorded) and rec_id == legacy_hardware_id(here)


def machine_keys(recorded: list[dict[str, Any]]) -> list[str | None]:
    """One key per ``hardware.json`` read back (``{}`` where there is none: key None), equal keys
    meaning one machine. A file with the x86 family is keyed by its own ``hardware_id``. A file
    without it (written before the family entered the id) takes the id of the one machine among the
    others whose :func:`legacy_hardware_id` is its stored id, so that an old and a new run of one
    machine read as one; where none or several generations match (the old id cannot tell them
    apart), it keeps its stored id: one machine of its own."""
    new_ids: dict[str, set[str]] = {}
    for hw in recorded:
        if hw and has_generation(hw) and hw.get("hardware_id") is not None:
            new_ids.setdefault(legacy_hardware_id(hw), set()).add(hw["hardware_id"])
    keys: list[str | None] = []
    for hw in recorded:
        if not hw:
            keys.append(None)
        elif has_generation(hw):
            keys.append(hw.get("hardware_id"))
        else:
            match = new_ids.get(hw.get("hardware_id"), set())
            keys.append(next(iter(match)) if len(match) == 1 else hw.get("hardware_id"))
    return keys


def hardware_summary(hw: dict[str, Any]) -> dict[str, Any]:
    """What :func:`same_hardware` and :func:`cpu_display_name` need of ``hw`` (a ``hardware.json``
    read back): ``hardware_id``, ``cpu_model`` and the :data:`GENERATION_FIELDS` it holds (not None)."""
    return {"hardware_id": hw.get("hardware_id"), "cpu_model": hw.get("cpu_model"),
            **{f: hw[f] for f in GENERATION_FIELDS if hw.get(f) is not None}}


def cpu_generation(hw: dict[str, Any]) -> str | None:
    """``"family 6 model 207"`` from the x86 numbers of ``hw`` (the parts known); None without them."""
    parts = [f"{label} {hw[f]}" for label, f in (("family", "cpu_family"), ("model", "cpu_model_number"))
             if hw.get(f) is not None]
    return " ".join(parts) or None


def cpu_display_name(hw: dict[str, Any], unknown: str = "?", shorten: Callable[[str], str] | None = None) -> str:
    """The CPU of ``hw`` (a fingerprint or ``hardware.json``) as a reader should see it: its model
    name (``unknown`` when missing; passed through ``shorten`` when given) followed by the x86
    family and model, which tell apart generations sold under one name:
    ``"Intel(R) Xeon(R) Processor (family 6 model 207)"``; just the name without them."""
    name = hw.get("cpu_model") or unknown
    if shorten is not None:
        name = shorten(name)
    gen = cpu_generation(hw)
    return f"{name} ({gen})" if gen else name


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
