"""hardware_id stability: same machine → same id; a changed ISA flag, core count or GPU → a
different id; software versions, OS and kernel variant never change it."""
import copy

import pytest

from profiler.hardware import fingerprint, gpus, hardware_id, parse_cpuinfo

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni amx_tile amx_int8 amx_bf16

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni amx_tile amx_int8 amx_bf16
"""
H100 = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984, "driver": "550.54", "compute_capability": "9.0"}]


def fp(cpuinfo: str = CPUINFO, gpu_list=None) -> dict:
    return fingerprint(cpuinfo=lambda: cpuinfo, gpu_probe=lambda: copy.deepcopy(gpu_list or []))


def test_parse_cpuinfo_fields():
    info = parse_cpuinfo(CPUINFO)
    assert info["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+" and info["cpu_vendor"] == "GenuineIntel"
    assert info["logical_cpus"] == 2 and info["physical_cores"] == 2
    assert {"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16"} <= set(info["isa_flags"])
    assert "fpu" not in info["isa_flags"]  # only ISA flags of interest are kept


def test_same_machine_same_id():
    a, b = fp(), fp()
    assert a["hardware_id"] == b["hardware_id"] == hardware_id(a)
    real1, real2 = fingerprint(), fingerprint()  # this machine, probed twice
    assert real1["hardware_id"] == real2["hardware_id"]
    assert {"caches", "os", "kernel", "gpus", "versions", "kernel_variant", "memory_gib"} <= set(real1)


def test_id_is_a_pure_function_of_hardware_fields():
    """Same id on every machine/process for the same hardware (canonical JSON hash, key order free)."""
    base = fp()
    shuffled = dict(reversed(list(base.items())))
    assert hardware_id(shuffled) == hardware_id(base)
    assert len(base["hardware_id"]) == 10


@pytest.mark.parametrize("flag", ["avx512f", "avx512_vnni", "amx_int8", "avx2"])
def test_changed_isa_flag_changes_id(flag):
    assert flag in CPUINFO
    assert fp(CPUINFO.replace(f" {flag} ", " "))["hardware_id"] != fp()["hardware_id"]


def test_changed_gpu_changes_id():
    none, h100 = fp(gpu_list=[]), fp(gpu_list=H100)
    other = copy.deepcopy(H100)
    other[0].update(name="NVIDIA A100-SXM4-40GB", memory_bytes=42949672960)
    two = H100 + [dict(H100[0], index=1)]
    ids = {none["hardware_id"], h100["hardware_id"], fp(gpu_list=other)["hardware_id"], fp(gpu_list=two)["hardware_id"]}
    assert len(ids) == 4


def test_changed_cores_or_cpu_model_changes_id():
    fewer = CPUINFO.split("\n\n")[0] + "\n"
    assert fp(fewer)["hardware_id"] != fp()["hardware_id"]
    assert fp(CPUINFO.replace("8480+", "8490H"))["hardware_id"] != fp()["hardware_id"]


def test_software_and_os_do_not_change_id():
    a = fp(gpu_list=H100)
    b = copy.deepcopy(a)
    b["versions"] = {"torch": "9.9.9", "transformers": "0.0.1", "python": "3.99"}
    b["os"], b["kernel"], b["hostname_hash"] = "Other-OS", "9.9", "deadbeef"
    b["kernel_variant"] = "scalar"  # the variant is a target axis, recorded separately
    b["gpus"][0]["driver"] = "999.99"  # a driver upgrade is software
    assert hardware_id(b) == a["hardware_id"]


class FakeNvml:
    """A pynvml-shaped module with one GPU (no driver needed)."""

    def nvmlInit(self): ...
    def nvmlShutdown(self): ...
    def nvmlSystemGetDriverVersion(self): return b"550.54"
    def nvmlDeviceGetCount(self): return 1
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetName(self, h): return b"NVIDIA H100 80GB HBM3"
    def nvmlDeviceGetCudaComputeCapability(self, h): return (9, 0)

    def nvmlDeviceGetMemoryInfo(self, h):
        class M:
            total = 85520809984
        return M()


def test_gpu_probe_through_injected_nvml():
    out = gpus(nvml=FakeNvml(), torch_probe=lambda: [])
    assert out == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984, "driver": "550.54", "compute_capability": "9.0"}]


def test_gpu_probe_falls_back_to_torch_without_nvml():
    class NoNvml:
        def nvmlInit(self):
            raise OSError("NVML Shared Library Not Found")

    seen = [{"index": 0, "name": "X", "memory_bytes": 1, "driver": None, "compute_capability": "8.0"}]
    assert gpus(nvml=NoNvml(), torch_probe=lambda: seen) == seen
    assert gpus(nvml=NoNvml(), torch_probe=lambda: []) == []
