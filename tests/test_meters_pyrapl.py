"""pyRAPL meter with an injected fake pyRAPL module, and the direct-vs-pyRAPL comparison."""
from __future__ import annotations

import sys
import types

import pytest

from profiler.meters import PyRaplMeter, RaplMeter, compare_with_direct
from profiler.meters.rapl import PERMISSION_REASON
from tests.fakes import Clock

MAX = 262143328850


def tree(root, pkg_uj, dram_uj):
    p = root / "intel-rapl:0"
    p.mkdir(parents=True)
    (p / "name").write_text("package-0\n")
    (p / "energy_uj").write_text(f"{pkg_uj}\n")
    (p / "max_energy_range_uj").write_text(f"{MAX}\n")
    d = p / "intel-rapl:0:0"
    d.mkdir()
    (d / "name").write_text("dram\n")
    (d / "energy_uj").write_text(f"{dram_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{MAX}\n")
    return p, d


class CantRecord(Exception):
    pass


CantRecord.__name__ = "PyRAPLCantRecordEnergyConsumption"


def fake_pyrapl(values=None, error=None):
    class Sensor:
        def __init__(self):
            if error is not None:
                raise error

        def energy(self):
            return list(values())

    return types.SimpleNamespace(Sensor=Sensor)


def test_reads_package_and_dram_with_wrap_range(tmp_path):
    root = tmp_path / "intel-rapl"
    tree(root, 0, 0)
    vals = {"v": [262143000000.0, 5_000_000.0]}
    m = PyRaplMeter(pyrapl=fake_pyrapl(lambda: vals["v"]), powercap_dir=str(root))
    ok, reason = m.availability()
    assert ok and reason == "pyRAPL: package:0, dram:0"
    r = m.read()
    assert r.counters["package:0"].energy_j == pytest.approx(262143.0)
    assert r.counters["package:0"].max_range_j == pytest.approx(MAX / 1e6)
    assert r.counters["dram:0"].max_range_j == pytest.approx(MAX / 1e6)


def test_missing_dram_is_absent_not_zero(tmp_path):
    m = PyRaplMeter(pyrapl=fake_pyrapl(lambda: [1e6, -1]), powercap_dir=str(tmp_path))
    assert m.availability()[0]
    r = m.read()
    assert "dram:0" not in r.counters
    assert r.counters["package:0"].max_range_j is None and r.counters["package:0"].flag


@pytest.mark.parametrize("error,expect", [
    (PermissionError(13, "Permission denied"), PERMISSION_REASON),
    (CantRecord(), "found no usable RAPL"),
    (FileNotFoundError(2, "No such file", "/sys/devices/system/cpu/present"), "not found"),
])
def test_unavailable_reasons(error, expect, tmp_path):
    ok, reason = PyRaplMeter(pyrapl=fake_pyrapl(error=error), powercap_dir=str(tmp_path)).availability()
    assert not ok and expect in reason


def test_no_powercap_folder_is_said_as_not_found(tmp_path):
    """pyRAPL raises its own error when the powercap tree is missing: the reason names the missing
    folder, as the rapl meter's does, so both read "absent" (not "unavailable") in doctor."""
    ok, reason = PyRaplMeter(pyrapl=fake_pyrapl(error=CantRecord()), powercap_dir=str(tmp_path / "intel-rapl")).availability()
    assert not ok and reason.startswith(f"{tmp_path / 'intel-rapl'} not found; no RAPL interface for pyRAPL")


def test_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyRAPL", None)
    ok, reason = PyRaplMeter().availability()
    assert not ok and "not installed" in reason


def test_real_pyrapl_on_this_machine_does_not_crash():
    ok, reason = PyRaplMeter().availability()
    assert isinstance(ok, bool) and reason


def _advance_both(p, d, vals, dpkg_uj, ddram_uj, py_extra_uj=0):
    pk = int((p / "energy_uj").read_text()) + dpkg_uj
    dr = int((d / "energy_uj").read_text()) + ddram_uj
    (p / "energy_uj").write_text(f"{pk}\n")
    (d / "energy_uj").write_text(f"{dr}\n")
    vals["v"] = [float(pk + py_extra_uj), float(dr)]


def test_compare_agree_and_disagree(tmp_path):
    root = tmp_path / "pc"
    p, d = tree(root / "intel-rapl", 1_000_000, 1_000_000)
    os_link = root / "intel-rapl:0"
    os_link.symlink_to(p)
    clock = Clock()
    vals = {"v": [1_000_000.0, 1_000_000.0]}
    direct = RaplMeter(root=str(root), clock=clock)
    py = PyRaplMeter(pyrapl=fake_pyrapl(lambda: vals["v"]), powercap_dir=str(root / "intel-rapl"),
                     clock=clock)

    def sleep(s):
        clock.sleep(s)
        _advance_both(p, d, vals, 20_000_000, 3_000_000)

    res = compare_with_direct(direct, py, seconds=1.0, sleep=sleep)
    assert res["agree"] is True, res
    assert res["domains"]["package:0"]["direct_j"] == pytest.approx(20.0)

    def sleep_bad(s):
        clock.sleep(s)
        _advance_both(p, d, vals, 20_000_000, 3_000_000, py_extra_uj=10_000_000)

    res = compare_with_direct(direct, py, seconds=1.0, sleep=sleep_bad)
    assert res["agree"] is False and "DISAGREE on package:0" in res["message"]


def test_compare_when_one_side_unavailable(tmp_path):
    res = compare_with_direct(RaplMeter(root=str(tmp_path / "x")), PyRaplMeter(
        pyrapl=fake_pyrapl(error=CantRecord())))
    assert res["agree"] is None and "unavailable" in res["message"]


def test_pyrapl_counters_wrap_so_its_windows_get_the_wrap_guard(tmp_path):
    """pyRAPL's counters are RAPL's: a window longer than range ÷ power is sampled inside (the guard)."""
    from profiler.meters.rapl import DEFAULT_MAX_POWER_W

    root = tmp_path / "intel-rapl"
    tree(root, 0, 0)
    m = PyRaplMeter(pyrapl=fake_pyrapl(lambda: [1.0, 1.0]), powercap_dir=str(root))
    assert m.availability()[0]
    assert m.max_safe_window_s == pytest.approx(MAX / 1e6 / DEFAULT_MAX_POWER_W)
