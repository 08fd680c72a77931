"""Edge inputs of the mask selection and the GMP schedule: NaN scores refused on every selection
path, a sparsity just below 1 that keeps one group per layer, a start step past the run."""
from __future__ import annotations

import pytest
import torch

from pruners.movement_masks import Sampler, threshold_masks
from pruners.structure import parse_structure


def _scores():
    s = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    s[2, 5] = float("nan")
    return {"layer": s}


@pytest.mark.parametrize("spec", ["unstructured", "1x4", "2:4"])
def test_nan_scores_are_refused_by_every_structure(spec):
    structure = parse_structure(spec)
    sparsity = 0.5
    with pytest.raises(ValueError, match="scores contain NaN"):
        structure.masks(_scores(), sparsity)


def test_nan_scores_are_refused_by_thresholds_and_sampled_cuts():
    with pytest.raises(ValueError, match="scores contain NaN"):
        threshold_masks(_scores(), 0.5)
    flat = torch.rand(100_000, generator=torch.Generator().manual_seed(1))
    flat[7] = float("nan")
    with pytest.raises(ValueError, match="scores contain NaN"):
        Sampler(0).cut(flat, 50_000, 1_000)


@pytest.mark.parametrize("spec", ["unstructured", "4x4"])
def test_a_sparsity_just_below_one_keeps_a_group_of_each_layer(spec):
    scores = {"a": torch.rand(8, 8), "b": torch.rand(16, 8)}
    keep = parse_structure(spec).masks(scores, 0.999)
    group = 1 if spec == "unstructured" else 16
    assert {n: int(m.sum()) for n, m in keep.items()} == {"a": group, "b": group}


def test_a_start_step_past_the_run_is_refused():
    from pruners.gmp import GMPPruner

    GMPPruner(sparsity=0.5, steps=10, start_frac=0.94, end_frac=1.0)  # starts at step 9, inside the run
    with pytest.raises(ValueError, match=r"start_frac = 0.96 starts pruning at step 10 of a 10-step run: use a "
                                         r"start_frac below 0.95"):
        GMPPruner(sparsity=0.5, steps=10, start_frac=0.96, end_frac=1.0)


def test_progress_shows_the_sparsity_the_masks_reach():
    """N:M below its final level drops whole steps of its groups: the masks, not the schedule's value,
    say what the model holds."""
    from pruners.masks import MaskSet

    lin = torch.nn.Linear(8, 4)
    masks = MaskSet({"l": lin})
    keep = parse_structure("2:4").masks({"l": torch.rand(4, 8)}, 0.44)  # each group drops 2 of 4 already
    masks.update(keep, sparsity=0.44)
    assert masks.sparsity == 0.44 and masks.achieved == 0.5


def test_temperature_and_alpha_need_distill_in_every_training_pruner():
    """Without distillation they change nothing but the cell id and the pruned-model cache key (the
    pruner would train again for the same model): refused as hidden_distill, augment ... are."""
    from pruners.gmp import GMPPruner
    from pruners.movement import MovementPruner
    from pruners.obs import OBSPruner

    for cls in (GMPPruner, MovementPruner, OBSPruner):
        for kw, match in (({"temperature": 5.0}, r"^temperature = 5.0 needs distill = true .*leave it at 2.0"),
                          ({"alpha": 0.1}, r"^alpha = 0.1 needs distill = true .*leave it at 0.9")):
            with pytest.raises(ValueError, match=match):
                cls(distill=False, **kw)
            cls(distill=True, **kw)  # used then
        cls(distill=False, temperature=2, alpha=0.9)  # the defaults, however spelled
    with pytest.raises(ValueError, match=r"^alpha = 0.2 needs distill = true"):
        OBSPruner(steps=0, distill=False, alpha=0.2)  # one-shot as gradual: one check for a steps sweep
