import os

import pytest

from profiler.contention import CpuSnapshot, other_busy_cpus, snapshot


def test_other_busy_cpus_subtracts_own_cpu_time():
    before = CpuSnapshot(t_s=10.0, machine_busy_s=100.0, own_s=5.0)
    after = CpuSnapshot(t_s=12.0, machine_busy_s=104.0, own_s=8.0)  # 4 CPU-s busy, 3 of them ours
    assert other_busy_cpus(before, after) == pytest.approx(0.5)


def test_unknown_or_empty_windows_give_none_never_a_division_by_zero():
    a = CpuSnapshot(1.0, None, 0.0)
    assert other_busy_cpus(a, a) is None
    b = CpuSnapshot(1.0, 5.0, 0.0)
    assert other_busy_cpus(b, b) is None


def test_real_snapshot_is_sane():
    s = snapshot()
    assert s.own_s >= 0 and (s.machine_busy_s is None or s.machine_busy_s > 0)


def test_busy_time_counts_only_the_cpus_the_run_may_use(tmp_path):
    """A process pinned to CPU 0 is not slowed by a busy CPU 1: only its own CPUs' lines count."""
    from profiler.contention import _busy_s

    stat = tmp_path / "stat"
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (clock ticks)
    stat.write_text("cpu  1100 0 100 800 50 0 0 0 0 0\n"
                    "cpu0 100 0 50 700 50 0 0 0 0 0\n"
                    "cpu1 1000 0 50 100 0 0 0 0 0 0\n"
                    "intr 1 2 3\n")
    tick = os.sysconf("SC_CLK_TCK")
    assert _busy_s(None, str(stat)) == pytest.approx(1200 / tick)
    assert _busy_s(frozenset({0}), str(stat)) == pytest.approx(150 / tick)
    assert _busy_s(frozenset({0, 1}), str(stat)) == pytest.approx(1200 / tick)
    assert _busy_s(frozenset({7}), str(stat)) is None  # a CPU the file does not list: unknown, not 0


def test_a_pinned_process_reads_its_own_cpus(monkeypatch):
    import profiler.contention as c

    monkeypatch.setattr(c.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(c.os, "cpu_count", lambda: 2)
    assert c._own_cpus() == frozenset({0})
    monkeypatch.setattr(c.os, "sched_getaffinity", lambda pid: {0, 1})
    assert c._own_cpus() is None
