"""Sparsity schedules: *how much* to prune at each training step (the *which* lives in scores/structure).

Two schedules share one interface, ``sparsity_at(step)`` and ``is_update(step)``:

* :class:`OneShot` — the final sparsity at one step (the ``magnitude`` pruner is GMP in one shot).
* :class:`Cubic` — Zhu & Gupta 2017, "To prune, or not to prune" (arXiv:1710.01878), eq. (1)::

      s_t = s_f + (s_i − s_f) · (1 − (t − t0) / (n·Δt))³      for t ∈ {t0, t0+Δt, …, t0 + n·Δt}

  with initial sparsity ``s_i``, final sparsity ``s_f``, start step ``t0``, update interval ``Δt``
  and ``n·Δt = end_step − t0``. Between update steps the sparsity stays at the last update's value;
  before ``t0`` nothing is pruned (0); from ``end_step`` on it is exactly ``s_f`` (returned as the
  given float, never computed, so never above it). If ``end_step − t0`` is not a multiple of ``Δt``
  the end step is an extra update step, so the schedule always lands on ``s_f``.
"""
from __future__ import annotations

import math


def _check_fraction(name: str, v: float, upper_open: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise TypeError(f"{name} must be a number in [0, 1), got {v!r}")
    if not (0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1){'' if upper_open else ' or 1'}, got {v!r}")
    return float(v)


class Schedule:
    """Sparsity as a function of the optimizer step (0-based)."""

    final_sparsity: float

    def sparsity_at(self, step: int) -> float:
        raise NotImplementedError

    def is_update(self, step: int) -> bool:
        """True at the steps where masks are recomputed."""
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class OneShot(Schedule):
    """Sparsity ``sparsity`` from ``step`` on (one mask update at ``step``), 0 before."""

    def __init__(self, sparsity: float, step: int = 0) -> None:
        self.final_sparsity = _check_fraction("sparsity", sparsity)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.step = int(step)

    def sparsity_at(self, step: int) -> float:
        return self.final_sparsity if step >= self.step else 0.0

    def is_update(self, step: int) -> bool:
        return step == self.step

    def describe(self) -> dict:
        return {"schedule": "one-shot", "sparsity": self.final_sparsity, "step": self.step}


class Cubic(Schedule):
    """Zhu & Gupta 2017 cubic schedule (see module docstring for the equation).

    Args:
        initial_sparsity: ``s_i`` in [0, 1), applied at ``start_step``.
        final_sparsity: ``s_f`` in [0, 1), >= ``initial_sparsity``.
        start_step: ``t0`` (>= 0).
        end_step: ``t0 + n·Δt`` (> ``start_step``); sparsity is exactly ``s_f`` from here on.
        update_every: ``Δt`` (>= 1) steps between mask updates.
    """

    def __init__(self, initial_sparsity: float, final_sparsity: float, start_step: int, end_step: int, update_every: int = 1) -> None:
        self.initial_sparsity = _check_fraction("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_fraction("final_sparsity", final_sparsity)
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity ({initial_sparsity}) must be <= final sparsity ({final_sparsity})")
        if start_step < 0 or end_step <= start_step:
            raise ValueError(f"need 0 <= start_step < end_step, got start_step={start_step}, end_step={end_step}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.start_step, self.end_step, self.update_every = int(start_step), int(end_step), int(update_every)

    def sparsity_at(self, step: int) -> float:
        if step < self.start_step:
            return 0.0
        if step >= self.end_step:
            return self.final_sparsity
        t = self.start_step + (step - self.start_step) // self.update_every * self.update_every
        frac = (t - self.start_step) / (self.end_step - self.start_step)
        s = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - frac) ** 3
        return min(s, self.final_sparsity)

    def is_update(self, step: int) -> bool:
        if step < self.start_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.start_step) % self.update_every == 0

    def describe(self) -> dict:
        return {
            "schedule": "cubic (Zhu & Gupta 2017)", "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity, "start_step": self.start_step, "end_step": self.end_step,
            "update_every": self.update_every,
        }
