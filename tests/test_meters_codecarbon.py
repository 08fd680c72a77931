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


def sampling_tracker_meter(made):
    """A ``codecarbon`` meter class whose tracker, like codecarbon's, samples in a thread of its own
    from ``start()`` until ``stop()``; each tracker built is appended to ``made``."""
    import threading

    base = fake_tracker([CPU("cpu_load"), RAM()], {"cpu": 1e-7, "ram": 1e-8})

    class Sampling(base):
        def start(self):
            super().start()
            self.halt = threading.Event()
            self.thread = threading.Thread(target=lambda: self.halt.wait(), name="fake-codecarbon-scheduler",
                                           daemon=True)
            self.thread.start()

        def stop(self):
            super().stop()
            self.halt.set()
            self.thread.join()

    class FakeCodecarbon(CodecarbonMeter):
        def _default_factory(self):
            made.append(Sampling())
            return made[-1]

    return FakeCodecarbon


def _use_meter(monkeypatch, cls):
    from profiler.plugins import METERS

    monkeypatch.setattr(METERS, "_classes", {**METERS._classes, "codecarbon": cls})


def test_preflight_stops_the_tracker_its_probe_started(monkeypatch, tmp_path):
    """preflight's availability check starts a tracker: it must not go on sampling through the run."""
    from profiler.config import parse_config
    from profiler.runner import preflight
    from tests.conftest import tiny_config

    made = []
    _use_meter(monkeypatch, sampling_tracker_meter(made))
    cfg = parse_config(tiny_config(meter={"name": "codecarbon"}, run={"name": "t", "output_dir": str(tmp_path / "runs")}))
    preflight(cfg, tmp_path / "cache")
    assert len(made) == 1 and made[0].stopped and not made[0].thread.is_alive()


def test_a_run_stops_its_codecarbon_tracker_at_the_end(monkeypatch, tmp_path):
    """The run's meter is closed once the matrix is done (stop() after each window cannot: a
    codecarbon tracker does not restart), so no tracker thread outlives the run."""
    from profiler.config import parse_config
    from profiler.runner import Runner
    from tests.conftest import tiny_config

    made = []
    _use_meter(monkeypatch, sampling_tracker_meter(made))
    cfg = parse_config(tiny_config(
        meter={"name": "codecarbon"}, tasks=[{"name": "tiny-synthetic", "finetune_steps": 2, "n_train": 32, "n_eval": 8}],
        pruners=[{"name": "none"}], accelerators=[{"name": "torch-fp32"}],
        matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
    Runner(cfg, tmp_path / "run", cache_dir=tmp_path / "cache").run()
    assert len(made) == 1 and made[0].stopped and not made[0].thread.is_alive()
    from profiler.results import read_results

    rows = read_results(tmp_path / "run" / "results.jsonl").rows
    assert rows and rows[0]["energy_meter"] == "codecarbon" and rows[0]["energy_j_per_inference"] is not None


def test_a_ray_node_probe_stops_the_tracker_it_started(monkeypatch):
    """The probe of a Ray target (availability and idle power) builds its own meter: closed after."""
    from profiler.executors.ray_node import probe_node

    made = []
    _use_meter(monkeypatch, sampling_tracker_meter(made))
    out = probe_node({"name": "codecarbon", "params": {}}, 0.05)
    assert out["meter_ok"] and out["idle"] is not None
    assert len(made) == 1 and made[0].stopped and not made[0].thread.is_alive()


def test_the_real_tracker_leaves_no_thread_after_preflight(tmp_path):
    """codecarbon offline, as installed: preflight's probe leaves none of its threads behind."""
    pytest.importorskip("codecarbon")
    import threading

    from profiler.config import parse_config
    from profiler.runner import preflight
    from tests.conftest import tiny_config

    before = set(threading.enumerate())
    cfg = parse_config(tiny_config(meter={"name": "codecarbon"}, run={"name": "t", "output_dir": str(tmp_path / "runs")}))
    preflight(cfg, tmp_path / "cache")
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []


def test_auto_closes_its_parts():
    from profiler.meters.auto import AutoMeter
    from profiler.meters.base import EnergyMeter, Reading

    class Part(EnergyMeter):
        name, method = "part", "measured"
        closed = 0

        def availability(self):
            return True, "ok"

        def read(self):
            return Reading(0.0, {})

        def close(self):
            self.closed += 1

    est, gpu = Part(), Part()
    auto = AutoMeter(meters={"rapl": None, "estimate": est, "nvml": gpu})
    auto.close()
    assert est.closed == 1 and gpu.closed == 1
