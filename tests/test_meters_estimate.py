"""The estimate meter: TDP table matching, per-core default, the model, injectable clocks."""
from __future__ import annotations

import pytest

from profiler.energy import EnergyWindow
from profiler.errors import ConfigError
from profiler.meters import EstimateMeter
from profiler.plugins import METERS
from profiler.meters.estimate import lookup_tdp, normalise_cpu_model, read_cpuinfo
from tests.fakes import Clock


@pytest.mark.parametrize("model,watts", [
    ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", 150),
    ("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", 205),
    ("Intel(R) Xeon(R) Platinum 8480+", 350),
    ("AMD EPYC 7763 64-Core Processor", 280),
    ("AMD Ryzen 9 5950X 16-Core Processor", 105),
    ("12th Gen Intel(R) Core(TM) i7-12700K", 125),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", 65),
    ("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 15),     # family rule
    ("11th Gen Intel(R) Core(TM) i7-11800H @ 2.30GHz", 45),  # family rule
])
def test_tdp_lookup_is_robust(model, watts):
    hit = lookup_tdp(model)
    assert hit is not None and hit[0] == watts


def test_unknown_model_uses_per_core_default_and_says_so():
    assert lookup_tdp("Intel(R) Xeon(R) Processor") is None
    m = EstimateMeter(cpu_model="Intel(R) Xeon(R) Processor", physical_cores=2, logical_cpus=2,
                      sockets=1, ram_gib=24)
    assert m.tdp_w == 20.0
    d = m.describe()
    assert d["estimate_tdp_w"] == 20.0 and "default 10 W/core × 2 core" in d["estimate_source"]
    assert "not in the TDP table" in d["estimate_source"]


def test_vm_sees_fewer_cores_scales_tdp():
    m = EstimateMeter(cpu_model="Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", physical_cores=4,
                      logical_cpus=8, sockets=1, ram_gib=16)
    assert m.tdp_w == pytest.approx(150 * 4 / 20)
    assert "scaled to 4 of 20 cores" in m.tdp_source
    m2 = EstimateMeter(cpu_model="AMD EPYC 7763 64-Core Processor", physical_cores=128,
                       logical_cpus=256, sockets=2, ram_gib=16)
    assert m2.tdp_w == 560


def test_model_with_fake_clock_and_cpu_time():
    clock, cpu = Clock(), {"t": 0.0}
    m = EstimateMeter(tdp_w=80, memory_w_per_gib=0.5, ram_gib=16, logical_cpus=4, clock=clock,
                      cpu_time=lambda: cpu["t"])
    assert m.method == "estimated" and m.availability()[0]
    with EnergyWindow(m) as w:
        clock.t += 2.0
        cpu["t"] += 4.0            # 4 CPU-s over 2 s on 4 CPUs = 50 %
    r = w.result(8)
    assert r.energy_j["cpu"] == pytest.approx(80 * 0.5 * 2)    # 80 J
    assert r.energy_j["dram"] == pytest.approx(0.5 * 16 * 2)   # 16 J
    assert r.energy_j_per_inference == pytest.approx(96 / 8)
    row = r.row_fields()
    assert row["energy_method"] == "estimated"
    assert row["energy_estimate_tdp_w"] == 80 and row["energy_estimate_source"] == "user-supplied tdp_w"
    assert row["energy_estimate_memory_w"] == pytest.approx(8.0)


def test_bad_params_raise():
    with pytest.raises(ValueError):
        EstimateMeter(tdp_w=-1)
    with pytest.raises(ConfigError, match="valid parameters"):
        METERS.build("estimate", {"tdp": 5}, "meter")
    with pytest.raises(ConfigError, match="valid choices"):
        METERS.build("nope", {}, "meter")
    assert METERS.build("estimate", {"tdp_w": 5}, "meter").tdp_w == 5


def test_cpuinfo_parsing(tmp_path):
    p = tmp_path / "cpuinfo"
    blocks = []
    for i, (pid, cid) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1), (0, 0), (0, 1), (1, 0), (1, 1)]):
        blocks.append(f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\n"
                      f"physical id\t: {pid}\ncore id\t\t: {cid}\n")
    p.write_text("\n".join(blocks))
    info = read_cpuinfo(str(p))
    assert info == {"model": "Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz", "logical": 8,
                    "physical_cores": 4, "sockets": 2}
    assert normalise_cpu_model(info["model"]) == "intel xeon gold 6130"
    assert read_cpuinfo(str(tmp_path / "missing"))["model"] is None


def test_ram_is_counted_in_gib_as_the_w_per_gib_figure_is(monkeypatch):
    """0.375 W per GiB (codecarbon < 3.0: 3 W per 8 GiB) × RAM in GiB: an 8 GiB machine draws
    3 W, not 3.22 W (its 8.59 decimal GB)."""
    import os

    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 8 * 2**30 // 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    m = EstimateMeter(tdp_w=10, logical_cpus=1)
    assert m.ram_gib == 8.0 and m.memory_w == pytest.approx(3.0)
    d = m.describe()
    assert d["estimate_ram_gib"] == 8.0 and d["estimate_memory_w_per_gib"] == 0.375
    assert "ram_gib" in d["estimate_model"] and not any(k.endswith("_gb") for k in d)


def test_the_former_setting_names_still_load():
    """Configs and run manifests written with ram_gb / memory_w_per_gb: the same numbers."""
    m = METERS.build("estimate", {"ram_gb": 16, "memory_w_per_gb": 0.5, "tdp_w": 10}, "meter")
    assert m.ram_gib == 16 and m.memory_w_per_gib == 0.5 and m.memory_w == pytest.approx(8.0)
    assert METERS.build("estimate", {"ram_gib": 16, "ram_gb": 16}, "meter").ram_gib == 16
    with pytest.raises(ConfigError, match=r"meter: ram_gib = 16 and its former name ram_gb = 8 are both given; give "
                                          r"ram_gib only"):
        METERS.build("estimate", {"ram_gib": 16, "ram_gb": 8}, "meter")
    with pytest.raises(ConfigError, match=r"meter.ram_gb: .*\[0, 1000000\]"):
        METERS.build("estimate", {"ram_gb": -1}, "meter")
    auto = METERS.build("auto", {"memory_w_per_gb": 0.5, "rapl_root": "/nonexistent", "gpu": False}, "meter")
    assert auto.parts[0].memory_w_per_gib == 0.5
    with pytest.raises(ConfigError, match="memory_w_per_gib = 1.0 and its former name memory_w_per_gb = 0.5"):
        METERS.build("auto", {"memory_w_per_gib": 1.0, "memory_w_per_gb": 0.5, "gpu": False}, "meter")
