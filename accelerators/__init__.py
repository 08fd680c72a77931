"""Accelerator plugins: execution paths that turn a model into a faster runnable module."""
from accelerators.base import Accelerator

__all__ = ["Accelerator"]
