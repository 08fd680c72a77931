"""Scores: *which* weights matter (higher score = keep). A pruner is a score + a schedule + a structure.

Magnitude (Han et al. 2015; Zhu & Gupta 2017)::

    S = |W|

Movement (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning",
arXiv:2005.07683). The forward pass uses ``W' = W ⊙ M`` with ``M = Top_v(S)``; the scores get the
straight-through gradient ``∂L/∂S_ij = (∂L/∂W'_ij) · W_ij``, so after T steps of plain gradient
descent on S (score learning rate ``α_S``, eq. (4) of the paper)::

    S_ij^(T) = −α_S · Σ_{t<T} (∂L/∂W'_ij)^(t) · W_ij^(t)

i.e. a weight's score grows when the weight *moves away from zero* (W and −∂L/∂W have the same
sign). With ``score_optimizer = "sum"`` we accumulate exactly this sum with ``α_S = 1`` (a constant
α_S does not change the ranking): after every backward pass, ``S ← S − W ⊙ ∂L/∂W`` where ``∂L/∂W`` is the gradient of the
effective (masked) weight, read before the optimizer masks it.

Pruned weights, as in the paper: the paper keeps a dense latent ``W`` and multiplies it by the mask
in the forward pass; a pruned weight gets no weight update (its gradient is masked), so its latent
value stays where it was when it was pruned, while its *score* keeps moving with
``−W_latent · ∂L/∂W'``. A wrongly pruned weight therefore earns its way back, with its old value.
Our single mask mechanism keeps pruned weights at exact zeros in the model, so
:class:`MovementScore` keeps the latent values itself (:meth:`MovementScore.update_masks` records a
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
(warm-up, then linear decay to 0, or the cyclic schedule's rewinding), as the paper's code puts S in the weights' optimizer with its
own learning rate. ``"sum"`` is the closed form of plain gradient descent above (α_S = 1, no
schedule), where the extremes of S are dominated by the largest weights.

Hyper-parameters in the paper (BERT-base, SQuAD/MNLI): score lr 1e-2, weight lr 3e-5, cubic
schedule with 1 epoch warm-up before pruning and 2 epochs of final fine-tuning at constant
sparsity, distillation T = 2, α_distil = 0.9.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, get_args

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
        next training batch, leaving ``.grad`` on every targeted weight (only those: the other
        parameters get none, so backward skips the embeddings), and returns the loss; second-order
        scores (OBS) call it as often as they need gradients. The loop zeroes gradients afterwards."""

    def update_masks(self, masks: "MaskSet", new: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None, sparsity: float) -> None:
        """Install the keep-masks ``new`` (a pruning step). Scores that track pruned weights override this."""
        masks.update(new, optimizer, sparsity=sparsity)

    def scores(self) -> dict[str, torch.Tensor]:
        """Layer name → float tensor shaped like its weight (out, in): higher = more worth keeping.
        Already-pruned weights may score −inf (they stay pruned)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"score": self.name}

    def state_dict(self) -> dict[str, Any]:
        """What the score carries from one training step to the next, for a training checkpoint
        (tensors as they are, not copies); default: nothing (a score computed from the weights)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a :meth:`state_dict`; ValueError where it does not fit these layers."""


class MagnitudeScore(Score):
    """``S = |W|`` of the current weights."""

    name = "magnitude"

    @torch.no_grad()
    def scores(self) -> dict[str, torch.Tensor]:
        return {n: lin.weight.detach().abs() for n, lin in self.layers.items()}


#: how movement scores are stepped (module doc); movement's ``score_optimizer``
ScoreOptimizer = Literal["adam", "sum"]
SCORE_OPTIMIZERS: tuple[str, ...] = get_args(ScoreOptimizer)


class MovementScore(Score):
    """Movement scores S (float32, one per targeted weight, shape ``(out, in)``) stepped along
    ``−∂(L + R)/∂S`` after every backward pass, with the latent value of a pruned weight frozen
    at its value when pruned (see the module doc).

    Storage is flat: S, its gradient and the frozen values of pruned weights are each one
    float32 vector over every targeted weight, and ``S[name]`` / ``keep[name]`` are views of it,
    so the per-step work (Adam on S, the penalty, a global top-k over all layers) is a few large
    vectorised operations instead of a few per layer. Memory: 4 float32 and 1 bool copies of the
    targeted weights (plus Adam's 2).

    Args:
        layers: qualified name → ``nn.Linear`` (the targeted layers).
        optimizer: ``"adam"`` or ``"sum"`` (see the module doc); ValueError otherwise.
        lr: score learning rate α_S of ``"adam"`` (> 0; ValueError otherwise).
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
        total = sum(lin.weight.numel() for lin in self.layers.values())
        self.flat_S = torch.zeros(total)
        self.flat_S.grad = torch.zeros(total)
        self.flat_keep = torch.ones(total, dtype=torch.bool)
        # frozen latent values of the pruned weights, 0 where kept: the latent weight is W + P
        # because a pruned weight is an exact zero in W
        self._P = torch.zeros(total)
        self.slices: dict[str, slice] = {}
        start = 0
        for n, lin in self.layers.items():
            self.slices[n] = slice(start, start + lin.weight.numel())
            start += lin.weight.numel()
        self.S = self.views(self.flat_S)
        self.keep = self.views(self.flat_keep)
        self._G, self._Pv = self.views(self.flat_S.grad), self.views(self._P)
        # "adam": torch's Adam (fused: one pass over S) with dL/dS = W * dL/dW' (+ dR/dS) as the gradient
        self._adam = torch.optim.Adam([self.flat_S], lr=self.lr, betas=(0.9, 0.999), eps=1e-8, fused=True) if optimizer == "adam" else None
        self._reg_scale: torch.Tensor | None = None
        self.regrown = 0
        self.steps = 0

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-layer views (weight-shaped) of a flat vector over every targeted weight."""
        return {n: flat[sl].view_as(self.layers[n].weight) for n, sl in self.slices.items()}

    @torch.no_grad()
    def gradient(self, name: str, lam: float) -> torch.Tensor:
        """``∂(L + R)/∂S`` of layer ``name`` (float32, shape of its weight) from the weight gradient
        now in ``.grad``: the straight-through ``W_latent ⊙ ∂L/∂W'`` (``.grad`` is the gradient of
        the effective, masked weight W', read before the optimizer masks it) plus, for ``lam`` > 0,
        the penalty's ``lam · σ(S)(1 − σ(S)) / (numel · L)``."""
        out = torch.empty_like(self.S[name])
        self._movement_grad(name, out)
        if lam > 0.0:
            sig = torch.sigmoid(self.S[name])
            out.add_(sig.addcmul_(sig, sig, value=-1.0), alpha=lam / (out.numel() * len(self.S)))
        return out

    def _movement_grad(self, name: str, out: torch.Tensor) -> None:
        g = self.layers[name].weight.grad
        if g is None:
            out.zero_()
        else:
            torch.add(self.layers[name].weight.detach(), self._Pv[name], out=out).mul_(g)

    @torch.no_grad()
    def accumulate(self) -> None:
        lam = float(self.reg_lambda(self.steps)) if self.reg_lambda is not None else 0.0
        for n in self.layers:
            self._movement_grad(n, self._G[n])
        if lam > 0.0:
            if self._reg_scale is None:  # 1 / (numel_l · L) per weight: the penalty is a mean of per-layer means
                self._reg_scale = torch.cat([torch.full((sl.stop - sl.start,), 1.0 / ((sl.stop - sl.start) * len(self.slices)))
                                             for sl in self.slices.values()])
            sig = torch.sigmoid(self.flat_S)
            sig.addcmul_(sig, sig, value=-1.0)  # σ(S)(1 − σ(S)), in place
            self.flat_S.grad.addcmul_(sig, self._reg_scale, value=lam)
        if self._adam is None:
            self.flat_S.sub_(self.flat_S.grad)
        else:
            factor = float(self.lr_factor(self.steps)) if self.lr_factor is not None else 1.0
            self._adam.param_groups[0]["lr"] = self.lr * factor
            self._adam.step()
        self.steps += 1

    @torch.no_grad()
    def update_masks(self, masks: MaskSet, new: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None, sparsity: float) -> None:
        """Install ``new`` (keep-masks) and move latent values: with the latent weight
        ``L = W + P`` (W is zero where pruned, P where kept), ``W ← L ⊙ new`` and
        ``P ← L ⊙ ¬new``, so a newly pruned weight's value is frozen in P and a regrown one comes
        back with it. Two element-wise operations per layer and a few over the flat vectors, no
        indexing by position: cheap enough for every training step. The optimizer state of a
        newly pruned weight is zeroed by the training loop's next ``MaskSet.step`` (before the
        state can move any weight that stays), not here."""
        new_flat = torch.cat([new[n].reshape(-1) for n in self.slices])
        self.regrown += int(torch.count_nonzero(new_flat & ~self.flat_keep))
        for n, lin in self.layers.items():
            L = self._Pv[n].add_(lin.weight.detach())  # P now holds the latent weight L
            torch.mul(L, new[n], out=lin.weight.data)
        self._P.mul_(~new_flat)  # back to P: the latent values of the pruned weights
        self.flat_keep.copy_(new_flat)
        # the weights are already masked; the loop's next masked optimizer step masks the state
        masks.set(new, sparsity=sparsity)

    def scores(self) -> dict[str, torch.Tensor]:
        return self.S

    def state_dict(self) -> dict[str, Any]:
        """S, the keep-mask, the frozen latent values, Adam's state on S and the counters (steps,
        regrown weights). Not S's gradient: :meth:`accumulate` overwrites it before each use."""
        return {"S": self.flat_S.detach(), "keep": self.flat_keep, "latent": self._P,
                "adam": self._adam.state_dict() if self._adam is not None else None,
                "steps": self.steps, "regrown": self.regrown}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copied into the flat vectors in place (the per-layer views stay theirs); a ``"grad"`` entry
        (checkpoints of earlier releases) is not needed and left unread."""
        for key, mine in (("S", self.flat_S), ("keep", self.flat_keep), ("latent", self._P)):
            if state[key].shape != mine.shape or state[key].dtype != mine.dtype:
                raise ValueError(f"movement score {key}: {state[key].dtype} {tuple(state[key].shape)} saved, "
                                 f"{mine.dtype} {tuple(mine.shape)} here")
        if (state["adam"] is None) != (self._adam is None):
            raise ValueError("movement score: saved with another score_optimizer")
        self.flat_S.copy_(state["S"])
        self.flat_keep.copy_(state["keep"])
        self._P.copy_(state["latent"])
        if self._adam is not None:
            self._adam.load_state_dict(state["adam"])
        self.steps, self.regrown = int(state["steps"]), int(state["regrown"])

    @torch.no_grad()
    def describe(self) -> dict:
        """Notes for the prune report, with the mean |W| of the pruned weights (their latent,
        i.e. last trained, values) and of the kept ones: a score that prunes large weights shows
        a ratio near or above 1, magnitude pruning one far below."""
        n_pruned = self.flat_keep.numel() - int(torch.count_nonzero(self.flat_keep))
        n_kept = self.flat_keep.numel() - n_pruned
        pruned = float(self._P.abs().sum())
        kept = sum(float(lin.weight.detach().abs().sum()) for lin in self.layers.values())
        return {"score": "movement (Sanh et al. 2020): S stepped along -dL/dS = -W * dL/dW' (+ soft's penalty); pruned weights keep a frozen latent value",
                "score_optimizer": self.optimizer, "score_lr": self.lr if self.optimizer == "adam" else None,
                "score_steps": self.steps, "regrown_weights": self.regrown,
                "mean_abs_weight_pruned": pruned / n_pruned if n_pruned else None,
                "mean_abs_weight_kept": kept / n_kept if n_kept else None}
