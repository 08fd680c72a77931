"""Movement pruning (Sanh, Wolf & Rush 2020): GMP's loop and schedule with movement scores.

Scores accumulate ``S ← S − W ⊙ ∂L/∂W`` after every backward pass (see :mod:`pruners.scores` for
the equations and the hard/soft variants). Pruning starts after ``start_frac`` of the steps so the
scores have seen gradients (the paper's initial warm-up); distillation is on by default, as in
the paper (T = 2, α = 0.9).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pruners.base import ALL_ROLES
from pruners.gmp import TrainingPruner
from pruners.scores import MovementScore, Score

VARIANTS = ("hard", "soft")


class MovementPruner(TrainingPruner):
    """Movement pruning. Parameters as :class:`pruners.gmp.TrainingPruner`, plus:

    Args:
        variant: ``"hard"`` (top-k of the scores per ``scope``) or ``"soft"`` (one global
            threshold τ on the scores, set to the schedule's sparsity quantile; ``scope`` must be
            ``"global"`` or is treated as global).
        start_frac: must be > 0 so scores accumulate before the first mask (default 0.1).
    """

    name = "movement"

    def __init__(
        self,
        sparsity: float = 0.9,
        initial_sparsity: float = 0.0,
        steps: int = 1000,
        start_frac: float = 0.1,
        end_frac: float = 0.7,
        update_every: int = 10,
        lr: float = 1e-4,
        batch_size: int = 32,
        warmup_steps: int = 0,
        weight_decay: float = 0.01,
        distill: bool = True,
        temperature: float = 2.0,
        alpha: float = 0.9,
        variant: str = "hard",
        structure: str = "unstructured",
        scope: str = "layer",
        roles: Sequence[str] = ALL_ROLES,
        seed: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of: {', '.join(VARIANTS)} (got {variant!r})")
        self.variant = variant
        super().__init__(
            sparsity=sparsity, initial_sparsity=initial_sparsity, steps=steps, start_frac=start_frac, end_frac=end_frac,
            update_every=update_every, lr=lr, batch_size=batch_size, warmup_steps=warmup_steps,
            weight_decay=weight_decay, distill=distill, temperature=temperature, alpha=alpha, structure=structure,
            scope=scope, roles=roles, seed=seed,
        )
        if self.start_step < 1:
            raise ValueError(f"start_frac must leave >= 1 step of score accumulation before pruning (start_frac·steps >= 1), got {start_frac!r}")

    def make_score(self, layers: dict[str, nn.Linear]) -> Score:
        return MovementScore(layers)

    def select(self, score: Score, sparsity: float) -> dict[str, torch.Tensor]:
        scope = "global" if self.variant == "soft" else self.scope
        return self.structure.masks(score.scores(), sparsity, scope)

    def describe(self) -> dict:
        d = super().describe()
        d["variant"] = self.variant
        if self.variant == "soft":
            d["scope"] = "global (soft: one threshold)"
        return d
