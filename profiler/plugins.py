"""Fills the four registries by explicit import: the one place that lists every plugin."""
from __future__ import annotations

from accelerators.bf16 import BF16
from accelerators.cuda import Cuda24, CudaBF16, CudaFP16
from accelerators.int8_dynamic import Int8Dynamic
from accelerators.sparse_cpu import SparseCPU
from accelerators.sparse_int8 import SparseInt8
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
for _acc in (TorchFP32, SparseCPU, Int8Dynamic, SparseInt8, BF16, CudaFP16, CudaBF16, Cuda24):
    ACCELERATORS.register(_acc)
for _meter in METER_CLASSES.values():
    METERS.register(_meter)

__all__ = ["ACCELERATORS", "METERS", "PRUNERS", "TASKS"]
