"""Pruner plugins: a score (|W|, movement) + a schedule (one-shot, cubic GMP) + a structure."""
from pruners.base import ALL_ROLES, NoPruner, PruneReport, Pruner, prunable_linears, sparsity_report
from pruners.magnitude import MagnitudePruner

__all__ = ["ALL_ROLES", "MagnitudePruner", "NoPruner", "PruneReport", "Pruner", "prunable_linears", "sparsity_report"]
