"""Structure: *which shape* of weight groups a mask keeps or drops, and layer-wise or global selection.

Given per-layer scores (higher = more important; same shape as the weight, ``(out, in)``) and a
target sparsity, :meth:`Structure.masks` returns boolean keep-masks:

* ``"unstructured"`` — single weights. ``scope="layer"``: each matrix loses exactly
  ``round(s · numel)`` lowest-score entries (at most ``numel − 1``: a sparsity just below 1 never
  empties a small layer); ``scope="global"``: one ranking over all matrices.
* ``"RxC"`` blocks, e.g. ``"1x4"`` (4 consecutive inputs of one output row) or ``"4x1"`` (4
  consecutive output rows of one input column). A block's score is the sum of its entries' scores
  (L1 norm for magnitude); exactly ``round(s · n_blocks)`` blocks are dropped per layer (or over
  all layers for ``scope="global"``). Both weight dimensions must be multiples of the block.
* ``"N:M"`` e.g. ``"2:4"`` — in every group of M consecutive weights along the input dimension
  (the layout sparse tensor cores use), the N highest-score weights are kept. The final sparsity
  is therefore fixed at ``1 − N/M``; at an intermediate schedule sparsity ``s`` each group drops
  ``min(M − N, round(s · M))``. Scope does not apply (selection is always within a group).

Ties are broken by position (stable sort) so the zero count is always exact.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from pruners.base import _keep_mask, check_rankable

STRUCTURE_HELP = "'unstructured', a block 'RxC' such as '1x4' or '4x1', or 'N:M' such as '2:4'"
#: how a sparsity is spread: per matrix (``"layer"``) or one ranking over all of them (``"global"``)
Scope = Literal["layer", "global"]
SCOPES: tuple[str, ...] = get_args(Scope)


@dataclass(frozen=True)
class Structure:
    """A sparsity pattern of a Linear weight (out_features, in_features): ``"unstructured"``; a
    ``"block"`` of ``rows`` × ``cols`` weights (rows along the output dimension, cols along the
    input: ``1x4`` is the VNNI quad) pruned or kept whole; or ``"nm"``: N = ``rows`` non-zeros in
    every M = ``cols`` consecutive inputs of a row. Built by :func:`parse_structure`."""

    kind: str  # "unstructured" | "block" | "nm"
    rows: int = 1  # block rows, or N for N:M
    cols: int = 1  # block cols, or M for N:M

    @property
    def spec(self) -> str:
        if self.kind == "unstructured":
            return "unstructured"
        return f"{self.rows}x{self.cols}" if self.kind == "block" else f"{self.rows}:{self.cols}"

    @property
    def fixed_sparsity(self) -> float | None:
        """``1 − N/M`` for N:M, else None (any sparsity is reachable)."""
        return 1.0 - self.rows / self.cols if self.kind == "nm" else None

    def reached_sparsity(self, sparsity: float) -> float:
        """The share of each matrix's weights :meth:`masks` drops when asked for ``sparsity``: for
        N:M, ``min(M − N, round(sparsity · M)) / M`` (it moves in steps of 1/M); else ``sparsity``
        (each layer's rounding to whole groups aside)."""
        return self._nm_drop(sparsity) / self.cols if self.kind == "nm" else sparsity

    def _nm_drop(self, sparsity: float) -> int:
        """Weights dropped in every group of M at ``sparsity`` (N:M only)."""
        return min(self.cols - self.rows, int(round(sparsity * self.cols)))

    def check_sparsity(self, sparsity: float) -> None:
        """ValueError if ``sparsity`` is not reachable with this structure (N:M fixes it)."""
        fixed = self.fixed_sparsity
        if fixed is not None and abs(sparsity - fixed) > 1e-6:  # 0.666667 stands for 2:3's 1 − 2/3
            raise ValueError(f"sparsity must equal 1 - N/M = {fixed:.6g} for structure {self.spec!r}, got {sparsity!r}; "
                             f"set sparsity = {fixed:.6g} (the pruner's default sparsity is not 1 - N/M)")

    def check_shape(self, name: str, shape: torch.Size) -> None:
        """ValueError when weight ``shape`` (out, in) of layer ``name`` does not tile into the blocks
        (or, for N:M, when in is not a multiple of M)."""
        out_f, in_f = shape
        if self.kind == "block" and (out_f % self.rows or in_f % self.cols):
            raise ValueError(f"structure {self.spec!r}: layer {name} weight {tuple(shape)} is not a multiple of the block")
        if self.kind == "nm" and in_f % self.cols:
            raise ValueError(f"structure {self.spec!r}: layer {name} input size {in_f} is not a multiple of M={self.cols}")

    # ---- selection --------------------------------------------------------------------------------
    @torch.no_grad()
    def masks(self, scores: dict[str, torch.Tensor], sparsity: float, scope: str = "layer",
              min_keep: float = 0.0) -> dict[str, torch.Tensor]:
        """Boolean keep-masks (True = keep) with exactly this structure at ``sparsity``.

        ``min_keep`` (global scope only, a fraction in [0, 1)): every layer keeps at least its
        ``int(min_keep · groups) + 1`` best groups whatever the global ranking says (0: no floor),
        so one global threshold cannot empty a layer and cut the network (movement pruning's
        per-layer floor, 0.5 % in Sanh et al.'s code). The floors are taken out of the global
        budget, so the total stays exact unless the floors alone exceed it (then the sparsity is
        below ``sparsity``)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of: {', '.join(SCOPES)} (got {scope!r})")
        if not 0.0 <= min_keep < 1.0:
            raise ValueError(f"min_keep must be in [0, 1), got {min_keep!r}")
        for name, s in scores.items():
            self.check_shape(name, s.shape)
        check_rankable(*scores.values())
        if self.kind == "nm":
            return {n: self._nm(s, sparsity) for n, s in scores.items()}
        pooled = {n: self._pool(s.float()) for n, s in scores.items()}
        if scope == "layer":
            # at most numel - 1 groups: a sparsity just below 1 must not empty a small layer (cut the network)
            keep = {n: _keep_mask(p.flatten(), min(int(round(sparsity * p.numel())), p.numel() - 1)).view_as(p)
                    for n, p in pooled.items()}
        else:
            keep = _global_keep(pooled, sparsity, min_keep)
        return {n: self._expand(m) for n, m in keep.items()}

    def _pool(self, s: torch.Tensor) -> torch.Tensor:
        if self.kind == "unstructured":
            return s
        r, c = self.rows, self.cols
        return s.reshape(s.shape[0] // r, r, s.shape[1] // c, c).sum(dim=(1, 3))

    def _expand(self, m: torch.Tensor) -> torch.Tensor:
        if self.kind == "unstructured":
            return m
        return m.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1)

    def _nm(self, s: torch.Tensor, sparsity: float) -> torch.Tensor:
        m, drop = self.cols, self._nm_drop(sparsity)
        groups = s.float().reshape(s.shape[0], s.shape[1] // m, m)
        keep = torch.ones_like(groups, dtype=torch.bool)
        if drop > 0:
            order = torch.sort(groups, dim=-1, stable=True).indices[..., :drop]
            keep.scatter_(-1, order, False)
        return keep.reshape(s.shape)


def _global_keep(pooled: dict[str, torch.Tensor], sparsity: float, min_keep: float) -> dict[str, torch.Tensor]:
    """One ranking over every layer's (pooled) scores; with ``min_keep`` > 0 each layer's floor of
    best groups is ranked above everything else first (see :meth:`Structure.masks`)."""
    flats, reserved = [], 0
    for p in pooled.values():
        f = p.flatten()
        if min_keep > 0.0:
            floor = min(f.numel(), int(min_keep * f.numel()) + 1)
            f = f.clone()
            f[torch.topk(f, floor, sorted=False).indices] = float("inf")
            reserved += floor
        flats.append(f)
    flat = torch.cat(flats)
    k = _keep_mask(flat, min(int(round(sparsity * flat.numel())), flat.numel() - reserved))
    keep, start = {}, 0
    for n, p in pooled.items():
        keep[n] = k[start : start + p.numel()].view_as(p)
        start += p.numel()
    return keep


def parse_structure(spec: str) -> Structure:
    """``"unstructured"`` | ``"RxC"`` | ``"N:M"`` → :class:`Structure`; ValueError naming the choices."""
    if not isinstance(spec, str):
        raise TypeError(f"structure must be a string: {STRUCTURE_HELP}; got {spec!r}")
    s = spec.strip().lower()
    if s == "unstructured":
        return Structure("unstructured")
    if mt := re.fullmatch(r"(\d+)x(\d+)", s):
        r, c = int(mt[1]), int(mt[2])
        if r >= 1 and c >= 1 and r * c > 1:
            return Structure("block", r, c)
    if mt := re.fullmatch(r"(\d+):(\d+)", s):
        n, m = int(mt[1]), int(mt[2])
        if 1 <= n < m:
            return Structure("nm", n, m)
    raise ValueError(f"structure must be {STRUCTURE_HELP} (blocks of >= 2 weights, 1 <= N < M); got {spec!r}")
