"""RAM is counted in GiB (2**30 bytes) everywhere and says so: hardware.json ``memory_gib``, doctor,
the report and compare pages, the estimate meter; old run directories (``memory_gb``, which always
held GiB) read the same and keep their hardware_id."""
from __future__ import annotations

import json

from profiler.doctor import format_doctor
from profiler.hardware import fingerprint, hardware_id
from reports.frame import load_run_file
from tests.test_compare import HW, make_run, standard

OLD = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_vendor": "GenuineIntel", "isa_flags": ["avx2", "avx512f"],
       "physical_cores": 56, "logical_cpus": 112, "memory_gb": 512, "gpus": []}


def test_the_rename_keeps_every_hardware_id():
    """3d168feccb is what the code before the rename gave for OLD: resume and compare still match."""
    new = {**{k: v for k, v in OLD.items() if k != "memory_gb"}, "memory_gib": 512}
    assert hardware_id(OLD) == hardware_id(new) == "3d168feccb"
    assert hardware_id({**new, "memory_gib": 256}) != "3d168feccb"


def test_fingerprint_names_its_unit(monkeypatch):
    import profiler.hardware as hw

    real = hw._read
    monkeypatch.setattr(hw, "_read", lambda p: "MemTotal:       24683784 kB\n" if p == "/proc/meminfo" else real(p))
    fp = fingerprint(cpuinfo=lambda: "", gpu_probe=lambda: [])
    assert fp["memory_gib"] == 24 and "memory_gb" not in fp           # 24683784 KiB = 23.54 GiB
    assert "  RAM: 24 GiB" in format_doctor({"hardware": fp, "hardware_id": fp["hardware_id"]})


def test_an_old_hardware_json_reads_as_gib_in_the_report_and_compare_pages(tmp_path):
    from reports.compare_page import build_compare_html
    from reports.report import build_report_html

    old = make_run(tmp_path / "old", standard(), hw=HW)          # written as before: memory_gb = 24
    assert "memory_gb" in json.loads((old / "hardware.json").read_text())
    hw, problems = load_run_file(old, "hardware.json")
    assert hw["memory_gib"] == 24 and "memory_gb" not in hw and problems == []
    assert "24 GiB RAM" in build_report_html(old)
    new_hw = {**{k: v for k, v in HW.items() if k != "memory_gb"}, "memory_gib": 32, "hardware_id": "bbbbbbbbbb"}
    new = make_run(tmp_path / "new", standard(threads=2), hw=new_hw)
    html = build_compare_html([old, new])
    assert "24 GiB" in html and "32 GiB" in html and " GB<" not in html
