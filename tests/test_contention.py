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
