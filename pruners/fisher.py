"""The Optimal BERT Surgeon's second-order math (Kurtic et al. 2022, "The Optimal BERT Surgeon:
Scalable and Accurate Second-Order Pruning for Large Language Models", arXiv:2203.07259, Sec. 3):
the block-wise inverse empirical Fisher, the saliencies and the optimal weight update. One
implementation, used by the ``obs`` pruner in one shot and at every step of its gradual schedule.
The labels (E1)–(E5) are ours, for the docstrings and tests; each equation is the paper's (Sec. 3:
the OBS saliency and update, their generalisation to a block of weights, the dampened empirical
Fisher and its Woodbury recursion).

Notation. ``w`` is one weight matrix flattened row-major (``numel`` entries), cut into ``n_blocks =
ceil(numel / B)`` Fisher blocks of ``B`` consecutive entries (the last one zero-padded). The loss
near ``w`` is modelled by its second-order Taylor expansion (at a trained point, gradient term
dropped) with the Hessian replaced by the dampened empirical Fisher, block-diagonal (weights of
different blocks are treated as uncorrelated)::

    (E1)  L(w + δw) − L(w) ≈ ½ δwᵀ F δw,     F = λ I + (1/m) Σ_{i=1..m} g_i g_iᵀ

with ``m`` gradients ``g_i`` (one per mini-batch), damping ``λ``. The paper builds its inverse without ever
inverting a ``B × B`` matrix, by the Woodbury (Sherman–Morrison) identity from ``F⁻¹ = (1/λ) I``::

    (E2)  F⁻¹ ← F⁻¹ − (F⁻¹ g)(F⁻¹ g)ᵀ / (m + gᵀ F⁻¹ g)          once per gradient g

online, so that no gradient is kept once folded in. :class:`BlockFisherInverse` offers that
recursion (``method="woodbury"``: ``k`` gradients at once with the rank-k form of (E2), ``F⁻¹ ← F⁻¹ − U (m I_k + Gᵀ U)⁻¹ Uᵀ``, ``U = F⁻¹ G``,
equal to ``k`` successive (E2) updates in exact arithmetic) and the same inverse by accumulating
``F`` itself and inverting each ``B × B`` block once when it is first read (``method="direct"``, the
default: ``F ← F + G Gᵀ`` per ``k`` gradients, then a float64 Cholesky inverse of ``λ I + F / m``).
Both hold ``numel · B`` floats and neither stores more than ``k`` gradients. Per Fisher block the
recursion costs about ``3 m B²`` flops in small batched products plus ``m / k`` small
factorisations; the direct form ``m B²`` flops in one product per ``k`` gradients plus one ``B³``
factorisation: fewer flops whenever ``m > B``, but the batched factorisations are slow per flop,
so it is faster in time only from about ``m ≈ 110`` at ``B = 48`` (1.9× at the recipes' ``m = 256``;
``scripts/bench_fisher.py`` measures both, time and distance to a float64 reference, on MiniLM's
gradients; the figures are on the results page).

Pruning a set ``Q`` of weights (``E_Q`` selects them) solves ``min ½ δwᵀ F δw`` subject to
``E_Q (w + δw) = 0`` (the OBS problem of Hassibi & Stork 1993, in the paper's block form)::

    (E3)  δw* = −F⁻¹ E_Qᵀ (E_Q F⁻¹ E_Qᵀ)⁻¹ E_Q w
    (E4)  ρ_Q = ½ (E_Q w)ᵀ (E_Q F⁻¹ E_Qᵀ)⁻¹ E_Q w

``ρ_Q`` (the saliency) is the loss increase (E1) predicts after the update (E3). For one weight::

    (E5)  ρ_i = w_i² / (2 [F⁻¹]_ii),     δw* = −(w_i / [F⁻¹]_ii) F⁻¹ e_i

For a 1×C group (C consecutive weights of one row: the paper's 4-block with C = 4, the VNNI block
of our INT8 kernels) ``Q`` is the group. Because ``F`` is block-diagonal, (E3)–(E4) split into one
independent problem per Fisher block.

The update when many weights go at once (:func:`obs_update`). ``"joint"`` (default) solves (E3)
exactly for the whole set each Fisher block loses at this step: the pruned weights land exactly on
zero and the predicted loss increase is (E4) of that set. The paper's code (SparseML's OBS
modifier) instead adds the updates each pruned weight (or 4-block) would get alone, ignoring the
coupling between pruned weights of one block, and then zeroes the pruned weights by hand; that is
``"independent"`` here. ``"none"`` keeps the remaining weights unchanged (saliency only). We
default to the joint solution because it is the minimiser of the model the saliencies come from,
so the zeroing is not a second, unmodelled perturbation; one-shot on SST-2 / MiniLM it was ahead at
70 % (0.853 joint, 0.845 independent, 0.843 none) and tied with "none" at 50 % (0.876, 0.870, 0.876). It costs
one batched float64 ``B × B`` solve per Fisher block that loses weights.

Memory: ``F⁻¹`` holds ``n_blocks · B²`` floats, i.e. ``numel · B · 4`` bytes in fp32 when ``B``
divides ``numel`` (MiniLM-L6: 10,616,832 prunable weights, B = 48 → 2.04 GB; B = 50 → 2.12 GB).
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import torch

#: how :func:`obs_update` moves the remaining weights (see the module docstring)
Update = Literal["joint", "independent", "none"]
UPDATES: tuple[str, ...] = get_args(Update)
#: how :class:`BlockFisherInverse` builds ``F⁻¹`` (see the module docstring)
METHODS = ("direct", "woodbury")

# blocks per batched float64 solve: bounds the temporaries (4096 · 48² · 8 B = 75 MB)
_CHUNK = 4096


class BlockFisherInverse:
    """Inverse of the dampened block-diagonal empirical Fisher of one weight matrix.

    Args:
        numel: entries of the (flattened, row-major) weight matrix.
        block_size: ``B``, consecutive entries per Fisher block (>= 1).
        damp: ``λ`` > 0; ``F = λ I + (1/m) Σ g gᵀ``.
        num_grads: ``m``, the number of gradients the Fisher averages (the ``1/m`` of ``F``);
            :meth:`add_grads` may be called with fewer in total (then ``F`` is ``λI + (1/m) Σ``
            over those given).
        dtype: of the stored blocks (float32; float64 for reference checks).
        method: ``"direct"`` (accumulate ``F``, invert every block on the first read of
            :attr:`finv`; no gradients may be added after that read) or ``"woodbury"`` (update
            ``F⁻¹`` as gradients arrive, readable at any time).

    Raises:
        ValueError: a size below 1, ``damp`` not > 0, or an unknown ``method``.
    """

    def __init__(self, numel: int, block_size: int, damp: float, num_grads: int, dtype: torch.dtype = torch.float32,
                 method: str = "direct") -> None:
        if numel < 1 or block_size < 1 or num_grads < 1 or not damp > 0:
            raise ValueError(f"need numel, block_size, num_grads >= 1 and damp > 0; got {numel}, {block_size}, {num_grads}, {damp}")
        if method not in METHODS:
            raise ValueError(f"method must be one of: {', '.join(METHODS)} (got {method!r})")
        self.numel, self.B, self.m, self.damp = int(numel), int(block_size), int(num_grads), float(damp)
        self.method, self.dtype = method, dtype
        self.n_blocks = math.ceil(self.numel / self.B)
        if method == "woodbury":
            self._blocks = torch.eye(self.B, dtype=dtype).div_(self.damp).repeat(self.n_blocks, 1, 1)
        else:  # Σ g gᵀ until the first read, then F⁻¹ in place
            self._blocks = torch.zeros(self.n_blocks, self.B, self.B, dtype=dtype)
        self._inverted = method == "woodbury"
        self.grads_added = 0

    @property
    def finv(self) -> torch.Tensor:
        """``(n_blocks, B, B)`` tensor of ``dtype``, block ``b`` covering entries ``[b·B, (b+1)·B)`` of
        the flattened weight (entries past ``numel`` are padding: zero gradient, so they stay ``1/λ``
        on the diagonal and decoupled). For ``"direct"`` the first read inverts the blocks."""
        if not self._inverted:
            self._invert()
        return self._blocks

    @property
    def nbytes(self) -> int:
        """Bytes of the stored blocks (``n_blocks · B² · itemsize``)."""
        return self._blocks.numel() * self._blocks.element_size()

    def to_blocks(self, v: torch.Tensor) -> torch.Tensor:
        """``(..., numel)`` → ``(..., n_blocks, B)`` in :attr:`dtype`, zero-padded.
        ValueError if the last dimension is not ``numel``."""
        if v.shape[-1] != self.numel:
            raise ValueError(f"expected {self.numel} entries per vector, got {v.shape[-1]}")
        flat = v.to(self.dtype)
        pad = self.n_blocks * self.B - self.numel
        if pad:
            flat = torch.nn.functional.pad(flat, (0, pad))
        return flat.reshape(*v.shape[:-1], self.n_blocks, self.B)

    def from_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``(n_blocks, B)`` → ``(numel,)`` (padding dropped)."""
        return x.reshape(-1)[: self.numel]

    @torch.no_grad()
    def add_grads(self, grads: torch.Tensor) -> None:
        """Fold ``k`` gradients into the Fisher: ``F ← F + G Gᵀ`` (``"direct"``) or ``k`` updates (E2)
        as one rank-k Woodbury update (``"woodbury"``).

        Args:
            grads: ``(k, numel)`` (any float dtype), one gradient of the flattened weight per row.

        Raises:
            RuntimeError: ``"direct"`` after :attr:`finv` was read (the blocks hold ``F⁻¹`` by then).
        """
        g = self.to_blocks(grads).permute(1, 2, 0)  # (n_blocks, B, k)
        k = g.shape[-1]
        if self.method == "direct":
            if self._inverted:
                raise RuntimeError("the Fisher was already inverted (finv was read); build a new BlockFisherInverse")
            self._blocks.baddbmm_(g, g.transpose(1, 2))
            self.grads_added += k
            return
        u = torch.bmm(self._blocks, g)  # F⁻¹ G, (n_blocks, B, k)
        # S = m·I + Gᵀ F⁻¹ G, (n_blocks, k, k): small, so factorised in float64; SPD since m > 0
        s = torch.bmm(g.transpose(1, 2), u).double()
        s.diagonal(dim1=1, dim2=2).add_(self.m)
        # with S = L Lᵀ: U S⁻¹ Uᵀ = Vᵀ V for V = L⁻¹ Uᵀ, one symmetric rank-k downdate of F⁻¹
        chol = torch.linalg.cholesky(s).to(u.dtype)
        v = torch.linalg.solve_triangular(chol, u.transpose(1, 2), upper=False)  # (n_blocks, k, B)
        self._blocks.baddbmm_(v.transpose(1, 2), v, alpha=-1.0)
        self.grads_added += k

    @torch.no_grad()
    def _invert(self) -> None:
        """``"direct"``: replace every block's ``Σ g gᵀ`` by ``(λ I + Σ g gᵀ / m)⁻¹``, in float64, in place,
        :data:`_CHUNK` blocks at a time. Exactly, every block is SPD with eigenvalues ``>= λ``; but
        ``Σ g gᵀ`` accumulated in float32 carries round-off of order ``eps·|g|²`` that can exceed
        ``λ`` where the block is rank-deficient (``m < B``, or tiny ``λ``), making it indefinite. A
        block whose Cholesky fails is therefore projected back onto that set (eigenvalues clamped
        to ``>= λ``) before it is inverted, so ``[F⁻¹]_ii`` stays positive and no saliency flips sign."""
        eye = torch.eye(self.B, dtype=torch.float64)
        for s in range(0, self.n_blocks, _CHUNK):
            f = self._blocks[s : s + _CHUNK].double().div_(self.m).add_(eye, alpha=self.damp)
            chol, info = torch.linalg.cholesky_ex(f)
            inv = torch.cholesky_inverse(chol)
            bad = info != 0
            if bool(bad.any()):
                w, q = torch.linalg.eigh(f[bad])
                inv[bad] = (q / w.clamp_min(self.damp).unsqueeze(-2)) @ q.transpose(-1, -2)
            self._blocks[s : s + _CHUNK] = inv
        self._inverted = True

    def diag(self) -> torch.Tensor:
        """``[F⁻¹]_ii`` as ``(n_blocks, B)``."""
        return self.finv.diagonal(dim1=1, dim2=2)

    def group_blocks(self, c: int) -> torch.Tensor:
        """The ``C × C`` diagonal sub-blocks of ``F⁻¹`` for groups of ``c`` consecutive entries:
        ``(n_blocks, B // c, c, c)``. ``c`` must divide ``B``."""
        if self.B % c:
            raise ValueError(f"group width {c} does not divide the Fisher block size {self.B}")
        nb, g = self.n_blocks, self.B // c
        sub = self.finv.reshape(nb, g, c, g, c).diagonal(dim1=1, dim2=3)  # (nb, c, c, g)
        return sub.permute(0, 3, 1, 2)


def saliency(fisher: BlockFisherInverse, w: torch.Tensor, group: int = 1) -> torch.Tensor:
    """Per-entry OBS saliency of weight ``w`` (any shape with ``numel`` entries): ``(n_blocks, B)``
    float tensor, in units of the loss.

    ``group = 1``: (E5) ``ρ_i = w_i² / (2 [F⁻¹]_ii)``. ``group = C`` (> 1, dividing ``B``): every entry of a
    1×C group holds ``ρ_g / C`` with (E4) ``ρ_g = ½ w_gᵀ ([F⁻¹]_gg)⁻¹ w_g``, so that summing a group's entries
    (what :class:`pruners.structure.Structure` does for a block) gives the group saliency exactly.
    A non-positive ``[F⁻¹]_ii`` (fp32 round-off) is clamped to the smallest positive float, which
    keeps that weight. Raises ValueError when ``group`` does not divide ``B``."""
    wb = fisher.to_blocks(w.reshape(-1))
    if group == 1:
        d = fisher.diag().clamp_min(torch.finfo(fisher.dtype).tiny)
        return wb.square() / (2.0 * d)
    nb, g = fisher.n_blocks, fisher.B // group
    wg = wb.reshape(nb, g, group).double()
    z = torch.empty_like(wg)
    sub = fisher.group_blocks(group)
    for s in range(0, nb, _CHUNK):
        z[s : s + _CHUNK] = _spd_solve(sub[s : s + _CHUNK].double(), wg[s : s + _CHUNK])
    rho = 0.5 * (wg * z).sum(-1, keepdim=True)  # (nb, g, 1)
    return (rho / group).expand(nb, g, group).reshape(nb, fisher.B).to(wb.dtype)


def _spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``a x = b`` for a batch of SPD ``a`` ``(n, c, c)`` and ``b`` ``(n, c)``; Cholesky, with a
    pseudo-inverse for the (numerically) singular ones."""
    chol, info = torch.linalg.cholesky_ex(a)
    x = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
    bad = info != 0
    if bool(bad.any()):
        x[bad] = (torch.linalg.pinv(a[bad], hermitian=True) @ b[bad].unsqueeze(-1)).squeeze(-1)
    return x


@torch.no_grad()
def obs_update(fisher: BlockFisherInverse, w: torch.Tensor, pruned: torch.Tensor, mode: str = "joint", group: int = 1) -> tuple[torch.Tensor, float]:
    """The OBS change of the remaining weights when the entries ``pruned`` of ``w`` are removed.

    Args:
        fisher: the inverse Fisher of ``w``'s matrix.
        w: current weights (any shape, ``numel`` entries).
        pruned: bool, same shape: the weights removed at this step.
        mode: ``"joint"`` ((E3) for the whole pruned set of each Fisher block),
            ``"independent"`` (the paper's code: sum of each pruned unit's own update) or ``"none"``.
        group: the unit of ``"independent"``: 1 (single weights) or C (1×C groups, all-or-nothing).

    Returns:
        ``(delta, predicted)``: ``delta`` shaped like ``w`` (``w + delta`` has ``pruned`` entries at
        zero up to round-off for ``"joint"``; callers zero them exactly), and the loss increase the
        quadratic model predicts for ``"joint"`` (``ρ_Q`` summed over blocks), or the sum of the
        pruned units' own saliencies (what selection ranked) for ``"independent"`` and ``"none"``
        (float, loss units; neither is the loss increase of those two updates).

    Raises:
        ValueError: unknown ``mode``, or shapes that do not match.
    """
    if mode not in UPDATES:
        raise ValueError(f"update must be one of: {', '.join(UPDATES)} (got {mode!r})")
    if pruned.shape != w.shape:
        raise ValueError(f"pruned mask {tuple(pruned.shape)} does not match weight {tuple(w.shape)}")
    q = fisher.to_blocks(pruned.reshape(-1)) > 0
    wq = fisher.to_blocks(w.reshape(-1)).double() * q
    rows = q.any(dim=1).nonzero().squeeze(1)  # only the Fisher blocks that lose weights
    z = _joint_z(fisher, wq, q, rows) if mode == "joint" else _independent_z(fisher, wq, rows, group)
    predicted = 0.5 * float((wq * z).sum())  # ½ w_Qᵀ (F⁻¹_QQ)⁻¹ w_Q, block by block (or unit by unit)
    if mode == "none":
        return torch.zeros_like(w), predicted
    delta = torch.zeros_like(wq)
    for s in range(0, rows.numel(), _CHUNK):
        idx = rows[s : s + _CHUNK]
        delta[idx] = -torch.bmm(fisher.finv[idx].double(), z[idx].unsqueeze(-1)).squeeze(-1)  # δw = −F⁻¹ z
    return fisher.from_blocks(delta).reshape(w.shape).to(w.dtype), predicted


def _joint_z(fisher: BlockFisherInverse, wq: torch.Tensor, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``z = E_Qᵀ (F⁻¹_QQ)⁻¹ w_Q`` per Fisher block (zero outside Q), float64 ``(n_blocks, B)``."""
    z = torch.zeros_like(wq)
    for s in range(0, rows.numel(), _CHUNK):
        idx = rows[s : s + _CHUNK]
        qf = q[idx].double()
        # F⁻¹_QQ padded with the identity outside Q: still SPD, and its solution vanishes outside Q
        a = fisher.finv[idx].double() * qf.unsqueeze(2) * qf.unsqueeze(1) + torch.diag_embed(1.0 - qf)
        z[idx] = _spd_solve(a, wq[idx])
    return z


def _independent_z(fisher: BlockFisherInverse, wq: torch.Tensor, rows: torch.Tensor, group: int) -> torch.Tensor:
    """Each pruned unit's own ``([F⁻¹]_uu)⁻¹ w_u`` (unit: one weight, or a 1×C group), float64 ``(n_blocks, B)``."""
    if group == 1:
        return wq / fisher.diag().double().clamp_min(torch.finfo(torch.float64).tiny)
    nb, g = fisher.n_blocks, fisher.B // group
    sub = fisher.group_blocks(group)
    z = torch.zeros_like(wq)
    zg = z.view(nb, g, group)
    for s in range(0, rows.numel(), _CHUNK):
        idx = rows[s : s + _CHUNK]
        zg[idx] = _spd_solve(sub[idx].double(), wq[idx].view(-1, g, group))
    return z
