"""hardware_id stability: same machine → same id; a changed ISA flag, core count, GPU or x86
family/model number → a different id; software versions, OS, kernel variant and CPU stepping never
change it, and a hardware.json written before the family was recorded keeps its id."""
import copy

import pytest

from profiler.hardware import (cpu_display_name, fingerprint, gpus, hardware_id, legacy_hardware_id, machine_keys,
                               parse_cpuinfo, same_hardware)
from profiler.identity import stable_hash

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


# ---- CPU generations under one model name ---------------------------------------------------------

GENERIC = "Intel(R) Xeon(R) Processor"  # what cloud VMs show for Sapphire Rapids and Emerald Rapids alike


def x86_cpuinfo(model: int = 207, stepping: int = 2, flags: str = "fpu sse4_2 avx avx2 avx512f") -> str:
    """/proc/cpuinfo text of a two-vCPU x86 VM: family 6, this model number, the generic name."""
    return "".join(f"""\
processor\t: {i}
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: {model}
model name\t: {GENERIC}
stepping\t: {stepping}
physical id\t: 0
core id\t: {i}
flags\t\t: {flags}

""" for i in range(2))


ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def x86_fp(model: int = 207, stepping: int = 2, **kw) -> dict:
    """A fingerprint of fixed fields (no probing of this machine), with its hardware_id."""
    fp = {**parse_cpuinfo(x86_cpuinfo(model, stepping, **kw)), "memory_gib": 8, "gpus": []}
    fp["hardware_id"] = hardware_id(fp)
    return fp


def old_style(fp: dict) -> dict:
    """``fp`` as hardware.json was written before the x86 numbers were recorded (its id: :func:`head_id`)."""
    out = {k: v for k, v in fp.items() if k not in ("cpu_family", "cpu_model_number", "cpu_stepping")}
    out["hardware_id"] = head_id(out)
    return out


def head_id(fp: dict) -> str:
    """The hardware_id the code before the x86 family entered it gave ``fp``: that code's key
    layout (RAM under its first name, ``memory_gb``), hashed here independently of profiler.hardware."""
    key = {k: fp.get(k) for k in ("cpu_model", "cpu_vendor", "isa_flags", "physical_cores", "logical_cpus")}
    key["memory_gb"] = fp.get("memory_gib", fp.get("memory_gb"))
    key["gpus"] = [{"name": g.get("name"), "memory_bytes": g.get("memory_bytes")} for g in fp.get("gpus") or []]
    return stable_hash(key, 10)


#: ids pinned from the code: 2882f1096a is what the code before the family entered the id gave the
#: model-207 fingerprint (legacy_hardware_id gives it now); the others are what hardware.json
#: files written since hold for family 6 model 143 / 207
HEAD_ID, ID_143, ID_207 = "2882f1096a", "de46cbd6bd", "e968f101f2"


def test_parse_cpuinfo_reads_the_x86_family_model_and_stepping():
    info = parse_cpuinfo(x86_cpuinfo(model=143, stepping=8))
    assert (info["cpu_family"], info["cpu_model_number"], info["cpu_stepping"]) == (6, 143, 8)
    assert info["cpu_model"] == GENERIC and info["cpu_vendor"] == "GenuineIntel"  # "model name", not "model"
    assert info["logical_cpus"] == 2 and info["isa_flags"] == ["avx", "avx2", "avx512f", "sse4_2"]


def test_parse_cpuinfo_on_arm_reads_the_model_name_and_no_numbers():
    """ARM's capitalised ``Model`` is a name, not the x86 model number."""
    info = parse_cpuinfo(ARM_CPUINFO)
    assert info["cpu_model"] == "Raspberry Pi 4 Model B Rev 1.4" and info["isa_flags"] == ["asimd"]
    assert info["cpu_family"] is None and info["cpu_model_number"] is None and info["cpu_stepping"] is None
    fp = {**info, "memory_gib": 4, "gpus": []}
    assert hardware_id(fp) == legacy_hardware_id(fp) == head_id(fp)  # nothing new to hash: its id is as it was
    assert cpu_display_name(fp) == "Raspberry Pi 4 Model B Rev 1.4"


def test_two_generations_under_one_name_get_two_ids_and_a_stepping_none():
    a, b = x86_fp(143), x86_fp(207)
    assert a["cpu_model"] == b["cpu_model"] and a["isa_flags"] == b["isa_flags"]
    assert a["hardware_id"] != b["hardware_id"]
    assert (a["hardware_id"], b["hardware_id"]) == (ID_143, ID_207)
    assert x86_fp(207, stepping=5)["hardware_id"] == ID_207  # a stepping is a revision of one target
    assert not same_hardware(a, b) and same_hardware(b, x86_fp(207, stepping=5))


def test_an_old_hardware_json_keeps_its_id():
    """A file without the new fields hashes as before; its id is the legacy id of the same machine
    probed now, so resume and compare still find it."""
    new = x86_fp(207)
    old = old_style(new)
    assert old["hardware_id"] == HEAD_ID
    assert hardware_id(old) == HEAD_ID and legacy_hardware_id(new) == HEAD_ID != new["hardware_id"]
    assert hardware_id({**{k: v for k, v in old.items() if k != "memory_gib"}, "memory_gb": 8}) == HEAD_ID


def test_same_hardware_takes_an_old_record_of_this_machine_and_no_other():
    here = x86_fp(207)
    assert same_hardware(here, here) and same_hardware(old_style(here), here)
    assert same_hardware({"hardware_id": HEAD_ID}, here)  # an old manifest's id alone
    assert not same_hardware(old_style(x86_fp(207, flags="fpu avx avx2")), here)  # other flags
    assert not same_hardware({"hardware_id": None}, here)
    # a new record names its generation: its legacy id matching is not enough
    assert not same_hardware({**x86_fp(143), "hardware_id": HEAD_ID}, here)


def test_machine_keys_read_an_old_and_a_new_file_of_one_machine_as_one():
    new, other = x86_fp(207), x86_fp(143)
    assert machine_keys([new, other, {}]) == [ID_207, ID_143, None]  # all new: their own ids
    assert machine_keys([old_style(new), new, {}]) == [ID_207, ID_207, None]
    # two generations of one name stay two machines beside an old file, which neither claims alone
    assert machine_keys([new, other, old_style(new)]) == [ID_207, ID_143, HEAD_ID]
    other_flags = old_style(x86_fp(207, flags="fpu avx2"))  # an old file of another machine
    assert machine_keys([other, other_flags]) == [ID_143, other_flags["hardware_id"]]
    assert machine_keys([old_style(new), old_style(new)]) == [HEAD_ID, HEAD_ID]


def test_cpu_display_name_shows_family_and_model():
    assert cpu_display_name(x86_fp(207)) == "Intel(R) Xeon(R) Processor (family 6 model 207)"
    assert cpu_display_name(old_style(x86_fp(207))) == GENERIC
    assert cpu_display_name({}) == "?" and cpu_display_name({"cpu_family": 25, "cpu_model_number": 17}) == "? (family 25 model 17)"
    assert cpu_display_name({"cpu_model": "AMD EPYC 9R14 96-Core Processor"}, shorten=str.upper) == "AMD EPYC 9R14 96-CORE PROCESSOR"
