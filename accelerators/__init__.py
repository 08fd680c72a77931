"""Accelerator plugins: execution paths that turn a model into a faster runnable module."""
from accelerators.base import KERNEL_VARIANTS, Accelerator, PrepareSettings, Prepared, logits_of

__all__ = ["KERNEL_VARIANTS", "Accelerator", "PrepareSettings", "Prepared", "logits_of"]
