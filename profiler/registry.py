"""One registry per plugin kind: ``TASKS``, ``PRUNERS``, ``ACCELERATORS``, ``METERS``.

A plugin is a class with a ``name`` class attribute whose constructor keyword parameters *are*
its config. Registries are filled by explicit imports in :mod:`profiler.plugins` (built-ins,
then third-party classes from the ``sparsebench.plugins`` entry-point group); nothing registers
itself as a side effect of being imported. :meth:`Registry.describe` is what
``sparsebench plugins`` prints.
"""
from __future__ import annotations

import collections.abc
import inspect
import math
import re
import types
import typing
from typing import Any, Generic, TypeVar

from accelerators.params import Range, declared_ranges, range_problems
from profiler.errors import ConfigError

T = TypeVar("T")

#: :meth:`Registry.source` of the plugins that ship with sparsebench.
BUILT_IN = "built-in"


class Registry(Generic[T]):
    """Name → plugin class for one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str, section: str) -> None:
        """``kind``: singular noun for messages (``"accelerator"``); ``section``: the config
        table that names these plugins (``"accelerators"``)."""
        self.kind = kind
        self.section = section
        self._classes: dict[str, type[T]] = {}
        self._sources: dict[str, str] = {}

    def register(self, cls: type[T], source: str = BUILT_IN) -> type[T]:
        """Add ``cls`` under ``cls.name``; ``source`` says where it came from (:data:`BUILT_IN`,
        or a third-party distribution and entry point).

        Raises ValueError on an empty name, a name already taken by another class (the message
        names both classes and their sources), or a constructor parameter called ``name`` (the
        config key that selects the plugin: it could never be set).
        """
        name = getattr(cls, "name", "")
        if not name or not isinstance(name, str):
            raise ValueError(f"{cls.__qualname__} has no 'name' class attribute")
        if "name" in inspect.signature(cls.__init__).parameters:
            raise ValueError(f"{class_path(cls)}: a constructor parameter called 'name' could never be set (the config's "
                             "'name' selects the plugin); rename it")
        old = self._classes.get(name)
        if old is not None and old is not cls:
            raise ValueError(
                f"duplicate {self.kind} name {name!r}: {class_path(cls)} from {source} and "
                f"{class_path(old)} from {self._sources[name]}"
            )
        self._classes[name] = cls
        self._sources[name] = source
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def source(self, name: str) -> str:
        """Where plugin ``name`` came from: :data:`BUILT_IN` or ``"<distribution> (entry point <ep>)"``."""
        return self._sources[name]

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
        """Constructor annotations of plugin ``name`` with ``Annotated`` metadata stripped
        (``{}`` when one cannot be resolved: values are then left to the plugin to check).

        An unannotated parameter whose default is a bool, a number or a string takes its type from
        the default (a number default: any number, int or float), so a value of another type is
        refused before any work instead of reaching the plugin; other unannotated parameters
        accept anything.
        """
        hints = {p: _strip(h) for p, h in self._raw_hints(name).items()}
        for p, v in self.params(name).items():
            if p not in hints and v.annotation is inspect.Parameter.empty:
                inferred = _type_of_default(v.default)
                if inferred is not None:
                    hints[p] = inferred
        return hints

    def ranges(self, name: str) -> dict[str, Range]:
        """The :class:`~accelerators.params.Range` each numeric parameter declares
        (``Annotated[float, Range(0, 1)]``); parameters without one are absent."""
        return declared_ranges(self._classes[name].__init__)

    def _raw_hints(self, name: str) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self._classes[name].__init__, include_extras=True)
        except Exception:  # unresolvable annotation: values are left to the plugin to check
            return {}

    def describe(self, name: str) -> dict[str, Any]:
        """JSON-able description of plugin ``name``, taken from its class.

        Keys: ``kind``, ``section`` (config table), ``name``, ``summary`` (first line of the class
        docstring, ``""`` without one), ``class`` (``module.QualName``), ``source``, ``params``:
        one ``{"name", "type", "default", "required"}`` per config parameter (:meth:`params`),
        plus ``"range"`` (e.g. ``"[0, 1)"``) where the parameter declares one, ``"choices"`` where its
        annotation is a ``Literal`` (e.g. ``["machine", "process"]``), and ``"when_omitted"``
        where the class says what an omitted (None) parameter means (its ``when_omitted`` dict),
        ``type`` as written in the annotation (a ``Literal``: its values' type; unannotated: the type taken from the default, ``"bool"``,
        ``"number"`` or ``"str"``, with ``"type_from_default": true``; else ``"any"``), ``default`` made
        JSON-able (tuples as lists, other objects as their ``repr``), ``None`` when ``required``.
        Raises ConfigError for an unknown name.
        """
        cls = self.get(name)
        hints, ranges = self.hints(name), self.ranges(name)
        omitted = getattr(cls, "when_omitted", {})
        params = []
        for p, v in self.params(name).items():
            required = v.default is inspect.Parameter.empty
            params.append({
                "name": p,
                **({"type": "number" if hints[p] is float else type_name(hints[p]), "type_from_default": True}
                   if v.annotation is inspect.Parameter.empty and p in hints
                   else {"type": type_name(hints.get(p, _strip(v.annotation)))}),
                "default": None if required else _jsonable(v.default),
                "required": required,
                **({"range": str(ranges[p])} if p in ranges else {}),
                **({"choices": list(allowed)} if (allowed := choices(hints.get(p))) is not None else {}),
                **({"when_omitted": omitted[p]} if p in omitted else {}),
            })
        return {
            "kind": self.kind, "section": self.section, "name": name, "summary": summary(cls),
            "class": class_path(cls), "source": self._sources[name], "params": params,
        }

    def build(self, name: str, params: dict[str, Any], key: str) -> T:
        """Instantiate plugin ``name`` with ``params``.

        Every number must be finite and inside the range its parameter declares
        (:meth:`ranges`), checked before the constructor runs; the constructor checks what
        depends on several parameters.

        Raises:
            ConfigError: unknown name, unknown or missing parameter, a value of the wrong type,
                non-finite or out of its range (the range is in the message), not one of its
                ``Literal`` choices (the choices are in the message), a value the
                plugin rejects (its ValueError message is kept), or any other exception of its
                constructor, SystemExit included (named with the plugin's class and source),
                always naming ``key``.
        """
        cls = self.get(name, f"{key}.name")
        valid = self.params(name)
        for p in params:
            if p not in valid:
                names = ", ".join(sorted(valid)) or "(none)"
                raise ConfigError(
                    f"{key}.{p}: unknown parameter for {self.kind} {name!r}; valid parameters: {names}"
                )
        missing = [p for p, v in valid.items() if v.default is inspect.Parameter.empty and p not in params]
        if missing:
            raise ConfigError(f"{key}: {self.kind} {name!r} needs parameter(s) {', '.join(missing)}")
        hints = self.hints(name)
        for p, v in params.items():
            if p in hints and not matches(v, hints[p]):
                allowed = choices(hints[p])
                if allowed is not None:
                    raise ConfigError(f"{key}.{p}: must be one of {', '.join(map(str, allowed))} (got {v!r})")
                raise ConfigError(f"{key}.{p}: expected {describe(hints[p])}, got {v!r}")
        for p, problem in range_problems(cls.__init__, params)[:1]:
            raise ConfigError(f"{key}.{p}: {problem}")
        try:
            return cls(**params)
        except ValueError as exc:  # how a plugin rejects a value (docs/plugins.md): its message is the error
            raise ConfigError(f"{key}: {exc}") from None
        except (Exception, SystemExit) as exc:
            # a plugin's bug (a TypeError too: the types were checked above), not the config's; a sys.exit()
            # in it must not end sparsebench without a word. One line naming the key, the plugin and its class
            raise ConfigError(f"{key}: {self.kind} {name!r} ({class_path(cls)}; {self._sources.get(name, BUILT_IN)}) "
                              f"failed to construct: {type(exc).__name__}: {exc}") from None


def _type_of_default(default: Any) -> Any:
    """The type an unannotated parameter takes from its default (:meth:`Registry.hints`), or None."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float  # matches() takes any number for float
    return str if isinstance(default, str) else None


def _strip(hint: Any) -> Any:
    """``Annotated[T, ...]`` → ``T`` (also inside ``T | None``); other hints unchanged."""
    if typing.get_origin(hint) is typing.Annotated:
        return hint.__origin__
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = tuple(_strip(h) for h in typing.get_args(hint))
        return typing.Union[args]
    return hint


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
    if origin is typing.Literal:  # the type too: True == 1, yet true is no choice named 1
        return any(type(value) is type(c) and value == c for c in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in typing.get_args(hint))
    if origin in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def choices(hint: Any) -> tuple | None:
    """The values a ``Literal[...]`` annotation allows (also inside ``X | None``: None is then
    allowed too, as the annotation says), or None where the annotation declares no choices.

    A plugin whose choices are the keys of a table (``Literal[tuple(TABLE)]``) writes the names
    once: a static type checker cannot read such a computed Literal, this function can, and the
    config check is what needs it."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [c for h in typing.get_args(hint) if (c := choices(h)) is not None]
        return tuple(v for c in found for v in c) if found else None
    return None


def describe(hint: Any) -> str:
    if hint is type(None):
        return "none"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(hint)
        if not args:
            return "a list"
        item = describe(args[0])
        plural = {"an integer": "integers", "a number": "numbers", "a string": "strings", "true or false": "booleans"}
        return f"a list of {plural.get(item, item)}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, getattr(hint, "__name__", str(hint)))


def type_name(hint: Any) -> str:
    """An annotation as a user reads it: ``int``, ``float | None``, ``list[str]``; ``"any"`` if absent."""
    if hint is inspect.Parameter.empty or hint is Any:
        return "any"
    if isinstance(hint, str):
        return hint
    if hint is type(None):
        return "None"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(h) for h in typing.get_args(hint))
    if origin is typing.Literal:  # the values' type; describe() lists the values as "choices"
        return " | ".join(dict.fromkeys(type(a).__name__ for a in typing.get_args(hint)))
    if origin is not None:
        args = typing.get_args(hint)
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{', '.join(type_name(a) for a in args)}]" if args else base
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def summary(cls: type) -> str:
    """The summary line of a class's own docstring (not inherited): its first sentence, or its
    whole first paragraph when that has no full stop; ``""`` without a docstring."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    paragraph = " ".join(doc.split("\n\n", 1)[0].split())
    end = _SENTENCE_END.search(paragraph)
    return paragraph[: end.start() + 1] if end else paragraph


_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!vs)\.(?=\s|$)")


def class_path(cls: type) -> str:
    """``module.QualName`` of a class (what a user greps for)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no inf / nan
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v) for k, v in value.items()}
    return repr(value)


TASKS: Registry = Registry("task", "tasks")
PRUNERS: Registry = Registry("pruner", "pruners")
ACCELERATORS: Registry = Registry("accelerator", "accelerators")
METERS: Registry = Registry("energy meter", "meter")

#: Every registry, in the order the config and ``sparsebench plugins`` list them.
REGISTRIES: tuple[Registry, ...] = (TASKS, PRUNERS, ACCELERATORS, METERS)
