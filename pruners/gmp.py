"""Training-time pruning: gradual magnitude pruning (GMP, Zhu & Gupta 2017) and the shared loop
that movement pruning reuses (GMP and movement differ only in the score).

The pruned model is trained from the dense fine-tuned model handed to :meth:`prune`: AdamW with
linear warm-up then linear decay to zero, gradient clipping at 1.0, the task's training batches;
masks are recomputed from the score at each update step of the cubic schedule and kept applied
through every optimizer step by :class:`pruners.masks.MaskSet`; optionally distilled from a frozen
copy of the dense model (:mod:`pruners.distill`). At the end the masks are squashed into plain
weights and the report (from the masks) carries the training budget and wall time. With a
checkpoint path (:attr:`pruners.base.Pruner.checkpoint`) the training state is saved every couple
of minutes and an interrupted run goes on from it to the same result (:meth:`TrainingPruner.prune`).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import math
import re
import typing
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from accelerators.base import logits_of
from accelerators.params import Range
from pruners.augment import ExtraText, TokenAugmenter, check_text_sources, text_source_digest
from pruners.base import (ALL_ROLES, Sparsity, Progress, PruneReport, Pruner, check_sparsity, gradients_only_for,
                          prunable_linears, validate_roles)
from pruners.distill import AttentionTap, Distiller, check_distill, check_teacher_seeds, weights_key
from pruners.masks import MaskSet, assert_plain
from pruners.schedules import Cubic
from pruners.scores import MagnitudeScore, Score
from pruners.structure import SCOPES, Scope, parse_structure
from pruners.training import (Checkpoints, CheckpointWarning, LrSchedule, Precision, StepClock, adamw, autocast, brief,
                              check_lr_schedule, check_precision, cyclic_linear_factor, linear_decay_factor,
                              resolve_precision, rng_state, set_rng_state)

log = logging.getLogger(__name__)

#: layout of a training pruner's checkpoint; bumped when what :meth:`TrainingPruner._checkpoint_state`
#: saves changes, so an older file is refused (and warned about) instead of half restored
CHECKPOINT_FORMAT = 1


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return v


def _num(name: str, v: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v!r}")
    if (v <= lo if lo_open else v < lo) or v > hi:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v!r}")
    return float(v)


class _Counted:
    """An iterator that counts what it has handed out: a resumed run skips as many (a batch stream of
    the task is a function of its seed, so skipping replays it exactly)."""

    def __init__(self, items: Iterator[Any]) -> None:
        self._items, self.taken = iter(items), 0

    def __iter__(self) -> "_Counted":
        return self

    def __next__(self) -> Any:
        item = next(self._items)
        self.taken += 1
        return item

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self)


@dataclass
class _Run:
    """What one training run of :meth:`TrainingPruner.prune` works with (built by ``_setup``), and
    what its checkpoints save and restore."""

    model: nn.Module
    clock: StepClock
    masks: MaskSet
    score: Score
    opt: torch.optim.Optimizer
    sched: Any
    params: list[torch.nn.Parameter]
    batches: _Counted
    grad_batches: _Counted
    next_loss: Callable[..., torch.Tensor]
    gradient: Callable[[], float]
    progress: Progress | None
    average: AveragedModel | None
    augmenter: TokenAugmenter | ExtraText | None
    distiller: Distiller | None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    checkpoints: Checkpoints | None = None
    identity: str = ""


class TrainingPruner(Pruner):
    """Base of the training-time pruners: a score + the cubic schedule + a structure, trained.

    Args:
        sparsity: final sparsity ``s_f`` of the targeted weights, in [0, 1).
        initial_sparsity: ``s_i`` at the first pruning step, in [0, sparsity].
        steps: optimizer steps of training in total (pruning and recovery), >= 1.
        start_frac: pruning starts at step ``round(start_frac·steps)`` (``t0``), in [0, 1).
        end_frac: sparsity reaches ``s_f`` at step ``round(end_frac·steps)``, in (start_frac, 1];
            the remaining steps fine-tune at constant sparsity (recovery).
        update_every: steps between mask updates (``Δt``), >= 1.
        lr: peak AdamW learning rate (linear warm-up over ``warmup_steps``, then ``lr_schedule``).
        lr_schedule: ``"linear"`` (decay to 0 over all steps, the BERT fine-tuning schedule) or
            ``"cyclic"`` (rewound to ``lr`` at every mask update, linear decay to ``lr / 10`` until
            the next one or the end: oBERT's recipes; :func:`pruners.training.cyclic_linear_factor`).
        batch_size: training sentences per step.
        warmup_steps: learning-rate warm-up steps, in [0, steps).
        weight_decay: AdamW decoupled weight decay, in [0, 1].
        distill: distil from the dense model (a frozen copy taken inside ``prune``).
        temperature: distillation temperature T (> 0); unused without ``distill`` (accepted, so one table
            can sweep ``distill = [false, true]``).
        alpha: weight of the distillation term, in [0, 1]; unused without ``distill``, as ``temperature``.
        hidden_distill: weight β of hidden-state distillation (mean over encoder layers of the
            per-token MSE to the teacher's hidden states, :mod:`pruners.distill`), >= 0; 0 = off;
            needs ``distill``. Costs one teacher forward pass per step.
        attention_distill: weight γ of self-attention distillation (MiniLM's attention distributions
            and value relations, KL per layer and head, :mod:`pruners.distill`), >= 0; 0 = off; needs
            ``distill``. Shares the teacher pass of ``hidden_distill`` (one per step).
        augment: share of every training batch replaced by perturbed copies of its examples, in
            [0, 1]; 0 = off. Words are swapped for neighbours in the dense model's word-embedding
            space and the teacher labels the copies (TinyBERT's data augmentation,
            :mod:`pruners.augment`); needs ``distill`` and a task that knows its vocabulary. The
            copies' teacher logits are computed live (not cached); the hard-label term uses the
            original examples only. The Fisher's gradients use the original examples. OBS: not
            one-shot (``steps = 0``), which trains nothing.
        distill_text: unlabeled text for distillation beside the task's training set: packaged GLUE
            sets (``"sst2"``, ``"mrpc"``, ``"stsb"``: their training sentences, labels ignored) and/or
            ``.txt`` files (one text per line); a sentence-pair task reads pairs instead (the pair
            sets' pairs, ``first<TAB>second`` lines; ``Task.unlabeled_texts``). The teacher labels
            every text (transfer-set distillation, :class:`pruners.augment.ExtraText`). Needs
            ``distill_text_share``.
        distill_text_share: share of every training batch replaced by texts of ``distill_text``, in
            [0, 1]; 0 = off. Handled as ``augment``'s copies (live teacher logits, no hard-label
            term, not in the Fisher's gradients); not together with ``augment``; needs ``distill``
            and a task that tokenizes text. Each text is one input (a pair task's model sees it as
            a single segment); a text in several sources counts once.
        teacher_seeds: an ensemble teacher: seeds of more dense models of the task, fine-tuned as the
            task's own dense model but from these seeds (loaded from the cache, else fine-tuned first);
            the distillation targets are the mean of all the teachers' logits, the hidden-state targets
            the task's own model's (:mod:`pruners.distill`). Each member's logits are cached per
            example; each costs one forward pass per example on first use. Needs ``distill`` and a
            task that fine-tunes (``load_finetuned_seed``); distinct seeds, not the task's own.
        structure: ``"unstructured"``, a block ``"1x4"``/``"4x1"`` (any ``RxC``), or ``"N:M"`` e.g. ``"2:4"``.
        scope: ``"layer"`` (each matrix at the schedule's sparsity) or ``"global"`` (one ranking).
        min_keep: with ``scope = "global"`` (soft movement: always), the fraction of its groups (1×4
            blocks, or weights) every matrix keeps at least, in [0, 1 − sparsity]: a cap of
            ``1 − min_keep`` on any one matrix's sparsity, so the global ranking cannot empty a layer
            (``Structure.masks``); 0 = no floor. Not with N:M structures (each matrix is at N/M).
        roles: encoder Linear roles to prune (see :data:`accelerators.roles.ROLE_PATTERNS`).
        seed: seed of the batch order and dropout.
        precision: ``"auto"`` (bf16 autocast with fp32 master weights where the CPU has native
            bf16, else fp32), ``"fp32"`` or ``"bf16"``; see :mod:`pruners.training`. Masked
            weights stay exact zeros either way (the masks act on the fp32 weights).
        ema_decay: ``d`` of an exponential moving average of the weights over the recovery phase
            (every step from ``end_step`` on, after the final mask: ``w̄ ← d·w̄ + (1−d)·w``,
            starting from the weights; iterate averaging, Polyak & Juditsky 1992, in the
            exponential form of ``torch.optim.swa_utils``), in [0, 1); 0 = off. The pruned model
            gets the average; the report also gives the task metric of the last weights (one eval
            pass), so one run compares the two on the same trajectory.
    """

    needs_training = True
    late_params = ("distill_text", "distill_text_share", "teacher_seeds")

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        """The built-in training pruners resume from their checkpoints. A subclass defined elsewhere
        opts in with the class attribute ``resumable = True`` once every state of its own is saved
        (its score's ``Score.state_dict`` / ``load_state_dict``, :meth:`loop_state`): until then an
        interrupted run starts it over rather than resuming it to other weights."""
        return type(self).__module__.split(".")[0] == "pruners"

    def __init__(
        self,
        sparsity: Sparsity = 0.9,
        initial_sparsity: Annotated[float, Range(0.0, 1.0, hi_open=True)] = 0.0,
        steps: Annotated[int, Range(1, 10_000_000)] = 1000,
        start_frac: Annotated[float, Range(0.0, 1.0, hi_open=True)] = 0.0,
        end_frac: Annotated[float, Range(0.0, 1.0, lo_open=True)] = 0.7,
        update_every: Annotated[int, Range(1, 10_000_000)] = 10,
        lr: Annotated[float, Range(0.0, 1.0, lo_open=True)] = 1e-4,
        lr_schedule: LrSchedule = "linear",
        batch_size: Annotated[int, Range(1, 65536)] = 32,
        warmup_steps: Annotated[int, Range(0, 10_000_000)] = 0,
        weight_decay: Annotated[float, Range(0.0, 1.0)] = 0.01,
        distill: bool = False,
        temperature: Annotated[float, Range(0.0, 1000.0, lo_open=True)] = 2.0,
        alpha: Annotated[float, Range(0.0, 1.0)] = 0.9,
        hidden_distill: Annotated[float, Range(0.0, 1000.0)] = 0.0,
        attention_distill: Annotated[float, Range(0.0, 1000.0)] = 0.0,
        augment: Annotated[float, Range(0.0, 1.0)] = 0.0,
        distill_text: Sequence[str] = (),
        distill_text_share: Annotated[float, Range(0.0, 1.0)] = 0.0,
        teacher_seeds: Annotated[Sequence[int], Range(0, 2**32 - 1)] = (),
        structure: str = "unstructured",
        scope: Scope = "layer",
        min_keep: Annotated[float, Range(0.0, 1.0, hi_open=True)] = 0.0,
        roles: Sequence[str] = ALL_ROLES,
        seed: Annotated[int, Range(0, 2**32 - 1)] = 0,
        precision: Precision = "auto",
        ema_decay: Annotated[float, Range(0.0, 1.0, hi_open=True)] = 0.0,
    ) -> None:
        self.sparsity = check_sparsity(sparsity)
        self.initial_sparsity = _num("initial_sparsity", initial_sparsity, 0.0, self.sparsity)
        self.steps = _int("steps", steps, 1)
        self.start_frac = _num("start_frac", start_frac, 0.0, 1.0)
        if self.start_frac >= 1.0:
            raise ValueError(f"start_frac must be in [0, 1), got {start_frac!r}")
        self.end_frac = _num("end_frac", end_frac, self.start_frac, 1.0, lo_open=True)
        self.update_every = _int("update_every", update_every, 1)
        self.lr = _num("lr", lr, 0.0, 1.0, lo_open=True)
        self.lr_schedule = check_lr_schedule(lr_schedule)
        self.batch_size = _int("batch_size", batch_size, 1)
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}), got {warmup_steps!r}")
        self.weight_decay = _num("weight_decay", weight_decay, 0.0, 1.0)
        if not isinstance(distill, bool):
            raise ValueError(f"distill must be true or false, got {distill!r}")
        self.distill = distill
        check_distill(temperature, alpha)
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.hidden_distill = _num("hidden_distill", hidden_distill, 0.0, 1000.0)
        if self.hidden_distill > 0 and not self.distill:
            raise ValueError(f"hidden_distill = {hidden_distill!r} needs distill = true")
        self.attention_distill = _num("attention_distill", attention_distill, 0.0, 1000.0)
        if self.attention_distill > 0 and not self.distill:
            raise ValueError(f"attention_distill = {attention_distill!r} needs distill = true")
        self.augment = _num("augment", augment, 0.0, 1.0)
        if self.augment > 0 and not self.distill:
            raise ValueError(f"augment = {augment!r} needs distill = true (the teacher labels the augmented copies)")
        self.distill_text = check_text_sources(distill_text)
        self.distill_text_share = _num("distill_text_share", distill_text_share, 0.0, 1.0)
        if self.distill_text_share > 0 and not self.distill:
            raise ValueError(f"distill_text_share = {distill_text_share!r} needs distill = true (the teacher labels the texts)")
        if bool(self.distill_text) != (self.distill_text_share > 0):
            raise ValueError("distill_text and distill_text_share go together: name the texts and give a share > 0 "
                             f"(got distill_text = {list(self.distill_text)}, distill_text_share = {distill_text_share!r})")
        if self.distill_text_share > 0 and self.augment > 0:
            raise ValueError("use one of augment and distill_text_share (each replaces a share of the batch)")
        self.teacher_seeds = check_teacher_seeds(teacher_seeds)
        if self.teacher_seeds and not self.distill:
            raise ValueError(f"teacher_seeds = {list(self.teacher_seeds)} needs distill = true (the ensemble is a teacher)")
        self.structure = parse_structure(structure)
        self.structure.check_sparsity(self.sparsity)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of: {', '.join(SCOPES)} (got {scope!r})")
        self.scope = scope
        self.min_keep = _num("min_keep", min_keep, 0.0, 1.0)
        bound = round(1.0 - self.sparsity, 12)  # 1 - 0.9 is 0.0999…
        if self.min_keep > bound:
            raise ValueError(f"min_keep must be in [0, 1 - sparsity] = [0, {bound:g}] at sparsity {self.sparsity:g}, "
                             f"got {min_keep!r}")
        if self.min_keep > 0 and self.structure.kind == "nm":
            raise ValueError(f"min_keep = {min_keep!r} does not apply to structure {self.structure.spec!r} "
                             "(N:M keeps N of every M weights in every matrix)")
        if self.min_keep > 0 and not self._ranks_globally():
            raise ValueError(f"min_keep = {min_keep!r} needs scope = \"global\" (under \"layer\" every matrix is at the sparsity)")
        self.roles = validate_roles(roles)
        self.seed = _int("seed", seed, 0)
        self.precision = check_precision(precision)
        self.ema_decay = _num("ema_decay", ema_decay, 0.0, 1.0)
        if self.ema_decay >= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        self.start_step = int(round(self.start_frac * self.steps))
        if self.start_step >= self.steps:  # the schedule would start after the run (an end_frac = 1 prune that
            # follows the last step is a schedule of its own, kept: its update still lies at end_step)
            raise ValueError(f"start_frac = {start_frac!r} starts pruning at step {self.start_step} of a "
                             f"{self.steps}-step run: use a start_frac below {(self.steps - 0.5) / self.steps:.4g}")
        self.end_step = max(self.start_step + 1, int(round(self.end_frac * self.steps)))
        self.schedule = Cubic(self.initial_sparsity, self.sparsity, self.start_step, self.end_step, self.update_every)

    def target_sparsity(self) -> float:
        return self.sparsity

    def _ranks_globally(self) -> bool:
        """Whether one ranking spans all matrices (what ``min_keep`` puts a floor under)."""
        return self.scope == "global"

    # ---- hooks for subclasses ----------------------------------------------------------------------
    def init_student(self, model: nn.Module, task: Any) -> None:
        """Weights the pruned student starts from (in place); default: the dense model handed to :meth:`prune`."""

    def make_score(self, layers: dict[str, nn.Linear]) -> Score:
        """The importance score the schedule ranks by (GMP: ``|W|``; subclasses: OBS, movement)."""
        return MagnitudeScore(layers)

    def select(self, score: Score, sparsity: float) -> dict[str, torch.Tensor]:
        """Keep-masks (bool, weight-shaped) at ``sparsity`` from ``score`` in this pruner's structure
        and scope."""
        return self.structure.masks(score.scores(), sparsity, self.scope, min_keep=self.min_keep)

    def gradient_batches(self, task: Any, batches: Iterator[list[int]]) -> Iterator[list[int]]:
        """Batches of training-example indices that ``gradient()`` (see :meth:`Score.before_update`)
        draws; default: the training batches themselves."""
        return batches

    def target_layers(self, model: nn.Module) -> dict[str, nn.Linear]:
        """The Linear layers of ``roles``; ValueError if none, or if a shape does not tile the structure."""
        layers = prunable_linears(model, self.roles)
        if not layers:
            raise ValueError(f"no encoder Linear layer matches roles {list(self.roles)}")
        for n, lin in layers.items():
            self.structure.check_shape(n, lin.weight.shape)
        return layers

    def text_sources(self) -> tuple[str, ...]:
        """``distill_text`` while ``distill_text_share`` > 0 (read through the task's ``unlabeled_texts``)."""
        return tuple(self.distill_text) if self.distill_text_share else ()

    def resolved_settings(self) -> dict[str, str]:
        """The training precision ``precision`` resolves to on this CPU."""
        return {"precision": resolve_precision(self.precision)}

    def data_fingerprint(self) -> dict[str, str]:
        """The sha256 of each ``.txt`` file of ``distill_text``."""
        digests = {src: text_source_digest(src) for src in self.distill_text} if self.distill_text_share else {}
        return {src: d for src, d in digests.items() if d is not None}

    def _augmenter(self, model: nn.Module, task: Any) -> TokenAugmenter | ExtraText | None:
        """The :class:`~pruners.augment.TokenAugmenter` of ``augment``, from the dense model's input
        word embeddings, or the :class:`~pruners.augment.ExtraText` of ``distill_text`` (None when
        neither); ValueError for a task without a known vocabulary, or that cannot tokenize text."""
        if self.distill_text_share:
            # sources may share sentences (MRPC and STS-B both hold MSRpar's): each text once
            texts = list(dict.fromkeys(t for src in self.distill_text for t in task.unlabeled_texts(src)))
            examples = task.encode_texts(texts)
            if examples is None:
                raise ValueError(f"distill_text: task {getattr(task, 'name', task)!r} cannot tokenize text "
                                 "(encode_texts); use distill_text_share = 0")
            return ExtraText(examples, self.distill_text_share, self.seed, self.distill_text)
        if not self.augment:
            return None
        vocab = task.augment_vocab()
        if vocab is None:
            raise ValueError(f"augment: task {getattr(task, 'name', task)!r} does not know its vocabulary "
                             "(augment_vocab); use augment = 0")
        words, pieces = vocab
        return TokenAugmenter(model.get_input_embeddings().weight.detach(), words, self.augment, self.seed, pieces)

    def _ensemble(self, task: Any, progress: Progress | None) -> list[nn.Module]:
        """The dense models of :attr:`teacher_seeds` (``task.load_finetuned_seed``: from the cache, or
        fine-tuned now with ``progress``); ValueError for a task that cannot fine-tune from a seed or
        a seed equal to the task's own (the same model twice)."""
        if not self.teacher_seeds:
            return []
        load = getattr(task, "load_finetuned_seed", None)
        if load is None:
            raise ValueError(f"teacher_seeds: task {getattr(task, 'name', task)!r} cannot fine-tune from another seed")
        own = getattr(task, "seed", None)
        if own in self.teacher_seeds:
            raise ValueError(f"teacher_seeds: {own} is the task's own seed (its dense model is already the teacher); "
                             f"got {list(self.teacher_seeds)}")
        step = (lambda s, n, loss: progress(s, n, loss, 0.0)) if progress is not None else None
        with torch.random.fork_rng(devices=[]):  # a member fine-tuned now must not shift the student's dropout
            return [load(seed, self.cache_dir, step) for seed in self.teacher_seeds]

    def lr_factor(self) -> Callable[[int], float]:
        """``step → multiplier`` of :attr:`lr` under ``lr_schedule`` over :attr:`steps` (``"cyclic"``
        restarts at the schedule's mask-update steps); the weights' schedule, and movement's scores'."""
        if self.lr_schedule == "cyclic":
            last = min(self.end_step, self.steps - 1)
            restarts = [s for s in range(self.start_step, last + 1) if self.schedule.is_update(s)]
            return cyclic_linear_factor(restarts, self.steps, self.warmup_steps)
        return linear_decay_factor(self.warmup_steps, self.steps)

    # ---- the loop --------------------------------------------------------------------------------
    def prune(self, model: nn.Module, task: Any, progress: Progress | None = None) -> PruneReport:
        """Train and prune ``model`` in place (see the class and module docs); the report comes from
        the masks, with the training budget, speed and wall time in its notes.

        Checkpoints: with :attr:`checkpoint` set (a file path; the runner sets it beside the pruned
        model's cache entry, ``<cache>/pruned/<key>.partial.pt``), the whole training state is saved
        there after a step every :data:`pruners.training.CHECKPOINT_EVERY_S` seconds (120; never
        after the last step; written aside, then renamed): the model's state dict, AdamW's and the
        learning-rate schedule's state, the masks, the score's running state (movement's scores,
        their Adam state and latent values; OBS's kept weights and statistics — its Fisher is
        rebuilt at every pruning step, so a step boundary holds none), the weight average, the
        augmentation's random generator, the teacher logits computed so far, the batches drawn
        from each data stream (replayed on resume: the task's streams are a function of the seed),
        torch's, Python's and NumPy's random states, the wall time, the last losses, the step and
        what the pruner itself keeps (:meth:`loop_state`). A call that finds a checkpoint of exactly
        this configuration (pruner class, parameters, resolved settings, data files, the task's
        fingerprint and the starting weights: :meth:`checkpoint_identity`) goes on from it and ends
        with the weights, masks and report of a run never interrupted, wall-clock fields aside
        (``training_speed`` counts both runs' time and adds ``resumed_from_step``). A file that
        cannot be read, is of another configuration or cannot be restored is warned about
        (:class:`pruners.training.CheckpointWarning`) and training starts from the beginning; one
        that cannot be written (OSError: a full disk) is warned about and training goes on without
        checkpoints. The file is left in place: whoever stores the pruned model deletes it then (the
        runner does). An interruption (KeyboardInterrupt) propagates, the last checkpoint kept."""
        precision = resolve_precision(self.precision)
        identity = self.checkpoint_identity(model, task) if self.checkpoint is not None else ""
        saved = self._read_checkpoint(identity, model)
        dense = {k: v.detach().clone() for k, v in model.state_dict().items()} if saved is not None else None
        run = self._setup(model, task, progress, precision)
        start = 0
        if saved is not None:
            try:
                start = self._restore(run, saved)
            except Exception as exc:  # an old layout the identity did not catch: start again, from the dense weights
                self._warn_checkpoint(f"could not be restored ({brief(exc)})")
                model.load_state_dict(dense)
                run, start = self._setup(model, task, progress, precision), 0
        del saved, dense
        run.checkpoints, run.identity = Checkpoints(self.checkpoint, f"training {self.name}"), identity
        self._train(run, start)
        model, masks, score, clock, distiller, augmenter = run.model, run.masks, run.score, run.clock, run.distiller, run.augmenter
        if masks.sparsity != self.sparsity:  # end_frac = 1: the last update lands after the last step
            score.before_update(run.gradient)  # a second-order score (OBS) measures its Fisher at the weights it prunes
            run.opt.zero_grad(set_to_none=True)
            score.update_masks(masks, self.select(score, self.sparsity), run.opt, self.sparsity)
        averaged = self._use_average(model, masks, run.average, task) if run.average is not None else None
        masks.squash()
        if distiller is not None:
            distiller.save()
        model.eval()
        assert_plain(model)
        notes = self.describe()
        notes.update(score.describe())
        recent = run.recent
        notes["final_loss_mean_last_50"] = sum(recent) / len(recent) if recent else None
        notes["training_speed"] = {**clock.describe(precision), **({"resumed_from_step": start} if start else {}),
                                   **(distiller.describe() if distiller else {})}
        if augmenter is not None:
            notes["augmentation"] = augmenter.describe()
        if averaged is not None:
            notes["weight_average"] = averaged
        notes["wall_time_s"] = notes["training_speed"]["wall_time_s"]
        return masks.report(model, notes)

    def _setup(self, model: nn.Module, task: Any, progress: Progress | None, precision: str) -> _Run:
        """Everything one training run of :meth:`prune` works with, at step 0 (seeded)."""
        clock = StepClock()
        torch.manual_seed(self.seed)
        layers = self.target_layers(model)
        data = task.train_examples()
        augmenter = self._augmenter(model, task)  # first: a task that cannot take it fails before any work
        members = self._ensemble(task, progress)
        distiller = (Distiller(model, self.temperature, self.alpha, examples=[e.input_ids for e in data], cache_dir=self.cache_dir,
                               hidden_weight=self.hidden_distill, precision=precision, members=members,
                               attention_weight=self.attention_distill)
                     if self.distill else None)
        del members  # the distiller holds frozen copies
        hidden = distiller is not None and distiller.wants_hidden
        self.init_student(model, task)
        # after init_student, which may replace the projections (movement's masked layers)
        tap = AttentionTap(model) if distiller is not None and distiller.wants_attention else None
        masks = MaskSet(layers)
        score = self.make_score(layers)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = adamw(params, self.lr, self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor())
        batches = _Counted(task.train_index_batches(self.batch_size, self.seed))
        grad_batches = self.gradient_batches(task, batches)
        if grad_batches is not batches:
            grad_batches = _Counted(grad_batches)

        def next_loss(stream: Iterator[list[int]] = batches) -> torch.Tensor:
            idx = next(stream)
            examples, copies = [data[i] for i in idx], None
            if augmenter is not None and stream is batches:
                examples, copies = augmenter.batch(examples)
            inputs, labels = task.collate(examples)
            with autocast(precision), (tap if tap is not None else contextlib.nullcontext()):
                out = model(**inputs, output_hidden_states=True) if hidden else model(**inputs)
                logits = logits_of(out).float()
            if copies is None or not bool(copies.any()):
                loss = task.loss(logits, labels)
            else:  # the copies' labels are the originals': only the teacher's targets hold for them
                own = ~copies
                loss = task.loss(logits[own], labels[own]) if bool(own.any()) else logits.sum() * 0.0
            if distiller is None:
                return loss
            return distiller.loss(inputs, logits, loss, idx, out.hidden_states[1:] if hidden else None, live=copies,
                                  student_attention=tap.outputs if tap is not None else None)

        def gradient() -> float:
            opt.zero_grad(set_to_none=True)
            with gradients_only_for(model, [lin.weight for lin in layers.values()]):  # all a score reads
                loss = next_loss(grad_batches)
                loss.backward()
            return float(loss.detach())

        average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay)) if self.ema_decay else None
        return _Run(model=model, clock=clock, masks=masks, score=score, opt=opt, sched=sched, params=params,
                    batches=batches, grad_batches=grad_batches, next_loss=next_loss, gradient=gradient,
                    progress=progress, average=average, augmenter=augmenter, distiller=distiller)

    def _train(self, run: _Run, start: int = 0) -> None:
        """The training steps from ``start``: mask updates on the schedule, one masked optimizer step
        per batch; ``run.average`` (if any) takes in the weights after every step from ``end_step``
        on; a checkpoint after a step when one is due (before ``progress`` hears of the step)."""
        model, masks, score, opt, recent, clock = run.model, run.masks, run.score, run.opt, run.recent, run.clock
        model.train()
        for step in range(start, self.steps):
            if self.schedule.is_update(step):
                s = self.schedule.sparsity_at(step)
                score.before_update(run.gradient)
                opt.zero_grad(set_to_none=True)
                score.update_masks(masks, self.select(score, s), opt, s)
            loss = run.next_loss()
            loss.backward()
            score.accumulate()
            masks.step(opt, clip_norm=1.0, params=run.params)
            run.sched.step()
            opt.zero_grad(set_to_none=True)
            if run.average is not None and step >= self.end_step:
                run.average.update_parameters(model)
            clock.tick()
            recent.append(float(loss.detach()))
            if run.checkpoints is not None and run.checkpoints.due(step + 1, self.steps):
                run.checkpoints.save(self._checkpoint_state(run, step + 1))
            if run.progress:
                run.progress(step + 1, self.steps, recent[-1], masks.achieved)
            if (step + 1) % 50 == 0 or step + 1 == self.steps:
                log.info("%s step %d/%d loss %.4f (mean of last %d) sparsity %.4f %.0fs", self.name, step + 1, self.steps,
                         sum(recent) / len(recent), len(recent), masks.achieved, clock.wall_s)

    # ---- checkpoints -----------------------------------------------------------------------------
    def loop_state(self, score: Score, masks: MaskSet) -> dict[str, Any]:
        """What the pruner object itself changes during training, beyond the model, score and masks
        (saved in checkpoints, tensors as they are); default: nothing."""
        return {}

    def load_loop_state(self, state: dict[str, Any], score: Score, masks: MaskSet) -> None:
        """Take back :meth:`loop_state` (``score`` and ``masks`` already restored)."""

    def checkpoint_identity(self, model: nn.Module, task: Any) -> str:
        """sha256 (hex) of what determines the training, which a checkpoint must match to be used:
        the pruner's class, ``cache_version`` and constructor parameters, :meth:`resolved_settings`,
        :meth:`data_fingerprint`, the task's ``fingerprint()`` and ``model``'s weights (the dense
        model training starts from: :func:`pruners.distill.weights_key`, one pass over them)."""
        params = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self":  # reprs without memory addresses: the same configuration in another process
                params[name] = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(getattr(self, name, None)))
        fingerprint = getattr(task, "model_fingerprint", None) or getattr(task, "fingerprint", None)
        what = {"pruner": f"{type(self).__module__}.{type(self).__qualname__}", "cache_version": self.cache_version,
                "params": params, "resolved": self.resolved_settings(), "data": self.data_fingerprint(),
                "task": fingerprint() if callable(fingerprint) else type(task).__qualname__,
                "weights": weights_key(model, [])}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    def _checkpoint_state(self, run: _Run, step: int) -> dict[str, Any]:
        """Everything :meth:`_restore` needs to go on after ``step`` steps (see :meth:`prune`)."""
        return {"format": CHECKPOINT_FORMAT, "identity": run.identity, "step": step,
                "model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "schedule": run.sched.state_dict(),
                "masks": run.masks.state_dict(), "score": run.score.state_dict(),
                "average": run.average.state_dict() if run.average is not None else None,
                "augmenter": run.augmenter.state_dict() if run.augmenter is not None else None,
                "distiller": run.distiller.state_dict() if run.distiller is not None else None,
                "batches_taken": run.batches.taken,
                "gradient_batches_taken": run.grad_batches.taken if run.grad_batches is not run.batches else None,
                "rng": rng_state(), "clock": run.clock.state_dict(), "recent": list(run.recent),
                "pruner": self.loop_state(run.score, run.masks)}

    def _restore(self, run: _Run, state: dict[str, Any]) -> int:
        """Load a checkpoint's state into a fresh ``run`` (:meth:`_setup`); returns the step to go on from."""
        for part in ("average", "augmenter", "distiller"):
            if (state[part] is None) != (getattr(run, part) is None):
                raise ValueError(f"{part}: {'none' if state[part] is None else 'one'} saved, "
                                 f"{'none' if getattr(run, part) is None else 'one'} here")
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["schedule"])
        run.masks.load_state_dict(state["masks"])
        run.score.load_state_dict(state["score"])
        for part in ("average", "augmenter", "distiller"):
            if state[part] is not None:
                getattr(run, part).load_state_dict(state[part])
        run.batches.skip(int(state["batches_taken"]))
        if run.grad_batches is not run.batches:
            run.grad_batches.skip(int(state["gradient_batches_taken"]))
        self.load_loop_state(state["pruner"], run.score, run.masks)
        run.clock.load_state_dict(state["clock"])
        run.recent.extend(float(x) for x in state["recent"])
        set_rng_state(state["rng"])
        return int(state["step"])

    def _read_checkpoint(self, identity: str, model: nn.Module) -> dict[str, Any] | None:
        """The state in :attr:`checkpoint` when it is a checkpoint of this configuration (``identity``)
        and of ``model``'s weights, at a step inside the training; else None, with a
        :class:`CheckpointWarning` when there is a file."""
        path = self.checkpoint
        if path is None or not Path(path).is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not a training pruner's checkpoint of this version")
            if state.get("identity") != identity:
                raise ValueError("saved by another configuration (pruner, parameters, task or starting weights)")
            step = state["step"]
            if isinstance(step, bool) or not isinstance(step, int) or not 0 < step < self.steps:
                raise ValueError(f"step {step!r} is not inside the {self.steps} training steps")
            own, theirs = model.state_dict(), state["model"]
            if set(theirs) != set(own) or any(theirs[k].shape != own[k].shape or theirs[k].dtype != own[k].dtype for k in own):
                raise ValueError("its weights are not this model's")
        except Exception as exc:  # a damaged or foreign checkpoint costs the time it saved, nothing else
            self._warn_checkpoint(f"could not be used ({brief(exc)})")
            return None
        return state

    def _warn_checkpoint(self, why: str) -> None:
        warnings.warn(f"training checkpoint {self.checkpoint} {why}; training {self.name} from the start",
                      CheckpointWarning, stacklevel=2)

    @torch.no_grad()
    def _use_average(self, model: nn.Module, masks: MaskSet, average: AveragedModel, task: Any) -> dict[str, Any]:
        """Give ``model`` the averaged weights (masked weights stay exact zeros); what the report says of it,
        with the task metric of the last weights on the eval split as it was when the model was pruned
        (a cached model keeps this note when only the eval file changes later). No step to average
        (``end_frac = 1``): weights unchanged."""
        n = int(average.n_averaged)
        out: dict[str, Any] = {"decay": self.ema_decay, "from_step": self.end_step, "steps_averaged": n}
        if n == 0:
            return out
        model.eval()
        out[f"{task.metric_name}_last_weights"] = task.evaluate(model)
        for p, q in zip(model.parameters(), average.module.parameters()):
            p.copy_(q)
        masks.apply()  # exact zeros already (every averaged step had them); kept explicit
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "pruner": self.name,
            **self.schedule.describe(),
            "structure": self.structure.spec, "scope": self.scope, "min_keep": self.min_keep, "roles": list(self.roles),
            "training": {
                "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "warmup_steps": self.warmup_steps,
                "weight_decay": self.weight_decay, "lr_schedule": self.lr_schedule,
                "optimizer": ("AdamW, linear warm-up, then " + ("linear decay to lr/10 from every mask update (rewinding)"
                              if self.lr_schedule == "cyclic" else "linear decay to 0") + ", clip 1.0"),
                "seed": self.seed, "precision": resolve_precision(self.precision), "ema_decay": self.ema_decay,
            },
            "distillation": ({"temperature": self.temperature, "alpha": self.alpha, "hidden_weight": self.hidden_distill,
                              "attention_weight": self.attention_distill, "augment": self.augment,
                              **({"distill_text": list(self.distill_text), "distill_text_share": self.distill_text_share}
                                 if self.distill_text_share else {}),
                              **({"teacher_seeds": list(self.teacher_seeds)} if self.teacher_seeds else {})}
                             if self.distill else False),
        }


def training_params(**defaults: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator for the ``__init__(self, <own parameters>, **training)`` of a
    :class:`TrainingPruner` subclass, so that the training parameters are declared once (on
    :class:`TrainingPruner`). The decorated constructor's signature, which the plugin registry reads
    as the config schema, is its own parameters followed by every :class:`TrainingPruner` parameter,
    with ``defaults`` replacing :class:`TrainingPruner`'s defaults where given; a call receives every
    parameter, defaults filled in, so ``**training`` can go straight to ``super().__init__``.
    Raises TypeError (at decoration) for a default that names no training parameter."""
    base = list(inspect.signature(TrainingPruner.__init__).parameters.values())[1:]
    unknown = set(defaults) - {p.name for p in base}
    if unknown:
        raise TypeError(f"not TrainingPruner parameters: {', '.join(sorted(unknown))}")

    def wrap(init: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(init)
        own_params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own_params}
        sig = own.replace(parameters=own_params + [p.replace(default=defaults.get(p.name, p.default))
                                                   for p in base if p.name not in names])

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            init(**bound.arguments)

        hints = {**typing.get_type_hints(TrainingPruner.__init__, include_extras=True),
                 **typing.get_type_hints(init, include_extras=True)}
        __init__.__signature__ = sig  # type: ignore[attr-defined]
        __init__.__annotations__ = {k: v for k, v in hints.items() if k in sig.parameters or k == "return"}
        return __init__

    return wrap


class GMPPruner(TrainingPruner):
    """Gradual magnitude pruning (Zhu & Gupta 2017): score |W|, cubic schedule, trained
    (optionally distilled) between mask updates. Parameters: see :class:`TrainingPruner`."""

    name = "gmp"
