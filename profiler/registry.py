"""One registry per plugin kind: ``TASKS``, ``PRUNERS``, ``ACCELERATORS``, ``METERS``.

A plugin is a class with a ``name`` class attribute whose constructor keyword parameters *are*
its config. Registries are filled by explicit imports in :mod:`profiler.plugins`; nothing
registers itself as a side effect of being imported.
"""
from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, Generic, TypeVar

from profiler.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → plugin class for one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Add ``cls`` under ``cls.name``. Raises ValueError on an empty or duplicate name."""
        name = getattr(cls, "name", "")
        if not name:
            raise ValueError(f"{cls.__qualname__} has no 'name' class attribute")
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str, key: str = "name") -> type[T]:
        """Return the class registered as ``name``; ConfigError naming ``key`` and the choices otherwise."""
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"{key}: unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def params(self, name: str) -> dict[str, inspect.Parameter]:
        """Constructor parameters of plugin ``name`` that form its config schema.

        Keyword-only parameters (after ``*``) are injection hooks for tests (fake clocks, fake
        sysfs readers, fake NVML modules) and are not config keys.
        """
        sig = inspect.signature(self._classes[name].__init__)
        return {p.name: p for p in list(sig.parameters.values())[1:] if p.kind == p.POSITIONAL_OR_KEYWORD}

    def hints(self, name: str) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self._classes[name].__init__)
        except Exception:  # unresolvable annotation: values are left to the plugin to check
            return {}

    def build(self, name: str, params: dict[str, Any], key: str) -> T:
        """Instantiate plugin ``name`` with ``params``.

        Raises:
            ConfigError: unknown name, unknown or missing parameter, or a value the plugin rejects
                (its ValueError/TypeError message is kept), always naming ``key``.
        """
        cls = self.get(name, f"{key}.name")
        valid = self.params(name)
        for p in params:
            if p not in valid:
                choices = ", ".join(sorted(valid)) or "(none)"
                raise ConfigError(
                    f"{key}.{p}: unknown parameter for {self.kind} {name!r}; valid parameters: {choices}"
                )
        missing = [p for p, v in valid.items() if v.default is inspect.Parameter.empty and p not in params]
        if missing:
            raise ConfigError(f"{key}: {self.kind} {name!r} needs parameter(s) {', '.join(missing)}")
        hints = self.hints(name)
        for p, v in params.items():
            if p in hints and not matches(v, hints[p]):
                raise ConfigError(f"{key}.{p}: expected {describe(hints[p])}, got {v!r}")
        try:
            return cls(**params)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{key}: {exc}") from None


def matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a constructor annotation (int, float, str, bool, ``X | None``,
    sequences of those). Unknown annotations accept anything; the plugin checks those."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in typing.get_args(hint))
    if origin in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def describe(hint: Any) -> str:
    if hint is type(None):
        return "none"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(hint)
        return f"a list of {describe(args[0])}" if args else "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, getattr(hint, "__name__", str(hint)))


TASKS: Registry = Registry("task")
PRUNERS: Registry = Registry("pruner")
ACCELERATORS: Registry = Registry("accelerator")
METERS: Registry = Registry("energy meter")
