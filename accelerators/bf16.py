"""Dense bfloat16 on the CPU (oneDNN; AMX tiles where the CPU has amx_bf16)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from accelerators.base import Accelerator, PrepareSettings, Prepared, bf16_native, cpu_flags, logits_of


class _FloatLogits(nn.Module):
    """Runs a bf16 model and hands back fp32 logits, so metrics and comparisons see fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(**inputs)).float()


class BF16(Accelerator):
    """The whole model cast to ``torch.bfloat16`` (weights and activations), fp32 logits out.

    Pruned zeros stay exact zeros in bf16, but dense bf16 kernels do not skip them. The row says
    whether the CPU has native bf16 dot products (``bf16_native``: avx512_bf16 or amx_bf16) and AMX
    tiles (``bf16_amx``); without native bf16, oneDNN emulates it and the cell is slower than fp32.
    """

    name = "bf16"
    compute_precision = "bf16"

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        try:
            x = torch.ones(2, 2, dtype=torch.bfloat16)
            (x @ x).sum().item()
        except Exception as exc:
            return False, f"bf16 matmul not supported on this CPU/torch build: {exc}"
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        return Prepared(_FloatLogits(copy.deepcopy(model).to(torch.bfloat16).eval()),
                        {"bf16_native": bf16_native(), "bf16_amx": "amx_bf16" in cpu_flags()})

