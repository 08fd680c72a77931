"""Fills the four registries: the built-in plugins by explicit import, then third-party plugins.

Third-party plugins
-------------------
A distribution adds plugins through the entry-point group ``sparsebench.plugins``. **Each entry
point names one plugin class**; a package with several plugins declares several entry points::

    # pyproject.toml of the third-party package
    [project.entry-points."sparsebench.plugins"]
    my-accelerator = "my_package.accel:MyAccelerator"
    my-pruner = "my_package.prune:MyPruner"

The kind is decided by the class's base: a subclass of
:class:`~profiler.tasks.base.Task` is a task, of :class:`~pruners.base.Pruner` a pruner, of
:class:`~accelerators.base.Accelerator` an accelerator, of
:class:`~profiler.meters.base.EnergyMeter` an energy meter. The class's ``name`` attribute (not
the entry point's name) is the name a config uses, and its constructor's parameters are its config,
exactly as for built-ins; ``sparsebench plugins`` lists it with its distribution.

Loading never stops sparsebench: an entry point that fails to import, names something that is
not a plugin class, takes a name already registered (a built-in or another distribution's
plugin), or that the registry refuses (a constructor parameter called ``name``) is skipped with a :class:`PluginWarning` naming the distribution and the entry point
(and, for a name clash, both classes). The messages are kept in :data:`LOAD_PROBLEMS`.
"""
from __future__ import annotations

import importlib.metadata
import warnings
from typing import Any, Iterable

from accelerators.base import Accelerator
from accelerators.bf16 import BF16
from accelerators.cuda import Cuda24, CudaBF16, CudaFP16
from accelerators.int8_dynamic import Int8Dynamic
from accelerators.null import NullAccelerator
from accelerators.peer_onnxruntime import ONNXRuntime
from accelerators.peer_openvino import OpenVINO
from accelerators.sparse_cpu import SparseCPU
from accelerators.sparse_int8 import SparseInt8
from accelerators.torch_fp32 import TorchFP32
from profiler.errors import PluginWarning
from profiler.meters import METER_CLASSES
from profiler.meters.base import EnergyMeter
from profiler.registry import ACCELERATORS, METERS, PRUNERS, REGISTRIES, TASKS, Registry, class_path
from profiler.tasks.base import Task
from profiler.tasks.glue import MRPC, STSB
from profiler.tasks.sst2 import SST2
from profiler.tasks.text_classification import TextClassification
from profiler.tasks.tiny_synthetic import TinySynthetic
from pruners.base import NoPruner, Pruner
from pruners.gmp import GMPPruner
from pruners.magnitude import MagnitudePruner
from pruners.movement import MovementPruner
from pruners.obs import OBSPruner

#: The entry-point group third-party distributions register plugin classes under.
ENTRY_POINT_GROUP = "sparsebench.plugins"

#: Plugin base class → the registry its subclasses go to.
KIND_BASES: tuple[tuple[type, Registry], ...] = (
    (Task, TASKS), (Pruner, PRUNERS), (Accelerator, ACCELERATORS), (EnergyMeter, METERS),
)


for _task in (SST2, MRPC, STSB, TextClassification, TinySynthetic):
    TASKS.register(_task)
for _pruner in (NoPruner, MagnitudePruner, GMPPruner, MovementPruner, OBSPruner):
    PRUNERS.register(_pruner)
for _acc in (TorchFP32, SparseCPU, Int8Dynamic, SparseInt8, BF16, OpenVINO, ONNXRuntime, CudaFP16, CudaBF16, Cuda24,
             NullAccelerator):
    ACCELERATORS.register(_acc)
for _meter in METER_CLASSES.values():
    METERS.register(_meter)


def _origin(ep: Any) -> str:
    """``"distribution 'foo' 1.2 (entry point 'bar = foo.mod:Cls')"`` for messages and sources."""
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    version = getattr(dist, "version", None) if dist is not None else None
    who = f"distribution {name!r}" + (f" {version}" if version else "") if name else "an unknown distribution"
    return f"{who} (entry point {ep.name!r} = {ep.value!r})"


def _registry_for(obj: Any) -> Registry | None:
    if isinstance(obj, type):
        for base, registry in KIND_BASES:
            if issubclass(obj, base) and obj is not base:
                return registry
    return None


def load_entry_point(ep: Any) -> str | None:
    """Register the plugin class one entry point names; return ``None``, or why it was skipped.

    Never raises for a broken plugin: import errors (``sys.exit()`` at import included), non-plugin
    objects, name clashes and classes the registry refuses (a constructor parameter called
    ``name``) come back as one sentence naming the distribution and the entry point.
    """
    origin = _origin(ep)
    try:
        obj = ep.load()
    except (Exception, SystemExit) as e:  # any import-time error of someone else's package, sys.exit() too
        return f"{ENTRY_POINT_GROUP}: {origin} failed to load: {type(e).__name__}: {e}"
    registry = _registry_for(obj)
    if registry is None:
        bases = ", ".join(class_path(b) for b, _ in KIND_BASES)
        return (f"{ENTRY_POINT_GROUP}: {origin} names {obj!r}, which is not a subclass of a plugin "
                f"base ({bases}); skipped")
    name = getattr(obj, "name", "")
    if not name or not isinstance(name, str):
        return f"{ENTRY_POINT_GROUP}: {origin}: {class_path(obj)} has no 'name' class attribute; skipped"
    if name in registry:
        old = registry.get(name)
        if old is obj:
            return None
        return (f"{ENTRY_POINT_GROUP}: {origin}: {registry.kind} name {name!r} of {class_path(obj)} is "
                f"already taken by {class_path(old)} ({registry.source(name)}); {class_path(obj)} "
                f"was not loaded: give it another name")
    try:
        registry.register(obj, source=origin)
    except ValueError as e:  # e.g. a constructor parameter called 'name': this plugin only, not sparsebench
        return f"{ENTRY_POINT_GROUP}: {origin}: {e}; skipped"
    return None


def load_entry_points(eps: Iterable[Any] | None = None) -> list[str]:
    """Register every plugin of the :data:`ENTRY_POINT_GROUP` entry points (``eps`` for tests).

    Returns the problems (one sentence each; also appended to :data:`LOAD_PROBLEMS` and emitted
    as :class:`PluginWarning`). Calling it again for already-registered classes does nothing.
    """
    problems: list[str] = []
    if eps is None:
        try:
            eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception as e:  # damaged installed metadata must not stop sparsebench
            eps = []
            problems.append(f"{ENTRY_POINT_GROUP}: reading installed entry points failed: {e!r}")
    for ep in eps:
        problem = load_entry_point(ep)
        if problem:
            problems.append(problem)
    for problem in problems:
        if problem not in LOAD_PROBLEMS:
            LOAD_PROBLEMS.append(problem)
            warnings.warn(problem, PluginWarning, stacklevel=2)
    return problems


#: Why each skipped third-party entry point was skipped (one sentence each).
LOAD_PROBLEMS: list[str] = []

load_entry_points()

__all__ = [
    "ACCELERATORS", "ENTRY_POINT_GROUP", "LOAD_PROBLEMS", "METERS", "PRUNERS", "PluginWarning",
    "REGISTRIES", "TASKS", "load_entry_points",
]
