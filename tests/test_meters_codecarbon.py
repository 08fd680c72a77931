"""codecarbon meter with a fake tracker: status carried through, never upgraded."""
from __future__ import annotations

import types

import pytest

from profiler.energy import EnergyWindow
from profiler.meters import CodecarbonMeter
from tests.fakes import Clock


class CPU:
    def __init__(self, mode):
        self._mode = mode


class RAM:
    pass


class GPU:
    def __init__(self, counter_error=None):
        self.devices = types.SimpleNamespace(
            devices=[types.SimpleNamespace(_counter_error=counter_error)])


def fake_tracker(hardware, step_kwh):
    class Tracker:
        def __init__(self):
            self._hardware = hardware
            self._total_cpu_energy = types.SimpleNamespace(kWh=0.0)
            self._total_ram_energy = types.SimpleNamespace(kWh=0.0)
            self._total_gpu_energy = types.SimpleNamespace(kWh=0.0)
            self._start_time = None
            self.stopped = False

        def start(self):
            self._start_time = 1.0

        def stop(self):
            self.stopped = True

        def _measure_power_and_energy(self):
            self._total_cpu_energy.kWh += step_kwh["cpu"]
            self._total_ram_energy.kWh += step_kwh["ram"]
            self._total_gpu_energy.kWh += step_kwh.get("gpu", 0.0)

    return Tracker


def test_cpu_load_mode_is_estimated_and_joules_from_kwh():
    clock = Clock()
    steps = {"cpu": 0.0, "ram": 0.0}
    m = CodecarbonMeter(tracker_factory=fake_tracker([RAM(), CPU("cpu_load")], steps), clock=clock)
    ok, reason = m.availability()
    assert ok and "cpu_load" in reason
    assert m.method == "estimated"
    with EnergyWindow(m) as w:
        steps.update(cpu=1e-5, ram=2e-6)     # 36 J and 7.2 J at the end read
        clock.t += 1.0
    r = w.result(4)
    assert r.method == "estimated"
    assert r.energy_j == {"cpu": pytest.approx(36.0), "dram": pytest.approx(7.2)}
    assert r.energy_j_per_inference == pytest.approx(43.2 / 4)
    assert r.row_fields()["energy_codecarbon_cpu_mode"] == "cpu_load"


def test_rapl_mode_cpu_measured_but_ram_estimated_never_upgraded():
    m = CodecarbonMeter(tracker_factory=fake_tracker([CPU("intel_rapl"), RAM(), GPU("NotSupported")],
                                                      {"cpu": 0, "ram": 0}))
    assert m.availability()[0]
    assert m.domain_methods == {"cpu": "measured", "dram": "estimated", "gpu": "power-poll"}
    assert m.method == "estimated"


def test_gpu_counter_ok_is_measured():
    m = CodecarbonMeter(tracker_factory=fake_tracker([CPU("intel_rapl"), GPU()], {"cpu": 0, "ram": 0}))
    assert m.availability()[0]
    assert m.domain_methods == {"cpu": "measured", "gpu": "measured"} and m.method == "measured"


def test_cannot_run_offline_is_unavailable_with_reason():
    def boom():
        raise RuntimeError("needs network")
    ok, reason = CodecarbonMeter(tracker_factory=boom).availability()
    assert not ok and "cannot run offline" in reason and "needs network" in reason

    def missing():
        raise ImportError("No module named 'codecarbon'")
    ok, reason = CodecarbonMeter(tracker_factory=missing).availability()
    assert not ok and "not installed" in reason


def test_changed_internals_are_unavailable():
    class Odd:
        def start(self):
            pass

        def stop(self):
            pass
    ok, reason = CodecarbonMeter(tracker_factory=Odd).availability()
    assert not ok and "unsupported codecarbon version" in reason


def test_close_stops_tracker():
    tr_cls = fake_tracker([CPU("cpu_load")], {"cpu": 0, "ram": 0})
    made = []
    m = CodecarbonMeter(tracker_factory=lambda: made.append(tr_cls()) or made[-1])
    assert m.availability()[0]
    m.close()
    assert made[0].stopped and not m.availability()[0]
