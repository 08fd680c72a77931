"""The one window logic (profiler.energy) with scripted fake meters and a fake clock."""
from __future__ import annotations

import math

import pytest

from profiler.energy import (
    ENERGY_METHODS, EnergyResult, EnergyWindow, IdlePower, counter_delta, measure_idle_power,
    readings_energy, safe_availability, window_result, worst_method,
)
from profiler.meters.base import Counter, EnergyMeter, Reading
from tests.fakes import Clock


class ScriptMeter(EnergyMeter):
    """Cumulative counters driven by the test: ``self.e[domain]`` joules, constant power ``w``."""

    name = "script"

    def __init__(self, clock, watts, method="measured", resolution_s=0.001, available=True,
                 max_range_j=None, safe=None):
        self.clock, self.watts, self.method = clock, dict(watts), method
        self.resolution_s = resolution_s
        self.max_safe_window_s = safe
        self._ok = available
        self._rng = max_range_j
        self.started = self.stopped = 0

    def availability(self):
        return (True, "ok") if self._ok else (False, "no such device here")

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1

    def read(self):
        t = self.clock()
        counters = {}
        for d, w in self.watts.items():
            if w is None:
                counters[d] = Counter(None, flag="read failed")
                continue
            e = w * t
            if self._rng:
                e = math.fmod(e, self._rng)
            counters[d] = Counter(e, self._rng)
        return Reading(t, counters)


def run(meter, clock, seconds, n, idle=None):
    with EnergyWindow(meter, idle, background_sampling=False) as w:
        clock.sleep(seconds)
    return w.result(n)


def test_gross_net_and_per_inference():
    c = Clock()
    m = ScriptMeter(c, {"package:0": 40.0, "dram:0": 5.0, "platform": 80.0, "gpu:0": 100.0})
    idle = measure_idle_power(m, 2.0, sleep=c.sleep)
    assert idle.watts["package:0"] == pytest.approx(40.0) and idle.duration_s == pytest.approx(2.0)
    m.watts = {"package:0": 60.0, "dram:0": 5.0, "platform": 80.0, "gpu:0": 150.0}
    c.t = 1000.0
    r = run(m, c, 2.0, 100, idle=idle)
    assert r.energy_j["package:0"] == pytest.approx(120.0)
    assert r.energy_j["platform"] == pytest.approx(160.0)          # reported, not summed
    assert r.energy_j_per_inference == pytest.approx((120 + 10 + 300) / 100)
    assert r.energy_j_per_inference_net == pytest.approx((430 - (40 + 5 + 100) * 2) / 100)
    assert r.method == "measured" and r.reason is None and r.flags == []
    assert m.started >= 2 and m.stopped >= 2


def test_idle_exceeding_window_power_is_flagged_not_clamped():
    c = Clock()
    m = ScriptMeter(c, {"package:0": 10.0})
    r = run(m, c, 1.0, 10, idle=IdlePower({"package:0": 30.0}, 2.0))
    assert r.energy_j_per_inference == pytest.approx(1.0)
    assert r.energy_j_per_inference_net == pytest.approx(-2.0)
    assert any("exceeds" in f for f in r.flags)


def test_zero_length_window_no_exception_no_zero_no_division():
    c = Clock()
    m = ScriptMeter(c, {"package:0": 50.0})
    w = EnergyWindow(m, IdlePower({"package:0": 5.0}, 1.0))
    assert w.min_duration_s == pytest.approx(0.01)
    with w:
        pass                                       # fake clock does not move: 0 s
    r = w.result(0)
    assert r.window_s == 0.0
    assert r.energy_j_per_inference is None and r.energy_j_per_inference_net is None
    assert r.energy_j == {"package:0": None}       # not 0.0
    assert any("shorter than 10×" in f for f in r.flags)
    assert r.reason
    # sub-resolution but non-zero, and positive n
    r2 = run(m, c, 0.005, 10)
    assert r2.energy_j_per_inference is None and r2.energy_j["package:0"] is None


def test_counter_that_did_not_advance_is_not_zero():
    c = Clock()
    m = ScriptMeter(c, {"gpu:0": 0.0, "package:0": 10.0})
    r = run(m, c, 1.0, 5)
    assert r.energy_j["gpu:0"] is None
    assert r.energy_j_per_inference is None
    assert any("did not advance" in f for f in r.flags)


def test_unavailable_meter():
    c = Clock()
    m = ScriptMeter(c, {"package:0": 1.0}, available=False)
    r = run(m, c, 1.0, 10)
    assert r.method == "unavailable" and r.reason == "no such device here"
    assert r.energy_j == {} and r.energy_j_per_inference is None
    row = r.row_fields()
    assert row["energy_method"] == "unavailable" and row["energy_j_per_inference"] is None
    idle = measure_idle_power(m, 1.0, sleep=c.sleep)
    assert idle.watts == {} and idle.flags


def test_failed_read_gives_none_not_zero():
    c = Clock()
    m = ScriptMeter(c, {"package:0": 10.0, "dram:0": None})
    r = run(m, c, 1.0, 1)
    assert r.energy_j["dram:0"] is None and r.energy_j["package:0"] == pytest.approx(10.0)
    assert r.energy_j_per_inference is None and "dram:0" in r.reason


def test_no_devices_at_all_is_none():
    c = Clock()
    m = ScriptMeter(c, {})
    r = run(m, c, 1.0, 1)
    assert r.energy_j_per_inference is None and r.reason


def test_n_inferences_zero_never_divides():
    c = Clock()
    r = run(ScriptMeter(c, {"package:0": 10.0}), c, 1.0, 0)
    assert r.energy_j["package:0"] == pytest.approx(10.0)
    assert r.energy_j_per_inference is None


def test_counter_delta_rules():
    assert counter_delta(Counter(5.0, 10.0), Counter(2.0, 10.0)) == (7.0, [])
    d, fl = counter_delta(Counter(5.0), Counter(2.0))
    assert d is None and fl
    d, fl = counter_delta(Counter(None), Counter(2.0))
    assert d is None and fl
    d, fl = counter_delta(Counter(1.0, None, "max unreadable"), Counter(2.0))
    assert d == 1.0 and fl == ["max unreadable"]


def test_mixed_methods_report_weakest():
    c = Clock()

    class Mixed(ScriptMeter):
        def read(self):
            r = super().read()
            return Reading(r.t_s, {"package:0": r.counters["package:0"],
                                   "gpu:0": Counter(r.counters["gpu:0"].energy_j,
                                                    method="power-poll")})

    r = run(Mixed(c, {"package:0": 10.0, "gpu:0": 100.0}), c, 1.0, 1)
    assert r.method == "power-poll"
    assert r.domain_methods == {"package:0": "measured", "gpu:0": "power-poll"}
    assert any("mixed methods" in f for f in r.flags)


def test_background_sampler_reads_inside_long_windows():
    import time
    m = ScriptMeter(time.monotonic, {"package:0": 10.0}, max_range_j=1e9, safe=0.02)
    with EnergyWindow(m) as w:
        time.sleep(0.06)
    assert w.sample_interval_s == pytest.approx(0.005)
    assert len(w.readings) >= 4
    assert w.result(1).energy_j["package:0"] == pytest.approx(10.0 * w.result(1).window_s)


def test_result_before_exit_raises_and_body_exceptions_propagate():
    c = Clock()
    w = EnergyWindow(ScriptMeter(c, {"package:0": 1.0}))
    with pytest.raises(RuntimeError):
        w.result(1)
    with pytest.raises(KeyError):
        with w:
            raise KeyError("x")
    assert isinstance(w.result(1), EnergyResult)


def test_row_fields_shape():
    c = Clock()
    r = run(ScriptMeter(c, {"package:0": 10.0}), c, 1.0, 2)
    row = r.row_fields()
    for k in ("energy_j_per_inference", "energy_j_per_inference_net", "energy_method",
              "energy_reason", "energy_window_s", "energy_flags", "energy_domains_j",
              "idle_power_w", "energy_meter", "energy_meter_method"):
        assert k in row
    assert row["energy_meter"] == "script" and row["idle_power_w"] is None


def test_readings_energy_domain_missing_midway():
    r0 = Reading(0, {"a": Counter(0.0)})
    r1 = Reading(1, {})
    r2 = Reading(2, {"a": Counter(2.0)})
    e, fl = readings_energy([r0, r1, r2])
    assert e == {"a": None} and fl


def test_method_rank_and_worst_method():
    assert ENERGY_METHODS == ("measured", "power-poll", "estimated", "unavailable")
    assert worst_method(["measured", "estimated", "power-poll"]) == "estimated"
    assert worst_method(["measured", None, ""]) == "measured"
    assert worst_method([]) == "unavailable"
    assert worst_method(["measured", "no-such-method"]) == "no-such-method"  # ranks as unavailable


def test_safe_availability_turns_an_exception_into_a_reason():
    class Raises:
        def availability(self):
            raise OSError("sysfs vanished")

    class Loose:
        def availability(self):
            return 1, None

    ok, reason = safe_availability(Raises())
    assert ok is False and "sysfs vanished" in reason
    assert safe_availability(Loose()) == (True, "None")


def test_window_result_is_the_window_arithmetic():
    """The pure function on the window's own readings gives the window's result."""
    c = Clock()
    m = ScriptMeter(c, {"package:0": 60.0, "dram:0": 5.0, "platform": 80.0})
    idle = IdlePower({"package:0": 40.0, "dram:0": 5.0}, 2.0)
    c.t = 10.0
    with EnergyWindow(m, idle, background_sampling=False) as w:
        c.sleep(1.0)
        w.sample()
        c.sleep(1.0)
    pure = window_result([w.readings], 100, meter_method=m.method, resolution_s=m.resolution_s,
                         max_safe_window_s=m.max_safe_window_s, idle_w=dict(idle.watts),
                         meter_info=m.describe())
    assert pure == w.result(100)
    assert pure.energy_j_per_inference == pytest.approx((120 + 10) / 100)
    assert pure.energy_j_per_inference_net == pytest.approx((130 - 45 * 2) / 100)
    assert window_result([w.readings[:1]], 5, meter_method="measured", resolution_s=0.001).energy_j_per_inference is None


def test_a_dram_zone_that_never_moves_leaves_the_sum_not_the_package():
    """Many client boards list a RAPL dram zone whose counter stays 0: it is not implemented, and
    the package's measured energy stands alone (flagged), where it was dropped with it."""
    c = Clock()
    r = run(ScriptMeter(c, {"package:0": 10.0, "dram:0": 0.0}), c, 1.0, 4)
    assert r.method == "measured" and r.energy_j_per_inference == pytest.approx(10.0 / 4)
    assert r.energy_j["dram:0"] is None and any("dram:0" in f and "left out of the sum" in f for f in r.flags)


def test_idle_power_of_a_counter_that_never_moves_is_unknown_not_zero():
    c = Clock()
    idle = measure_idle_power(ScriptMeter(c, {"package:0": 10.0, "dram:0": 0.0}), 1.0, sleep=c.sleep)
    assert idle.watts["package:0"] == pytest.approx(10.0) and idle.watts["dram:0"] is None
    assert any("dram:0" in f and "idle power unknown" in f for f in idle.flags)


@pytest.mark.parametrize("case", ["short", "no-inferences", "package-stuck"])
def test_a_window_without_a_value_is_unavailable_with_its_reason(case):
    c = Clock()
    watts = {"package:0": 0.0 if case == "package-stuck" else 10.0, "dram:0": 1.0}
    r = run(ScriptMeter(c, watts), c, 0.005 if case == "short" else 1.0, 0 if case == "no-inferences" else 4)
    assert r.energy_j_per_inference is None
    assert r.method == "unavailable" and r.reason
    assert r.row_fields()["energy_method"] == "unavailable"
    assert r.domain_methods["package:0"] == "measured"  # what each counter was stays recorded


def test_a_constant_power_meter_nets_to_zero_not_a_negative_flag():
    c = Clock()
    r = run(ScriptMeter(c, {"package:0": 50.0}), c, 0.3, 3, idle=IdlePower({"package:0": 50.0}, 2.0))
    assert r.energy_j_per_inference_net == 0.0 and not any("exceeds" in f for f in r.flags)


def test_visits_shorter_than_ten_resolutions_are_flagged():
    c = Clock()
    m = ScriptMeter(c, {"package:0": 10.0}, resolution_s=0.1)
    segments = []
    for _ in range(5):  # five interleaved visits of 0.2 s: 1 s in all, each under 10 × 0.1 s
        a = m.read()
        c.sleep(0.2)
        segments.append([a, m.read()])
        c.sleep(0.5)  # other cells' visits
    r = window_result(segments, 10, meter_method="measured", resolution_s=0.1)
    assert r.energy_j_per_inference == pytest.approx(1.0)
    assert any("5 of 5 visits are shorter" in f for f in r.flags)


def test_a_domain_dropping_out_in_a_later_visit_gives_no_value_not_an_error():
    """Visit 1 reads package and dram, visit 2 only package (a counter that went away): the sum
    is unknown, named, and the window still returns a result."""
    seg1 = [Reading(0.0, {"package:0": Counter(1.0), "dram:0": Counter(1.0)}),
            Reading(1.0, {"package:0": Counter(11.0), "dram:0": Counter(2.0)})]
    seg2 = [Reading(2.0, {"package:0": Counter(20.0)}), Reading(3.0, {"package:0": Counter(30.0)})]
    r = window_result([seg1, seg2], 10, meter_method="measured", resolution_s=0.001)
    assert r.energy_j_per_inference is None and r.method == "unavailable" and "dram:0" in r.reason
    assert r.domain_methods == {"package:0": "measured", "dram:0": "measured"}


@pytest.mark.parametrize("where, readings", [
    ("the last reading", [Reading(0.0, {"package:0": Counter(100.0), "dram:0": Counter(50.0), "gpu:0": Counter(10.0)}),
                          Reading(1.0, {"package:0": Counter(130.0), "gpu:0": Counter(210.0)})]),
    ("the first reading", [Reading(0.0, {"package:0": Counter(100.0)}),
                           Reading(1.0, {"package:0": Counter(130.0), "gpu:0": Counter(210.0)})]),
])
def test_a_summed_domain_missing_from_the_first_or_last_reading_is_no_value_not_left_out(where, readings):
    """A third-party meter that omits a domain at one end of the window: its joules are unknown,
    so the total is unknown and says which domain — not a smaller total labelled measured."""
    r = window_result([readings], 10, meter_method="measured", resolution_s=0.001)
    dom = "dram:0" if where == "the last reading" else "gpu:0"
    assert r.energy_j_per_inference is None and r.method == "unavailable" and dom in r.reason
    assert r.energy_j[dom] is None and f"{dom}: missing from {where}; value dropped" in r.flags
    assert r.energy_j["package:0"] == pytest.approx(30.0)


def test_a_domain_present_only_in_a_later_visit_is_no_value_not_left_out():
    """gpu:0 is read only in visit 2 (300 J): the total is unknown, not visit 1's package alone."""
    s1 = [Reading(0.0, {"package:0": Counter(0.0)}), Reading(1.0, {"package:0": Counter(10.0)})]
    s2 = [Reading(5.0, {"package:0": Counter(50.0), "gpu:0": Counter(0.0)}),
          Reading(6.0, {"package:0": Counter(60.0), "gpu:0": Counter(300.0)})]
    r = window_result([s1, s2], 2, meter_method="measured", resolution_s=0.001)
    assert r.energy_j_per_inference is None and r.method == "unavailable" and "gpu:0" in r.reason
    assert r.energy_j == {"package:0": pytest.approx(20.0), "gpu:0": None}
    assert "gpu:0: missing from visit 1; value dropped" in r.flags
    # the same domain on both visits adds up
    s1b = [Reading(0.0, {**s1[0].counters, "gpu:0": Counter(0.0)}), Reading(1.0, {**s1[1].counters, "gpu:0": Counter(100.0)})]
    r = window_result([s1b, s2], 2, meter_method="measured", resolution_s=0.001)
    assert r.method == "measured" and r.energy_j_per_inference == pytest.approx((20.0 + 400.0) / 2)


def test_idle_power_survives_a_meter_that_fails_to_start():
    class NoStart(ScriptMeter):
        def start(self):
            raise RuntimeError("driver gone")

    idle = measure_idle_power(NoStart(Clock(), {"package:0": 10.0}), 1.0, sleep=Clock().sleep)
    assert idle.watts == {} and "driver gone" in idle.flags[0]


def test_a_method_outside_the_vocabulary_gives_no_labelled_value():
    """A third-party meter calling its counters 'counter': no joules under a label we cannot vouch for."""
    c = Clock()
    r = run(ScriptMeter(c, {"package:0": 40.0}, method="counter"), c, 2.0, 10)
    assert r.energy_j_per_inference is None and r.method == "unavailable"
    assert "'counter'" in r.reason and "measured" in r.reason


def test_a_domain_whose_method_changes_inside_the_window_is_named_by_its_worst_reading():
    """codecarbon's GPU counter falls back to power polling and recovers between reads: a delta
    from a power-poll start to a measured end is no better than power-poll, and says so."""
    seg = [Reading(0.0, {"gpu": Counter(10.0, method="power-poll")}),
           Reading(1.0, {"gpu": Counter(60.0, method="power-poll")}),
           Reading(2.0, {"gpu": Counter(110.0, method="measured")})]
    r = window_result([seg], 10, meter_method="measured", resolution_s=0.1)
    assert r.method == "power-poll" and r.domain_methods == {"gpu": "power-poll"}
    assert r.energy_j_per_inference == pytest.approx(10.0)
    assert any("method changed inside the window (power-poll, measured)" in f for f in r.flags)


class WrongTypeMeter(ScriptMeter):
    """A third-party meter breaking the read() contract: ``bad(t)`` is what it returns."""

    name = "wrong-type"

    def __init__(self, clock, bad):
        super().__init__(clock, {})
        self.bad = bad

    def read(self):
        return self.bad(self.clock())


@pytest.mark.parametrize("bad, says", [
    (lambda t: 12.5, "read() returned float 12.5; it must return profiler.meters.base.Reading"),
    (lambda t: Reading(t, {"cpu": Counter(str(t))}), "domain 'cpu' with energy_j = str"),
    (lambda t: Reading(t, {"cpu": 3.0}), "domain 'cpu' as float 3.0"),
    (lambda t: Reading("now", {}), "t_s is str 'now'"),
])
def test_a_reading_of_the_wrong_type_is_unavailable_naming_the_meter(bad, says):
    from profiler.energy import VisitWindows

    c = Clock()
    m = WrongTypeMeter(c, bad)
    r = run(m, c, 1.0, 10)
    assert r.method == "unavailable" and r.energy_j_per_inference is None
    assert "meter 'wrong-type'" in r.reason and says in r.reason
    idle = measure_idle_power(m, 1.0, sleep=c.sleep)
    assert idle.watts == {} and "meter 'wrong-type'" in idle.flags[0] and says in idle.flags[0]
    v = VisitWindows(m)
    v.begin(), c.sleep(1.0), v.end()
    r = v.result(10)
    assert r.method == "unavailable" and says in r.reason


@pytest.mark.parametrize("value, word", [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_a_non_finite_counter_is_named_not_called_backwards(value, word):
    for pair in ((Counter(1.0), Counter(value)), (Counter(value), Counter(1.0)), (Counter(value), Counter(value))):
        d, fl = counter_delta(*pair)
        assert d is None and fl == [f"counter read {word}; value dropped"]
    d, fl = counter_delta(Counter(5.0, value), Counter(2.0))
    assert d is None and fl == [f"counter went backwards and its wrap range is {word}; value dropped"]
