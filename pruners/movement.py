"""Movement pruning (Sanh, Wolf & Rush 2020): GMP's loop and schedule with movement scores.

Scores accumulate ``S ← S − W ⊙ ∂L/∂W`` after every backward pass (see :mod:`pruners.scores` for
the equations and the hard/soft variants). Pruning starts after ``start_frac`` of the steps so the
scores have seen gradients (the paper's initial warm-up); distillation is on by default, as in
the paper (T = 2, α = 0.9).

Where training starts (``init``): the paper prunes *while fine-tuning the pretrained model*
(the teacher is the fine-tuned dense model), and that is our default, ``init = "pretrained"``;
``"finetuned"`` starts from the dense fine-tuned model, like GMP.

Measured on SST-2 / MiniLM at 600 steps (README, "Training-time pruners"): every combination we
ran (pretrained or fine-tuned start, Adam-stepped or summed scores) collapsed to one class at 80 to
97 %. Masks taken from the scores with no training after them are already worse than random
masks: the first-order criterion removes weights whose removal helps to first order, but large
weights cost through the second-order term, and the paper recovers from that over ~10 epochs.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from pruners.base import ALL_ROLES
from pruners.gmp import TrainingPruner, _num
from pruners.scores import SCORE_OPTIMIZERS, MovementScore, Score

VARIANTS = ("hard", "soft")
INITS = ("pretrained", "finetuned")


class MovementPruner(TrainingPruner):
    """Movement pruning. Parameters as :class:`pruners.gmp.TrainingPruner`, plus:

    Args:
        variant: ``"hard"`` (top-k of the scores per ``scope``) or ``"soft"`` (one global
            threshold τ on the scores, set to the schedule's sparsity quantile; ``scope`` must be
            ``"global"`` or is treated as global).
        start_frac: must be > 0 so scores accumulate before the first mask (default 0.1).
        init: ``"pretrained"`` (default, as in the paper: the student restarts from the task's
            pretrained model with a new head and is fine-tuned while pruned, distilled from the
            dense fine-tuned model) or ``"finetuned"`` (the student starts from the dense
            fine-tuned model, like GMP).
        score_optimizer: ``"adam"`` (default, as in the paper) or ``"sum"`` (plain accumulation);
            see :mod:`pruners.scores`.
        score_lr: the score learning rate α_S of ``"adam"`` (default 1e-2, the paper's).
    """

    name = "movement"
    cache_version = 2  # 2: pretrained start, latent values of pruned weights, Adam-stepped scores

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
        init: str = "pretrained",
        score_optimizer: str = "adam",
        score_lr: float = 1e-2,
        structure: str = "unstructured",
        scope: str = "layer",
        roles: Sequence[str] = ALL_ROLES,
        seed: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of: {', '.join(VARIANTS)} (got {variant!r})")
        self.variant = variant
        if init not in INITS:
            raise ValueError(f"init must be one of: {', '.join(INITS)} (got {init!r})")
        self.init = init
        if score_optimizer not in SCORE_OPTIMIZERS:
            raise ValueError(f"score_optimizer must be one of: {', '.join(SCORE_OPTIMIZERS)} (got {score_optimizer!r})")
        self.score_optimizer = score_optimizer
        self.score_lr = _num("score_lr", score_lr, 0.0, 10.0, lo_open=True)
        super().__init__(
            sparsity=sparsity, initial_sparsity=initial_sparsity, steps=steps, start_frac=start_frac, end_frac=end_frac,
            update_every=update_every, lr=lr, batch_size=batch_size, warmup_steps=warmup_steps,
            weight_decay=weight_decay, distill=distill, temperature=temperature, alpha=alpha, structure=structure,
            scope=scope, roles=roles, seed=seed,
        )
        if self.start_step < 1:
            raise ValueError(f"start_frac must leave >= 1 step of score accumulation before pruning (start_frac·steps >= 1), got {start_frac!r}")

    def init_student(self, model: nn.Module, task: Any) -> None:
        if self.init == "pretrained":
            model.load_state_dict(task.base_model().state_dict())

    def make_score(self, layers: dict[str, nn.Linear]) -> Score:
        return MovementScore(layers, self.score_optimizer, self.score_lr)

    def select(self, score: Score, sparsity: float) -> dict[str, torch.Tensor]:
        scope = "global" if self.variant == "soft" else self.scope
        return self.structure.masks(score.scores(), sparsity, scope)

    def describe(self) -> dict:
        d = super().describe()
        d["variant"] = self.variant
        d["init"] = self.init
        if self.variant == "soft":
            d["scope"] = "global (soft: one threshold)"
        return d
