"""Fault class 1: non-finite and absurd numbers are rejected before any work, naming the key and
its range; the CLI exits with status 2 and writes nothing."""
from __future__ import annotations

import math

import pytest

from accelerators.params import Range, number_problem
from profiler.cli import main
from profiler.config import parse_config
from profiler.errors import ConfigError
from profiler.plugins import ACCELERATORS, METERS, PRUNERS, REGISTRIES
from tests.conftest import tiny_config
from tests.faults_util import write_config

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("measure, must_say", [
    ({"min_seconds": NAN, "max_seconds": NAN}, ["measure.min_seconds", "finite", "[0, 86400]"]),
    ({"idle_seconds": 1e9}, ["measure.idle_seconds", "[0, 3600]"]),
    ({"max_seconds": INF}, ["measure.max_seconds", "finite"]),
    ({"min_seconds": 5.0, "max_seconds": 1.0}, ["measure.min_seconds", "max_seconds"]),
    ({"visit_seconds": 3.0, "min_seconds": 0.5, "max_seconds": 1.0}, ["measure.visit_seconds", "max_seconds"]),
    ({"min_iters": -1}, ["measure.min_iters", "[1,"]),
    ({"warmup_iters": 2.5}, ["measure.warmup_iters", "integer"]),
    ({"eval_batch_size": 0}, ["measure.eval_batch_size", "[1, 65536]"]),
    ({"visit_seconds": 0.0}, ["measure.visit_seconds", "(0, 3600]"]),
    ({"min_rounds": True}, ["measure.min_rounds", "integer"]),
    ({"interleave_threads": 1}, ["measure.interleave_threads", "true or false"]),
    ({"interleave_threads": "yes"}, ["measure.interleave_threads", "true or false"]),
])
def test_measure_numbers_are_finite_in_range_and_consistent(measure, must_say):
    with pytest.raises(ConfigError) as e:
        parse_config(tiny_config(measure=measure))
    assert all(s in str(e.value) for s in must_say), str(e.value)


@pytest.mark.parametrize("meter, must_say", [
    ({"name": "estimate", "tdp_w": NAN}, ["meter.tdp_w", "finite"]),
    ({"name": "estimate", "tdp_w": INF}, ["meter.tdp_w", "finite"]),
    ({"name": "estimate", "memory_w_per_gb": -1.0}, ["meter.memory_w_per_gb", "[0, 100]"]),
    ({"name": "estimate", "logical_cpus": -4}, ["meter.logical_cpus", "[1, 1000000]"]),
    ({"name": "estimate", "ram_gb": -1}, ["meter.ram_gb", "[0, 1000000]"]),
    ({"name": "auto", "tdp_w": -5}, ["meter.tdp_w", "[0, 100000]"]),
    ({"name": "nvml", "poll_hz": NAN}, ["meter.poll_hz", "finite"]),
    ({"name": "nvml", "devices": [0, -1]}, ["meter.devices", "[0, 1023]"]),
    ({"name": "rapl", "default_max_power_w": 0}, ["meter.default_max_power_w", "[1, 100000]"]),
    ({"name": "codecarbon", "measure_power_secs": 1e12}, ["meter.measure_power_secs", "[0.1, 3600]"]),
])
def test_meter_settings_are_finite_and_in_range(meter, must_say):
    with pytest.raises(ConfigError) as e:
        parse_config(tiny_config(meter=meter))
    assert all(s in str(e.value) for s in must_say), str(e.value)


@pytest.mark.parametrize("section, entry, must_say", [
    ("pruners", {"name": "magnitude", "sparsity": NAN}, ["pruners[0].sparsity", "finite", "[0, 1)"]),
    ("pruners", {"name": "magnitude", "sparsity": [0.5, INF]}, ["pruners[0].sparsity", "finite"]),
    ("pruners", {"name": "gmp", "steps": 0}, ["pruners[0].steps", "[1, 10000000]"]),
    ("pruners", {"name": "movement", "score_lr": 0.0}, ["pruners[0].score_lr", "(0, 10]"]),
    ("accelerators", {"name": "sparse-cpu", "repeats": 10**9}, ["accelerators[0].repeats", "[1, 1000]"]),
    ("accelerators", {"name": "sparse-int8", "min_time_s": NAN}, ["accelerators[0].min_time_s", "finite"]),
    ("tasks", {"name": "tiny-synthetic", "finetune_lr": NAN}, ["tasks[0].finetune_lr", "finite"]),
])
def test_plugin_parameters_are_finite_and_in_their_declared_range(section, entry, must_say):
    with pytest.raises(ConfigError) as e:
        parse_config(tiny_config(**{section: [entry]}))
    assert all(s in str(e.value) for s in must_say), str(e.value)


def test_run_seed_is_bounded():
    with pytest.raises(ConfigError, match=r"run.seed.*\[0, 4294967295\]"):
        parse_config(tiny_config(run={"name": "t", "seed": 2**40}))


def test_ranges_are_declared_once_and_shown_by_describe():
    assert str(PRUNERS.ranges("magnitude")["sparsity"]) == "[0, 1)"
    # sparse-int8 reuses sparse-cpu's declarations
    assert ACCELERATORS.ranges("sparse-int8") == {k: v for k, v in ACCELERATORS.ranges("sparse-cpu").items()}
    tdp = next(p for p in METERS.describe("estimate")["params"] if p["name"] == "tdp_w")
    assert tdp["range"] == "[0, 100000]" and tdp["type"] == "float | None"
    for registry in REGISTRIES:  # every declared range is a valid interval
        for name in registry.names():
            for r in registry.ranges(name).values():
                assert r.lo is None or r.hi is None or r.lo <= r.hi


def test_range_arithmetic():
    r = Range(0, 1, hi_open=True)
    assert str(r) == "[0, 1)" and r.contains(0) and not r.contains(1) and not r.contains(-1e-9)
    assert str(Range(lo=0)) == "[0, inf)" and str(Range(hi=2, lo_open=True)) == "(-inf, 2]"
    assert number_problem(NAN, None) == "must be a finite number, got nan"
    assert number_problem(True, r) is None and number_problem("x", r) is None  # left to the type check
    assert "must be in [0, 1)" in number_problem(1, r)
    assert number_problem(-math.inf, Range(0, 1)).startswith("must be a finite number in [0, 1]")


@pytest.mark.parametrize("override", [
    {"meter": {"name": "estimate", "tdp_w": NAN}},
    {"measure": {"min_seconds": NAN, "max_seconds": NAN}},
    {"measure": {"idle_seconds": 1e9}},
])
def test_cli_exits_2_before_any_work_and_writes_nothing(tmp_path, capsys, override):
    out = tmp_path / "runs"
    path = write_config(tmp_path / "bad.toml", tiny_config(run={"name": "t", "output_dir": str(out)}, **override))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid config" in err
    assert not out.exists() or not any(out.iterdir())


def test_direct_construction_enforces_the_same_declared_ranges():
    from accelerators.sparse_cpu import SparseCPU
    from profiler.meters.estimate import EstimateMeter
    from profiler.meters.nvml import NvmlMeter

    with pytest.raises(ValueError, match=r"min_sparsity must be in \[0, 1\], got 2"):
        SparseCPU(min_sparsity=2)
    with pytest.raises(ValueError, match="tdp_w must be a finite number"):
        EstimateMeter(tdp_w=NAN)
    with pytest.raises(ValueError, match=r"devices must be in \[0, 1023\]"):
        NvmlMeter(devices=[-2])


@pytest.mark.parametrize("attrs, must_say", [
    ({"method": "bogus"}, ["meter.name: energy meter 'odd-meter'", "method 'bogus'",
                           "valid methods: measured, power-poll, estimated, unavailable"]),
    ({"resolution_s": -1.0}, ["energy meter 'odd-meter'", "resolution_s -1.0", "finite number of seconds > 0"]),
    ({"resolution_s": float("nan")}, ["resolution_s nan"]),
    ({"resolution_s": "fast"}, ["resolution_s 'fast'"]),
    ({"max_safe_window_s": 0.0}, ["max_safe_window_s 0.0", "(or None)"]),
])
def test_a_meter_with_an_invalid_method_or_resolution_fails_at_config_load(monkeypatch, attrs, must_say):
    from profiler.meters.base import EnergyMeter
    from profiler.plugins import METERS

    odd = type("OddMeter", (EnergyMeter,), {"name": "odd-meter", **attrs})
    monkeypatch.setattr(METERS, "_classes", {**METERS._classes, "odd-meter": odd})
    monkeypatch.setattr(METERS, "_sources", {**METERS._sources, "odd-meter": "distribution 'x'"})
    with pytest.raises(ConfigError) as e:
        parse_config(tiny_config(meter={"name": "odd-meter"}))
    assert all(s in str(e.value) for s in must_say), str(e.value)
    parse_config(tiny_config(meter={"name": "estimate"}))  # the built-ins keep the contract
