"""Knowledge distillation from the dense fine-tuned teacher (Hinton et al. 2015), for any
training-time pruner::

    L = α · T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) ) + (1 − α) · L_task(z_s, y)

with teacher logits ``z_t``, student logits ``z_s``, temperature ``T`` and distillation weight
``α``. The T² factor keeps the soft-target gradients on the scale of the hard-target ones. The
teacher is a frozen deep copy of the dense model taken before pruning starts (eval mode, no
gradients). Movement pruning (Sanh et al. 2020) uses T = 2, α = 0.9.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from accelerators.base import logits_of as default_logits_of


def check_distill(temperature: float, alpha: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, task_loss: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·task_loss`` (KL averaged over the batch)."""
    T = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1), reduction="batchmean", log_target=True)
    return alpha * T * T * kl + (1.0 - alpha) * task_loss


class Distiller:
    """Holds the frozen teacher; ``loss(inputs, student_logits, task_loss)`` gives the mixed loss."""

    def __init__(self, dense: nn.Module, temperature: float = 2.0, alpha: float = 0.9, logits_of: Callable | None = None) -> None:
        check_distill(temperature, alpha)
        self.teacher = copy.deepcopy(dense).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha = float(temperature), float(alpha)
        self._logits_of = logits_of or default_logits_of

    def loss(self, inputs: dict[str, torch.Tensor], student_logits: torch.Tensor, task_loss: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = self._logits_of(self.teacher(**inputs)).float()
        return distill_loss(student_logits.float(), t, task_loss, self.temperature, self.alpha)
