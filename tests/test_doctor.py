"""sparsebench doctor: plain statements of what this machine can measure."""
from __future__ import annotations

import json
import os

from profiler.doctor import doctor_report, format_doctor
from profiler.meters import EstimateMeter, NvmlMeter, RaplMeter
from profiler.meters.rapl import PERMISSION_REASON


def _meters(rapl):
    import types

    class E(Exception):
        value = 12

    nv = types.SimpleNamespace(NVMLError=E, nvmlInit=lambda: (_ for _ in ()).throw(E("NVML Shared Library Not Found")))
    return {"rapl": rapl, "nvml": NvmlMeter(nvml=nv),
            "estimate": EstimateMeter(cpu_model="Intel(R) Xeon(R) Processor", physical_cores=2,
                                      logical_cpus=2, ram_gib=8)}


def test_absent_rapl_is_stated_plainly(tmp_path):
    rep = doctor_report(meters=_meters(RaplMeter(root=str(tmp_path / "powercap"))),
                        fingerprint=lambda: {"cpu_model": "X", "hardware_id": "abc"})
    text = format_doctor(rep)
    assert (f"RAPL: absent ({tmp_path / 'powercap'} not found) — energy will be estimated "
            "(TDP × utilisation)") in text
    assert "NVML: absent" in text
    assert rep["auto"]["parts"] == ["estimate"] and rep["auto"]["method"] == "estimated"
    assert rep["meters"]["rapl"]["available"] is False
    assert rep["hardware_id"] == "abc"
    json.dumps(rep)


def test_missing_powercap_reads_absent_for_rapl_and_pyrapl_alike(tmp_path):
    from profiler.meters import PyRaplMeter
    from tests.test_meters_pyrapl import CantRecord, fake_pyrapl

    ms = _meters(RaplMeter(root=str(tmp_path / "powercap")))
    ms["pyrapl"] = PyRaplMeter(pyrapl=fake_pyrapl(error=CantRecord()), powercap_dir=str(tmp_path / "powercap" / "intel-rapl"))
    rep = doctor_report(meters=ms, fingerprint=lambda: {})
    assert rep["meters"]["rapl"]["status"] == rep["meters"]["pyrapl"]["status"] == "absent"
    assert f"pyRAPL: absent ({tmp_path / 'powercap' / 'intel-rapl'} not found;" in format_doctor(rep)


def test_permission_denied_reason_is_shown(tmp_path):
    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "name").write_text("package-0\n")
    (d / "energy_uj").write_text("1\n")

    def reader(p):
        if p.endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", p)
        return open(p).read()

    rep = doctor_report(meters=_meters(RaplMeter(root=str(tmp_path), reader=reader)),
                        fingerprint=lambda: {})
    text = format_doctor(rep)
    assert "RAPL: not readable (" + PERMISSION_REASON + ")" in text
    assert "energy rows will be labelled: estimated" in text


def test_doctor_on_this_machine():
    """The real probe: on this RAPL-less machine it says RAPL is absent and what it uses."""
    rep = doctor_report(include_codecarbon=False)
    text = format_doctor(rep)
    assert "sparse kernel variant:" in text
    assert rep["kernel_variant"]
    if not os.path.isdir("/sys/class/powercap"):
        assert ("RAPL: absent (/sys/class/powercap not found) — energy will be estimated "
                "(TDP × utilisation)") in text
        assert "auto will use: estimate" in text
    json.dumps(rep, default=str)


def test_doctor_names_an_unrunnable_kernel_variant_request():
    """SPARSEBENCH_KERNEL_VARIANT naming a variant the extension cannot run makes its import fail:
    the doctor says so and why, instead of calling the extension not built."""
    import subprocess
    import sys

    code = ("import json; from profiler.doctor import _kernel_section; "
            "print(json.dumps(_kernel_section()))")
    env = dict(os.environ, SPARSEBENCH_KERNEL_VARIANT="bogus")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    sec = json.loads(out.stdout)
    assert sec["kernel_variant"] == "unavailable"
    assert sec["kernel_note"].startswith("SPARSEBENCH_KERNEL_VARIANT=bogus: unknown kernel variant 'bogus'")
    text = format_doctor({"meters": {}, "auto": {}, "summary": [], **sec})
    assert "sparse kernel variant: unavailable (SPARSEBENCH_KERNEL_VARIANT=bogus: unknown" in text
    from accelerators import _sparse_kernels as k

    lacking = [v for v in k.compiled_variants() if v not in k.supported_variants()]
    if lacking:  # compiled in, but not for this CPU
        env["SPARSEBENCH_KERNEL_VARIANT"] = lacking[0]
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == {
            "kernel_variant": "unavailable",
            "kernel_note": f"SPARSEBENCH_KERNEL_VARIANT={lacking[0]}: kernel variant '{lacking[0]}' is not supported "
                           "by this CPU"}


def test_doctor_says_when_pyrapl_and_direct_disagree(tmp_path):
    import types

    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "name").write_text("package-0\n")
    (d / "energy_uj").write_text("1000000\n")
    (d / "max_energy_range_uj").write_text("262143328850\n")
    clock = {"t": 0.0}
    py_vals = {"v": [1e6, -1]}

    class Sensor:
        def energy(self):
            return py_vals["v"]

    from profiler.meters import PyRaplMeter

    def sleep(s):
        clock["t"] += s
        (d / "energy_uj").write_text("11000000\n")      # direct: +10 J
        py_vals["v"] = [31e6, -1]                         # pyRAPL: +30 J

    ms = _meters(RaplMeter(root=str(tmp_path), clock=lambda: clock["t"]))
    ms["pyrapl"] = PyRaplMeter(pyrapl=types.SimpleNamespace(Sensor=Sensor),
                               powercap_dir=str(tmp_path), clock=lambda: clock["t"])
    rep = doctor_report(meters=ms, fingerprint=lambda: {}, sleep=sleep)
    assert rep["pyrapl_vs_direct"]["agree"] is False
    assert "DISAGREE on package:0" in format_doctor(rep)
    assert rep["meters"]["rapl"]["method"] == "measured"
    assert rep["meters"]["nvml"]["method"] == "unavailable"


def test_doctor_names_the_cpu_with_its_family_and_model():
    from tests.test_hardware import x86_fp

    hw = x86_fp(207)
    text = format_doctor({"hardware": hw, "hardware_id": hw["hardware_id"]})
    assert "  CPU: Intel(R) Xeon(R) Processor (family 6 model 207), 2 cores / 2 threads" in text
    arm = {"cpu_model": "Neoverse-V2", "physical_cores": 4, "logical_cpus": 4}
    assert "  CPU: Neoverse-V2, 4 cores" in format_doctor({"hardware": arm, "hardware_id": "x"})
