"""Declared ranges of numeric plugin parameters: ``Annotated[float, Range(0, 1)]``.

A plugin writes the range once, in its constructor's annotation; the plugin registry
(:meth:`profiler.registry.Registry.build`) enforces it (and finiteness, for every number) before
the constructor runs, and ``sparsebench plugins`` shows it. It lives in the lowest layer so that
pruners, accelerators and meters can all declare ranges without importing the profiler.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Range:
    """Closed interval ``[lo, hi]`` by default; ``lo_open`` / ``hi_open`` exclude an end; ``None``
    leaves that side unbounded. Applies to a number, or to each number of a list."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else _num(self.lo)
        hi = "inf" if self.hi is None else _num(self.hi)
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

    def contains(self, value: float) -> bool:
        """Whether ``value`` (a finite number) lies in the range."""
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def number_problem(value: Any, rng: Range | None) -> str | None:
    """Why ``value`` is not an acceptable number for a parameter declared with ``rng`` (None: any
    finite number), or None when it is. Bools and non-numbers are left to the type check."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number{f' in {rng}' if rng else ''}, got {value!r}"
    if rng is not None and not rng.contains(value):
        return f"must be in {rng}, got {value!r}"
    return None


def range_of(metadata: tuple) -> Range | None:
    """The :class:`Range` among an ``Annotated`` type's metadata, or None."""
    return next((m for m in metadata if isinstance(m, Range)), None)


def declared_range(hint: Any) -> Range | None:
    """The Range declared in an annotation (``Annotated[...]``, possibly inside ``X | None``)."""
    if typing.get_origin(hint) is typing.Annotated:
        return range_of(hint.__metadata__)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((r for r in map(declared_range, typing.get_args(hint)) if r is not None), None)
    return None


def declared_ranges(func: Callable) -> dict[str, Range]:
    """Parameter → Range of every parameter of ``func`` that declares one; ``{}`` when its
    annotations cannot be resolved."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # an unresolvable annotation declares nothing we can enforce
        return {}
    found = {p: declared_range(h) for p, h in hints.items()}
    return {p: r for p, r in found.items() if r is not None}


def range_problems(func: Callable, values: dict[str, Any]) -> list[tuple[str, str]]:
    """``(parameter, problem)`` for each value (or list item) of ``values`` that is non-finite or
    outside the range its parameter of ``func`` declares; ``[]`` when all are fine."""
    ranges = declared_ranges(func)
    out = []
    for p, v in values.items():
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            problem = number_problem(item, ranges.get(p))
            if problem:
                out.append((p, problem))
                break
    return out


def check_ranges(func: Callable, values: dict[str, Any]) -> None:
    """For a plugin constructed directly (not through the registry): ValueError naming the first
    parameter of ``values`` that breaks its declared range (see :func:`range_problems`)."""
    problems = range_problems(func, values)
    if problems:
        raise ValueError(f"{problems[0][0]} {problems[0][1]}")
