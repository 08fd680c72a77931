"""NVML meter with a fake NVML module injected through the constructor; fake clock, no sleeps."""
from __future__ import annotations

import time
import types

import pytest

from profiler.energy import EnergyWindow, measure_idle_power
from profiler.meters import AutoMeter, EstimateMeter, NvmlMeter
from tests.fakes import Clock


class NVMLError(Exception):
    def __init__(self, value):
        self.value = value
        super().__init__({3: "Not Supported", 12: "NVML Shared Library Not Found",
                          27: "Not Ready"}.get(value, f"error {value}"))


def fake_nvml(gpus, init_error=None):
    """gpus: list of dicts with 'energy_mj' (int | callable | NVMLError) and 'power_mw'."""
    calls = {"power": 0}

    def value(v):
        if isinstance(v, Exception):
            raise v
        return v() if callable(v) else v

    def init():
        if init_error is not None:
            raise NVMLError(init_error)

    def power(h):
        calls["power"] += 1
        return value(gpus[h]["power_mw"])

    mod = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: gpus[h].get("name", "Fake GPU").encode(),
        nvmlDeviceGetUUID=lambda h: gpus[h].get("uuid", f"GPU-0000000{h}-aaaa-bbbb-cccc-dddddddddddd"),
        nvmlDeviceGetTotalEnergyConsumption=lambda h: value(gpus[h]["energy_mj"]),
        nvmlDeviceGetPowerUsage=power,
        calls=calls,
    )
    return mod


def test_not_supported_polls_150w_over_2s_to_300j():
    clock = Clock(50.0)
    nv = fake_nvml([{"energy_mj": NVMLError(3), "power_mw": 150_000}])
    m = NvmlMeter(nvml=nv, clock=clock, background=False, poll_hz=10)
    ok, reason = m.availability()
    assert ok and "NotSupported" in reason and "power-poll" in reason
    assert m.method == "power-poll"
    with EnergyWindow(m) as w:
        for _ in range(20):            # 2.0 s at 10 Hz
            clock.t += 0.1
            m.sample()
    r = w.result(1)
    assert r.window_s == pytest.approx(2.0)
    assert r.energy_j["gpu:0"] == pytest.approx(300.0, rel=0.05)
    assert r.energy_j_per_inference == pytest.approx(300.0, rel=0.05)
    assert r.method == "power-poll" and r.domain_methods == {"gpu:0": "power-poll"}
    assert not r.flags


def test_background_thread_polls_at_least_10hz():
    nv = fake_nvml([{"energy_mj": NVMLError(3), "power_mw": 150_000}])
    m = NvmlMeter(nvml=nv, poll_hz=100)
    m.resolution_s = 0.02          # keep the real-time window short (min window 0.2 s)
    with EnergyWindow(m) as w:
        time.sleep(0.25)
    r = w.result(1)
    assert nv.calls["power"] >= 0.25 * 10
    assert r.energy_j["gpu:0"] == pytest.approx(150.0 * r.window_s, rel=0.05)
    assert m._thread is None       # stopped on exit


def test_poll_integrates_varying_power_with_trapezoid():
    clock = Clock(50.0)
    p = {"mw": 100_000}
    nv = fake_nvml([{"energy_mj": NVMLError(3), "power_mw": lambda: p["mw"]}])
    m = NvmlMeter(nvml=nv, clock=clock, background=False)
    m.start()
    r0 = m.read()
    clock.t += 1.0
    p["mw"] = 200_000
    r1 = m.read()
    assert r1.counters["gpu:0"].energy_j - r0.counters["gpu:0"].energy_j == pytest.approx(150.0)


def test_sparse_sampling_is_flagged():
    clock = Clock(50.0)
    nv = fake_nvml([{"energy_mj": NVMLError(3), "power_mw": 50_000}])
    m = NvmlMeter(nvml=nv, clock=clock, background=False, poll_hz=10)
    with EnergyWindow(m) as w:
        clock.t += 2.0                 # no sample in between
    r = w.result(1)
    assert r.energy_j["gpu:0"] == pytest.approx(100.0)
    assert any("power sampled only every" in f for f in r.flags)


def test_energy_counter_measured_in_mj():
    clock = Clock(50.0)
    e = {"mj": 1_000_000}
    nv = fake_nvml([{"energy_mj": lambda: e["mj"], "power_mw": 1}, {"energy_mj": 5, "power_mw": 1}])
    m = NvmlMeter(nvml=nv, clock=clock, devices=[0])
    assert m.availability()[0] and m.method == "measured"
    with EnergyWindow(m) as w:
        clock.t += 2.0
        e["mj"] += 250_000             # 250 J
    r = w.result(5)
    assert r.method == "measured" and r.energy_j == {"gpu:0": pytest.approx(250.0)}
    assert r.energy_j_per_inference == pytest.approx(50.0)


def test_counter_reading_zero_falls_back_to_poll():
    nv = fake_nvml([{"energy_mj": 0, "power_mw": 30_000}])
    m = NvmlMeter(nvml=nv, background=False)
    ok, reason = m.availability()
    assert ok and "reads 0" in reason and m.method == "power-poll"


def test_not_ready_mid_run_gives_none_then_polls():
    clock = Clock(50.0)
    state = {"fail": False}

    def energy():
        if state["fail"]:
            raise NVMLError(27)
        return 10_000

    nv = fake_nvml([{"energy_mj": energy, "power_mw": 80_000}])
    m = NvmlMeter(nvml=nv, clock=clock, background=False)
    with EnergyWindow(m) as w:
        clock.t += 2.0
        state["fail"] = True
    r = w.result(1)
    assert r.energy_j["gpu:0"] is None and r.energy_j_per_inference is None
    assert any("NotReady" in f for f in r.flags)
    with EnergyWindow(m) as w2:        # next window: power-poll
        clock.t += 1.0
    r2 = w2.result(1)
    assert r2.method == "power-poll" and r2.energy_j["gpu:0"] == pytest.approx(80.0)


def test_nvml_absent_is_unavailable_with_reason():
    m = NvmlMeter(nvml=fake_nvml([], init_error=12))
    ok, reason = m.availability()
    assert not ok and "not found" in reason
    ok, reason = NvmlMeter(nvml=fake_nvml([])).availability()
    assert not ok and "no NVIDIA GPU" in reason
    r_ok, _ = NvmlMeter(nvml=fake_nvml([{"energy_mj": NVMLError(3), "power_mw": NVMLError(3)}])
                        ).availability()
    assert not r_ok
    with pytest.raises(ValueError):
        NvmlMeter(poll_hz=5)


def test_pynvml_not_installed(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pynvml", None)
    ok, reason = NvmlMeter().availability()
    assert not ok and "not installed" in reason


def test_auto_combines_rapl_fallback_and_gpu_and_labels_weakest(tmp_path):
    clock = Clock(50.0)
    nv = fake_nvml([{"energy_mj": NVMLError(3), "power_mw": 150_000}])
    gpu = NvmlMeter(nvml=nv, clock=clock, background=False)
    est = EstimateMeter(tdp_w=10, ram_gib=0, logical_cpus=1, clock=clock, cpu_time=lambda: clock.t)
    auto = AutoMeter(rapl_root=str(tmp_path / "none"), meters={"nvml": gpu, "estimate": est})
    assert [p.name for p in auto.parts] == ["estimate", "nvml"]
    assert "GPU: nvml" in auto.choice_reason and "not found" in auto.choice_reason
    assert auto.resolution_s == 0.1 and auto.method == "estimated"
    idle = measure_idle_power(auto, 1.0, sleep=lambda s: setattr(clock, "t", clock.t + s))
    assert idle.watts["gpu:0"] == pytest.approx(150.0)
    with EnergyWindow(auto) as w:
        clock.t += 1.0
    r = w.result(1)
    assert r.method == "estimated"
    assert r.domain_methods["gpu:0"] == "power-poll" and r.domain_methods["cpu"] == "estimated"
    assert r.energy_j["gpu:0"] == pytest.approx(150.0) and r.energy_j["cpu"] == pytest.approx(10.0)


def test_a_window_after_a_stopped_meter_is_not_flagged_for_the_stopped_time():
    """Each cell's window starts and stops the meter; the time between cells is no sampling gap."""
    clock = Clock(0.0)
    m = NvmlMeter(nvml=fake_nvml([{"energy_mj": NVMLError(3), "power_mw": 100_000}]), clock=clock, background=False,
                  poll_hz=10)
    m.start()
    for cell in range(2):
        with EnergyWindow(m, background_sampling=False) as w:
            for _ in range(20):
                clock.t += 0.1
                m.sample()
        r = w.result(1)
        assert r.energy_j["gpu:0"] == pytest.approx(200.0) and r.flags == [], (cell, r.flags)
        clock.t += 30.0  # the next cell's preparation: the window stopped the meter


def test_one_gpu_without_a_handle_leaves_the_others_measured():
    nv = fake_nvml([{"energy_mj": 5, "power_mw": 1}, {"energy_mj": 5, "power_mw": 1}])

    def handle(i):
        if i == 1:
            raise NVMLError(4)  # no permission: a GPU not given to this container
        return i

    nv.nvmlDeviceGetHandleByIndex = handle
    ok, why = NvmlMeter(nvml=nv, devices=[0, 1]).availability()
    assert ok and "gpu:1" in why and "no handle" in why


@pytest.mark.parametrize("visible, order, want", [
    (None, "FASTEST_FIRST", [0]),                   # the GPU "cuda" means: the first of all
    ("GPU-00000002", "FASTEST_FIRST", [2]),          # a UUID prefix: that GPU only
    ("1", "PCI_BUS_ID", [1]),                       # CUDA index = NVML index in PCI order
    ("2,GPU-nonexistent,0", "PCI_BUS_ID", [2]),     # an entry matching nothing ends the list, as in CUDA
    ("2,0", "PCI_BUS_ID", [2]),                     # two visible: the first, where cells run
    ("1", "FASTEST_FIRST", [1]),                    # no CUDA in this process to match UUIDs: NVML's numbering, said
])
def test_only_the_gpu_cells_run_on_is_measured(monkeypatch, visible, order, want):
    """Another tenant's GPU on a shared host, or another idle GPU of ours, is not added to the
    cell's energy: a cell runs on "cuda", the first visible GPU."""
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", order)
    m = NvmlMeter(nvml=fake_nvml([{"energy_mj": 5, "power_mw": 1}] * 3))
    ok, why = m.availability()
    assert ok and [g.index for g in m._gpus] == want
    assert ("CUDA_VISIBLE_DEVICES" in why) == (visible is not None)
    assert ("first of" in why) == (visible in (None, "2,0"))
    if order == "FASTEST_FIRST" and visible and visible.isdigit():
        import torch

        assert torch.cuda.is_available() or "NVML's numbering assumed" in why


def test_two_gpus_one_busy_charge_the_cell_with_its_own_only(monkeypatch):
    """GPU 0 runs the cell at 300 W, GPU 1 idles at 60 W: 300 W x 2 s over 100 inferences is
    6 J each (summing both GPUs gave 7.2 J)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    clock = Clock(50.0)
    gpus = [{"energy_mj": 1_000, "power_mw": 300_000}, {"energy_mj": 1_000, "power_mw": 60_000}]
    m = NvmlMeter(nvml=fake_nvml(gpus), clock=clock, background=False, poll_hz=10)
    assert m.availability()[0]
    m.start()
    with EnergyWindow(m, background_sampling=False) as w:
        for _ in range(20):
            clock.t += 0.1
            for gpu, watts in zip(gpus, (300, 60)):
                gpu["energy_mj"] += watts * 100  # 0.1 s at that power, in mJ
            m.sample()
    r = w.result(100)
    assert sorted(r.energy_j) == ["gpu:0"] and r.energy_j["gpu:0"] / 100 == pytest.approx(6.0)


def test_cuda_visible_devices_hiding_every_gpu_is_unavailable(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    ok, why = NvmlMeter(nvml=fake_nvml([{"energy_mj": 5, "power_mw": 1}])).availability()
    assert not ok and "hides every GPU" in why
