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
effective (masked) weight, read before the optimizer masks it. Pruned weights hold exact zeros in
our single mask mechanism, so their scores stop moving once pruned (their latent value is not
kept): a weight can come back only if its frozen score outranks a kept weight's score, and then
restarts from zero.

Two selection variants (hyper-parameter ``variant`` of the movement pruner):

* ``"hard"`` — hard movement pruning: ``M = Top_v(S)``, the top ``v = 1 − s_t`` fraction of scores
  per layer (``scope="layer"``) or over all targeted layers (``scope="global"``), with the
  cubic schedule giving ``s_t``.
* ``"soft"`` — soft movement pruning keeps ``M = 1(S > τ)`` with one threshold τ for the whole
  model, so each layer's sparsity adapts to its scores. The paper learns τ implicitly through an
  L1 penalty ``λ · Σ σ(S)`` and does not hit a prescribed sparsity; to benchmark at fixed
  sparsities we instead set τ at every pruning step to the ``s_t`` quantile of all targeted scores
  (global threshold, scheduled), without the λ penalty. Documented deviation.

Hyper-parameters in the paper (BERT-base, SQuAD/MNLI): score lr 1e-2, weight lr 3e-5, cubic
schedule with 1 epoch warm-up before pruning and 2 epochs of final fine-tuning at constant
sparsity, distillation T = 2, α_distil = 0.9.
"""
from __future__ import annotations

import torch
from torch import nn


class Score:
    """Per-layer scores for the targeted layers (qualified name → ``nn.Linear``)."""

    name: str = ""

    def __init__(self, layers: dict[str, nn.Linear]) -> None:
        self.layers = dict(layers)

    def accumulate(self) -> None:
        """Called after each backward pass, before the optimizer step (gradients unmasked)."""

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


class MovementScore(Score):
    """Accumulated movement scores ``S ← S − W ⊙ ∂L/∂W`` (first-order, straight-through)."""

    name = "movement"

    def __init__(self, layers: dict[str, nn.Linear]) -> None:
        super().__init__(layers)
        self.S = {n: torch.zeros_like(lin.weight, dtype=torch.float32) for n, lin in self.layers.items()}
        self.steps = 0

    @torch.no_grad()
    def accumulate(self) -> None:
        for n, lin in self.layers.items():
            g = lin.weight.grad
            if g is not None:
                self.S[n].sub_(lin.weight.detach().float() * g.float())
        self.steps += 1

    def scores(self) -> dict[str, torch.Tensor]:
        return self.S

    def describe(self) -> dict:
        return {"score": "movement (Sanh et al. 2020): S -= W * dL/dW, accumulated", "score_steps": self.steps}
