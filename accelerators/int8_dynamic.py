"""Dense INT8 through PyTorch dynamic quantization of Linear layers."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from accelerators.base import Accelerator

ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


class Int8Dynamic(Accelerator):
    """``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (weights INT8 per tensor,
    activations quantized dynamically per batch); embeddings and LayerNorm stay fp32.

    Args:
        engine: quantized engine (``torch.backends.quantized.engine``): one of x86, fbgemm, onednn, qnnpack.
    """

    name = "int8-dynamic"

    def __init__(self, engine: str = "x86") -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of: {', '.join(ENGINES)} (got {engine!r})")
        self.engine = engine

    def availability(self) -> tuple[bool, str]:
        try:
            from torch.ao.quantization import quantize_dynamic  # noqa: F401
        except Exception as exc:  # API removed in a future torch
            return False, f"torch.ao.quantization.quantize_dynamic unavailable: {exc}"
        engines = torch.backends.quantized.supported_engines
        if self.engine not in engines:
            return False, f"quantized engine {self.engine!r} not supported by this torch build (supported: {', '.join(engines)})"
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], threads: int) -> nn.Module:
        import warnings

        from torch.ao.quantization import quantize_dynamic

        torch.backends.quantized.engine = self.engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the API is deprecated in this torch; still the reference path
            return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)

    def row_fields(self) -> dict[str, Any]:
        return {"quant_engine": self.engine, "quant_scope": "all nn.Linear (encoder, pooler, classifier); embeddings fp32"}
