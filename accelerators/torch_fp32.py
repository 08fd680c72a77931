"""The dense fp32 eager baseline every savings factor divides by."""
from __future__ import annotations

import copy

import torch
from torch import nn

from accelerators.base import Accelerator, PrepareSettings, Prepared


class TorchFP32(Accelerator):
    """PyTorch eager fp32 on the CPU: a deep copy of the model in eval mode."""

    name = "torch-fp32"
    compute_precision = "fp32"

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        return Prepared(copy.deepcopy(model).eval(), {})
