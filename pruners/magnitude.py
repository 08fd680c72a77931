"""One-shot magnitude pruning (GMP in a single step)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from pruners.base import ALL_ROLES, PruneReport, Pruner, check_sparsity, magnitude_masks, prunable_linears, sparsity_report, validate_roles


class MagnitudePruner(Pruner):
    """Zero the smallest-|W| fraction ``sparsity`` of the targeted encoder Linear weights, once.

    Args:
        sparsity: fraction of targeted weights set to zero, in [0, 1).
        scope: ``"layer"`` (each matrix pruned to ``sparsity``) or ``"global"`` (one threshold
            over all targeted matrices).
        roles: layer roles to prune (see :data:`pruners.base.ROLE_PATTERNS`).
    """

    name = "magnitude"

    def __init__(self, sparsity: float = 0.9, scope: str = "layer", roles: Sequence[str] = ALL_ROLES) -> None:
        self.sparsity = check_sparsity(sparsity)
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be one of: layer, global (got {scope!r})")
        self.scope = scope
        self.roles = validate_roles(roles)

    def target_sparsity(self) -> float:
        return self.sparsity

    @torch.no_grad()
    def prune(self, model: nn.Module, task: Any = None) -> PruneReport:
        layers = prunable_linears(model, self.roles)
        masks = magnitude_masks({n: l.weight for n, l in layers.items()}, self.sparsity, self.scope)
        for n, lin in layers.items():
            lin.weight.mul_(masks[n])
        return sparsity_report(model, self.roles, notes={"schedule": "one-shot", "score": "magnitude", "scope": self.scope})
