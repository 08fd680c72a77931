"""Movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by
Fine-Tuning", arXiv:2005.07683), trained as the paper trains it, on GMP's loop.

Scores S (one per targeted weight, float32, zero at the start) are learned with Adam at their own
learning rate (``score_lr``, paper 1e-2; the weights have ``lr``) from the straight-through
gradient ``∂L/∂S = ∂L/∂W' ⊙ W`` of the masked forward pass ``W' = W ⊙ M`` (see
:mod:`pruners.scores`). Masks are recomputed from S at every training step of the pruning phase
(``update_every = 1``, as in the paper). Two variants (``variant``):

* ``"hard"`` — ``M = Top_v(S)`` per layer (``scope = "layer"``, the paper's), ``v = 1 − s_t`` from
  the cubic schedule (:class:`pruners.schedules.Cubic`): a dense warm-up of ``start_frac`` of the
  steps before the first mask (S learns from the start), the cubic ramp up to ``end_frac``, then a
  cool-down at the final sparsity.
* ``"soft"`` — ``M = 1(σ(S) > τ_t)`` with one threshold for all targeted layers, so each layer's
  sparsity follows its scores, and the penalty ``R = λ_t · mean_l Σσ(S_l)/numel_l`` added to the
  loss (their ``l1`` regularisation), which pushes every score down; a weight survives when its
  movement outweighs the push. The paper grows τ and λ on the same cubic schedule
  (``τ_t = τ_f · u_t``, ``λ_t = λ_f · u_t`` with ``u_t = s_t / s_f`` the schedule's progress, 0
  during warm-up, 1 from ``end_frac`` on). With Adam, the push moves a weight's score about
  ``score_lr`` per step when its movement is small and noisy (small ``|W|·|∂L/∂W|``) and barely
  when its movement is large and noisy, so soft movement's ranking leans towards small, idle
  weights, where hard movement's is blind to magnitude at a short budget; and its one global
  threshold lets the layers where the push dominates lose the most (one-shot at 50 % on MiniLM /
  SST-2 after 40 steps: hard 0.48, collapsed; soft ranked per layer 0.49; soft with its global
  threshold 0.77; magnitude 0.85; docs/results.md).

  The paper's final sparsity is not prescribed: it follows from λ_f and τ_f. A benchmark needs
  the model at exactly ``sparsity``, so (deviation, ``final_threshold``):

  - ``final_threshold = None`` (default, "calibrated"): τ_t is set at every step to the σ of the
    global ``s_t`` quantile of S, so the sparsity follows the cubic schedule (within ~0.1 %
    during the ramp, where the quantile is estimated from a fixed sample of the scores; exact
    from ``end_frac`` on, with nothing left to adjust). λ_t keeps its schedule; with τ
    calibrated, what it changes is the *ranking* (small idle weights sink first).
  - ``final_threshold = τ_f`` in (0, 1): the paper's fixed threshold schedule; at ``end_frac`` the
    mask snaps to the global top ``1 − sparsity`` of S (the sparsity the threshold had reached is
    kept in the report's notes as ``sparsity_before_final_adjustment``), and the cool-down lets
    the weights recover from the snap. Unstructured only.

  Each layer keeps at least its best ``int(0.005 · numel) + 1`` weights (the paper code's floor,
  so one global threshold cannot empty a layer).

Deviations from the paper, and why:

* masks are fixed during the cool-down (the paper's keep moving with S): the cool-down exists to
  let the weights recover at the final mask, and every later swap would go unrecovered; it also
  keeps soft movement at exactly ``sparsity`` to the end;
* the soft threshold is calibrated by default (above): the benchmark prescribes the sparsity;
* during the ramp, the top-v cut is the quantile of a fixed random sample of the scores (hard:
  v within ~0.2 % per layer; soft: ~0.1 % overall; :mod:`pruners.movement_masks`), because an
  exact top-k over every weight at every step costs more than the training step on a small CPU;
  from the end of the ramp on the masks are exact;
* the gradient clipping at 1.0 covers the weights, not S (Adam on S is invariant to the scale);
* the learning-rate warm-up is ``warmup_steps`` (default 0: the student starts fine-tuned), not
  the paper's first epoch;
* a pruned weight is an exact zero in the model and its latent value lives in the score
  (:mod:`pruners.scores`), so the model never carries masks or hooks.

Where training starts (``init``): the paper prunes *while fine-tuning the pretrained model*
(``"pretrained"``), over ~10 epochs. At this project's budgets (a few thousand steps of batch
32) a student from the pretrained model has to learn the task and lose most of its weights at
once, so the default is ``"finetuned"``: the student starts from the dense fine-tuned model, like
GMP, and is distilled from it, so it only has to lose weights, not learn the task as well
(``scripts/experiments/movement.toml`` compares the two starts).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import torch
from torch import nn

from accelerators.params import Range
from pruners.gmp import TrainingPruner, _num, training_params
from pruners.masks import MaskSet
from pruners.movement_masks import MIN_KEEP, Sampler, flat_global_keep, masks_sparsity, sigmoid_cut, threshold_masks
from pruners.scores import SCORE_OPTIMIZERS, MovementScore, Score, ScoreOptimizer

#: hard (Top_v) or soft (threshold + penalty) movement, see the module doc (``variant``)
Variant = Literal["hard", "soft"]
VARIANTS: tuple[str, ...] = get_args(Variant)
#: what the student starts from (``init``)
Init = Literal["pretrained", "finetuned"]
INITS: tuple[str, ...] = get_args(Init)
#: λ_f when not given: the paper's soft-movement value (their ``final_lambda``, SQuAD recipe)
PAPER_FINAL_LAMBDA = 400.0


def schedule_progress(sparsity_t: float, final_sparsity: float) -> float:
    """``u_t = s_t / s_f`` in [0, 1]: how far the cubic schedule is (0 before the first mask, 1
    from the end of the ramp on); τ_t and λ_t of soft movement are ``u_t`` times their finals."""
    return min(1.0, sparsity_t / final_sparsity) if final_sparsity > 0 else 1.0


class MovementPruner(TrainingPruner):
    """Movement pruning as the paper trains it (see the module doc for the equations, the variants
    and the deviations). Parameters as :class:`pruners.gmp.TrainingPruner`, with the paper's
    schedule as defaults (``start_frac`` 0.1: a dense warm-up of 10 % of the steps; ``end_frac``
    0.8: 20 % cool-down; ``update_every`` 1: masks follow S at every step; ``distill`` true with
    T = 2, α = 0.9), plus:

    Args:
        variant: ``"hard"`` (Top_v per ``scope``) or ``"soft"`` (one threshold + λ penalty).
        init: ``"finetuned"`` (default: the student starts from the dense fine-tuned model) or
            ``"pretrained"`` (the paper: the task's pretrained model with a new head).
        score_optimizer: ``"adam"`` (default, the paper's) or ``"sum"`` (plain accumulation of
            ``−W·∂L/∂W'``, α_S = 1); see :mod:`pruners.scores`.
        score_lr: the score learning rate α_S of ``"adam"`` (default 1e-2, the paper's); it
            follows the weights' warm-up/decay.
        final_lambda: λ_f of soft movement's penalty (>= 0; default 400, the paper's). Hard
            movement has no penalty: a non-zero value with ``variant = "hard"`` is a ValueError.
        final_threshold: soft movement's τ_f in (0, 1) for the paper's threshold schedule, or
            None (default) for the threshold calibrated to the schedule's sparsity at every step.
            Soft and unstructured only (ValueError otherwise).

    Raises:
        ValueError: an invalid value, naming the parameter and the valid values.
    """

    name = "movement"
    cache_version = 3

    @training_params(start_frac=0.1, end_frac=0.8, update_every=1, distill=True)
    def __init__(
        self,
        variant: Variant = "soft",
        init: Init = "finetuned",
        score_optimizer: ScoreOptimizer = "adam",
        score_lr: Annotated[float, Range(0.0, 10.0, lo_open=True)] = 1e-2,
        final_lambda: Annotated[float, Range(0.0, 1e9)] | None = None,
        final_threshold: Annotated[float, Range(0.0, 1.0, lo_open=True, hi_open=True)] | None = None,
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
            raise ValueError(f"start_frac must leave >= 1 step of score learning before the first mask (start_frac·steps >= 1), got {training['start_frac']!r}")
        self._check_soft(final_lambda, final_threshold)
        self.sparsity_before_final_adjustment: float | None = None
        self._sampler = Sampler(self.seed)
        self._last_soft: tuple[dict, dict] | None = None  # scores and keep-masks of the last soft selection

    def _check_soft(self, final_lambda: float | None, final_threshold: float | None) -> None:
        if self.variant == "soft" and self.sparsity > 1.0 - MIN_KEEP:
            raise ValueError(f"variant 'soft' keeps at least {MIN_KEEP:.1%} of every matrix (one global threshold, "
                             f"Sanh et al.'s per-layer floor), so sparsity must be <= {1.0 - MIN_KEEP:g}; got "
                             f"{self.sparsity!r} (variant 'hard' has no such floor)")
        if final_lambda is not None:
            final_lambda = _num("final_lambda", final_lambda, 0.0, 1e9)
        if self.variant == "hard" and final_lambda:
            raise ValueError(f"final_lambda applies to variant 'soft' only (hard movement has no penalty); got {final_lambda!r} with variant 'hard'")
        self.final_lambda = 0.0 if self.variant == "hard" else (PAPER_FINAL_LAMBDA if final_lambda is None else final_lambda)
        if final_threshold is not None:
            final_threshold = _num("final_threshold", final_threshold, 0.0, 1.0, lo_open=True)
            if final_threshold >= 1.0:
                raise ValueError(f"final_threshold must be in (0, 1) or None (calibrated), got {final_threshold!r}")
            if self.variant != "soft" or self.structure.kind != "unstructured":
                raise ValueError("final_threshold (the paper's fixed sigmoid threshold) needs variant 'soft' and "
                                 f"structure 'unstructured'; got variant {self.variant!r}, structure {self.structure.spec!r}")
        self.final_threshold = final_threshold

    def _ranks_globally(self) -> bool:
        return self.variant == "soft" or self.scope == "global"  # soft: one threshold over all matrices

    # ---- hooks of the training loop ------------------------------------------------------------
    def init_student(self, model: nn.Module, task: Any) -> None:
        if self.init == "pretrained":
            with torch.random.fork_rng(devices=[]):  # base_model() seeds torch: keep the pruner's seed for dropout
                model.load_state_dict(task.base_model().state_dict())

    def make_score(self, layers: dict[str, nn.Linear]) -> Score:
        self.sparsity_before_final_adjustment, self._last_soft = None, None
        self._sampler = Sampler(self.seed)
        return MovementScore(layers, self.score_optimizer, self.score_lr,
                             lr_factor=self.lr_factor(),
                             reg_lambda=self.lambda_at if self.final_lambda > 0 else None)

    def loop_state(self, score: Score, masks: MaskSet) -> dict[str, Any]:
        """The sparsity the paper's threshold had reached at the end of the ramp (once known) and
        the keep-masks of the last soft selection (for the threshold in the notes)."""
        return {"sparsity_before_final_adjustment": self.sparsity_before_final_adjustment,
                "last_soft_keep": self._last_soft[1] if self._last_soft is not None else None}

    def load_loop_state(self, state: dict[str, Any], score: Score, masks: MaskSet) -> None:
        self.sparsity_before_final_adjustment = state["sparsity_before_final_adjustment"]
        keep = state["last_soft_keep"]
        self._last_soft = (score.scores(), keep) if keep is not None else None

    def lambda_at(self, step: int) -> float:
        """λ_t = λ_f · u_t of soft movement at training ``step`` (0 for hard movement)."""
        return self.final_lambda * schedule_progress(self.schedule.sparsity_at(step), self.sparsity)

    def threshold_at(self, sparsity_t: float) -> float:
        """τ_t = τ_f · u_t of the paper's soft threshold (``final_threshold`` set), at the
        schedule's sparsity ``sparsity_t``."""
        if self.final_threshold is None:
            raise ValueError("threshold_at needs final_threshold (the calibrated threshold has no schedule)")
        return self.final_threshold * schedule_progress(sparsity_t, self.sparsity)

    @torch.no_grad()
    def select(self, score: Score, sparsity: float) -> dict[str, torch.Tensor]:
        """Keep-masks from the scores at the schedule's sparsity ``sparsity`` (see the module doc).

        During the ramp (``sparsity`` below the final one) the unstructured top-v cut is the
        quantile of a fixed random sample of the scores (:class:`pruners.movement_masks.Sampler`:
        within a fraction of a percent of v, and one comparison per weight instead of a top-k);
        at the end of the ramp, and for blocks and N:M, the selection is exact."""
        S = score.scores()
        ramp = sparsity < self.sparsity
        flat = self.structure.kind == "unstructured" and isinstance(score, MovementScore)
        if self.variant == "hard":
            keep = self._sampler.keep(score, sparsity, self.scope, self.min_keep) if ramp and flat else None
            return keep if keep is not None else self.structure.masks(S, sparsity, self.scope, min_keep=self.min_keep)
        if self.final_threshold is not None and ramp:
            return threshold_masks(S, self.threshold_at(sparsity))
        if self.final_threshold is not None and self.sparsity_before_final_adjustment is None:
            self.sparsity_before_final_adjustment = masks_sparsity(threshold_masks(S, self.threshold_at(sparsity)))
        keep, floor = None, max(MIN_KEEP, self.min_keep)
        if flat:
            keep = self._sampler.keep(score, sparsity, "global", floor) if ramp else flat_global_keep(score, sparsity, floor)
        if keep is None:
            keep = self.structure.masks(S, sparsity, "global", min_keep=floor)
        self._last_soft = (S, keep)  # for the threshold in the notes, computed once at the end
        return keep

    def describe(self) -> dict:
        d = super().describe()
        d.update(variant=self.variant, init=self.init)
        if self.variant == "soft":
            d["scope"] = "global (soft: one threshold)"
            d["soft"] = {
                "final_lambda": self.final_lambda,
                "threshold": "calibrated to the schedule's sparsity each step" if self.final_threshold is None
                else f"paper schedule to final_threshold {self.final_threshold:g}, top-k at the end of the ramp",
                "final_sigmoid_threshold": sigmoid_cut(*self._last_soft) if self._last_soft else None,
                "sparsity_before_final_adjustment": self.sparsity_before_final_adjustment,
                "min_keep_per_layer": f"int({max(MIN_KEEP, self.min_keep):g} * numel) + 1",
            }
        d["masks_during_cool_down"] = "fixed"
        return d
