"""RAPL meter against fake powercap sysfs trees (tmp_path), through the one window logic."""
from __future__ import annotations

import os

import pytest

from profiler.energy import EnergyWindow, measure_idle_power
from profiler.meters import AutoMeter, EstimateMeter, RaplMeter
from profiler.meters.rapl import PERMISSION_REASON
from tests.fakes import Clock

MAX = 262143328850  # µJ, a real max_energy_range_uj


def zone(root, zid, name, energy_uj=0, max_uj=MAX, max_power_uw=None, nested_in=None):
    """Create a zone dir (flat under root, like /sys/class/powercap, or nested)."""
    base = root / nested_in if nested_in else root
    d = base / zid
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    if max_power_uw is not None:
        (d / "constraint_0_max_power_uw").write_text(f"{max_power_uw}\n")
    return d


def set_uj(d, v):
    (d / "energy_uj").write_text(f"{v}\n")


def window(meter, clock, update, seconds=1.0, n=1, idle=None):
    with EnergyWindow(meter, idle, background_sampling=False) as w:
        update()
        clock.sleep(seconds)
    return w.result(n)


def test_wrap_is_corrected_with_max_energy_range(tmp_path):
    clock = Clock(100.0)
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 262143000000)
    m = RaplMeter(root=str(tmp_path), clock=clock)
    assert m.availability()[0]
    r = window(m, clock, lambda: set_uj(p0, 1000000))
    assert r.method == "measured"
    assert r.energy_j["package:0"] == pytest.approx(1.32885, abs=1e-9)
    assert r.energy_j_per_inference == pytest.approx(1.32885, abs=1e-9)
    assert all(v >= 0 for v in r.energy_j.values())


def test_two_sockets_summed_and_kept_apart(tmp_path):
    clock = Clock(100.0)
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 10_000_000)
    p1 = zone(tmp_path, "intel-rapl:1", "package-1", 262000000000)

    def update():
        set_uj(p0, 60_000_000)       # +50 J
        set_uj(p1, 500000000)        # wraps: +643.32885 J

    r = window(RaplMeter(root=str(tmp_path), clock=clock), clock, update)
    assert r.energy_j["package:0"] == pytest.approx(50.0)
    assert r.energy_j["package:1"] == pytest.approx(643.33, abs=0.005)
    assert r.energy_j_per_inference == pytest.approx(693.33, abs=0.005)
    assert r.row_fields()["energy_domains_j"]["package:1"] == pytest.approx(643.32885)


def test_hierarchy_psys_mirror_children(tmp_path):
    clock = Clock(100.0)
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    core = zone(tmp_path, "intel-rapl:0:0", "core", 0, nested_in="intel-rapl:0")
    unc = zone(tmp_path, "intel-rapl:0:1", "uncore", 0, nested_in="intel-rapl:0")
    dram = zone(tmp_path, "intel-rapl:0:2", "dram", 0, nested_in="intel-rapl:0")
    psys = zone(tmp_path, "intel-rapl:1", "psys", 0)
    mmio = zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)
    # the real /sys/class/powercap also lists children flat, as links to the same dirs
    os.symlink(core, tmp_path / "intel-rapl:0:0")

    def update():
        for d, j in ((pkg, 10), (core, 6), (unc, 1), (dram, 2), (psys, 15), (mmio, 10)):
            set_uj(d, j * 1_000_000)

    m = RaplMeter(root=str(tmp_path), clock=clock)
    r = window(m, clock, update)
    assert r.energy_j == {"package:0": pytest.approx(10.0), "dram:0": pytest.approx(2.0),
                          "platform": pytest.approx(15.0)}
    # CPU 10 J + DRAM 2 J; platform reported apart, never added; mirror and core/uncore not added
    assert r.energy_j_per_inference == pytest.approx(12.0)
    ignored = " | ".join(m.describe()["rapl_ignored"])
    assert "intel-rapl-mmio:0" in ignored and "mirrors" in ignored
    assert "core is inside package" in ignored


def test_subdomains_reported_but_never_summed(tmp_path):
    clock = Clock(100.0)
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    core = zone(tmp_path, "intel-rapl:0:0", "core", 0, nested_in="intel-rapl:0")

    def update():
        set_uj(pkg, 10_000_000)
        set_uj(core, 6_000_000)

    r = window(RaplMeter(root=str(tmp_path), clock=clock, include_subdomains=True), clock, update)
    assert r.energy_j["core:0"] == pytest.approx(6.0)
    assert r.energy_j_per_inference == pytest.approx(10.0)


def test_duplicate_name_and_identical_dies_counted_once(tmp_path):
    clock = Clock(100.0)
    a = zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    b = zone(tmp_path, "intel-rapl:1", "package-0", 5_000_000)  # duplicate zone, same name
    d0 = zone(tmp_path, "intel-rapl:2", "package-1-die-0", 7_000_000)
    d1 = zone(tmp_path, "intel-rapl:3", "package-1-die-1", 7_000_000)  # same counter again
    m = RaplMeter(root=str(tmp_path), clock=clock)
    assert sorted(z.domain for z in m.active_zones()) == ["package:0", "package:1-die-0"]

    def update():
        for d, v in ((a, 8_000_000), (b, 8_000_000), (d0, 9_000_000), (d1, 9_000_000)):
            set_uj(d, v)

    assert window(m, clock, update).energy_j_per_inference == pytest.approx(5.0)


def test_distinct_dies_are_summed(tmp_path):
    clock = Clock(100.0)
    d0 = zone(tmp_path, "intel-rapl:0", "package-0-die-0", 1_000_000)
    d1 = zone(tmp_path, "intel-rapl:1", "package-0-die-1", 2_000_000)

    def update():
        set_uj(d0, 4_000_000)
        set_uj(d1, 6_000_000)

    r = window(RaplMeter(root=str(tmp_path), clock=clock), clock, update)
    assert r.energy_j == {"package:0-die-0": pytest.approx(3.0), "package:0-die-1": pytest.approx(4.0)}
    assert r.energy_j_per_inference == pytest.approx(7.0)


def test_unreadable_max_flags_instead_of_negative(tmp_path):
    clock = Clock(100.0)
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 262143000000, max_uj=None)
    m = RaplMeter(root=str(tmp_path), clock=clock)
    r = window(m, clock, lambda: set_uj(p0, 1000000))
    assert r.energy_j["package:0"] is None
    assert r.energy_j_per_inference is None
    assert any("max_energy_range_uj unreadable" in f for f in r.flags)
    # no wrap: the value is kept, the sample still flagged
    r2 = window(m, clock, lambda: set_uj(p0, 3000000))
    assert r2.energy_j["package:0"] == pytest.approx(2.0)
    assert any("max_energy_range_uj unreadable" in f for f in r2.flags)


def test_max_range_reread_on_every_read(tmp_path):
    """A changed max_energy_range_uj is picked up: each Counter carries the current range."""
    clock = Clock(100.0)
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 10)
    m = RaplMeter(root=str(tmp_path), clock=clock)
    assert m.read().counters["package:0"].max_range_j == pytest.approx(MAX / 1e6)
    (p0 / "max_energy_range_uj").write_text("65712999613\n")
    assert m.read().counters["package:0"].max_range_j == pytest.approx(65712.999613)


def test_absent_tree_and_empty_tree(tmp_path):
    ok, reason = RaplMeter(root=str(tmp_path / "nope")).availability()
    assert not ok and "not found" in reason
    ok, reason = RaplMeter(root=str(tmp_path)).availability()
    assert not ok and "no RAPL zones" in reason


def test_psys_only_is_not_enough(tmp_path):
    zone(tmp_path, "intel-rapl:0", "psys", 0)
    ok, reason = RaplMeter(root=str(tmp_path)).availability()
    assert not ok and "no package or DRAM zone" in reason


def _deny_energy(path: str) -> str:
    if path.endswith("energy_uj"):
        raise PermissionError(13, "Permission denied", path)
    with open(path) as f:
        return f.read()


def test_permission_denied_falls_back_to_estimate_never_measured(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 0)
    rapl = RaplMeter(root=str(tmp_path), reader=_deny_energy)
    ok, reason = rapl.availability()
    assert not ok
    assert reason.startswith(
        "energy_uj is readable by root only; run as root or grant read access with a udev rule")
    assert reason == PERMISSION_REASON

    clock = Clock(100.0)
    cpu = {"t": 0.0}
    est = EstimateMeter(tdp_w=100, ram_gib=8, logical_cpus=4, clock=clock,
                        cpu_time=lambda: cpu["t"])
    auto = AutoMeter(meters={"rapl": rapl, "nvml": None, "estimate": est})
    assert auto.parts == [est]
    assert "root only" in auto.choice_reason and "estimated" in auto.choice_reason
    idle = measure_idle_power(auto, 1.0, sleep=clock.sleep)

    def work():
        cpu["t"] += 2.0  # 2 CPU-seconds over 1 s on 4 CPUs: 50 % → 50 W
    r = window(auto, clock, work, seconds=1.0, n=10, idle=idle)
    row = r.row_fields()
    assert row["energy_method"] == "estimated"
    assert "measured" not in set(row["energy_domain_methods"].values())
    assert row["energy_meter_method"] == "estimated"
    assert r.energy_j["cpu"] == pytest.approx(50.0)
    assert r.energy_j["dram"] == pytest.approx(3.0)     # 0.375 W/GiB × 8 GiB × 1 s
    assert r.energy_j_per_inference == pytest.approx(5.3)
    assert r.energy_j_per_inference_net == pytest.approx(5.0)  # idle 3 W dram, 0 W cpu
    assert "root only" in row["energy_auto_choice"]


def test_safe_window_from_constraints_and_default(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 0, max_power_uw=200_000_000)
    zone(tmp_path, "intel-rapl:0:0", "dram", 0, max_uj=65712999613, nested_in="intel-rapl:0")
    m = RaplMeter(root=str(tmp_path), default_max_power_w=100)
    assert m.availability()[0]
    # package: 262143 J / 200 W = 1310.7 s; dram: 65713 J / 100 W (default) = 657.1 s
    assert m.largest_safe_window_s() == pytest.approx(657.12999613)
    assert m.max_safe_window_s == pytest.approx(657.12999613)


def test_long_window_sampled_so_two_wraps_are_both_corrected(tmp_path):
    """A window spanning two wraps is correct when sampled at least once per safe window."""
    clock = Clock(100.0)
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 0, max_power_uw=200_000_000)
    m = RaplMeter(root=str(tmp_path), clock=clock)
    assert m.availability()[0]
    safe = m.max_safe_window_s
    with EnergyWindow(m, background_sampling=False) as w:
        total = 0
        for _ in range(4):                 # four steps, each 2/3 of the range: wraps twice
            total += MAX * 2 // 3
            set_uj(p0, total % MAX)
            clock.sleep(safe * 0.9)
            w.sample()
    r = w.result(1)
    assert r.energy_j["package:0"] == pytest.approx(4 * (MAX * 2 // 3) / 1e6)
    assert any("longer than the counter's safe window" in f for f in r.flags)


def test_a_die_counter_that_ticks_between_the_two_reads_is_still_one_counter(tmp_path):
    shared = {"uj": 7_000_000}
    zone(tmp_path, "intel-rapl:0", "package-0-die-0", 7_000_000)
    zone(tmp_path, "intel-rapl:1", "package-0-die-1", 7_000_000)

    def reader(path):  # one counter behind both dies, advancing one RAPL update (0.1 J) per read
        if path.endswith("energy_uj"):
            shared["uj"] += 100_000
            return f"{shared['uj']}\n"
        with open(path) as f:
            return f.read()

    m = RaplMeter(root=str(tmp_path), reader=reader)
    assert [z.domain for z in m.active_zones()] == ["package:0-die-0"]
