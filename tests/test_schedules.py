"""Golden values of the one-shot and cubic (Zhu & Gupta 2017) schedules."""
import pytest

from pruners.schedules import Cubic, OneShot


def test_cubic_golden_values():
    s = Cubic(initial_sparsity=0.0, final_sparsity=0.9, start_step=0, end_step=100, update_every=10)
    assert s.sparsity_at(0) == 0.0  # start: s_i
    assert s.sparsity_at(50) == pytest.approx(0.9 - 0.9 * 0.5**3)  # middle: 0.7875
    assert s.sparsity_at(55) == s.sparsity_at(50)  # held between updates
    assert s.sparsity_at(20) == pytest.approx(0.9 - 0.9 * 0.8**3)  # 0.4392
    assert s.sparsity_at(100) == 0.9  # end: exactly s_f
    assert s.sparsity_at(10_000) == 0.9


def test_cubic_with_initial_sparsity_and_offset_start():
    s = Cubic(0.5, 0.9, start_step=10, end_step=110, update_every=1)
    assert s.sparsity_at(9) == 0.0  # before t0 nothing is pruned
    assert s.sparsity_at(10) == 0.5
    assert s.sparsity_at(60) == pytest.approx(0.9 - 0.4 * 0.5**3)  # 0.85
    assert s.sparsity_at(110) == 0.9


@pytest.mark.parametrize("sf", [0.8, 0.9, 0.95, 0.97, 0.1 + 0.2])
def test_cubic_never_above_final_and_monotone(sf):
    s = Cubic(0.0, sf, 3, 700, 7)
    vals = [s.sparsity_at(t) for t in range(800)]
    assert max(vals) == sf and vals[-1] == sf
    assert all(b >= a for a, b in zip(vals, vals[1:]))


def test_cubic_update_steps_include_end():
    s = Cubic(0.0, 0.9, 0, 25, 10)  # 25 is not a multiple of 10: the end is an extra update
    assert [t for t in range(40) if s.is_update(t)] == [0, 10, 20, 25]
    assert s.sparsity_at(25) == 0.9


def test_one_shot():
    s = OneShot(0.9, step=3)
    assert [s.sparsity_at(t) for t in (0, 3, 9)] == [0.0, 0.9, 0.9]
    assert [t for t in range(6) if s.is_update(t)] == [3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(initial_sparsity=0.95, final_sparsity=0.9, start_step=0, end_step=10), "initial_sparsity"),
        (dict(initial_sparsity=0.0, final_sparsity=1.0, start_step=0, end_step=10), "final_sparsity"),
        (dict(initial_sparsity=0.0, final_sparsity=0.9, start_step=5, end_step=5), "start_step"),
        (dict(initial_sparsity=0.0, final_sparsity=0.9, start_step=0, end_step=5, update_every=0), "update_every"),
    ],
)
def test_cubic_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Cubic(**kwargs)
