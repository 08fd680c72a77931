"""``null``: a system under test that does no work, to measure the harness itself.

MLPerf LoadGen's null SUT: what the timing loop costs per call (the Python call, the inputs
dictionary, ``logits_of``, the clock reads) is the latency of a module that returns a constant.
The runner times it once per run and records it in the manifest, so every latency can be read
against the floor the harness adds to it.
"""
from __future__ import annotations

import torch
from torch import nn

from accelerators.base import Accelerator, Prepared, PrepareSettings


class ConstantLogits(nn.Module):
    """Returns the same preallocated logits tensor, shape (batch, num_labels) float32, zeros,
    whatever the inputs; batch follows ``input_ids.shape[0]`` (a new tensor only when it changes)."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_labels = int(num_labels)
        self._out = torch.zeros(1, self.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        if self._out.shape[0] != input_ids.shape[0]:
            self._out = torch.zeros(input_ids.shape[0], self.num_labels)
        return self._out


class NullAccelerator(Accelerator):
    """No computation: constant zero logits. Its latency is the harness's per-call overhead; its
    accuracy is that of always predicting class 0 (or 0.0 for a regression head)."""

    name = "null"
    compute_precision = "none"

    def __init__(self) -> None:
        pass

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        num_labels = int(getattr(getattr(model, "config", None), "num_labels", 2) or 2)
        return Prepared(ConstantLogits(num_labels), {})
