"""One-shot magnitude pruning (GMP in a single step): score |W|, one-shot schedule, any structure."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from pruners.base import ALL_ROLES, Sparsity, Progress, PruneReport, Pruner, check_sparsity, prunable_linears, validate_roles
from pruners.masks import MaskSet
from pruners.schedules import OneShot
from pruners.scores import MagnitudeScore
from pruners.structure import SCOPES, Scope, parse_structure


class MagnitudePruner(Pruner):
    """Zero the smallest-|W| fraction ``sparsity`` of the targeted encoder Linear weights, once:
    one-shot magnitude pruning (Han et al. 2015, "Learning both weights and connections for efficient
    neural networks"); a block structure ranks whole blocks by the L1 norm of their weights.

    Args:
        sparsity: fraction of targeted weights set to zero, in [0, 1).
        scope: ``"layer"`` (each matrix pruned to ``sparsity``) or ``"global"`` (one threshold
            over all targeted matrices).
        roles: layer roles to prune (see :data:`accelerators.roles.ROLE_PATTERNS`).
        structure: ``"unstructured"``, a block ``"1x4"``/``"4x1"`` (any ``RxC``, block score = L1
            norm), or ``"N:M"`` such as ``"2:4"`` (then ``sparsity`` must be ``1 − N/M``).
    """

    name = "magnitude"

    def __init__(self, sparsity: Sparsity = 0.9, scope: Scope = "layer", roles: Sequence[str] = ALL_ROLES, structure: str = "unstructured") -> None:
        self.sparsity = check_sparsity(sparsity)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of: {', '.join(SCOPES)} (got {scope!r})")
        self.scope = scope
        self.roles = validate_roles(roles)
        self.structure = parse_structure(structure)
        self.structure.check_sparsity(self.sparsity)
        self.schedule = OneShot(self.sparsity)

    def target_sparsity(self) -> float:
        return self.sparsity

    @torch.no_grad()
    def prune(self, model: nn.Module, task: Any = None, progress: Progress | None = None) -> PruneReport:
        layers = prunable_linears(model, self.roles)
        masks = MaskSet(layers)
        s = self.schedule.sparsity_at(0)
        masks.update(self.structure.masks(MagnitudeScore(layers).scores(), s, self.scope), sparsity=s)
        masks.squash()
        notes = {**self.schedule.describe(), "score": "magnitude", "scope": self.scope, "structure": self.structure.spec,
                 "training": None}
        notes["schedule"] = "one-shot"
        return masks.report(model, notes)
