"""Movement pruning (Sanh, Wolf & Rush 2020): GMP's loop and schedule with movement scores.

Scores accumulate ``S ← S − W ⊙ ∂L/∂W`` after every backward pass (see :mod:`pruners.scores` for
the equations and the hard/soft variants). Pruning starts after ``start_frac`` of the steps so the
scores have seen gradients (the paper's initial warm-up); distillation is on by default, as in
the paper (T = 2, α = 0.9).

Where training starts (``init``): the paper prunes *while fine-tuning the pretrained model*
(the teacher is the fine-tuned dense model), and that is our default, ``init = "pretrained"``;
``"finetuned"`` starts from the dense fine-tuned model, like GMP.

Movement pruning needs a long training budget: masks taken from the scores with no training after
them are worse than random masks (the first-order criterion removes weights whose removal helps to
first order, but large weights cost through the second-order term), and the paper recovers from
that over ~10 epochs; with a budget of a few hundred steps the model can collapse to one class.
"""
from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from accelerators.params import Range
from pruners.gmp import TrainingPruner, _num, training_params
from pruners.scores import SCORE_OPTIMIZERS, MovementScore, Score

VARIANTS = ("hard", "soft")
INITS = ("pretrained", "finetuned")


class MovementPruner(TrainingPruner):
    """Movement pruning. Parameters as :class:`pruners.gmp.TrainingPruner` (but ``start_frac``
    defaults to 0.1 and ``distill`` to true), plus:

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
    cache_version = 2

    @training_params(start_frac=0.1, distill=True)
    def __init__(
        self,
        variant: str = "hard",
        init: str = "pretrained",
        score_optimizer: str = "adam",
        score_lr: Annotated[float, Range(0.0, 10.0, lo_open=True)] = 1e-2,
        **training: Any,
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
        super().__init__(**training)
        if self.start_step < 1:
            raise ValueError(f"start_frac must leave >= 1 step of score accumulation before pruning (start_frac·steps >= 1), got {training['start_frac']!r}")

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
