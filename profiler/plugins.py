"""Fills the four registries by explicit import: the one place that lists every plugin."""
from __future__ import annotations

from accelerators.bf16 import BF16
from accelerators.cuda import Cuda24, CudaBF16, CudaFP16
from accelerators.int8_dynamic import Int8Dynamic
from accelerators.torch_fp32 import TorchFP32
from profiler.meters import METER_CLASSES
from profiler.registry import ACCELERATORS, METERS, PRUNERS, TASKS
from profiler.tasks.sst2 import SST2
from profiler.tasks.tiny_synthetic import TinySynthetic
from pruners.base import NoPruner
from pruners.gmp import GMPPruner
from pruners.magnitude import MagnitudePruner
from pruners.movement import MovementPruner

for _task in (SST2, TinySynthetic):
    TASKS.register(_task)
for _pruner in (NoPruner, MagnitudePruner, GMPPruner, MovementPruner):
    PRUNERS.register(_pruner)
for _acc in (TorchFP32, Int8Dynamic, BF16, CudaFP16, CudaBF16, Cuda24):
    ACCELERATORS.register(_acc)
for _meter in METER_CLASSES.values():
    METERS.register(_meter)


def _register_optional() -> None:
    """Plugins whose modules may be absent while they are being built."""
    import importlib

    for module, attr, registry in (
        ("accelerators.sparse_cpu", "SparseCPU", ACCELERATORS),
        ("accelerators.sparse_int8", "SparseInt8", ACCELERATORS),
    ):
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        for cls in obj if isinstance(obj, (list, tuple)) else [obj]:
            registry.register(cls)


_register_optional()

__all__ = ["ACCELERATORS", "METERS", "PRUNERS", "TASKS"]
