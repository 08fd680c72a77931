"""Mask selection for movement pruning at every training step (Sanh, Wolf & Rush 2020), cheap
enough to run once per step over every encoder weight of a BERT on a small CPU.

* :func:`threshold_masks` — the paper's soft masks ``M = 1(σ(S) > τ)``.
* :class:`Sampler` — top-v masks during the ramp of the schedule: the cut is the quantile of a
  fixed random sample of the scores, then one comparison per weight (``S > cut``). An exact top-k
  over MiniLM's 10.6 M scores costs ~0.6 s on one core (measured), more than a training step;
  the sampled cut costs one pass. Its sparsity is within a few sampling standard deviations
  ``sqrt(s(1 − s)/m)`` of the target (m samples: 2^17 for one global cut, ±0.1 %; 2^15 per layer,
  ±0.2 %), and when it is not (ties, e.g. many equal scores) the exact top-k is used.
* :func:`flat_global_keep` — the exact global top-k straight on a :class:`MovementScore`'s flat
  scores (no copy), for the end of the ramp.

Every global selection keeps at least ``int(min_keep · numel) + 1`` weights per layer (the
paper code's floor, 0.5 %), so one global threshold cannot empty a layer and cut the network.
Masks are bool tensors shaped like the weights, ``True`` = keep.
"""
from __future__ import annotations

import math

import torch

from pruners.base import _keep_mask, check_rankable
from pruners.scores import MovementScore

#: per-layer floor of kept weights under one global threshold: int(MIN_KEEP · numel) + 1
#: (Sanh et al.'s ThresholdBinarizer keeps at least 0.5 % of each matrix)
MIN_KEEP = 0.005
#: sampled scores per quantile estimate: one global cut, or one cut per layer
GLOBAL_SAMPLE, LAYER_SAMPLE = 1 << 17, 1 << 15


def floor_of(numel: int, min_keep: float) -> int:
    """Weights a layer of ``numel`` keeps at least: ``int(min_keep · numel) + 1`` (0 if min_keep is 0)."""
    return min(numel, int(min_keep * numel) + 1) if min_keep > 0 else 0


def masks_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of False entries over all ``masks``."""
    kept = sum(int(torch.count_nonzero(m)) for m in masks.values())
    return 1.0 - kept / sum(m.numel() for m in masks.values())


def _flat_under_floor(score: MovementScore, flat_keep: torch.Tensor, min_keep: float) -> bool:
    """Whether a layer of ``score`` keeps fewer than its floor under the flat keep-mask."""
    return min_keep > 0 and any(int(torch.count_nonzero(m)) < floor_of(m.numel(), min_keep)
                                for m in score.views(flat_keep).values())


@torch.no_grad()
def threshold_masks(scores: dict[str, torch.Tensor], tau: float, min_keep: float = MIN_KEEP) -> dict[str, torch.Tensor]:
    """The paper's soft-movement masks ``M = 1(σ(S) > τ)`` (bool, shapes of ``scores``), compared
    as ``S > logit(τ)`` (σ is increasing: no sigmoid pass), each layer keeping at least its floor
    of best weights. ``tau`` in [0, 1) (0 keeps everything); ValueError otherwise."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau!r}")
    check_rankable(*scores.values())
    cut = -math.inf if tau == 0.0 else math.log(tau / (1.0 - tau))
    out = {}
    for n, s in scores.items():
        m = s > cut
        floor = floor_of(s.numel(), min_keep)
        if int(torch.count_nonzero(m)) < floor:
            m = _keep_mask(s.flatten().float(), s.numel() - floor).view_as(s)
        out[n] = m
    return out


@torch.no_grad()
def flat_global_keep(score: MovementScore, sparsity: float, min_keep: float = MIN_KEEP) -> dict[str, torch.Tensor] | None:
    """Exact global top-k of :meth:`pruners.structure.Structure.masks` (unstructured, global)
    straight on ``score.flat_S``, or None when a layer falls under its floor (the caller then
    reserves the floors with ``Structure.masks(..., min_keep=...)``)."""
    flat = _keep_mask(score.flat_S, int(round(sparsity * score.flat_S.numel())))
    return None if _flat_under_floor(score, flat, min_keep) else score.views(flat)


def sigmoid_cut(scores: dict[str, torch.Tensor], keep: dict[str, torch.Tensor]) -> float | None:
    """σ of the largest pruned score (the threshold τ a calibrated soft mask amounts to), or
    None when nothing is pruned."""
    dropped = [s[~keep[n]] for n, s in scores.items() if not bool(keep[n].all())]
    if not dropped:
        return None
    return float(torch.sigmoid(torch.cat(dropped).max()))


class Sampler:
    """Sampled top-v cuts (see the module doc). The sample positions are drawn once per vector
    length from a generator seeded with ``seed``, so runs are reproducible."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._idx: dict[tuple[int, int], torch.Tensor] = {}

    def _positions(self, n: int, m: int) -> torch.Tensor:
        if (n, m) not in self._idx:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + n)
            self._idx[(n, m)] = torch.randint(0, n, (m,), generator=g)
        return self._idx[(n, m)]

    @torch.no_grad()
    def cut(self, flat: torch.Tensor, k_zero: int, m: int) -> torch.Tensor | None:
        """Keep-mask of the 1-D ``flat`` dropping about ``k_zero`` lowest scores (exact when the
        sample would cover ``flat``), or None when the sampled cut misses the target by more
        than 4 sampling standard deviations (the caller then selects exactly)."""
        n = flat.numel()
        check_rankable(flat)
        if k_zero <= 0 or k_zero >= n or m >= n:
            return _keep_mask(flat, k_zero)
        s = k_zero / n
        j = min(m, max(1, round(s * m)))
        cut = flat[self._positions(n, m)].kthvalue(j).values
        keep = flat > cut
        missed = abs((n - int(torch.count_nonzero(keep))) - k_zero)
        return keep if missed <= 4.0 * math.sqrt(s * (1.0 - s) / m) * n + 1 else None

    @torch.no_grad()
    def keep(self, score: MovementScore, sparsity: float, scope: str, min_keep: float = 0.0) -> dict[str, torch.Tensor] | None:
        """Unstructured keep-masks at about ``sparsity`` per layer (``scope="layer"``) or over
        all layers (``"global"``, with the per-layer floor ``min_keep``), or None where the
        caller must select exactly (a missed cut, a layer under its floor)."""
        if scope == "layer":
            out = {}
            for n, S in score.scores().items():
                k = self.cut(S.view(-1), int(round(sparsity * S.numel())), LAYER_SAMPLE)
                if k is None:
                    k = _keep_mask(S.view(-1), int(round(sparsity * S.numel())))
                out[n] = k.view_as(S)
            return out
        flat = self.cut(score.flat_S, int(round(sparsity * score.flat_S.numel())), GLOBAL_SAMPLE)
        if flat is None or _flat_under_floor(score, flat, min_keep):
            return None
        return score.views(flat)
