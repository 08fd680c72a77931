"""Dense bfloat16 on the CPU (oneDNN; AMX tiles where the CPU has amx_bf16)."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from accelerators.base import Accelerator


class _FloatLogits(nn.Module):
    """Runs a bf16 model and hands back fp32 logits, so metrics and comparisons see fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits.float()


class BF16(Accelerator):
    """The whole model cast to ``torch.bfloat16`` (weights and activations), fp32 logits out.

    Pruned zeros stay exact zeros in bf16, but dense bf16 kernels do not skip them.
    """

    name = "bf16"

    def availability(self) -> tuple[bool, str]:
        try:
            x = torch.ones(2, 2, dtype=torch.bfloat16)
            (x @ x).sum().item()
        except Exception as exc:
            return False, f"bf16 matmul not supported on this CPU/torch build: {exc}"
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], threads: int) -> nn.Module:
        return _FloatLogits(copy.deepcopy(model).to(torch.bfloat16).eval())

    def row_fields(self) -> dict[str, Any]:
        flags = ""
        try:
            flags = open("/proc/cpuinfo").read()
        except OSError:
            pass
        return {"bf16_amx": "amx_bf16" in flags}
