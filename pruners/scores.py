"""Scores: *which* weights matter (higher score = keep). A pruner is a score + a schedule + a structure.

Magnitude (Han et al. 2015; Zhu & Gupta 2017)::

    S = |W|

Movement (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning",
arXiv:2005.07683). The forward pass uses ``W' = W ⊙ M`` with ``M = Top_v(S)``; the scores get the
straight-through gradient ``∂L/∂S_ij = (∂L/∂W'_ij) · W_ij``, so after T steps of plain gradient
descent on S (score learning rate ``α_S``, eq. (4) of the paper)::

    S_ij^(T) = −α_S · Σ_{t<T} (∂L/∂W'_ij)^(t) · W_ij^(t)

i.e. a weight's score grows when the weight *moves away from zero* (W and −∂L/∂W have the same
sign). We accumulate exactly this sum with ``α_S = 1`` (a constant α_S does not change the
ranking): after every backward pass, ``S ← S − W ⊙ ∂L/∂W`` where ``∂L/∂W`` is the gradient of the
effective (masked) weight, read before the optimizer masks it.

Pruned weights, as in the paper: the paper keeps a dense latent ``W`` and multiplies it by the mask
in the forward pass; a pruned weight gets no weight update (its gradient is masked), so its latent
value stays where it was when it was pruned, while its *score* keeps moving with
``−W_latent · ∂L/∂W'``. A wrongly pruned weight therefore earns its way back, with its old value.
Our single mask mechanism keeps pruned weights at exact zeros in the model, so
:class:`MovementScore` keeps the latent values itself (:meth:`Score.update_masks` records a
weight's value when it is pruned and writes it back if the weight re-enters the top-v); without
it a regrown weight would restart from zero and a score would freeze the moment its weight is
pruned.

Two selection variants (hyper-parameter ``variant`` of the movement pruner):

* ``"hard"`` — hard movement pruning: ``M = Top_v(S)``, the top ``v = 1 − s_t`` fraction of scores
  per layer (``scope="layer"``) or over all targeted layers (``scope="global"``), with the
  cubic schedule giving ``s_t``.
* ``"soft"`` — soft movement pruning keeps ``M = 1(S > τ)`` with one threshold τ for the whole
  model, so each layer's sparsity adapts to its scores. The paper learns τ implicitly through an
  L1 penalty ``λ · Σ σ(S)`` and does not hit a prescribed sparsity; to benchmark at fixed
  sparsities we instead set τ at every pruning step to the ``s_t`` quantile of all targeted scores
  (global threshold, scheduled), without the λ penalty. Documented deviation.

How S is stepped (``score_optimizer``): the paper optimises S as a parameter with Adam (score lr
α_S = 1e-2), so each step moves a score by about α_S in the direction of ``−W·∂L/∂W'``
whatever the size of that product; ``"adam"`` (our default) does the same (β = 0.9, 0.999,
ε = 1e-8, bias-corrected). ``"sum"`` is the closed form of plain gradient descent above, where the
extremes of S are dominated by the largest weights.

Hyper-parameters in the paper (BERT-base, SQuAD/MNLI): score lr 1e-2, weight lr 3e-5, cubic
schedule with 1 epoch warm-up before pruning and 2 epochs of final fine-tuning at constant
sparsity, distillation T = 2, α_distil = 0.9.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pruners.masks import MaskSet


class Score:
    """Per-layer scores for the targeted layers (qualified name → ``nn.Linear``)."""

    name: str = ""

    def __init__(self, layers: dict[str, nn.Linear]) -> None:
        self.layers = dict(layers)

    def accumulate(self) -> None:
        """Called after each backward pass, before the optimizer step (gradients unmasked)."""

    def before_update(self, gradient: Callable[[], float]) -> None:
        """Called at each pruning step before :meth:`scores`. ``gradient()`` zeroes the model's
        gradients, runs forward, the training loss (with distillation when on) and backward on the
        next training batch, leaving ``.grad`` on every weight, and returns the loss; second-order
        scores (OBS) call it as often as they need gradients. The loop zeroes gradients afterwards."""

    def update_masks(self, masks: "MaskSet", new: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None, sparsity: float) -> None:
        """Install the keep-masks ``new`` (a pruning step). Scores that track pruned weights override this."""
        masks.update(new, optimizer, sparsity=sparsity)

    def scores(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"score": self.name}


class MagnitudeScore(Score):
    """``S = |W|`` of the current weights."""

    name = "magnitude"

    @torch.no_grad()
    def scores(self) -> dict[str, torch.Tensor]:
        return {n: lin.weight.detach().abs() for n, lin in self.layers.items()}


SCORE_OPTIMIZERS = ("adam", "sum")


class MovementScore(Score):
    """Accumulated movement scores ``S ← S − W ⊙ ∂L/∂W`` (first-order, straight-through), with the
    latent value ``W`` of a pruned weight frozen at its value when pruned (see the module doc)."""

    name = "movement"

    def __init__(self, layers: dict[str, nn.Linear], optimizer: str = "adam", lr: float = 1e-2) -> None:
        super().__init__(layers)
        if optimizer not in SCORE_OPTIMIZERS:
            raise ValueError(f"score_optimizer must be one of: {', '.join(SCORE_OPTIMIZERS)} (got {optimizer!r})")
        self.optimizer, self.lr = optimizer, float(lr)
        self.S = {n: torch.zeros_like(lin.weight, dtype=torch.float32) for n, lin in self.layers.items()}
        # "adam": the scores are stepped by torch's Adam with dL/dS = W * dL/dW' as their gradient
        self._adam = torch.optim.Adam(list(self.S.values()), lr=self.lr, betas=(0.9, 0.999), eps=1e-8) if optimizer == "adam" else None
        # latent values of the weights (== the weight while kept, frozen once pruned)
        self.latent = {n: lin.weight.detach().clone() for n, lin in self.layers.items()}
        self.keep = {n: torch.ones_like(lin.weight, dtype=torch.bool) for n, lin in self.layers.items()}
        self.regrown = 0
        self.steps = 0

    @torch.no_grad()
    def accumulate(self) -> None:
        for n, lin in self.layers.items():
            g = lin.weight.grad
            self.S[n].grad = None
            if g is not None:
                w = torch.where(self.keep[n], lin.weight.detach(), self.latent[n])
                dS = w.float() * g.float()  # dL/dS (straight-through)
                if self._adam is None:
                    self.S[n].sub_(dS)
                else:
                    self.S[n].grad = dS
        if self._adam is not None:
            self._adam.step()
        self.steps += 1

    @torch.no_grad()
    def update_masks(self, masks: MaskSet, new: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None, sparsity: float) -> None:
        for n, lin in self.layers.items():
            dropped = self.keep[n] & ~new[n]
            self.latent[n][dropped] = lin.weight.detach()[dropped]
        masks.update(new, optimizer, sparsity=sparsity)
        for n, lin in self.layers.items():
            back = ~self.keep[n] & new[n]
            self.regrown += int(back.sum())
            lin.weight.data[back] = self.latent[n][back]
            self.keep[n] = new[n].clone()

    def scores(self) -> dict[str, torch.Tensor]:
        return self.S

    def describe(self) -> dict:
        return {"score": "movement (Sanh et al. 2020): S stepped along -W * dL/dW; pruned weights keep a frozen latent value",
                "score_optimizer": self.optimizer, "score_lr": self.lr if self.optimizer == "adam" else None,
                "score_steps": self.steps, "regrown_weights": self.regrown}
