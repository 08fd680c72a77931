"""Fakes shared by the meter tests."""
from __future__ import annotations


class Clock:
    """A monotonic clock in seconds that moves only when a test advances ``t`` or calls ``sleep``.

    Passed to meters and energy windows as their ``clock`` (and ``sleep``) so that power × time is exact.
    """

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
