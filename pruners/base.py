"""Pruner interface, layer roles and sparsity accounting shared by every pruner.

Pruners target encoder Linear layers by role (attention q/k/v/out, FFN in/out; the role map is
:mod:`accelerators.roles`), so "ffn only" means the same on any BERT-family model. Embeddings,
LayerNorm, pooler and classifier are never prunable targets.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterable, Iterator

import torch
from torch import nn

from accelerators.params import Range
from accelerators.roles import ALL_ROLES, ROLE_PATTERNS, linears_by_role

#: ``progress(step, total, loss, sparsity)``: called after each training step of a training pruner
Progress = Callable[[int, int, float, float], None]

__all__ = ["ALL_ROLES", "ROLE_PATTERNS", "NoPruner", "Progress", "PruneReport", "Pruner", "check_sparsity",
           "prunable_linears", "sparsity_report", "validate_roles"]


def validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Return ``roles`` as a tuple; ValueError naming the valid roles if one is unknown, none is
    given, one is given twice, or ``roles`` is one string (a list of names is expected: ``["attn_q"]``)."""
    if isinstance(roles, str):
        raise ValueError(f"roles must be a list of role names, got the string {roles!r}; e.g. [{roles!r}]; "
                         f"valid roles: {', '.join(ALL_ROLES)}")
    roles = tuple(roles)
    bad = [r for r in roles if r not in ROLE_PATTERNS]
    if bad or not roles:
        raise ValueError(f"roles {list(bad) or '[]'} invalid; valid roles: {', '.join(ALL_ROLES)}")
    twice = sorted({r for r in roles if roles.count(r) > 1}, key=ALL_ROLES.index)
    if twice:  # the same layers: only the cell id and the pruned-model cache key would differ
        raise ValueError(f"roles: {', '.join(twice)} given twice in {list(roles)}; list each role once")
    return roles


def prunable_linears(model: nn.Module, roles: Iterable[str] = ALL_ROLES) -> dict[str, nn.Linear]:
    """Qualified name → ``nn.Linear`` for every encoder Linear layer whose role is in ``roles``."""
    return linears_by_role(model, tuple(roles))


@contextlib.contextmanager
def gradients_only_for(model: nn.Module, weights: Iterable[torch.Tensor]) -> Iterator[None]:
    """Within the block only ``weights`` require gradients, so backward computes theirs and stops
    short of the rest (the embeddings' 11.7 M-entry gradient on MiniLM); every parameter's
    ``requires_grad`` is restored after, also on an exception."""
    keep = {id(w) for w in weights}
    was = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in was:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, r in was:
            p.requires_grad_(r)


@dataclass
class LayerSparsity:
    zeros: int
    numel: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class PruneReport:
    """Achieved sparsity of a model, counted from its weights' exact zeros (the applied masks).

    Attributes:
        per_layer: qualified layer name → zeros / numel of its weight matrix.
        prunable_zeros, prunable_numel: over the targeted Linear weights (denominator: prunable weights).
        all_zeros, all_numel: over every parameter of the model, embeddings and biases included
            (denominator: all parameters).
        notes: free-form facts from the pruner (schedule, training budget, wall time, ...).
    """

    per_layer: dict[str, LayerSparsity] = field(default_factory=dict)
    prunable_zeros: int = 0
    prunable_numel: int = 0
    all_zeros: int = 0
    all_numel: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def sparsity_prunable(self) -> float:
        """Zeros ÷ prunable weights (the encoder Linear weights targeted)."""
        return self.prunable_zeros / self.prunable_numel if self.prunable_numel else 0.0

    @property
    def sparsity_all_params(self) -> float:
        """Zeros ÷ all parameters of the model."""
        return self.all_zeros / self.all_numel if self.all_numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sparsity_prunable"] = self.sparsity_prunable
        d["sparsity_all_params"] = self.sparsity_all_params
        d["denominators"] = {
            "sparsity_prunable": "targeted encoder Linear weights",
            "sparsity_all_params": "all model parameters",
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneReport":
        return cls(
            per_layer={k: LayerSparsity(**v) for k, v in d.get("per_layer", {}).items()},
            prunable_zeros=d["prunable_zeros"],
            prunable_numel=d["prunable_numel"],
            all_zeros=d["all_zeros"],
            all_numel=d["all_numel"],
            notes=d.get("notes", {}),
        )


def sparsity_report(model: nn.Module, roles: Iterable[str] = ALL_ROLES, notes: dict | None = None) -> PruneReport:
    """Count exact zeros per targeted layer, over targeted weights and over all parameters."""
    rep = PruneReport(notes=dict(notes or {}))
    for name, lin in prunable_linears(model, roles).items():
        z, n = int((lin.weight == 0).sum()), lin.weight.numel()
        rep.per_layer[name] = LayerSparsity(z, n)
        rep.prunable_zeros += z
        rep.prunable_numel += n
    for p in model.parameters():
        rep.all_zeros += int((p == 0).sum())
        rep.all_numel += p.numel()
    return rep


class Pruner:
    """Base class. ``prune(model, task, progress=None)`` zeroes weights of ``model`` in place and
    reports sparsity; a training pruner calls ``progress`` (a :data:`Progress`) after each step.

    Subclasses set ``name``; their constructor keyword parameters are their config. A pruner that
    trains (GMP, movement) sets ``needs_training = True`` and uses the task's training batches; one
    that can resume its training after an interruption sets ``resumable = True`` and uses
    :attr:`checkpoint` (see :meth:`pruners.gmp.TrainingPruner.prune`).
    The model handed back holds plain weights with exact zeros: no hooks, parametrizations,
    ``weight_orig`` or ``weight_mask`` remain.
    """

    name: ClassVar[str] = ""
    needs_training: ClassVar[bool] = False
    #: bumped when a change to the algorithm makes models cached on disk stale (part of the cache
    #: key when non-zero, so caches of unchanged pruners stay valid)
    cache_version: ClassVar[int] = 0
    #: constructor parameters added after models and cells were keyed by their full parameter set:
    #: while at their defaults they are left out of the plugin's canonical parameters (cache keys,
    #: cell ids), so models cached and run directories written before them stay valid
    late_params: ClassVar[tuple[str, ...]] = ()
    #: a folder where the pruner may keep data derived from the dense model (e.g. the distillation
    #: teacher's logits); set by the runner, None = nothing written to disk
    cache_dir: Path | None = None
    #: whether :meth:`prune` saves its training to :attr:`checkpoint` and goes on from it when called
    #: again (the training pruners of :mod:`pruners.gmp`); the runner sets :attr:`checkpoint` only then
    resumable: ClassVar[bool] = False
    #: the file a resumable pruner keeps its training checkpoint in; set by the runner beside the
    #: pruned model's cache entry (``<cache>/pruned/<key>.partial.pt``, deleted once the model is
    #: stored), None = no checkpoint
    checkpoint: Path | None = None

    def text_sources(self) -> tuple[str, ...]:
        """The text sources (e.g. ``distill_text``) this pruner reads through the task's
        ``unlabeled_texts`` when it prunes: the config reads each with every task of the matrix
        when it is loaded, so a source that does not fit a task fails before any work. Default: none."""
        return ()

    def data_fingerprint(self) -> dict[str, str]:
        """Content hashes of the files the pruner reads beside the task's data, by name: part of the
        pruned model's cache key when not empty, so an edited file is never answered from a stale
        cache. Default: none."""
        return {}

    def resolved_settings(self) -> dict[str, str]:
        """Settings the pruner resolves from the machine it runs on (``precision = "auto"`` → bf16 or
        fp32): part of the pruned model's cache key when not empty, so a model trained one way is not
        served from a shared cache to a machine where the same config trains another. Default: none."""
        return {}

    def prune(self, model: nn.Module, task: Any, progress: Progress | None = None) -> PruneReport:
        """Prune ``model`` in place (its targeted weights end as exact zeros, plain tensors: no
        masks or hooks left) and return what it achieved. ``task`` (:class:`profiler.tasks.base.Task`)
        supplies training data to the pruners that train; ``progress`` receives step updates."""
        raise NotImplementedError

    def target_sparsity(self) -> float:
        """The sparsity of prunable weights this pruner aims for (0 for ``none``)."""
        return 0.0


class NoPruner(Pruner):
    """The dense model, untouched (the baseline)."""

    name = "none"

    def prune(self, model: nn.Module, task: Any, progress: Progress | None = None) -> PruneReport:
        return sparsity_report(model)


#: a pruner's target sparsity (fraction of prunable weights set to zero)
Sparsity = Annotated[float, Range(0.0, 1.0, hi_open=True)]


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as float; TypeError for a non-number (bool included), ValueError unless
    0 <= sparsity < 1."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


def check_rankable(*scores: torch.Tensor) -> None:
    """ValueError if any of ``scores`` holds a NaN: it has no rank, and every selection (top-k,
    N:M groups, thresholds, sampled cuts) would keep or drop it arbitrarily."""
    if any(bool(torch.isnan(s).any()) for s in scores):
        raise ValueError("scores contain NaN; cannot rank them (did training diverge?)")


def _keep_mask(scores: torch.Tensor, k_zero: int) -> torch.Tensor:
    """Keep-mask (bool, shape of the 1-D ``scores``) that drops exactly the ``k_zero`` lowest
    scores; among equal scores at the cut the earliest positions are dropped (the order of a
    stable ascending sort). ValueError if a score is NaN (it has no rank).

    Selection is one ``torch.topk`` plus comparisons, not a full sort: movement pruning recomputes
    masks at every training step, and a stable sort of every encoder weight of MiniLM costs more
    than a training step on a small CPU (measured ~1.5 s against ~0.1 s)."""
    n = scores.numel()
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k_zero <= 0:
        return keep
    check_rankable(scores)
    if k_zero >= n:
        return keep.fill_(False)
    # the k_zero-th smallest score, from whichever side of the cut is shorter
    if k_zero <= n - k_zero + 1:
        cut = torch.topk(scores, k_zero, largest=False, sorted=False).values.max()
    else:
        cut = torch.topk(scores, n - k_zero + 1, largest=True, sorted=False).values.min()
    keep = scores > cut
    below = int(torch.count_nonzero(scores < cut))
    ties = torch.nonzero(scores == cut).flatten()  # ascending positions
    keep[ties[k_zero - below :]] = True  # drop the first (k_zero - below) tied positions, keep the rest
    return keep
