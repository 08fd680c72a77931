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

Selection (hard and soft movement, the regulariser of soft movement, schedules) lives in
:mod:`pruners.movement`; this module steps S. Soft movement adds the paper's penalty
``R = λ_t · mean_l( Σ σ(S_l) / numel_l )`` (mean over the targeted layers ``l``, their code's
``l1`` regularisation) to the loss; its gradient on S, ``λ_t · σ(S)(1 − σ(S)) / (numel_l · L)``,
is added here in closed form (it involves S only, so no autograd pass is needed).

How S is stepped (``score_optimizer``): the paper optimises S as a parameter with Adam (score lr
α_S = 1e-2), so each step moves a score by about α_S in the direction of ``−W·∂L/∂W'``
whatever the size of that product; ``"adam"`` (our default) does the same (β = 0.9, 0.999,
ε = 1e-8, bias-corrected), with the score learning rate following the weights' schedule
(warm-up, then linear decay to 0), as the paper's code puts S in the weights' optimizer with its
own learning rate. ``"sum"`` is the closed form of plain gradient descent above (α_S = 1, no
schedule), where the extremes of S are dominated by the largest weights.

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
    """Movement scores S (float32, one per targeted weight, shape ``(out, in)``) stepped along
    ``−∂(L + R)/∂S`` after every backward pass, with the latent value of a pruned weight frozen
    at its value when pruned (see the module doc).

    Args:
        layers: qualified name → ``nn.Linear`` (the targeted layers).
        optimizer: ``"adam"`` or ``"sum"`` (see the module doc); ValueError otherwise.
        lr: score learning rate α_S of ``"adam"`` (> 0).
        lr_factor: ``step → multiplier`` of ``lr`` (the weights' warm-up/decay); None = 1.
        reg_lambda: ``step → λ_t`` of soft movement's penalty ``λ_t · mean_l Σσ(S_l)/numel_l``;
            None = no penalty (hard movement).
    """

    name = "movement"

    def __init__(self, layers: dict[str, nn.Linear], optimizer: str = "adam", lr: float = 1e-2,
                 lr_factor: Callable[[int], float] | None = None, reg_lambda: Callable[[int], float] | None = None) -> None:
        super().__init__(layers)
        if optimizer not in SCORE_OPTIMIZERS:
            raise ValueError(f"score_optimizer must be one of: {', '.join(SCORE_OPTIMIZERS)} (got {optimizer!r})")
        if not lr > 0:
            raise ValueError(f"score_lr must be > 0, got {lr!r}")
        self.optimizer, self.lr = optimizer, float(lr)
        self.lr_factor, self.reg_lambda = lr_factor, reg_lambda
        self.S = {n: torch.zeros_like(lin.weight, dtype=torch.float32) for n, lin in self.layers.items()}
        # "adam": the scores are stepped by torch's Adam with dL/dS = W * dL/dW' (+ dR/dS) as their gradient
        self._adam = torch.optim.Adam(list(self.S.values()), lr=self.lr, betas=(0.9, 0.999), eps=1e-8) if optimizer == "adam" else None
        # latent values of the weights (== the weight while kept, frozen once pruned)
        self.latent = {n: lin.weight.detach().clone() for n, lin in self.layers.items()}
        self.keep = {n: torch.ones_like(lin.weight, dtype=torch.bool) for n, lin in self.layers.items()}
        self.regrown = 0
        self.steps = 0

    @torch.no_grad()
    def gradient(self, name: str, lam: float) -> torch.Tensor:
        """``∂(L + R)/∂S`` of layer ``name`` from the weight gradient now in ``.grad``: the
        straight-through ``W_latent ⊙ ∂L/∂W'`` (``.grad`` is the gradient of the effective,
        masked weight W', read before the optimizer masks it) plus, for ``lam`` > 0, the
        penalty's ``lam · σ(S)(1 − σ(S)) / (numel · L)``. Float32, shape of the weight."""
        lin, S = self.layers[name], self.S[name]
        g = lin.weight.grad
        dS = torch.zeros_like(S) if g is None else torch.where(self.keep[name], lin.weight.detach(), self.latent[name]).float() * g.float()
        if lam > 0.0:
            sig = torch.sigmoid(S)
            dS.add_(sig * (1.0 - sig), alpha=lam / (S.numel() * len(self.S)))
        return dS

    @torch.no_grad()
    def accumulate(self) -> None:
        lam = float(self.reg_lambda(self.steps)) if self.reg_lambda is not None else 0.0
        for n in self.layers:
            self.S[n].grad = self.gradient(n, lam)
            if self._adam is None:
                self.S[n].sub_(self.S[n].grad)
        if self._adam is not None:
            factor = float(self.lr_factor(self.steps)) if self.lr_factor is not None else 1.0
            for group in self._adam.param_groups:
                group["lr"] = self.lr * factor
            self._adam.step()
        self.steps += 1

    @torch.no_grad()
    def update_masks(self, masks: MaskSet, new: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None, sparsity: float) -> None:
        # element-wise selects per layer (no indexing by position): cheap enough to run every step
        for n, lin in self.layers.items():
            torch.where(self.keep[n] & ~new[n], lin.weight.detach(), self.latent[n], out=self.latent[n])
        masks.update(new, optimizer, sparsity=sparsity)
        for n, lin in self.layers.items():
            back = ~self.keep[n] & new[n]
            self.regrown += int(back.sum())
            torch.where(back, self.latent[n], lin.weight.data, out=lin.weight.data)
            self.keep[n] = new[n].clone()

    def scores(self) -> dict[str, torch.Tensor]:
        return self.S

    @torch.no_grad()
    def describe(self) -> dict:
        """Notes for the prune report, with the mean |W| of the pruned weights (their latent,
        i.e. last trained, values) and of the kept ones: a score that prunes large weights shows
        a ratio near or above 1, magnitude pruning one far below."""
        pruned = sum(float(self.latent[n][~k].abs().sum()) for n, k in self.keep.items())
        kept = sum(float(lin.weight[self.keep[n]].abs().sum()) for n, lin in self.layers.items())
        n_pruned = sum(int((~k).sum()) for k in self.keep.values())
        n_kept = sum(int(k.sum()) for k in self.keep.values())
        return {"score": "movement (Sanh et al. 2020): S stepped along -dL/dS = -W * dL/dW' (+ soft's penalty); pruned weights keep a frozen latent value",
                "score_optimizer": self.optimizer, "score_lr": self.lr if self.optimizer == "adam" else None,
                "score_steps": self.steps, "regrown_weights": self.regrown,
                "mean_abs_weight_pruned": pruned / n_pruned if n_pruned else None,
                "mean_abs_weight_kept": kept / n_kept if n_kept else None}
