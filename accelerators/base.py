"""The accelerator plugin interface.

An accelerator turns a (possibly pruned) model into a runnable module on some
execution path: torch fp32 eager, our sparse C kernels, INT8, ... The profiler
times whatever ``prepare`` returns; the returned module must accept the same
keyword inputs as a transformers sequence-classification model
(``input_ids``, ``attention_mask``, ``token_type_ids``) and return an object with
a ``logits`` attribute or a logits tensor.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Accelerator:
    """Base class. Subclasses set ``name`` and take their config as constructor keyword arguments."""

    name: ClassVar[str] = ""
    #: device the prepared module runs on ("cpu" or "cuda")
    device: ClassVar[str] = "cpu"

    def availability(self) -> tuple[bool, str]:
        """Return ``(ok, reason)``; ``reason`` explains why not when ``ok`` is False. Never raises."""
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], threads: int) -> nn.Module:
        """Return a new runnable module built from ``model``; ``model`` itself is never mutated.

        ``example`` is one timing batch (int64 tensors of shape (batch, seq_len)); ``threads`` is the
        intra-op thread count the module will be timed with.
        """
        raise NotImplementedError

    def row_fields(self) -> dict[str, Any]:
        """Extra flat fields recorded in every result row of this accelerator (after ``prepare``)."""
        return {}
